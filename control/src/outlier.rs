//! Passive outlier detection. The request path counts each backend's
//! failures in a row and reports one that reaches the threshold; this task
//! ejects it for `base × ejections` (capped), never more than half of a
//! pool at once, and rebuilds the routing snapshot on the way out and back.

use std::sync::Arc;

use sluice_config::OutlierConfig;
use sluice_routing::RoutingHandle;
use sluice_routing::outlier::OutlierReport;
use tokio::sync::mpsc;
use tracing::{info, warn};

use crate::health::HealthSink;

/// How long the `n`th ejection (1-based) lasts.
pub fn ejection_time(cfg: &OutlierConfig, n: u32) -> std::time::Duration {
    (cfg.base_ejection * n.max(1)).min(cfg.max_ejection)
}

/// Runs until every report sender is gone.
pub async fn run(
    routing: Arc<RoutingHandle>,
    cfg: OutlierConfig,
    mut reports: mpsc::Receiver<OutlierReport>,
    sink: Arc<dyn HealthSink>,
) {
    let mut ejections: std::collections::HashMap<String, u32> = std::collections::HashMap::new();
    while let Some(report) = reports.recv().await {
        let table = routing.snapshot();
        let Some(pool) = table.pool(&report.pool) else { continue };
        let backend = &report.backend;
        if backend.is_ejected() || !pool.backends.iter().any(|b| Arc::ptr_eq(b, backend)) {
            continue;
        }
        let ejected_now = pool.backends.iter().filter(|b| b.is_ejected()).count();
        if (ejected_now + 1) * 2 > pool.backends.len() {
            warn!(pool = %report.pool, backend = backend.addr(), "outlier not ejected: half of the pool is out already");
            continue;
        }
        let key = format!("{}/{}", report.pool, backend.addr());
        let n = ejections.entry(key).and_modify(|n| *n += 1).or_insert(1);
        let duration = ejection_time(&cfg, *n);
        backend.set_ejected(true);
        let detail = format!(
            "{} backend {} ejected for {:?} after {} failures in a row",
            report.pool,
            backend.addr(),
            duration,
            report.failures
        );
        info!(%detail, "outlier ejected");
        routing.refresh_health(&detail).await;
        sink.changed(&report.pool, backend.addr(), false, &detail);
        let (routing, backend, pool, sink) = (
            Arc::clone(&routing),
            Arc::clone(backend),
            report.pool.clone(),
            Arc::clone(&sink),
        );
        tokio::spawn(async move {
            tokio::time::sleep(duration).await;
            backend.set_ejected(false);
            // Start counting afresh.
            backend.record_exchange(false);
            let detail = format!("{pool} backend {} back from ejection", backend.addr());
            routing.refresh_health(&detail).await;
            sink.changed(&pool, backend.addr(), true, &detail);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn ejections_grow_with_each_one_up_to_the_cap() {
        let cfg = OutlierConfig::default();
        assert_eq!(ejection_time(&cfg, 1), Duration::from_secs(30));
        assert_eq!(ejection_time(&cfg, 3), Duration::from_secs(90));
        assert_eq!(ejection_time(&cfg, 20), Duration::from_secs(300));
    }
}
