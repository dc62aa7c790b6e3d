//! The automatic rollback guard.
//!
//! After any change that gives a pool more traffic, that pool is the
//! *candidate* for the protection period (30 min by default) and the weights
//! before the change are the *known-good* ones. Every evaluation interval
//! everything the candidate served since the change is judged
//! ([`crate::sequential::judge`], a pure function); after enough
//! consecutive breaches the known-good weights come back in one routing
//! change, audited with the measured reason, counted and alerted.
//!
//! False rollbacks cost as much as missed ones, so a breach needs volume
//! (`min_requests`), sequential evidence that keeps the chance of ever
//! blaming a pool that is exactly at its thresholds below `[rollback]
//! alpha` over the whole protection period, a candidate worse than the
//! stable pool when the stable pool has data, and several breaching
//! evaluations in a row.

use std::collections::HashMap;
use std::sync::Arc;

use sluice_config::{RollbackConfig, Weight};
use sluice_routing::{Actor, RoutingAction, WeightChange};
use sluice_routing::{RoutingHandle, RoutingTable};
use tokio::sync::broadcast::error::TryRecvError;
use tokio::time::Instant;
use tracing::{info, warn};

use crate::alerts::{Alert, Alerter};
use crate::compare::{Comparison, Pair, compare};
use crate::sequential::{self, Since};

pub use crate::verdict::{BreachKind, Verdict};

/// A pool being watched after it gained traffic.
#[derive(Debug)]
struct Watch {
    candidate: String,
    stable: Option<String>,
    /// Everything each has served since the change, for the sequential test.
    candidate_since: Since,
    stable_since: Option<Since>,
    known_good: HashMap<String, Weight>,
    until: Instant,
    breaches: u32,
    alerted: bool,
}

fn weights(table: &RoutingTable) -> HashMap<String, Weight> {
    table.pools().iter().map(|p| (p.name.to_string(), p.weight)).collect()
}

/// The pool that gained the most weight from `before` to `after`, if any.
fn gainer(before: &HashMap<String, Weight>, after: &RoutingTable) -> Option<String> {
    after
        .pools()
        .iter()
        .filter_map(|p| {
            let old = before.get(&*p.name).copied().unwrap_or_default();
            (p.weight > old).then(|| (p.weight.saturating_sub(old), p.name.to_string()))
        })
        .max()
        .map(|(_, name)| name)
}

/// Counts rollbacks for the metrics exporter.
pub trait RollbackCounter: Send + Sync {
    fn rollback(&self, pool: &str, reason: &str);
}

/// Runs the guard until the routing handle goes away.
pub async fn run(
    routing: Arc<RoutingHandle>,
    policy: RollbackConfig,
    alerter: Alerter,
    counter: Arc<dyn RollbackCounter>,
) {
    let always = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let alone = Arc::new(crate::cluster::PeerWindows::default());
    run_while_leading(routing, policy, alerter, counter, always, alone).await;
}

/// [`run`] on one of several replicas: it follows every change, but only
/// judges and acts while `leading` is set, so one replica decides, on its
/// own traffic plus the other replicas' windows (`peers`).
pub async fn run_while_leading(
    routing: Arc<RoutingHandle>,
    policy: RollbackConfig,
    alerter: Alerter,
    counter: Arc<dyn RollbackCounter>,
    leading: Arc<std::sync::atomic::AtomicBool>,
    peers: Arc<crate::cluster::PeerWindows>,
) {
    let mut changes = routing.subscribe();
    let mut last = weights(&routing.snapshot());
    let mut watch: Option<Watch> = None;
    let mut tick = tokio::time::interval(policy.evaluation_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_tick = Instant::now();
    let comparison = Comparison::of_guard(&policy);
    loop {
        tick.tick().await;
        // A change seen now happened since the last tick: a watch counts
        // from there, not from when it is noticed.
        let changed_after = std::mem::replace(&mut last_tick, Instant::now());
        // Follow what changed since the last evaluation.
        loop {
            match changes.try_recv() {
                Ok(event) => {
                    let table = routing.snapshot();
                    if event.actor == Actor::Guard || event.action == RoutingAction::Rollback {
                        watch = None;
                    } else if let Some(candidate) = gainer(&last, &table) {
                        let stable = last
                            .iter()
                            .filter(|(name, _)| **name != candidate)
                            .max_by_key(|(_, w)| **w)
                            .map(|(name, _)| name.clone());
                        info!(pool = %candidate, "rollback guard watching the pool that gained traffic");
                        let now = Instant::now();
                        let from = changed_after;
                        watch = table.pool(&candidate).map(|pool| Watch {
                            candidate_since: Since::start(pool, &peers, from),
                            stable_since: stable
                                .as_deref()
                                .and_then(|s| table.pool(s))
                                .map(|p| Since::start(p, &peers, from)),
                            candidate,
                            stable,
                            known_good: last.clone(),
                            until: now + policy.protection,
                            breaches: 0,
                            alerted: false,
                        });
                    }
                    last = weights(&table);
                }
                Err(TryRecvError::Lagged(_)) => last = weights(&routing.snapshot()),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Closed) => return,
            }
        }
        if !leading.load(std::sync::atomic::Ordering::Relaxed) {
            continue;
        }
        let Some(w) = watch.as_mut() else { continue };
        if Instant::now() > w.until {
            info!(pool = %w.candidate, "protection period over; rollback guard stands down");
            watch = None;
            continue;
        }
        let table = routing.snapshot();
        let now = Instant::now();
        let Some(pool) = table.pool(&w.candidate) else {
            watch = None;
            continue;
        };
        // Everything since the change, judged sequentially (module docs of
        // `sequential`): the false-alarm level holds for the whole period.
        let candidate = w.candidate_since.totals(pool, &peers, now);
        let stable = match (&mut w.stable_since, w.stable.as_deref().and_then(|s| table.pool(s))) {
            (Some(since), Some(p)) => Some(since.totals(p, &peers, now)),
            _ => None,
        };
        let proven = sequential::judge(
            &w.candidate,
            &candidate,
            stable.as_ref(),
            &table.policy().routes,
            &policy,
        );
        // Sequential evidence is proof at the configured level: acted on
        // at once. A comparison over a window needs breaches in a row.
        let decisive = matches!(proven, Verdict::Breach { .. });
        let verdict = match proven {
            // Then, when `[rollback]` asks for it, against the stable pool
            // over the window.
            Verdict::Healthy => match (&comparison, w.stable.as_deref().and_then(|s| table.pool(s))) {
                (Some(c), Some(s)) => {
                    let window = |p: &sluice_routing::table::Pool| {
                        let mut snap = p.stats.window.snapshot(now, policy.window);
                        peers.add_to(&p.name, &mut snap);
                        snap
                    };
                    let pair = Pair {
                        to: &w.candidate,
                        from: &s.name,
                        min_requests: policy.min_requests,
                    };
                    compare(&pair, c, &window(pool), Some(&window(s)))
                }
                _ => Verdict::Healthy,
            },
            other => other,
        };
        match verdict {
            Verdict::Breach { kind, reason } => {
                w.breaches += 1;
                if !decisive && w.breaches < policy.consecutive_breaches {
                    continue;
                }
                if !policy.enabled {
                    if !w.alerted {
                        w.alerted = true;
                        alerter.raise(Alert {
                            kind: "rollback-advised",
                            pool: w.candidate.clone(),
                            message: format!("{reason}; automatic rollback is off"),
                        });
                    }
                    continue;
                }
                if let Some(fence) = routing.fenced(&w.known_good) {
                    // A contract step ran: the old version may not work any
                    // more, so putting it back could make things worse.
                    warn!(pool = %w.candidate, %reason, "automatic rollback refused: {fence}");
                    alerter.raise(Alert {
                        kind: "rollback-refused",
                        pool: w.candidate.clone(),
                        message: format!("{reason}; not rolled back: {fence}"),
                    });
                    watch = None;
                    continue;
                }
                match routing
                    .change_weights(WeightChange {
                        weights: &w.known_good,
                        actor: Actor::Guard,
                        action: RoutingAction::Rollback,
                        reason: Some(&reason),
                        // The fence was checked above, with its own alert.
                        force: true,
                    })
                    .await
                {
                    Ok(table) => {
                        warn!(pool = %w.candidate, %reason, generation = table.generation(), "automatic rollback");
                        counter.rollback(&w.candidate, kind.label());
                        alerter.raise(Alert {
                            kind: "rollback",
                            pool: w.candidate.clone(),
                            message: format!("rolled back: {reason}"),
                        });
                        watch = None;
                    }
                    Err(e) => {
                        warn!(pool = %w.candidate, error = %e, "automatic rollback failed; will retry");
                    }
                }
            }
            Verdict::Healthy | Verdict::Insufficient { .. } => w.breaches = 0,
        }
    }
}

#[cfg(test)]
mod tests;
