use sluice_routing::{Actor, WeightChange};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use sluice_config::UpstreamProtocol;
use sluice_routing::window::{Outcome, Window};
use sluice_routing::{PoolSpec, RoutingPolicy};

use super::*;

fn policy() -> RollbackConfig {
    RollbackConfig::default()
}

fn snap(requests: u64, errors: u64) -> WindowSnapshot {
    WindowSnapshot::from_counts(requests, errors, Duration::from_secs(30)).with_latency(Duration::from_millis(40))
}

#[test]
fn tail_probability_matches_the_binomial() {
    // P(X >= 1) for n = 10, p = 0.1 is 1 - 0.9^10.
    assert!((tail_probability(1, 10, 0.1) - (1.0 - 0.9f64.powi(10))).abs() < 1e-12);
    assert!((tail_probability(2, 25, 0.01) - 0.0258).abs() < 1e-3);
    assert!(tail_probability(4, 25, 0.01) < 0.001);
    // Normal approximation where the expected count is large.
    assert!((tail_probability(10_000, 1_000_000, 0.01) - 0.5).abs() < 0.01);
    assert!(tail_probability(11_000, 1_000_000, 0.01) < 1e-10);
}

#[test]
fn too_few_requests_are_never_judged() {
    let v = judge("green", &snap(5, 3), None, &policy());
    assert_eq!(v, Verdict::Insufficient { requests: 5 });
}

#[test]
fn ten_percent_errors_breach_with_a_reason_that_shows_the_numbers() {
    let v = judge("green", &snap(212, 20), Some(&snap(5000, 2)), &policy());
    match v {
        Verdict::Breach { kind, reason } => {
            assert_eq!(kind, BreachKind::ErrorRatio);
            assert_eq!(reason, "green error ratio 0.094 > 0.01 over 212 requests");
        }
        other => panic!("{other:?}"),
    }
    // Fifty requests with five errors is already enough evidence.
    assert!(matches!(
        judge("green", &snap(50, 5), None, &policy()),
        Verdict::Breach { .. }
    ));
}

#[test]
fn one_error_in_a_small_window_is_noise_not_a_breach() {
    // 1 of 25 is 4% and 2 of 25 is 8%, but a pool at 1% shows that often
    // enough (2.6% of windows) that it proves nothing.
    assert_eq!(judge("green", &snap(25, 1), None, &policy()), Verdict::Healthy);
    assert_eq!(judge("green", &snap(25, 2), None, &policy()), Verdict::Healthy);
    assert_eq!(judge("green", &snap(60, 2), None, &policy()), Verdict::Healthy);
}

#[test]
fn a_candidate_no_worse_than_stable_is_not_blamed() {
    assert_eq!(
        judge("green", &snap(2000, 60), Some(&snap(8000, 240)), &policy()),
        Verdict::Healthy
    );
    assert!(matches!(
        judge("green", &snap(2000, 60), Some(&snap(8000, 8)), &policy()),
        Verdict::Breach { .. }
    ));
}

#[test]
fn slow_p95_breaches_unless_stable_is_just_as_slow() {
    let slow = WindowSnapshot::from_counts(100, 0, Duration::from_secs(30)).with_latency(Duration::from_millis(1500));
    let fast = snap(100, 0);
    match judge("green", &slow, Some(&fast), &policy()) {
        Verdict::Breach { kind, reason } => {
            assert_eq!(kind, BreachKind::Latency);
            assert!(reason.starts_with("green p95 1"), "{reason}");
            assert!(reason.ends_with("> 1000 ms over 100 requests"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(judge("green", &slow, Some(&slow), &policy()), Verdict::Healthy);
    assert_eq!(judge("green", &fast, None, &policy()), Verdict::Healthy);
}

/// A healthy candidate (0.5% errors, like stable) at 2 requests/s with
/// latency jitter, judged every 500 ms for 150 s, in 40 independent runs:
/// never two breaches in a row.
#[tokio::test(start_paused = true)]
async fn low_traffic_noise_never_rolls_back() {
    let mut rng = SmallRng::seed_from_u64(7);
    let policy = policy();
    for _ in 0..40 {
        let window = Window::default();
        let stable = Window::default();
        let mut consecutive = 0;
        for _ in 0..300 {
            tokio::time::advance(Duration::from_millis(500)).await;
            let now = Instant::now();
            let jitter = Duration::from_millis(rng.random_range(5..400));
            let outcome = if rng.random_bool(0.005) {
                Outcome::Error
            } else {
                Outcome::Success
            };
            window.record(now, jitter, outcome);
            for _ in 0..20 {
                let o = if rng.random_bool(0.005) {
                    Outcome::Error
                } else {
                    Outcome::Success
                };
                stable.record(now, jitter, o);
            }
            let c = window.snapshot(now, policy.window);
            let s = stable.snapshot(now, policy.window);
            match judge("green", &c, Some(&s), &policy) {
                Verdict::Breach { reason, .. } => {
                    consecutive += 1;
                    assert!(consecutive < policy.consecutive_breaches, "false rollback: {reason}");
                }
                _ => consecutive = 0,
            }
        }
    }
}

#[derive(Default)]
struct Counted(Mutex<Vec<(String, String)>>);

impl RollbackCounter for Counted {
    fn rollback(&self, pool: &str, reason: &str) {
        self.0.lock().unwrap().push((pool.to_owned(), reason.to_owned()));
    }
}

fn handle() -> Arc<RoutingHandle> {
    let spec = |name: &str, weight| PoolSpec {
        name: name.into(),
        version: "v".into(),
        weight,
        protocol: UpstreamProtocol::Http1,
        backends: vec!["127.0.0.1:1".into()],
        tls: None,
        matches: Vec::new(),
    };
    Arc::new(
        RoutingHandle::new(
            &[
                spec("blue", sluice_config::Weight::percent(100).unwrap()),
                spec("green", sluice_config::Weight::percent(0).unwrap()),
            ],
            RoutingPolicy::default(),
        )
        .unwrap(),
    )
}

/// Records `requests` outcomes in a pool's window, `errors` of them failed.
fn traffic(routing: &RoutingHandle, pool: &str, requests: u32, errors: u32) {
    let table = routing.snapshot();
    let window = &table.pool(pool).unwrap().stats.window;
    for i in 0..requests {
        let o = if i < errors { Outcome::Error } else { Outcome::Success };
        window.record(Instant::now(), Duration::from_millis(20), o);
    }
}

#[tokio::test(start_paused = true)]
async fn a_failing_canary_is_rolled_back_within_a_few_evaluations() {
    let routing = handle();
    let counter = Arc::new(Counted::default());
    let guard = tokio::spawn(run(
        routing.clone(),
        policy(),
        Alerter::start(vec![], None),
        counter.clone(),
    ));
    tokio::task::yield_now().await;
    let w: HashMap<String, sluice_config::Weight> = [
        ("blue".into(), sluice_config::Weight::percent(50).unwrap()),
        ("green".into(), sluice_config::Weight::percent(50).unwrap()),
    ]
    .into();
    routing
        .change_weights(WeightChange::set(&w, Actor::operator("ci")))
        .await
        .unwrap();

    let failing_since = Instant::now();
    let mut restored_after = None;
    for _ in 0..10 {
        traffic(&routing, "green", 50, 5);
        traffic(&routing, "blue", 50, 0);
        tokio::time::advance(Duration::from_secs(1)).await;
        tokio::task::yield_now().await;
        if routing.snapshot().pool("green").unwrap().weight == sluice_config::Weight::percent(0).unwrap() {
            restored_after = Some(failing_since.elapsed());
            break;
        }
    }
    let took = restored_after.expect("green was never rolled back");
    assert!(took <= Duration::from_secs(3), "rollback took {took:?}");
    assert_eq!(
        routing.snapshot().pool("blue").unwrap().weight,
        sluice_config::Weight::percent(100).unwrap()
    );
    assert_eq!(
        counter.0.lock().unwrap().as_slice(),
        [("green".to_owned(), "error_ratio".to_owned())]
    );
    guard.abort();
}

#[tokio::test(start_paused = true)]
async fn with_automatic_rollback_off_the_guard_only_alerts() {
    let routing = handle();
    let counter = Arc::new(Counted::default());
    let policy = RollbackConfig {
        enabled: false,
        ..policy()
    };
    let guard = tokio::spawn(run(
        routing.clone(),
        policy,
        Alerter::start(vec![], None),
        counter.clone(),
    ));
    tokio::task::yield_now().await;
    let w: HashMap<String, sluice_config::Weight> = [
        ("blue".into(), sluice_config::Weight::percent(50).unwrap()),
        ("green".into(), sluice_config::Weight::percent(50).unwrap()),
    ]
    .into();
    routing
        .change_weights(WeightChange::set(&w, Actor::operator("ci")))
        .await
        .unwrap();
    for _ in 0..10 {
        traffic(&routing, "green", 50, 10);
        tokio::time::advance(Duration::from_secs(1)).await;
        tokio::task::yield_now().await;
    }
    assert_eq!(
        routing.snapshot().pool("green").unwrap().weight,
        sluice_config::Weight::percent(50).unwrap()
    );
    assert!(counter.0.lock().unwrap().is_empty());
    guard.abort();
}
