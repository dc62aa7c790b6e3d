//! Anytime-valid judgement: a mixture sequential probability ratio test on
//! every request since a pool began to be watched (the rollback guard's
//! protection period, a rollout step), instead of a fixed-window test
//! repeated every tick — which, repeated 1,800 times over a 30-minute
//! protection period, adds its false alarms up.
//!
//! For each rate a pool must stay under (errors: `max_error_ratio`;
//! requests slower than `max_p95`: 5%, which is what "P95 under
//! `max_p95`" means), the evidence is the average over a few alternative
//! rates `p₁ > p₀` of the likelihood ratio
//! `(p₁/p₀)^x · ((1−p₁)/(1−p₀))^(n−x)` for `x` events in `n` requests. Under
//! any true rate at or below `p₀` each ratio, and so their average, is a
//! non-negative supermartingale with mean at most 1, so by Ville's
//! inequality the chance that it *ever* reaches `1/α` — at any request,
//! read at any tick, for however long — is at most `α`. Each of a pool's
//! tests (errors, latency, every route's errors) gets an equal share of
//! `[rollback] alpha`, so all of them together stay within it. A clearly
//! bad pool crosses quickly; the expected number of requests is
//! `ln(K·tests/α) / max_k D_k`, `D_k` the drift of alternative `k` at the
//! true rate (docs/operations.md shows the numbers).

use std::collections::HashMap;

use sluice_config::RollbackConfig;
use sluice_routing::routes::RouteRule;
use sluice_routing::table::Pool;
use sluice_routing::totals::{Tally, Totals};
use tokio::time::Instant;

use crate::cluster::PeerWindows;
use crate::verdict::{BreachKind, Verdict};

/// The alternatives, as multiples of the rate tested: a grid from "a bit
/// worse" to "broken", averaged with equal weights.
const ALTERNATIVES: [f64; 6] = [1.5, 2.0, 3.0, 5.0, 10.0, 30.0];

/// The share of requests allowed above `max_p95`.
pub const SLOW_SHARE: f64 = 0.05;

/// The log of the mixture's evidence that the rate of an event is above
/// `p0`, from `events` in `trials`.
pub fn log_evidence(events: u64, trials: u64, p0: f64) -> f64 {
    let p0 = p0.clamp(1e-9, 0.999);
    let (x, rest) = (events as f64, trials.saturating_sub(events) as f64);
    let logs: Vec<f64> = ALTERNATIVES
        .iter()
        .map(|r| {
            let p1 = (p0 * r).min((1.0 + p0) / 2.0);
            x * (p1 / p0).ln() + rest * ((1.0 - p1) / (1.0 - p0)).ln()
        })
        .collect();
    let top = logs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    top + logs.iter().map(|l| (l - top).exp()).sum::<f64>().ln() - (ALTERNATIVES.len() as f64).ln()
}

/// Requests a pool whose true rate is `p` needs, on average, before the
/// evidence against `p0` reaches `1/alpha` (`None` when `p <= p0`).
pub fn expected_requests(p: f64, p0: f64, alpha: f64) -> Option<f64> {
    let drift = ALTERNATIVES
        .iter()
        .map(|r| {
            let p1 = (p0 * r).min((1.0 + p0) / 2.0);
            p * (p1 / p0).ln() + (1.0 - p) * ((1.0 - p1) / (1.0 - p0)).ln()
        })
        .fold(f64::NEG_INFINITY, f64::max);
    (p > p0 && drift > 0.0).then(|| ((ALTERNATIVES.len() as f64) / alpha).ln() / drift)
}

/// Each test's share of `alpha` for a pool judged with `routes` routes.
pub fn level(policy: &RollbackConfig, routes: usize) -> f64 {
    policy.alpha / (2 + routes) as f64
}

/// Judges everything `candidate` served since the watch began, against
/// `stable` over the same span when it has enough of its own: the error
/// ratio, the latency, and each route's error ratio.
pub fn judge(
    pool: &str,
    candidate: &Totals,
    stable: Option<&Totals>,
    routes: &[RouteRule],
    policy: &RollbackConfig,
) -> Verdict {
    let c = &candidate.pool;
    let min = policy.min_requests.max(1);
    if c.requests < min {
        return Verdict::Insufficient { requests: c.requests };
    }
    let alpha = level(policy, routes.len());
    let bar = (1.0 / alpha).ln();
    let stable_pool = stable.map(|s| &s.pool).filter(|s| s.requests >= min);
    // Errors: a candidate no worse than what it replaces is not the problem.
    let errors = log_evidence(c.errors, c.requests, policy.max_error_ratio);
    let worse = |mine: f64, theirs: Option<f64>| theirs.is_none_or(|t| mine > t + policy.max_error_ratio / 2.0);
    if errors >= bar && worse(c.error_ratio(), stable_pool.map(|s| s.error_ratio())) {
        return Verdict::Breach {
            kind: BreachKind::ErrorRatio,
            reason: format!(
                "{pool} error ratio {:.3} > {} over {} requests (evidence {:.0} ≥ {:.0})",
                c.error_ratio(),
                policy.max_error_ratio,
                c.requests,
                errors.exp(),
                1.0 / alpha
            ),
        };
    }
    let slow = c.slower_than(policy.max_p95);
    let latency = log_evidence(slow, c.requests, SLOW_SHARE);
    let stable_fast =
        stable_pool.is_none_or(|s| (s.slower_than(policy.max_p95) as f64) <= SLOW_SHARE * s.requests as f64);
    if latency >= bar && stable_fast {
        return Verdict::Breach {
            kind: BreachKind::Latency,
            reason: format!(
                "{pool} p95 {} ms > {} ms over {} requests ({slow} slower; evidence {:.0} ≥ {:.0})",
                c.quantile(0.95).unwrap_or_default().as_millis(),
                policy.max_p95.as_millis(),
                c.requests,
                latency.exp(),
                1.0 / alpha
            ),
        };
    }
    for (i, rule) in routes.iter().enumerate() {
        let Some(r) = candidate.routes.get(i).filter(|r| r.requests >= min) else {
            continue;
        };
        let base = stable
            .and_then(|s| s.routes.get(i))
            .filter(|s| s.requests >= min)
            .map(|s| s.error_ratio());
        let evidence = log_evidence(r.errors, r.requests, policy.max_error_ratio);
        if evidence >= bar && worse(r.error_ratio(), base) {
            return Verdict::Breach {
                kind: BreachKind::ErrorRatio,
                reason: format!(
                    "{pool} route {} error ratio {:.3} > {} over {} requests (evidence {:.0} ≥ {:.0})",
                    rule.name,
                    r.error_ratio(),
                    policy.max_error_ratio,
                    r.requests,
                    evidence.exp(),
                    1.0 / alpha
                ),
            };
        }
    }
    Verdict::Healthy
}

/// A pool's totals since a start, on this replica and (on the leader) the
/// others: each replica's running totals less what they were at the start
/// (or when the replica was first seen).
#[derive(Debug)]
pub struct Since {
    tally: Tally,
    base: HashMap<String, Totals>,
}

impl Since {
    pub fn start(pool: &Pool, peers: &PeerWindows, now: Instant) -> Since {
        Since {
            tally: Tally::start(pool, now),
            base: peers.totals(&pool.name).into_iter().collect(),
        }
    }

    /// Everything counted since the start, up to the last whole second.
    pub fn totals(&mut self, pool: &Pool, peers: &PeerWindows, now: Instant) -> Totals {
        let mut all = self.tally.advance(pool, now);
        for (replica, running) in peers.totals(&pool.name) {
            let base = self.base.entry(replica).or_insert_with(|| running.clone());
            if running.pool.requests < base.pool.requests {
                // That replica restarted: its counts began again at zero.
                *base = Totals::default();
            }
            all.merge(&running.since(base));
        }
        all
    }
}
