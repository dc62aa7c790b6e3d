//! Release-mode simulation of the sequential judgement (the pure
//! `first_crossing`, fed Bernoulli and latency draws on simulated time,
//! judged once a second as the guard does): false alarms over whole
//! 30-minute protection periods, and detection times against Wald's SPRT
//! bound. The numbers docs/operations.md shows come from here:
//!
//!     cargo run --release -p sluice-control --example judge_sim [PERIODS]
#![allow(clippy::print_stdout)]

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use sluice_config::RollbackConfig;
use sluice_control::sequential::{Counts, first_crossing, level};

/// One simulated second's requests on one pool and (optionally) one route.
struct Traffic {
    per_second: u64,
    /// Chance a request fails.
    errors: f64,
    /// Chance a request is slower than `max_p95`.
    slow: f64,
    /// Share of requests on the route, and the route's error chance.
    route: Option<(f64, f64)>,
}

/// Seconds until the first crossing, or `None` within `seconds`.
fn seconds_to_cross(rng: &mut SmallRng, t: &Traffic, seconds: u64, policy: &RollbackConfig) -> Option<u64> {
    let mut pool = Counts::default();
    let mut route = Counts::default();
    let routes = usize::from(t.route.is_some());
    for second in 1..=seconds {
        for _ in 0..t.per_second {
            pool.requests += 1;
            let on_route = t.route.is_some_and(|(share, _)| rng.random_bool(share));
            let fails = match t.route {
                Some((_, e)) if on_route => rng.random_bool(e),
                _ => rng.random_bool(t.errors),
            };
            pool.errors += u64::from(fails);
            pool.slow += u64::from(rng.random_bool(t.slow));
            if on_route {
                route.requests += 1;
                route.errors += u64::from(fails);
            }
        }
        let routes_seen = [route];
        if first_crossing((&pool, &routes_seen[..routes]), None, routes, policy).is_some() {
            return Some(second);
        }
    }
    None
}

/// Kullback–Leibler divergence of Bernoulli(p) from Bernoulli(q).
fn kl(p: f64, q: f64) -> f64 {
    p * (p / q).ln() + (1.0 - p) * ((1.0 - p) / (1.0 - q)).ln()
}

/// P(latency > 1 s) for a log-normal with σ = 0.5 scaled so its P95 is 1.5 s.
fn lognormal_slow_share() -> f64 {
    let sigma = 0.5;
    let median = 1.5 / (1.645f64 * sigma).exp();
    let z = (1.0f64 / median).ln() / sigma;
    // Upper tail of the standard normal (Abramowitz–Stegun 26.2.17).
    let t = 1.0 / (1.0 + 0.231_641_9 * z);
    let poly =
        t * (0.319_381_530 + t * (-0.356_563_782 + t * (1.781_477_937 + t * (-1.821_255_978 + t * 1.330_274_429))));
    (-z * z / 2.0).exp() / (2.0 * std::f64::consts::PI).sqrt() * poly
}

fn main() {
    let periods: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(10_000);
    let policy = RollbackConfig::default();
    let mut rng = SmallRng::seed_from_u64(20_261_207);
    println!(
        "defaults: max_error_ratio {}, max_p95 {:?}, min_requests {}, alpha {} ({} per test, no routes)\n",
        policy.max_error_ratio,
        policy.max_p95,
        policy.min_requests,
        policy.alpha,
        level(&policy, 0)
    );

    for (name, errors, slow) in [
        (
            "exactly at the thresholds (1% errors, 5% slower than max_p95)",
            0.01,
            0.05,
        ),
        ("at half the thresholds (0.5% errors, 2.5% slow)", 0.005, 0.025),
    ] {
        let t = Traffic {
            per_second: 5,
            errors,
            slow,
            route: None,
        };
        let blamed = (0..periods)
            .filter(|_| seconds_to_cross(&mut rng, &t, 1_800, &policy).is_some())
            .count();
        println!("{name}: rolled back in {blamed} of {periods} 30-minute periods at 5 req/s");
    }
    println!();
    println!("| scenario | Wald's bound | median | p90 | runs |");
    println!("|---|---|---|---|---|");
    let slow_share = lognormal_slow_share();
    let cases: [(&str, Traffic, f64, usize); 6] = [
        (
            "10% errors at 5 req/s",
            Traffic {
                per_second: 5,
                errors: 0.10,
                slow: 0.0,
                route: None,
            },
            kl(0.10, 0.01),
            2_000,
        ),
        (
            "2% errors at 50 req/s",
            Traffic {
                per_second: 50,
                errors: 0.02,
                slow: 0.0,
                route: None,
            },
            kl(0.02, 0.01),
            500,
        ),
        (
            "every request 1.5 s (max_p95 1 s) at 5 req/s",
            Traffic {
                per_second: 5,
                errors: 0.0,
                slow: 1.0,
                route: None,
            },
            kl(0.999, 0.05),
            2_000,
        ),
        (
            "log-normal latency with P95 1.5 s at 5 req/s",
            Traffic {
                per_second: 5,
                errors: 0.0,
                slow: slow_share,
                route: None,
            },
            kl(slow_share, 0.05),
            1_000,
        ),
        (
            "a route with 5% of requests at 50% errors, 5 req/s",
            Traffic {
                per_second: 5,
                errors: 0.0,
                slow: 0.0,
                route: Some((0.05, 0.5)),
            },
            kl(0.5, 0.01) * 0.05,
            500,
        ),
        (
            "the same route at 100 req/s (5 req/s on the route)",
            Traffic {
                per_second: 100,
                errors: 0.0,
                slow: 0.0,
                route: Some((0.05, 0.5)),
            },
            kl(0.5, 0.01) * 0.05,
            500,
        ),
    ];
    for (name, traffic, drift, runs) in cases {
        let wald = (1.0 / policy.alpha).ln() / drift;
        let mut took: Vec<u64> = (0..runs)
            .map(|_| seconds_to_cross(&mut rng, &traffic, 7_200, &policy).unwrap_or(7_200))
            .collect();
        took.sort_unstable();
        let at = |q: f64| {
            took.get(((took.len() as f64 * q) as usize).min(took.len() - 1))
                .copied()
                .unwrap_or(0)
        };
        println!(
            "| {name} | {wald:.0} requests, {:.1} s | {} s | {} s | {runs} |",
            wald / traffic.per_second as f64,
            at(0.5),
            at(0.9)
        );
    }
}
