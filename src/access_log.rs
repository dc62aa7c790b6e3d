//! The access log's place in the process: started from the config,
//! reopened on SIGUSR1 (as nginx does after a rotation), moved or turned
//! off by a reload (see `reload`), and flushed at shutdown, as are the
//! spans still waiting for the collector.

use std::sync::Arc;
use std::time::Duration;

use sluice_proxy::Proxy;
use tracing::{error, info};

/// How long shutdown waits for the writer to write what it was given.
const FLUSH_WITHIN: Duration = Duration::from_secs(5);

/// Reopens the access-log file on each SIGUSR1 (the log itself was
/// started with the proxy, see `sluice_proxy::proxy_for`).
pub fn start(proxy: &Arc<Proxy>) {
    #[cfg(unix)]
    {
        let proxy = Arc::clone(proxy);
        tokio::spawn(async move {
            use tokio::signal::unix::{SignalKind, signal};
            let Ok(mut usr1) = signal(SignalKind::user_defined1()) else {
                error!("cannot listen for SIGUSR1; the access log reopens only when its file is renamed or removed");
                return;
            };
            while usr1.recv().await.is_some() {
                info!("SIGUSR1: reopening the access log");
                proxy.access_log().reopen();
            }
        });
    }
}

/// Stops taking lines and spans and waits for the writer to write those it
/// has and the exporter to send its spans.
pub async fn close(proxy: Arc<Proxy>) {
    let _ = tokio::task::spawn_blocking(move || {
        proxy.access_log().close(FLUSH_WITHIN);
        proxy.tracing().close(FLUSH_WITHIN);
    })
    .await;
}
