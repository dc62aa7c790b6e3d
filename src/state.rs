//! Routing state between the proxy and the store: every change is written
//! (with its audit row and any version switch) before it is served, and at
//! start the last stored state is loaded unless `--reset-state` asks for the
//! config's.

use std::collections::BTreeSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use serde_json::json;
use sluice_config::{Config, MatchOn, MatchRule, UpstreamProtocol};
use sluice_routing::{Actor, Change, PersistError, PoolSpec, RoutingAction, RoutingHandle, RoutingStore, RoutingTable};
use sluice_store::{AuditEntry, DeploymentRecord, MatchRecord, PoolRecord, RoutingRecord, Store};
use tracing::{info, warn};

use crate::error::AppError;

/// Writes routing changes to the store.
#[derive(Debug, Clone)]
pub struct StoreAdapter {
    store: Store,
    environment: Option<String>,
}

impl StoreAdapter {
    /// `environment` (`DEPLOYMENT_ENV`) is recorded with every audit row.
    pub fn new(store: Store, environment: Option<String>) -> Self {
        Self { store, environment }
    }
}

impl RoutingStore for StoreAdapter {
    fn persist<'a>(
        &'a self,
        change: Change<'a>,
    ) -> Pin<Box<dyn Future<Output = Result<(), PersistError>> + Send + 'a>> {
        Box::pin(async move {
            let audit = AuditEntry {
                actor: change.actor.as_str().to_owned(),
                action: change.action.as_str().to_owned(),
                target: "routing".to_owned(),
                before: Some(table_json(change.before).to_string()),
                after: Some(table_json(change.after).to_string()),
                result: change.reason.map_or_else(|| "ok".to_owned(), |r| format!("ok: {r}")),
                request_id: None,
                environment: self.environment.clone(),
            };
            let expected =
                i64::try_from(change.before.generation()).map_err(|e| PersistError::Failed(e.to_string()))?;
            self.store
                .save_routing(
                    Some(expected),
                    &record(change.after, change.actor.as_str()),
                    &audit,
                    &version_switches(change.before, change.after),
                )
                .await
                .map_err(|e| match e {
                    sluice_store::StoreError::Conflict { stored, expected } => PersistError::Conflict(format!(
                        "another replica changed the routing first (generation {stored}, this change was made on \
                         {expected}); nothing was changed; read the current state and try again"
                    )),
                    other => PersistError::Failed(other.to_string()),
                })
        })
    }
}

/// A table as the audit trail shows it.
pub fn table_json(table: &RoutingTable) -> serde_json::Value {
    json!({
        "generation": table.generation(),
        "pools": table.pools().iter().map(|p| json!({
            "name": &*p.name,
            "version": &*p.version,
            "weight": p.weight,
            "backends": p.backends.iter().map(|b| b.addr()).collect::<Vec<_>>(),
            "matches": p.matches.iter().map(|m| match &m.on {
                MatchOn::Header(name) => json!({"header": name, "value": &m.value}),
                MatchOn::Cookie(name) => json!({"cookie": name, "value": &m.value}),
            }).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
    })
}

fn protocol_name(p: UpstreamProtocol) -> &'static str {
    match p {
        UpstreamProtocol::Http1 => "http1",
        UpstreamProtocol::Http2 => "http2",
    }
}

fn record(table: &RoutingTable, actor: &str) -> RoutingRecord {
    RoutingRecord {
        generation: i64::try_from(table.generation()).unwrap_or(i64::MAX),
        pools: table
            .specs()
            .into_iter()
            .map(|s| PoolRecord {
                name: s.name,
                version: s.version,
                weight_hundredths: i64::from(s.weight.hundredths()),
                protocol: protocol_name(s.protocol).to_owned(),
                backends: s.backends,
                matches: s
                    .matches
                    .into_iter()
                    .map(|m| match m.on {
                        MatchOn::Header(name) => MatchRecord {
                            kind: "header".into(),
                            name,
                            value: m.value,
                        },
                        MatchOn::Cookie(name) => MatchRecord {
                            kind: "cookie".into(),
                            name,
                            value: m.value,
                        },
                    })
                    .collect(),
            })
            .collect(),
        updated_by: actor.to_owned(),
        updated_at: sluice_store::now(),
    }
}

/// Pools whose version label changed: the deployment history.
fn version_switches(before: &RoutingTable, after: &RoutingTable) -> Vec<DeploymentRecord> {
    after
        .pools()
        .iter()
        .filter_map(|p| {
            let old = before.pool(&p.name).map(|o| &*o.version);
            (old != Some(&*p.version)).then(|| DeploymentRecord::immediate(&p.name, old, &p.version))
        })
        .collect()
}

fn specs_from_record(record: &RoutingRecord) -> Result<Vec<PoolSpec>, AppError> {
    record
        .pools
        .iter()
        .map(|p| {
            Ok(PoolSpec {
                name: p.name.clone(),
                version: p.version.clone(),
                weight: u32::try_from(p.weight_hundredths)
                    .ok()
                    .and_then(sluice_config::Weight::from_hundredths)
                    .ok_or_else(|| AppError::Other(format!("stored weight of pool {:?} is invalid", p.name)))?,
                protocol: match p.protocol.as_str() {
                    "http2" => UpstreamProtocol::Http2,
                    _ => UpstreamProtocol::Http1,
                },
                backends: p.backends.clone(),
                // TLS settings are config, not state: attached from the file.
                tls: None,
                matches: p
                    .matches
                    .iter()
                    .map(|m| {
                        let on = match m.kind.as_str() {
                            "cookie" => MatchOn::Cookie(m.name.clone()),
                            _ => MatchOn::Header(m.name.clone()),
                        };
                        MatchRule {
                            on,
                            value: m.value.clone(),
                        }
                    })
                    .collect(),
            })
        })
        .collect()
}

/// Every name among `entries` resolved once; a name that resolves to
/// nothing is a warning (its pool gets no backend from it until it does).
async fn initial_names(
    config: &sluice_config::DiscoveryConfig,
    entries: impl Iterator<Item = String>,
) -> sluice_routing::discovered::ResolvedNames {
    let mut names = sluice_routing::discovered::ResolvedNames::new();
    for (name, result) in sluice_control::discovery::resolve_all(config, entries).await {
        match result {
            Ok(found) => {
                info!(name = %name, addresses = found.len(), "DNS discovery: resolved at start");
                names.insert(name, found);
            }
            Err(e) => warn!(
                name = %name,
                error = %e,
                "DNS discovery: resolves to nothing at start; its pool gets no backend from it until it does"
            ),
        }
    }
    names
}

/// Builds the routing handle for `config` on `store`: the stored state when
/// there is one (and `reset` is false), else the config's, which is then
/// stored.
pub async fn open_routing(
    config: &Config,
    store: &Store,
    reset: bool,
    environment: Option<String>,
) -> Result<Arc<RoutingHandle>, AppError> {
    let (config_specs, mut policy) = sluice_routing::routing_from_config(config)?;
    // A health checker runs beside this routing handle: backends added
    // later wait for their first passing probe.
    policy.probe_new_backends = true;
    let adapter: Arc<dyn RoutingStore> = Arc::new(StoreAdapter::new(store.clone(), environment));
    let stored = store.load_routing().await?;
    // Names among the backends (the config's and the stored ones) are
    // resolved once before the first table, so their addresses serve from
    // the start like written ones; discovery follows them from then on.
    let entries = config_specs.iter().flat_map(|s| s.backends.iter().cloned()).chain(
        stored
            .iter()
            .flat_map(|r| r.pools.iter().flat_map(|p| p.backends.iter().cloned())),
    );
    policy.resolved = Arc::new(initial_names(&config.discovery, entries).await);
    let Some(stored) = stored else {
        let handle = RoutingHandle::restore(0, &config_specs, policy, Some(adapter))?;
        handle
            .persist_current(&Actor::ConfigFile, RoutingAction::RoutingInit)
            .await?;
        info!("no stored routing state: starting from the config file and storing it");
        return Ok(Arc::new(handle));
    };
    let generation = u64::try_from(stored.generation).unwrap_or(0);
    let mut stored_specs = specs_from_record(&stored)?;
    for spec in &mut stored_specs {
        spec.tls = config_specs
            .iter()
            .find(|c| c.name == spec.name)
            .and_then(|c| c.tls.clone());
    }
    let handle = RoutingHandle::restore(generation, &stored_specs, policy.clone(), Some(adapter))?;
    if reset {
        handle
            .replace(config_specs, policy, &Actor::ConfigFile, RoutingAction::RoutingReset)
            .await?;
        warn!(
            stored_generation = generation,
            "--reset-state: replaced the stored routing state with the config file's"
        );
        return Ok(Arc::new(handle));
    }
    let in_config: BTreeSet<&str> = config.pools.iter().map(|p| p.name.as_str()).collect();
    let in_store: BTreeSet<&str> = stored.pools.iter().map(|p| p.name.as_str()).collect();
    if in_config != in_store {
        return Err(AppError::Other(format!(
            "the stored routing state has pools {in_store:?} but the config has {in_config:?}; \
             start with --reset-state to take the config's pools and weights"
        )));
    }
    let weights: Vec<String> = stored
        .pools
        .iter()
        .map(|p| {
            format!(
                "{}={}",
                p.name,
                sluice_config::weight_total_text(p.weight_hundredths.unsigned_abs())
            )
        })
        .collect();
    info!(
        generation,
        updated_by = %stored.updated_by,
        updated_at = %stored.updated_at,
        weights = %weights.join(" "),
        "using the stored routing state; the config file's weights and backends are not applied (--reset-state applies them)"
    );
    Ok(Arc::new(handle))
}

/// How often a replica re-reads the stored routing state even without a
/// notification (one can be missed while the listener reconnects).
const RESYNC_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// With a shared PostgreSQL store, serves the routing changes other
/// replicas store: on each NOTIFY, and every few seconds as a safety net.
/// `config_specs` give the pools' TLS settings, which are config, not state.
pub fn follow(store: Store, routing: Arc<RoutingHandle>, config_specs: Vec<PoolSpec>) {
    let Some(mut notifications) = store.follow_routing() else {
        return;
    };
    tokio::spawn(async move {
        let mut resync = tokio::time::interval(RESYNC_EVERY);
        loop {
            tokio::select! {
                note = notifications.recv() => {
                    let Some(generation) = note else { return };
                    // Our own change, or one we already serve.
                    if u64::try_from(generation).unwrap_or(0) <= routing.snapshot().generation() {
                        continue;
                    }
                }
                _ = resync.tick() => {}
            }
            if let Err(e) = sync_once(&store, &routing, &config_specs).await {
                warn!(error = %e, "could not follow a routing change from the store");
            }
        }
    });
}

/// Serves the stored routing state if it is newer than the one served.
async fn sync_once(store: &Store, routing: &RoutingHandle, config_specs: &[PoolSpec]) -> Result<(), AppError> {
    let Some(stored) = store.load_routing().await? else {
        return Ok(());
    };
    let generation = u64::try_from(stored.generation).unwrap_or(0);
    if generation <= routing.snapshot().generation() {
        return Ok(());
    }
    let mut specs = specs_from_record(&stored)?;
    for spec in &mut specs {
        spec.tls = config_specs
            .iter()
            .find(|c| c.name == spec.name)
            .and_then(|c| c.tls.clone());
    }
    if routing
        .adopt(generation, &specs, &Actor::from_recorded(&stored.updated_by))
        .await?
        .is_some()
    {
        info!(generation, by = %stored.updated_by, "serving a routing change made on another replica");
    }
    Ok(())
}

/// Every second: writes this replica's window of each pool to the shared
/// store, and reads the other replicas' (written in the last 3 s) into
/// `peers`, so the leader judges all the traffic.
pub async fn share_windows(
    store: Store,
    routing: Arc<RoutingHandle>,
    peers: Arc<sluice_control::cluster::PeerWindows>,
    span: std::time::Duration,
) {
    let replica = format!("{:016x}", rand::random::<u64>());
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
    // Each pool's running totals since this replica started, for the
    // leader's sequential tests.
    let mut tallies: std::collections::HashMap<String, sluice_routing::totals::Tally> =
        std::collections::HashMap::new();
    loop {
        tick.tick().await;
        let now_ms = i64::try_from(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_millis(),
        )
        .unwrap_or(i64::MAX);
        let table = routing.snapshot();
        let now = tokio::time::Instant::now();
        tallies.retain(|name, _| table.pool(name).is_some());
        for pool in table.pools() {
            let snap = pool.stats.window.snapshot(now, span);
            let totals = tallies
                .entry(pool.name.to_string())
                .or_insert_with(|| sluice_routing::totals::Tally::start(pool, now))
                .advance(pool, now);
            let record = sluice_store::WindowRecord {
                replica: replica.clone(),
                pool: pool.name.to_string(),
                requests: i64::try_from(snap.requests).unwrap_or(i64::MAX),
                errors: i64::try_from(snap.errors).unwrap_or(i64::MAX),
                upstream_failures: i64::try_from(snap.upstream_failures).unwrap_or(i64::MAX),
                latency: snap.latency_counts().to_vec(),
                totals: totals.encode(),
            };
            if let Err(e) = store.publish_window(&record, now_ms).await {
                warn!(error = %e, "could not share this replica's window");
            }
        }
        match store.peer_windows(&replica, now_ms - 3000).await {
            Ok(records) => {
                let mut by_pool: std::collections::HashMap<String, sluice_routing::window::WindowSnapshot> =
                    std::collections::HashMap::new();
                let mut totals: std::collections::HashMap<String, Vec<(String, sluice_routing::totals::Totals)>> =
                    std::collections::HashMap::new();
                for r in records {
                    if let Some(t) = sluice_routing::totals::Totals::decode(&r.totals) {
                        totals.entry(r.pool.clone()).or_default().push((r.replica.clone(), t));
                    }
                    let snap = sluice_routing::window::WindowSnapshot::from_parts(
                        span,
                        u64::try_from(r.requests).unwrap_or(0),
                        u64::try_from(r.errors).unwrap_or(0),
                        u64::try_from(r.upstream_failures).unwrap_or(0),
                        r.latency,
                    );
                    by_pool.entry(r.pool).and_modify(|s| s.merge(&snap)).or_insert(snap);
                }
                peers.set(by_pool);
                peers.set_totals(totals);
            }
            Err(e) => warn!(error = %e, "could not read the other replicas' windows"),
        }
    }
}
