//! The backend-connection sweep: every few seconds, the data plane's idle
//! connections are checked against the routing table being served. Stale
//! ones close; those of backends gone from the table are dropped.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use sluice_proxy::Upstreams;
use sluice_routing::RoutingHandle;

/// How often idle connections are checked for a backend's close.
const SWEEP_EVERY: Duration = Duration::from_secs(2);

pub async fn run(routing: Arc<RoutingHandle>, upstreams: Upstreams) {
    let mut tick = tokio::time::interval(SWEEP_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let live: BTreeSet<_> = routing
            .snapshot()
            .pools()
            .iter()
            .flat_map(|p| &p.backends)
            .map(|b| b.id())
            .collect();
        upstreams.sweep(&live);
    }
}
