//! The sequential judgement: verdicts on counts, the false-alarm level of a
//! pool exactly at its threshold over a whole protection period, and the
//! time to catch 10% and 2% errors at 5 requests/s against the derivation
//! (run with `--nocapture` for the numbers docs/operations.md shows).
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use sluice_config::RollbackConfig;
use sluice_control::guard::{BreachKind, Verdict};
use sluice_control::sequential::{expected_requests, judge, level, log_evidence};
use sluice_routing::routes::RouteRule;
use sluice_routing::totals::Totals;
use sluice_routing::window::WindowSnapshot;

fn policy() -> RollbackConfig {
    RollbackConfig::default()
}

fn totals(requests: u64, errors: u64, latency: Duration) -> Totals {
    Totals {
        pool: WindowSnapshot::from_counts(requests, errors, Duration::from_secs(30)).with_latency(latency),
        routes: Vec::new(),
    }
}

fn t(requests: u64, errors: u64) -> Totals {
    totals(requests, errors, Duration::from_millis(40))
}

fn verdict(candidate: &Totals, stable: Option<&Totals>) -> Verdict {
    judge("green", candidate, stable, &[], &policy())
}

#[test]
fn too_few_requests_are_never_judged() {
    assert_eq!(verdict(&t(5, 3), None), Verdict::Insufficient { requests: 5 });
}

#[test]
fn ten_percent_errors_breach_with_a_reason_that_shows_the_numbers() {
    match verdict(&t(212, 20), Some(&t(5000, 2))) {
        Verdict::Breach { kind, reason } => {
            assert_eq!(kind, BreachKind::ErrorRatio);
            assert!(
                reason.starts_with("green error ratio 0.094 > 0.01 over 212 requests (evidence "),
                "{reason}"
            );
            assert!(reason.ends_with(" ≥ 2000)"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(verdict(&t(100, 10), None), Verdict::Breach { .. }));
    // Every request failing: enough at min_requests.
    assert!(matches!(verdict(&t(20, 20), None), Verdict::Breach { .. }));
}

#[test]
fn a_few_errors_are_noise_not_a_breach() {
    // 2 of 25 is 8%, 5 of 50 is 10%: a pool at 1% shows that too often,
    // over a long watch, to prove anything yet.
    for (n, e) in [(25, 1), (25, 2), (60, 2), (50, 5)] {
        assert_eq!(verdict(&t(n, e), None), Verdict::Healthy, "{e} of {n}");
    }
}

#[test]
fn a_candidate_no_worse_than_stable_is_not_blamed() {
    assert_eq!(verdict(&t(2000, 60), Some(&t(8000, 240))), Verdict::Healthy);
    assert!(matches!(
        verdict(&t(2000, 60), Some(&t(8000, 8))),
        Verdict::Breach { .. }
    ));
}

#[test]
fn slow_requests_breach_unless_stable_is_just_as_slow() {
    let slow = totals(100, 0, Duration::from_millis(1500));
    let fast = t(100, 0);
    match verdict(&slow, Some(&fast)) {
        Verdict::Breach { kind, reason } => {
            assert_eq!(kind, BreachKind::Latency);
            assert!(reason.starts_with("green p95 1"), "{reason}");
            assert!(reason.contains("> 1000 ms over 100 requests (100 slower"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(verdict(&slow, Some(&slow)), Verdict::Healthy);
    assert_eq!(verdict(&fast, None), Verdict::Healthy);
}

#[test]
fn a_route_that_breaks_is_a_breach_while_the_pool_average_is_fine() {
    let routes = [
        RouteRule {
            name: "checkout".into(),
            prefix: "/checkout".into(),
        },
        RouteRule {
            name: "rest".into(),
            prefix: "/".into(),
        },
    ];
    // 2% of the pool's requests are checkout, half of them failing: 1%
    // overall, at the threshold, but checkout is broken.
    let mut c = t(10_000, 100);
    c.routes = vec![
        WindowSnapshot::from_counts(200, 100, Duration::ZERO),
        WindowSnapshot::from_counts(9_800, 0, Duration::ZERO),
    ];
    match judge("green", &c, None, &routes, &policy()) {
        Verdict::Breach { kind, reason } => {
            assert_eq!(kind, BreachKind::ErrorRatio);
            assert!(reason.starts_with("green route checkout error ratio 0.500"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    // The same route failing as much on the stable pool is not green's doing.
    let mut s = t(10_000, 100);
    s.routes = c.routes.clone();
    assert_eq!(judge("green", &c, Some(&s), &routes, &policy()), Verdict::Healthy);
    // Each of the four tests (errors, latency, two routes) gets a quarter.
    assert!((level(&policy(), 2) - 0.001 / 4.0).abs() < 1e-12);
}

/// Seconds until the guard would act (judging once a second) for a pool
/// answering errors at `p`, 5 requests a second, or `None` within
/// `seconds`.
fn seconds_to_act(rng: &mut SmallRng, p: f64, seconds: u64, policy: &RollbackConfig) -> Option<u64> {
    let mut counts = t(0, 0);
    for second in 1..=seconds {
        for _ in 0..5 {
            counts.pool.requests += 1;
            counts.pool.errors += u64::from(rng.random_bool(p));
        }
        // A sequential breach is acted on at once.
        if let Verdict::Breach { .. } = judge("green", &counts, None, &[], policy) {
            return Some(second);
        }
    }
    None
}

#[test]
fn a_pool_exactly_at_the_threshold_is_almost_never_blamed_over_a_whole_protection_period() {
    // alpha raised to 0.05 so that 1,000 runs can show the level: a pool
    // answering exactly 1% errors at 5 requests/s, judged every second for
    // the whole 30-minute protection period (9,000 requests).
    let policy = RollbackConfig {
        alpha: 0.05,
        ..RollbackConfig::default()
    };
    let mut rng = SmallRng::seed_from_u64(2026);
    let runs = 1_000;
    let blamed = (0..runs)
        .filter(|_| seconds_to_act(&mut rng, policy.max_error_ratio, 1_800, &policy).is_some())
        .count();
    println!("at the threshold: {blamed} of {runs} protection periods ever breached (alpha 0.05, errors' share 0.025)");
    // The errors' test has half of alpha: 25 of 1,000 at most on average;
    // Ville's bound is loose, and seven standard deviations above it
    // would still be a bug.
    assert!(blamed <= 60, "{blamed} false alarms in {runs} runs");
}

#[test]
fn detection_at_five_requests_a_second_follows_the_derivation() {
    let policy = policy();
    let mut rng = SmallRng::seed_from_u64(11);
    for (p, runs) in [(0.10, 300), (0.02, 100)] {
        let derived = expected_requests(p, policy.max_error_ratio, level(&policy, 0)).unwrap() / 5.0;
        let mut took: Vec<u64> = (0..runs)
            .map(|_| seconds_to_act(&mut rng, p, 3_600, &policy).unwrap_or(3_600))
            .collect();
        took.sort_unstable();
        let median = took[took.len() / 2] as f64;
        let p90 = took[took.len() * 9 / 10] as f64;
        println!(
            "{:.0}% errors at 5 req/s: derived {derived:.0} s, measured median {median:.0} s, p90 {p90:.0} s over {runs} runs",
            p * 100.0
        );
        // The derivation is the drift of the best alternative; the mixture
        // and whole seconds cost a little.
        assert!(
            median > derived * 0.6 && median < derived * 1.4 + 2.0,
            "{p}: median {median} s, derived {derived:.0} s"
        );
    }
    // Evidence grows with the count: 10 errors in 100 requests at 1% is
    // far more than 1 in 10.
    assert!(log_evidence(10, 100, 0.01) > log_evidence(1, 10, 0.01) + 5.0);
}
