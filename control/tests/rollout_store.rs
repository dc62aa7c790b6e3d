//! The rollout engine when its store is unreachable or its replica stops
//! leading: a step that cannot be stored waits (paused, with the reason)
//! instead of aborting; a suspended rollout restores nothing; a resumed
//! step whose weights are already served is not applied again.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;
use sluice_config::{RollbackConfig, UpstreamProtocol};
use sluice_control::rollout::{
    AnalysisFailure, Engine, NoEvidence, Phase, RollbackMode, RolloutSink, RolloutSpec, Status, Step,
};
use sluice_routing::{Change, PersistError, PoolSpec, RoutingHandle, RoutingPolicy, RoutingStore};
use tokio::time::Instant;

/// Stores every change's green weight; refuses while `down`.
#[derive(Default)]
struct FlakyStore {
    down: AtomicBool,
    green_weights: Mutex<Vec<sluice_config::Weight>>,
}

impl FlakyStore {
    /// Green's weight in each change stored, in order (`"25"`, `"100"`).
    fn stored_green(&self) -> Vec<String> {
        self.green_weights
            .lock()
            .unwrap()
            .iter()
            .map(|w| w.to_string())
            .collect()
    }
}

impl RoutingStore for FlakyStore {
    fn persist<'a>(&'a self, c: Change<'a>) -> Pin<Box<dyn Future<Output = Result<(), PersistError>> + Send + 'a>> {
        let result = if self.down.load(Ordering::SeqCst) {
            Err(PersistError::Failed("connection refused".into()))
        } else {
            let green = c.after.pool("green").map_or(sluice_config::Weight::ZERO, |p| p.weight);
            self.green_weights.lock().unwrap().push(green);
            Ok(())
        };
        Box::pin(async move { result })
    }
}

struct NoSink;
impl RolloutSink for NoSink {
    fn transition(&self, _: &Status) {}
}

fn setup(green: u32) -> (Arc<FlakyStore>, Arc<RoutingHandle>, Engine) {
    let pool = |name: &str, weight, port| PoolSpec {
        name: name.into(),
        version: "v1".into(),
        weight,
        protocol: UpstreamProtocol::Http1,
        backends: vec![format!("127.0.0.1:{port}")],
        tls: None,
        matches: Vec::new(),
    };
    let store = Arc::new(FlakyStore::default());
    let routing = Arc::new(
        RoutingHandle::restore(
            1,
            &[
                pool("blue", sluice_config::Weight::percent(green).unwrap().rest(), 1),
                pool("green", sluice_config::Weight::percent(green).unwrap(), 2),
            ],
            RoutingPolicy::default(),
            Some(Arc::clone(&store) as Arc<dyn RoutingStore>),
        )
        .unwrap(),
    );
    let engine = Engine::new(Arc::clone(&routing), Arc::new(NoSink));
    (store, routing, engine)
}

fn canary(hold: Duration) -> RolloutSpec {
    RolloutSpec {
        from: "blue".into(),
        to: "green".into(),
        strategy: "canary".into(),
        steps: vec![Step::Weight {
            weight: sluice_config::Weight::percent(25).unwrap(),
            hold,
        }],
        analysis: RollbackConfig::default(),
        analysis_interval: Duration::from_secs(1),
        max_failed_checks: 2,
        smoke: Vec::new(),
        post_promotion: Duration::ZERO,
        health_gate: Duration::from_secs(5),
        comparison: Default::default(),
        hooks: Vec::new(),
        rollback: RollbackMode::Instant,
        dry_run: false,
        force: false,
        evidence_deadline: None,
        on_no_evidence: NoEvidence::Promote,
        on_failure: AnalysisFailure::Abort,
        checks: Vec::new(),
    }
}

async fn wait_until(engine: &Engine, what: &str, done: impl Fn(&Status) -> bool) -> Status {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let status = engine.current().unwrap();
        if done(&status) {
            return status;
        }
        assert!(Instant::now() < deadline, "never {what}: {status:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(start_paused = true)]
async fn a_step_the_store_refuses_waits_for_the_store_then_continues() {
    let (store, routing, engine) = setup(0);
    store.down.store(true, Ordering::SeqCst);
    engine.start(canary(Duration::from_secs(2)), json!({})).unwrap();
    let waiting = wait_until(&engine, "waited for the store", |s| {
        s.reason.contains("the store is unreachable")
    })
    .await;
    assert_eq!(waiting.phase, Phase::Step(0), "{waiting:?}");
    assert!(waiting.reason.contains("retried every second"), "{}", waiting.reason);
    // Ten seconds of outage: still waiting, nothing served, nothing aborted.
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(engine.current().unwrap().phase, Phase::Step(0));
    assert_eq!(routing.snapshot().pool("green").unwrap().weight, 0);

    store.down.store(false, Ordering::SeqCst);
    wait_until(&engine, "completed", |s| s.phase == Phase::Completed).await;
    assert_eq!(routing.snapshot().pool("green").unwrap().weight, 100);
    assert_eq!(store.stored_green(), ["25", "100"]);
}

#[tokio::test(start_paused = true)]
async fn a_suspended_rollout_restores_nothing_and_another_may_start() {
    let (store, routing, engine) = setup(0);
    engine.start(canary(Duration::from_secs(3600)), json!({})).unwrap();
    wait_until(&engine, "at 25%", |_| {
        routing.snapshot().pool("green").unwrap().weight == 25
    })
    .await;

    engine.suspend("lost the leadership");
    let suspended = engine.current().unwrap();
    assert_eq!(suspended.phase, Phase::Suspended);
    assert_eq!(suspended.reason, "lost the leadership");
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert_eq!(
        routing.snapshot().pool("green").unwrap().weight,
        25,
        "a suspend restored weights"
    );
    assert_eq!(store.stored_green(), ["25"]);
    assert!(engine.command(sluice_control::rollout::Command::Abort).is_err());
    // The leader-to-be continues it: not refused as "already running".
    engine
        .resume(canary(Duration::from_secs(3600)), json!({}), 0, Duration::from_secs(1))
        .unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_resumed_step_already_served_is_not_applied_again() {
    let (store, routing, engine) = setup(25);
    engine
        .resume(canary(Duration::from_secs(5)), json!({}), 0, Duration::from_secs(2))
        .unwrap();
    wait_until(&engine, "completed", |s| s.phase == Phase::Completed).await;
    assert_eq!(routing.snapshot().pool("green").unwrap().weight, 100);
    // Only the promotion was stored: step 1 (25%) was already applied.
    assert_eq!(store.stored_green(), ["100"]);
}
