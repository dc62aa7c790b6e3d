//! The request path's part of gRPC: the trailers of a call past its
//! deadline, and a call whose status comes in its trailers counted once
//! when it ends ([`CallTally`]). Codes and headers: `sluice_routing::grpc`.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use http::HeaderMap;
use http::header::HeaderValue;
use sluice_routing::grpc::{
    DEADLINE_EXCEEDED, GRPC_MESSAGE, GRPC_STATUS, UNAVAILABLE, http_status, server_failed, status_value,
};
use sluice_routing::outlier::{self, OutlierHook};
use sluice_routing::stats::PoolStats;
use sluice_routing::table::Backend;
use sluice_routing::window::Outcome;
use tokio::time::{Instant, Sleep};

/// The trailers sluice ends a call with when its deadline passes.
pub fn deadline_trailers() -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(GRPC_STATUS, status_value(DEADLINE_EXCEEDED));
    h.insert(GRPC_MESSAGE, HeaderValue::from_static("sluice: upstream-timeout"));
    h
}

/// The trailers ending a stream whose backend went quiet for longer than
/// `stream_idle`: UNAVAILABLE, which clients may retry.
pub fn idle_trailers() -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(GRPC_STATUS, status_value(UNAVAILABLE));
    h.insert(GRPC_MESSAGE, HeaderValue::from_static("sluice: stream-idle"));
    h
}

/// A stream's silence limit: the time of the backend's last frame is
/// noted per frame (a clock read), and the timer is moved only when it
/// fires early — not re-registered in the timer wheel on every frame.
#[derive(Debug)]
pub struct Silence {
    timer: Pin<Box<Sleep>>,
    limit: Duration,
    last: Instant,
}

impl Silence {
    fn new(limit: Duration) -> Self {
        Self {
            timer: Box::pin(tokio::time::sleep(limit)),
            limit,
            last: Instant::now(),
        }
    }

    /// The backend sent something.
    pub fn heard(&mut self) {
        self.last = Instant::now();
    }

    /// Whether the backend has been silent for the whole limit; else the
    /// timer waits for the rest of it.
    pub fn is_over(&mut self, cx: &mut std::task::Context<'_>) -> bool {
        while self.timer.as_mut().poll(cx).is_ready() {
            let until = self.last + self.limit;
            if until <= Instant::now() {
                return true;
            }
            self.timer.as_mut().reset(until);
        }
        false
    }
}

/// How a response turned out to be counted, from the request path's view.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Seen {
    /// Not a gRPC response: counted by its HTTP status.
    #[default]
    Plain,
    /// A gRPC response whose status came in its head (Trailers-Only).
    Ended(u8),
    /// A gRPC response whose status comes in its trailers: its body
    /// counts it when the call ends ([`CallTally`]).
    Deferred,
}

/// A gRPC call whose status is still to come: counted once, when its
/// trailers arrive or the call ends without them.
#[derive(Debug)]
pub struct CallTally {
    stats: Arc<PoolStats>,
    started: Instant,
    pool: Arc<str>,
    backend: Arc<Backend>,
    outliers: Option<OutlierHook>,
    /// The call's deadline (`grpc-timeout`), if it has one.
    pub deadline: Option<Pin<Box<Sleep>>>,
    /// How long the backend may stay silent (`stream_idle`; none when
    /// zero).
    pub idle: Option<Silence>,
}

impl CallTally {
    pub fn new(
        stats: Arc<PoolStats>,
        started: Instant,
        pool: Arc<str>,
        backend: Arc<Backend>,
        outliers: Option<OutlierHook>,
        (deadline, idle): (Option<Duration>, Duration),
    ) -> Self {
        Self {
            deadline: deadline.map(|d| Box::pin(tokio::time::sleep_until(started + d))),
            idle: (!idle.is_zero()).then(|| Silence::new(idle)),
            stats,
            started,
            pool,
            backend,
            outliers,
        }
    }

    /// The call ended with `code`: counted against the pool's statuses,
    /// gRPC codes and window, and the backend's run of failures.
    pub fn finish(self, code: u8) {
        let status = http_status(code);
        self.stats
            .count(self.started, status, Outcome::of_status(status), Some(code));
        outlier::count_exchange(self.outliers.as_ref(), &self.pool, &self.backend, server_failed(code));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Polls `silence` until it is over: how long that took.
    async fn time_to_silence(silence: &mut Silence) -> Duration {
        let start = Instant::now();
        std::future::poll_fn(|cx| {
            if silence.is_over(cx) {
                std::task::Poll::Ready(())
            } else {
                std::task::Poll::Pending
            }
        })
        .await;
        start.elapsed()
    }

    #[tokio::test(start_paused = true)]
    async fn a_stream_is_silent_only_a_whole_limit_after_its_last_frame() {
        let limit = Duration::from_secs(10);
        let mut silence = Silence::new(limit);
        // Frames 4 s apart keep it going past its first limit...
        for _ in 0..5 {
            tokio::time::sleep(Duration::from_secs(4)).await;
            silence.heard();
        }
        // ...and it ends a whole limit after the last one, not sooner.
        assert_eq!(time_to_silence(&mut silence).await, limit);
    }
}
