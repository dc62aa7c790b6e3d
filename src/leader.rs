//! Leadership among replicas on one store, and what a new leader takes
//! over: the rollout a previous process left unfinished, the contract
//! fences; and how this replica is named to the others.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use sluice_control::rollout::{Phase, RESUMED};
use sluice_store::Store;
use tracing::{info, warn};

/// Campaigns for leadership every second; on winning, continues the stored
/// rollout (a leader that died mid-rollout is replaced within seconds); on
/// losing the connection, steps down.
pub async fn lead(
    store: Store,
    engine: Arc<sluice_control::rollout::Engine>,
    defaults: sluice_control::rollout::RolloutDefaults,
    leading: Arc<AtomicBool>,
    replica: Arc<sluice_admin_api::ReplicaView>,
) {
    let mut held: Option<sluice_store::Leadership> = None;
    loop {
        match held.as_mut() {
            None => match store.try_lead(replica.name()).await {
                Ok(Some(lock)) => {
                    held = Some(lock);
                    leading.store(true, std::sync::atomic::Ordering::Relaxed);
                    replica.set_leader(Some(replica.name().to_owned()));
                    info!("this replica now leads the rollout controller and the rollback guard");
                    resume_rollout(&store, &engine, &defaults).await;
                }
                Ok(None) => replica.set_leader(store.leader().await.ok().flatten()),
                Err(e) => {
                    replica.set_leader(None);
                    warn!(error = %e, "cannot campaign for leadership");
                }
            },
            Some(lock) => {
                if !lock.still_held().await {
                    held = None;
                    leading.store(false, std::sync::atomic::Ordering::Relaxed);
                    replica.set_leader(None);
                    warn!("lost the leadership connection; another replica may lead now");
                    // Another replica may take over: never drive it twice.
                    engine.suspend(
                        "suspended: this replica lost its connection to the store and with it the leadership; the \
                         replica that leads next (this one again once PostgreSQL is reachable) continues the rollout \
                         from its stored step",
                    );
                }
            }
        }
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    }
}

/// How this replica is named to the others, `host:admin-port`: followers
/// pass rollout requests to the leader at that address. The host is
/// `SLUICE_REPLICA_HOST` (e.g. the pod IP), else the host name.
pub fn replica_name(admin: std::net::SocketAddr) -> String {
    let host = std::env::var("SLUICE_REPLICA_HOST")
        .ok()
        .filter(|h| !h.trim().is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| admin.ip().to_string());
    format!("{host}:{}", admin.port())
}

/// Contract fences survive restarts: the old version stays refused.
pub async fn load_fences(store: &Store, routing: &sluice_routing::RoutingHandle) {
    match store.fences().await {
        Ok(fences) => {
            for f in fences {
                routing.add_fence(sluice_routing::Fence {
                    pool: f.pool,
                    version: f.version,
                    reason: f.reason,
                });
            }
        }
        Err(e) => warn!(error = %e, "could not read the contract fences"),
    }
}

pub async fn resume_rollout(
    store: &Store,
    engine: &sluice_control::rollout::Engine,
    defaults: &sluice_control::rollout::RolloutDefaults,
) {
    let Ok(latest) = store.rollouts(1).await else { return };
    let Some(stored) = latest.into_iter().next() else {
        return;
    };
    let step = usize::try_from(stored.current_step.max(1) - 1).unwrap_or(0);
    let Some(phase) = Phase::from_stored(&stored.state, step).filter(|p| !p.finished()) else {
        return;
    };
    let request: serde_json::Value = match serde_json::from_str(&stored.spec) {
        Ok(v) => v,
        Err(e) => {
            warn!(id = stored.id, error = %e, "cannot resume a stored rollout");
            return;
        }
    };
    let spec = match sluice_control::rollout::parse_request(&request, defaults) {
        Ok(spec) => spec,
        Err(e) => {
            warn!(id = stored.id, error = %e, "cannot resume a stored rollout");
            return;
        }
    };
    let steps = spec.steps.len();
    // The stored step began at the last transition: only the rest of its
    // hold is left.
    let elapsed = humantime::parse_rfc3339_weak(&stored.updated_at)
        .ok()
        .and_then(|at| std::time::SystemTime::now().duration_since(at).ok())
        .unwrap_or_default();
    let started = match phase {
        Phase::PreChecks => engine.start(spec, request),
        Phase::Monitoring => engine.resume(spec, request, steps, elapsed),
        _ => engine.resume(spec, request, step, elapsed),
    };
    match started {
        Ok(status) => {
            info!(id = stored.id, state = %stored.state, step = stored.current_step, "resuming the unfinished rollout");
            let reason = format!("sluice restarted; continued as rollout {} of this process", status.id);
            if let Err(e) = store
                .update_rollout(stored.id, RESUMED, stored.current_step, &reason, true)
                .await
            {
                warn!(error = %e, "could not close the resumed rollout record");
            }
        }
        Err(e) => warn!(id = stored.id, error = %e, "cannot resume a stored rollout"),
    }
}
