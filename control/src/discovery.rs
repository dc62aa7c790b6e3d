//! DNS service discovery: every name among the pools' backends (`host:port`
//! for A/AAAA, `_service._proto.name` for SRV) is resolved on its record's
//! TTL, clamped to `[discovery] min_interval`..`max_interval`, and what it
//! resolves to is handed to the routing table
//! ([`RoutingHandle::set_resolved`]): new addresses wait for a passing
//! probe, vanished ones are drained. A failed resolution keeps the last
//! good set (an empty answer after a good one is a failure too) and alerts
//! once it is older than `stale_alert_after`. Each replica resolves on its
//! own; only names are stored and shared.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use hickory_resolver::config::{NameServerConfigGroup, ResolverConfig};
use hickory_resolver::name_server::TokioConnectionProvider;
use hickory_resolver::{ResolveError, TokioResolver};
use sluice_config::{BackendTarget, DiscoveryConfig};
use sluice_routing::RoutingHandle;
use sluice_routing::discovered::{Resolved, is_name};
use tokio::time::Instant;
use tracing::{info, warn};

/// Where discovery reports what it does: metrics, audit rows, alerts.
pub trait DiscoverySink: Send + Sync {
    /// One resolution of `name`: `ok`, `empty` or `error`.
    fn resolved(&self, name: &str, result: &str, addresses: usize);
    /// `name` now resolves to other addresses.
    fn changed(&self, name: &str, added: &[String], removed: &[String]);
    /// `name` has not resolved for `for_how_long` (the last good set serves).
    fn stale(&self, name: &str, for_how_long: Duration, error: &str);
    /// `name` returned `found` addresses; only the first `kept` are used.
    fn capped(&self, name: &str, found: usize, kept: usize);
}

/// A resolver for `config`: its name servers, else the system's.
pub fn resolver(config: &DiscoveryConfig) -> Result<TokioResolver, ResolveError> {
    let mut builder = if config.nameservers.is_empty() {
        TokioResolver::builder_tokio()?
    } else {
        let mut group = NameServerConfigGroup::new();
        for ns in &config.nameservers {
            group.merge(NameServerConfigGroup::from_ips_clear(&[ns.ip()], ns.port(), true));
        }
        TokioResolver::builder_with_config(
            ResolverConfig::from_parts(None, Vec::new(), group),
            TokioConnectionProvider::default(),
        )
    };
    let opts = builder.options_mut();
    opts.timeout = Duration::from_secs(2);
    opts.attempts = 2;
    // Both families: every address of a name is a backend.
    opts.ip_strategy = hickory_resolver::config::LookupIpStrategy::Ipv4AndIpv6;
    // The answer's own TTL decides when to ask again; no older copies.
    opts.positive_max_ttl = Some(config.max_interval);
    opts.negative_max_ttl = Some(config.min_interval);
    Ok(builder.build())
}

/// What `entry` resolves to now, and how long the answer holds (the
/// records' TTL). Addresses sorted; SRV targets each resolved in turn.
pub async fn resolve(resolver: &TokioResolver, entry: &str) -> Result<(Vec<Resolved>, Duration), String> {
    // hickory's answers say when they expire on the std clock.
    #[allow(clippy::disallowed_types)]
    let now = std::time::Instant::now();
    let mut found = Vec::new();
    let valid_until = match BackendTarget::parse(entry) {
        Ok(BackendTarget::Host { host, port }) => {
            let answer = resolver.lookup_ip(host.as_str()).await.map_err(|e| e.to_string())?;
            let name: Arc<str> = host.as_str().into();
            for ip in answer.iter() {
                found.push(Resolved {
                    addr: std::net::SocketAddr::new(ip, port).to_string(),
                    host: Arc::clone(&name),
                    weight: 1,
                });
            }
            answer.valid_until()
        }
        Ok(BackendTarget::Srv { name }) => {
            let answer = resolver.srv_lookup(name.as_str()).await.map_err(|e| e.to_string())?;
            let mut until = answer.as_lookup().valid_until();
            // RFC 2782: the lowest priority's targets serve, each in
            // proportion to its weight (0 as the smallest share).
            let best = answer.iter().map(|s| s.priority()).min().unwrap_or(0);
            for srv in answer.iter().filter(|s| s.priority() == best) {
                let target = srv.target().to_utf8();
                let target = target.trim_end_matches('.');
                let ips = resolver.lookup_ip(target).await.map_err(|e| format!("{target}: {e}"))?;
                until = until.min(ips.valid_until());
                let host: Arc<str> = target.into();
                for ip in ips.iter() {
                    found.push(Resolved {
                        addr: std::net::SocketAddr::new(ip, srv.port()).to_string(),
                        host: Arc::clone(&host),
                        weight: u32::from(srv.weight()).max(1),
                    });
                }
            }
            until
        }
        _ => return Err(format!("{entry:?} is not a name")),
    };
    found.sort();
    found.dedup();
    Ok((found, valid_until.saturating_duration_since(now)))
}

/// One name's state between resolutions.
struct Followed {
    due: Instant,
    /// When it last resolved to a non-empty set (`None`: never).
    good_at: Option<Instant>,
    alerted: bool,
    /// Over `max_backends_per_name` already alerted (once, until it is not).
    capped: bool,
}

/// Follows every name among the pools' backends until the process ends.
pub async fn run(routing: Arc<RoutingHandle>, config: DiscoveryConfig, sink: Arc<dyn DiscoverySink>) {
    let resolver = match resolver(&config) {
        Ok(r) => r,
        Err(e) => {
            warn!(error = %e, "DNS discovery cannot start (no resolver configuration); names among the backends are not followed");
            return;
        }
    };
    let mut followed: HashMap<String, Followed> = HashMap::new();
    let tick = config.min_interval.min(Duration::from_secs(1));
    loop {
        let names = names_in(&routing);
        followed.retain(|name, _| names.contains(name));
        let now = Instant::now();
        for name in names {
            let state = followed.entry(name.clone()).or_insert(Followed {
                due: now,
                good_at: None,
                alerted: false,
                capped: false,
            });
            if state.due > now {
                continue;
            }
            let outcome = resolve(&resolver, &name).await;
            let now = Instant::now();
            match outcome {
                Ok((mut found, ttl)) if !found.is_empty() => {
                    state.due = now + ttl.clamp(config.min_interval, config.max_interval);
                    state.good_at = Some(now);
                    if state.alerted {
                        info!(name = %name, "DNS discovery resolves again");
                        state.alerted = false;
                    }
                    let over = found.len() > config.max_backends_per_name;
                    if over && !state.capped {
                        sink.capped(&name, found.len(), config.max_backends_per_name);
                    }
                    state.capped = over;
                    found.truncate(config.max_backends_per_name);
                    sink.resolved(&name, "ok", found.len());
                    let (added, removed) = routing.set_resolved(&name, found).await;
                    if !added.is_empty() || !removed.is_empty() {
                        info!(name = %name, ?added, ?removed, "DNS discovery: the name's addresses changed");
                        sink.changed(&name, &added, &removed);
                    }
                }
                other => {
                    let (result, error) = match other {
                        Err(e) => ("error", e),
                        Ok(_) => ("empty", "no addresses".to_owned()),
                    };
                    sink.resolved(&name, result, 0);
                    // Failure is not emptiness: the last good set stays.
                    state.due = now + config.min_interval;
                    if state.good_at.is_none() {
                        // Never resolved: nothing to keep, nothing served.
                        routing.set_resolved(&name, Vec::new()).await;
                    }
                    let since = state
                        .good_at
                        .map_or(Duration::MAX, |t| now.saturating_duration_since(t));
                    if since >= config.stale_alert_after && !state.alerted {
                        state.alerted = true;
                        warn!(name = %name, %error, "DNS discovery failing; the last good addresses keep serving");
                        sink.stale(&name, since, &error);
                    }
                }
            }
        }
        tokio::time::sleep(tick).await;
    }
}

/// The names among the current pools' backends.
fn names_in(routing: &RoutingHandle) -> Vec<String> {
    let table = routing.snapshot();
    let mut names: Vec<String> = table
        .pools()
        .iter()
        .flat_map(|p| p.entries.iter())
        .filter(|e| is_name(e))
        .cloned()
        .collect();
    names.sort();
    names.dedup();
    names
}

/// Resolves every name among `entries` once (at start, and for
/// `check-config --resolve`): each name's addresses, or why it has none.
pub async fn resolve_all(
    config: &DiscoveryConfig,
    entries: impl Iterator<Item = String>,
) -> Vec<(String, Result<Vec<Resolved>, String>)> {
    let mut names: Vec<String> = entries.filter(|e| is_name(e)).collect();
    names.sort();
    names.dedup();
    if names.is_empty() {
        return Vec::new();
    }
    let resolver = match resolver(config) {
        Ok(r) => r,
        Err(e) => return names.into_iter().map(|n| (n, Err(e.to_string()))).collect(),
    };
    let mut out = Vec::with_capacity(names.len());
    for name in names {
        let result = match resolve(&resolver, &name).await {
            Ok((found, _)) if found.is_empty() => Err("no addresses".to_owned()),
            Ok((mut found, _)) => {
                found.truncate(config.max_backends_per_name);
                Ok(found)
            }
            Err(e) => Err(e),
        };
        out.push((name, result));
    }
    out
}
