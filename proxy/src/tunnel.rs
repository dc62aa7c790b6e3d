//! Upgraded connections (WebSockets): bytes copied both ways until either
//! side closes, each counted while open so a drain can wait for them.

use std::sync::Arc;

use hyper_util::rt::TokioIo;
use tracing::debug;

use sluice_routing::table::InFlight;

#[derive(Debug, Default)]
pub(crate) struct Tunnels {
    open: std::sync::atomic::AtomicUsize,
    closed: tokio::sync::Notify,
}

/// Counts one open tunnel while it lives.
impl Tunnels {
    pub(crate) fn open(&self) -> usize {
        self.open.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Waits until every upgraded connection has closed, at most until
    /// `deadline`; whether they all did.
    pub(crate) async fn wait_closed(&self, deadline: tokio::time::Instant) -> bool {
        loop {
            let closed = self.closed.notified();
            tokio::pin!(closed);
            // Registered before the count is read, so a close in between
            // is not missed.
            closed.as_mut().enable();
            if self.open() == 0 {
                return true;
            }
            if tokio::time::timeout_at(deadline, closed).await.is_err() {
                return self.open() == 0;
            }
        }
    }
}

pub(crate) struct TunnelGuard(Arc<Tunnels>);

impl TunnelGuard {
    pub(crate) fn open(tunnels: &Arc<Tunnels>) -> Self {
        tunnels.open.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        Self(Arc::clone(tunnels))
    }
}

impl Drop for TunnelGuard {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
        self.0.closed.notify_waiters();
    }
}

/// Copies bytes both ways between an upgraded client and backend connection
/// until either side closes.
pub(crate) async fn tunnel(
    client: hyper::upgrade::OnUpgrade,
    upstream: hyper::upgrade::OnUpgrade,
    _in_flight: InFlight,
    _open: TunnelGuard,
) {
    let (client, upstream) = match tokio::try_join!(client, upstream) {
        Ok(pair) => pair,
        Err(e) => {
            debug!(error = %e, "upgrade did not complete");
            return;
        }
    };
    let mut client = TokioIo::new(client);
    let mut upstream = TokioIo::new(upstream);
    if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
        debug!(error = %e, "upgraded connection ended with an error");
    }
}
