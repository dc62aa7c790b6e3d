//! Traffic counters of the request path: plain atomics, written with
//! relaxed increments (no lock, no allocation, no label lookup per request)
//! and read by the metrics exporter and, later, the live windows.
//!
//! A pool's counters live in an `Arc` carried from one routing snapshot to
//! the next by pool name, like backends, so a weight change does not reset
//! them.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::error::ProxyError;
use tokio::time::Instant;

use crate::window::{Outcome, Window};

/// Upper bounds (seconds) of the latency histogram: 1 ms to 10 s.
pub const LATENCY_BOUNDS: [f64; 13] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Status codes are counted in a flat array indexed by code.
const STATUS_SLOTS: usize = 600;

/// Per-pool request counters and latency histogram.
#[derive(Debug)]
pub struct PoolStats {
    by_status: Box<[AtomicU64]>,
    /// Non-cumulative counts per bucket of [`LATENCY_BOUNDS`], then +Inf.
    latency: [AtomicU64; LATENCY_BOUNDS.len() + 1],
    latency_sum_micros: AtomicU64,
    /// gRPC calls by status code (`crate::grpc::CODE_NAMES`).
    grpc: [AtomicU64; GRPC_CODES],
    /// The last minute of traffic, second by second.
    pub window: Window,
    /// Retries and their budget (used when the pool retries).
    pub retries: crate::retry::RetryBudget,
    /// Copies of live requests sent to this pool (`[[mirror]]`).
    pub shadow: crate::mirror::ShadowCounts,
}

/// gRPC status codes 0–16.
pub const GRPC_CODES: usize = 17;

impl Default for PoolStats {
    fn default() -> Self {
        Self {
            by_status: (0..STATUS_SLOTS).map(|_| AtomicU64::new(0)).collect(),
            latency: Default::default(),
            latency_sum_micros: AtomicU64::new(0),
            grpc: Default::default(),
            window: Window::default(),
            retries: Default::default(),
            shadow: Default::default(),
        }
    }
}

impl PoolStats {
    /// Counts one response (sluice's own error responses included).
    #[inline]
    pub fn record(&self, status: u16, elapsed: Duration) {
        if let Some(slot) = self.by_status.get(usize::from(status)) {
            slot.fetch_add(1, Ordering::Relaxed);
        }
        let secs = elapsed.as_secs_f64();
        let bucket = LATENCY_BOUNDS
            .iter()
            .position(|&b| secs <= b)
            .unwrap_or(LATENCY_BOUNDS.len());
        if let Some(bucket) = self.latency.get(bucket) {
            bucket.fetch_add(1, Ordering::Relaxed);
        }
        self.latency_sum_micros.fetch_add(
            u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }

    /// Counts one answer that began at `started`: its (HTTP, or gRPC
    /// mapped) status and latency, its outcome in the live window, and a
    /// gRPC call's code. The request path's one way to count.
    pub fn count(&self, started: Instant, status: u16, outcome: Outcome, grpc_code: Option<u8>) {
        let now = Instant::now();
        let elapsed = now.saturating_duration_since(started);
        self.record(status, elapsed);
        self.window.record(now, elapsed, outcome);
        if let Some(code) = grpc_code {
            self.record_grpc(code);
        }
    }

    /// Counts one gRPC call's status code (beside [`PoolStats::record`]).
    #[inline]
    pub fn record_grpc(&self, code: u8) {
        if let Some(slot) = self.grpc.get(usize::from(code)) {
            slot.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// gRPC calls by status code, every code (0 for those not seen).
    pub fn grpc_codes(&self) -> [u64; GRPC_CODES] {
        std::array::from_fn(|i| self.grpc.get(i).map_or(0, |c| c.load(Ordering::Relaxed)))
    }

    /// `(status, count)` for every status seen at least once.
    pub fn statuses(&self) -> Vec<(u16, u64)> {
        self.by_status
            .iter()
            .enumerate()
            .filter_map(|(code, n)| {
                let n = n.load(Ordering::Relaxed);
                (n > 0).then(|| (u16::try_from(code).unwrap_or(0), n))
            })
            .collect()
    }

    /// Cumulative counts per bound of [`LATENCY_BOUNDS`], the total, and the
    /// sum in seconds — the shape of a Prometheus histogram.
    pub fn latency(&self) -> (Vec<u64>, u64, f64) {
        let mut cumulative = Vec::with_capacity(LATENCY_BOUNDS.len());
        let mut running = 0;
        for bucket in self.latency.get(..LATENCY_BOUNDS.len()).unwrap_or_default() {
            running += bucket.load(Ordering::Relaxed);
            cumulative.push(running);
        }
        let total = running
            + self
                .latency
                .get(LATENCY_BOUNDS.len())
                .map_or(0, |b| b.load(Ordering::Relaxed));
        let sum = self.latency_sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        (cumulative, total, sum)
    }
}

/// Kinds of upstream failure counted per backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamErrorKind {
    ConnectFailed,
    ConnectTimeout,
    Timeout,
    Reset,
    Malformed,
}

impl UpstreamErrorKind {
    pub const ALL: [UpstreamErrorKind; 5] = [
        UpstreamErrorKind::ConnectFailed,
        UpstreamErrorKind::ConnectTimeout,
        UpstreamErrorKind::Timeout,
        UpstreamErrorKind::Reset,
        UpstreamErrorKind::Malformed,
    ];

    pub fn label(self) -> &'static str {
        match self {
            UpstreamErrorKind::ConnectFailed => "connect",
            UpstreamErrorKind::ConnectTimeout => "connect_timeout",
            UpstreamErrorKind::Timeout => "timeout",
            UpstreamErrorKind::Reset => "reset",
            UpstreamErrorKind::Malformed => "malformed",
        }
    }

    /// The kind of an upstream failure; `None` for errors that are not the
    /// backend's doing.
    pub fn of(err: ProxyError) -> Option<Self> {
        Some(match err {
            ProxyError::ConnectFailed => UpstreamErrorKind::ConnectFailed,
            ProxyError::ConnectTimeout => UpstreamErrorKind::ConnectTimeout,
            ProxyError::UpstreamTimeout => UpstreamErrorKind::Timeout,
            ProxyError::UpstreamReset => UpstreamErrorKind::Reset,
            ProxyError::UpstreamMalformed => UpstreamErrorKind::Malformed,
            _ => return None,
        })
    }
}

/// Per-backend upstream error counters, by kind.
#[derive(Debug, Default)]
pub struct BackendErrors([AtomicU64; UpstreamErrorKind::ALL.len()]);

impl BackendErrors {
    #[inline]
    pub fn record(&self, kind: UpstreamErrorKind) {
        if let Some(count) = self.0.get(kind as usize) {
            count.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn count(&self, kind: UpstreamErrorKind) -> u64 {
        self.0.get(kind as usize).map_or(0, |c| c.load(Ordering::Relaxed))
    }
}

/// Client connections open right now, across listeners.
pub static OPEN_CONNECTIONS: AtomicU64 = AtomicU64::new(0);

/// Client connections closed on accept because `max_connections` was reached.
pub static REFUSED_CONNECTIONS: AtomicU64 = AtomicU64::new(0);

/// Client connections whose task panicked (caught: only that connection
/// closed). Any count above zero is a bug to report.
pub static CONNECTION_PANICS: AtomicU64 = AtomicU64::new(0);

/// Access-log lines dropped because the writer fell behind (its buffer was
/// full) or could not write (a full disk, a closed stdout).
pub static ACCESS_LOG_DROPPED: AtomicU64 = AtomicU64::new(0);

/// Spans dropped because the exporter fell behind (its queue was full) or
/// the collector did not take them (down, slow, refusing).
pub static SPANS_DROPPED: AtomicU64 = AtomicU64::new(0);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_lands_in_the_first_bound_it_fits() {
        let s = PoolStats::default();
        s.record(200, Duration::from_micros(500));
        s.record(200, Duration::from_millis(30));
        s.record(502, Duration::from_secs(20));
        let (cumulative, total, sum) = s.latency();
        assert_eq!(cumulative[0], 1, "0.5 ms is within 1 ms");
        assert_eq!(cumulative[4], 1, "30 ms is above 25 ms");
        assert_eq!(cumulative[5], 2, "30 ms is within 50 ms");
        assert_eq!(*cumulative.last().unwrap(), 2, "20 s is only in +Inf");
        assert_eq!(total, 3);
        assert!((sum - 20.0305).abs() < 1e-6);
        assert_eq!(s.statuses(), vec![(200, 2), (502, 1)]);
    }
}
