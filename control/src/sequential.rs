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

/// What the tests look at: counts since the start.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub requests: u64,
    pub errors: u64,
    /// Requests slower than `max_p95` (pools only; 0 for routes).
    pub slow: u64,
}

impl Counts {
    fn of(snapshot: &sluice_routing::window::WindowSnapshot, policy: &RollbackConfig) -> Counts {
        Counts {
            requests: snapshot.requests,
            errors: snapshot.errors,
            slow: snapshot.slower_than(policy.max_p95),
        }
    }

    fn error_ratio(&self) -> f64 {
        if self.requests == 0 {
            0.0
        } else {
            self.errors as f64 / self.requests as f64
        }
    }
}

/// Which test found its evidence, and how much.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Crossing {
    Errors { evidence: f64 },
    Latency { evidence: f64 },
    Route { index: usize, evidence: f64 },
}

/// The first of a pool's tests whose evidence reached its bar: the error
/// ratio (worse than `stable`'s too, when it has `min_requests`), the
/// latency (unless `stable` is as slow), then each route's error ratio
/// (against the same route of `stable`). Counts only: what a simulation
/// feeds, and what [`judge`] reads from the totals.
pub fn first_crossing(
    candidate: (&Counts, &[Counts]),
    stable: Option<(&Counts, &[Counts])>,
    routes: usize,
    policy: &RollbackConfig,
) -> Option<Crossing> {
    let min = policy.min_requests.max(1);
    let (c, c_routes) = candidate;
    if c.requests < min {
        return None;
    }
    let bar = (1.0 / level(policy, routes)).ln();
    let enough = |s: &&Counts| s.requests >= min;
    let worse = |mine: &Counts, theirs: Option<&Counts>| {
        theirs
            .filter(enough)
            .is_none_or(|t| mine.error_ratio() > t.error_ratio() + policy.max_error_ratio / 2.0)
    };
    let evidence = log_evidence(c.errors, c.requests, policy.max_error_ratio);
    if evidence >= bar && worse(c, stable.map(|s| s.0)) {
        return Some(Crossing::Errors { evidence });
    }
    let evidence = log_evidence(c.slow, c.requests, SLOW_SHARE);
    let stable_fast = stable
        .map(|s| s.0)
        .filter(enough)
        .is_none_or(|s| (s.slow as f64) <= SLOW_SHARE * s.requests as f64);
    if evidence >= bar && stable_fast {
        return Some(Crossing::Latency { evidence });
    }
    // A route needs no volume of its own beyond the pool's: its evidence
    // alone is proof at the level (a route with 5% of the traffic would
    // otherwise wait twenty times `min_requests`).
    c_routes.iter().take(routes).enumerate().find_map(|(index, r)| {
        let evidence = log_evidence(r.errors, r.requests, policy.max_error_ratio);
        (evidence >= bar && worse(r, stable.and_then(|s| s.1.get(index))))
            .then_some(Crossing::Route { index, evidence })
    })
}

/// Judges everything `candidate` served since the watch began, against
/// `stable` over the same span when it has enough of its own: the error
/// ratio, the latency, and each route's error ratio. A breach here is
/// proof at the configured level, acted on at once.
pub fn judge(
    pool: &str,
    candidate: &Totals,
    stable: Option<&Totals>,
    routes: &[RouteRule],
    policy: &RollbackConfig,
) -> Verdict {
    let c = &candidate.pool;
    if c.requests < policy.min_requests.max(1) {
        return Verdict::Insufficient { requests: c.requests };
    }
    let counts = |t: &Totals| -> (Counts, Vec<Counts>) {
        (
            Counts::of(&t.pool, policy),
            t.routes.iter().map(|r| Counts::of(r, policy)).collect(),
        )
    };
    let (mine, my_routes) = counts(candidate);
    let theirs = stable.map(counts);
    let crossing = first_crossing(
        (&mine, &my_routes),
        theirs.as_ref().map(|(p, r)| (p, r.as_slice())),
        routes.len(),
        policy,
    );
    let bar = 1.0 / level(policy, routes.len());
    match crossing {
        None => Verdict::Healthy,
        Some(Crossing::Errors { evidence }) => Verdict::Breach {
            kind: BreachKind::ErrorRatio,
            reason: format!(
                "{pool} error ratio {:.3} > {} over {} requests (evidence {:.0} ≥ {bar:.0})",
                c.error_ratio(),
                policy.max_error_ratio,
                c.requests,
                evidence.exp(),
            ),
        },
        Some(Crossing::Latency { evidence }) => Verdict::Breach {
            kind: BreachKind::Latency,
            reason: format!(
                "{pool} p95 {} ms > {} ms over {} requests ({} slower; evidence {:.0} ≥ {bar:.0})",
                c.quantile(0.95).unwrap_or_default().as_millis(),
                policy.max_p95.as_millis(),
                c.requests,
                mine.slow,
                evidence.exp(),
            ),
        },
        Some(Crossing::Route { index, evidence }) => {
            let r = my_routes.get(index).copied().unwrap_or_default();
            Verdict::Breach {
                kind: BreachKind::ErrorRatio,
                reason: format!(
                    "{pool} route {} error ratio {:.3} > {} over {} requests (evidence {:.0} ≥ {bar:.0})",
                    routes.get(index).map_or("?", |r| &*r.name),
                    r.error_ratio(),
                    policy.max_error_ratio,
                    r.requests,
                    evidence.exp(),
                ),
            }
        }
    }
}

/// The tests' statistics on `candidate`'s totals, for the status: capped
/// at 10¹² (a clearly broken pool's evidence overflows any display).
pub fn explain(candidate: &Totals, routes: &[RouteRule], policy: &RollbackConfig) -> sluice_api::SequentialEvidence {
    let shown = |log: f64| log.exp().min(1e12);
    let c = Counts::of(&candidate.pool, policy);
    sluice_api::SequentialEvidence {
        requests: c.requests,
        errors: c.errors,
        slow: c.slow,
        error_evidence: shown(log_evidence(c.errors, c.requests, policy.max_error_ratio)),
        latency_evidence: shown(log_evidence(c.slow, c.requests, SLOW_SHARE)),
        bar: 1.0 / level(policy, routes.len()),
        routes: routes
            .iter()
            .zip(&candidate.routes)
            .map(|(rule, r)| sluice_api::RouteEvidence {
                name: rule.name.to_string(),
                requests: r.requests,
                errors: r.errors,
                evidence: shown(log_evidence(r.errors, r.requests, policy.max_error_ratio)),
            })
            .collect(),
    }
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
