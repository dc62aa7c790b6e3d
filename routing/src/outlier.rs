//! Consecutive-failure reports: each exchange with a backend counts as
//! a success or a failure; the one that makes `threshold` failures in a
//! row is reported to the control plane's outlier detection.

use std::sync::Arc;

use tokio::sync::mpsc;

use crate::table::Backend;

/// A backend that just reached its threshold of failures in a row.
#[derive(Debug, Clone)]
pub struct OutlierReport {
    pub pool: Arc<str>,
    pub backend: Arc<Backend>,
    pub failures: u32,
}

/// Where reports go, and after how many failures in a row.
#[derive(Debug, Clone)]
pub struct OutlierHook {
    tx: mpsc::Sender<OutlierReport>,
    threshold: u32,
}

impl OutlierHook {
    pub fn new(tx: mpsc::Sender<OutlierReport>, threshold: u32) -> Self {
        Self {
            tx,
            threshold: threshold.max(1),
        }
    }
}

/// Counts one exchange with `backend`; never blocks (a full channel drops
/// the report).
pub fn count_exchange(hook: Option<&OutlierHook>, pool: &Arc<str>, backend: &Arc<Backend>, failed: bool) {
    let failures = backend.record_exchange(failed);
    if let Some(hook) = hook
        && failures == hook.threshold
    {
        let _ = hook.tx.try_send(OutlierReport {
            pool: Arc::clone(pool),
            backend: Arc::clone(backend),
            failures,
        });
    }
}
