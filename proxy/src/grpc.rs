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
    /// When the backend's silence ends the stream, and how long a silence
    /// may be (`stream_idle`; none when zero).
    pub idle: Option<(Pin<Box<Sleep>>, Duration)>,
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
            idle: (!idle.is_zero()).then(|| (Box::pin(tokio::time::sleep(idle)), idle)),
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
