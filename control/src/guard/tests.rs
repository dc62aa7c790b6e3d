use sluice_routing::{Actor, WeightChange};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use sluice_config::UpstreamProtocol;
use sluice_routing::window::Outcome;
use sluice_routing::{PoolSpec, RoutingPolicy};

use super::*;

fn policy() -> RollbackConfig {
    RollbackConfig::default()
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

/// A guard running `policy` over blue/green, just switched to 50/50 by an
/// operator: green is the candidate it watches.
async fn watched(policy: RollbackConfig) -> (Arc<RoutingHandle>, Arc<Counted>, tokio::task::JoinHandle<()>) {
    let routing = handle();
    let counter = Arc::new(Counted::default());
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
    (routing, counter, guard)
}

#[tokio::test(start_paused = true)]
async fn a_failing_canary_is_rolled_back_within_a_few_evaluations() {
    let (routing, counter, guard) = watched(policy()).await;

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
    let policy = RollbackConfig {
        enabled: false,
        ..policy()
    };
    let (routing, counter, guard) = watched(policy).await;
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

/// Records `requests` answers taking `latency` in a pool's window.
fn timed(routing: &RoutingHandle, pool: &str, requests: u32, latency: Duration) {
    let table = routing.snapshot();
    let window = &table.pool(pool).unwrap().stats.window;
    for _ in 0..requests {
        window.record(Instant::now(), latency, Outcome::Success);
    }
}

/// A canary three times slower than stable but well under `max_p95`: left
/// alone by default, rolled back when `[rollback] max_p95_ratio` asks for
/// the comparison.
#[tokio::test(start_paused = true)]
async fn the_comparison_with_the_stable_pool_is_opt_in_for_the_guard() {
    for (ratio, rolled_back) in [(None, false), (Some(1.5), true)] {
        let policy = RollbackConfig {
            max_p95_ratio: ratio,
            ..policy()
        };
        let (routing, counter, guard) = watched(policy).await;
        for _ in 0..10 {
            timed(&routing, "green", 50, Duration::from_millis(60));
            timed(&routing, "blue", 50, Duration::from_millis(20));
            tokio::time::advance(Duration::from_secs(1)).await;
            tokio::task::yield_now().await;
        }
        let green = routing.snapshot().pool("green").unwrap().weight;
        assert_eq!(green.is_zero(), rolled_back, "max_p95_ratio {ratio:?}");
        if rolled_back {
            assert_eq!(
                counter.0.lock().unwrap().as_slice(),
                [("green".to_owned(), "latency".to_owned())]
            );
        }
        guard.abort();
    }
}
