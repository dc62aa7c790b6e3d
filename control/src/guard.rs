//! The automatic rollback guard.
//!
//! After any change that gives a pool more traffic, that pool is the
//! *candidate* for the protection period (30 min by default) and the weights
//! before the change are the *known-good* ones. Every evaluation interval
//! the candidate's live window is judged ([`judge`], a pure function); after
//! enough consecutive breaches the known-good weights come back in one
//! routing change, audited with the measured reason, counted and alerted.
//!
//! False rollbacks cost as much as missed ones, so a breach needs volume
//! (`min_requests`), statistical significance (a pool truly at the error
//! threshold would show this many errors less than 0.1% of the time), a candidate
//! worse than the stable pool when the stable pool has data, and several
//! breaching evaluations in a row.

use std::collections::HashMap;
use std::sync::Arc;

use sluice_config::{RollbackConfig, Weight};
use sluice_routing::window::WindowSnapshot;
use sluice_routing::{Actor, RoutingAction, WeightChange};
use sluice_routing::{RoutingHandle, RoutingTable};
use tokio::sync::broadcast::error::TryRecvError;
use tokio::time::Instant;
use tracing::{info, warn};

use crate::alerts::{Alert, Alerter};

/// Significance required before an error ratio counts as a breach: the
/// chance that a pool truly at the threshold shows this many errors must
/// be below 0.1%.
const ALPHA: f64 = 0.001;

/// What one evaluation concluded.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Not enough requests in the window to judge.
    Insufficient {
        requests: u64,
    },
    Healthy,
    Breach {
        kind: BreachKind,
        reason: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreachKind {
    ErrorRatio,
    Latency,
}

impl BreachKind {
    pub const ALL: [BreachKind; 2] = [BreachKind::ErrorRatio, BreachKind::Latency];

    pub fn label(self) -> &'static str {
        match self {
            BreachKind::ErrorRatio => "error_ratio",
            BreachKind::Latency => "latency",
        }
    }
}

/// P(X >= errors) for X ~ Binomial(n, p): how likely a pool whose true error
/// rate is `p` shows at least `errors` errors in `n` requests. Exact for
/// small expected counts, a normal approximation beyond.
pub fn tail_probability(errors: u64, n: u64, p: f64) -> f64 {
    if errors == 0 {
        return 1.0;
    }
    if errors > n {
        return 0.0;
    }
    let expected = n as f64 * p;
    if expected >= 20.0 {
        // Normal approximation (continuity-corrected) where it is accurate.
        let sd = (expected * (1.0 - p)).sqrt();
        let z = (errors as f64 - 0.5 - expected) / sd;
        return 0.5 * erfc(z / std::f64::consts::SQRT_2);
    }
    // 1 - P(X < errors), summing terms iteratively.
    let q = 1.0 - p;
    let mut term = q.powf(n as f64);
    let mut below = term;
    for k in 0..errors - 1 {
        term *= (n - k) as f64 / (k + 1) as f64 * p / q;
        below += term;
    }
    (1.0 - below).max(0.0)
}

/// Complementary error function (Abramowitz–Stegun 7.1.26, |error| < 1.5e-7).
fn erfc(x: f64) -> f64 {
    let t = 1.0 / (1.0 + 0.327_591_1 * x.abs());
    let poly =
        t * (0.254_829_592 + t * (-0.284_496_736 + t * (1.421_413_741 + t * (-1.453_152_027 + t * 1.061_405_429))));
    let r = poly * (-x * x).exp();
    if x >= 0.0 { r } else { 2.0 - r }
}

/// Judges the candidate pool's window against the policy and, when it has
/// enough data of its own, the stable pool's window over the same span.
pub fn judge(
    pool: &str,
    candidate: &WindowSnapshot,
    stable: Option<&WindowSnapshot>,
    policy: &RollbackConfig,
) -> Verdict {
    if candidate.requests < policy.min_requests.max(1) {
        return Verdict::Insufficient {
            requests: candidate.requests,
        };
    }
    let stable = stable.filter(|s| s.requests >= policy.min_requests.max(1));
    let ratio = candidate.error_ratio();
    let confident = ratio > policy.max_error_ratio
        && tail_probability(candidate.errors, candidate.requests, policy.max_error_ratio) < ALPHA;
    // A candidate no worse than what it replaces is not the problem.
    let worse_than_stable = stable.is_none_or(|s| ratio > s.error_ratio() + policy.max_error_ratio / 2.0);
    if confident && worse_than_stable {
        return Verdict::Breach {
            kind: BreachKind::ErrorRatio,
            reason: format!(
                "{pool} error ratio {ratio:.3} > {} over {} requests",
                policy.max_error_ratio, candidate.requests
            ),
        };
    }
    if let Some(p95) = candidate.quantile(0.95)
        && p95 > policy.max_p95
    {
        let stable_fast = stable
            .and_then(|s| s.quantile(0.95))
            .is_none_or(|s| s <= policy.max_p95);
        if stable_fast {
            return Verdict::Breach {
                kind: BreachKind::Latency,
                reason: format!(
                    "{pool} p95 {} ms > {} ms over {} requests",
                    p95.as_millis(),
                    policy.max_p95.as_millis(),
                    candidate.requests
                ),
            };
        }
    }
    Verdict::Healthy
}

/// The first of `candidate`'s routes (`[[analysis.routes]]`) that
/// breaches, each judged as a pool is, against the same route of `stable`
/// when there is one, over `span` up to `now`: a route that breaks is a
/// breach even when the pool's average is fine. Counts only: latency is
/// judged per pool.
pub fn judge_routes(
    table: &RoutingTable,
    candidate: &str,
    stable: Option<&str>,
    policy: &RollbackConfig,
    (span, now): (std::time::Duration, Instant),
) -> Option<Verdict> {
    let rules = &table.policy().routes;
    if rules.is_empty() {
        return None;
    }
    let pool = table.pool(candidate)?;
    let stable = stable.and_then(|s| table.pool(s));
    rules.iter().enumerate().find_map(|(i, rule)| {
        let route = pool.routes.snapshot(i, now, span);
        let base = stable.map(|p| p.routes.snapshot(i, now, span));
        match judge(
            &format!("{candidate} route {}", rule.name),
            &route,
            base.as_ref(),
            policy,
        ) {
            breach @ Verdict::Breach { .. } => Some(breach),
            _ => None,
        }
    })
}

/// A pool being watched after it gained traffic.
#[derive(Debug, Clone)]
struct Watch {
    candidate: String,
    stable: Option<String>,
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
    loop {
        tick.tick().await;
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
                        watch = Some(Watch {
                            candidate,
                            stable,
                            known_good: last.clone(),
                            until: Instant::now() + policy.protection,
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
        let mut candidate = pool.stats.window.snapshot(now, policy.window);
        peers.add_to(&w.candidate, &mut candidate);
        let stable = w.stable.as_deref().and_then(|s| table.pool(s)).map(|p| {
            let mut snap = p.stats.window.snapshot(now, policy.window);
            peers.add_to(&p.name, &mut snap);
            snap
        });
        let verdict = match judge(&w.candidate, &candidate, stable.as_ref(), &policy) {
            breach @ Verdict::Breach { .. } => breach,
            other => {
                judge_routes(&table, &w.candidate, w.stable.as_deref(), &policy, (policy.window, now)).unwrap_or(other)
            }
        };
        match verdict {
            Verdict::Breach { kind, reason } => {
                w.breaches += 1;
                if w.breaches < policy.consecutive_breaches {
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
