//! No promotion without evidence: a held step ends only once an analysis
//! window of at least `min_requests` requests to `to` was judged healthy;
//! short of that it waits up to the evidence deadline and then pauses
//! (the default), aborts or goes on, as `on_no_evidence` says. And with
//! `on_failure = "pause"`, a failed analysis gives the traffic back and
//! waits for an operator instead of aborting. On simulated time: the judge
//! sees the pools' own windows.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde_json::json;
use sluice_config::{RollbackConfig, UpstreamProtocol};
use sluice_control::rollout::{
    AnalysisFailure, Command, Engine, NoEvidence, Phase, RollbackMode, RolloutSink, RolloutSpec, Status, Step,
};
use sluice_routing::window::Outcome;
use sluice_routing::{PoolSpec, RoutingHandle, RoutingPolicy};
use tokio::time::Instant;

struct NoSink;
impl RolloutSink for NoSink {
    fn transition(&self, _: &Status) {}
}

fn setup() -> (Arc<RoutingHandle>, Engine) {
    let pool = |name: &str, weight, port| PoolSpec {
        name: name.into(),
        version: "v1".into(),
        weight,
        protocol: UpstreamProtocol::Http1,
        backends: vec![format!("127.0.0.1:{port}")],
        tls: None,
        matches: Vec::new(),
    };
    let routing = Arc::new(
        RoutingHandle::restore(
            1,
            &[
                pool("blue", sluice_config::Weight::percent(100).unwrap(), 1),
                pool("green", sluice_config::Weight::percent(0).unwrap(), 2),
            ],
            RoutingPolicy::default(),
            None,
        )
        .unwrap(),
    );
    let engine = Engine::new(Arc::clone(&routing), Arc::new(NoSink));
    (routing, engine)
}

/// One canary step, 25% held 10 s, analysed every second over 30 s windows.
fn canary(on_no_evidence: NoEvidence) -> RolloutSpec {
    RolloutSpec {
        from: "blue".into(),
        to: "green".into(),
        strategy: "canary".into(),
        steps: vec![Step::Weight {
            weight: sluice_config::Weight::percent(25).unwrap(),
            hold: Duration::from_secs(10),
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
        on_no_evidence,
        on_failure: AnalysisFailure::Abort,
        checks: Vec::new(),
    }
}

/// Successful requests to `pool`, `per_second` of them, from `after` on.
fn traffic(routing: &Arc<RoutingHandle>, pool: &str, per_second: u32, after: Duration) {
    failing_traffic(routing, pool, per_second, after, Arc::default());
}

/// Requests to `pool` as [`traffic`], every other one failing while
/// `failing` is set.
fn failing_traffic(
    routing: &Arc<RoutingHandle>,
    pool: &str,
    per_second: u32,
    after: Duration,
    failing: Arc<AtomicBool>,
) {
    let (routing, pool) = (Arc::clone(routing), pool.to_owned());
    tokio::spawn(async move {
        tokio::time::sleep(after).await;
        let mut n = 0u64;
        loop {
            n += 1;
            if let Some(p) = routing.snapshot().pool(&pool) {
                if failing.load(Ordering::SeqCst) && n.is_multiple_of(2) {
                    p.stats.count(Instant::now(), 500, Outcome::Error, None);
                } else {
                    p.stats.count(Instant::now(), 200, Outcome::Success, None);
                }
            }
            tokio::time::sleep(Duration::from_secs(1) / per_second).await;
        }
    });
}

async fn wait_until(engine: &Engine, what: &str, done: impl Fn(&Status) -> bool) -> Status {
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let status = engine.current().unwrap();
        if done(&status) {
            return status;
        }
        assert!(Instant::now() < deadline, "never {what}: {status:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn green(routing: &RoutingHandle) -> sluice_config::Weight {
    routing.snapshot().pool("green").unwrap().weight
}

#[tokio::test(start_paused = true)]
async fn with_no_traffic_at_all_a_step_pauses_instead_of_promoting() {
    let (routing, engine) = setup();
    let started = Instant::now();
    engine.start(canary(NoEvidence::Pause), json!({})).unwrap();
    let paused = wait_until(&engine, "paused", |s| {
        s.phase.finished() || matches!(s.phase, Phase::Paused(_))
    })
    .await;
    assert_eq!(paused.phase, Phase::Paused(0), "{}", paused.reason);
    assert!(paused.reason.starts_with("no evidence: step 1"), "{}", paused.reason);
    // The hold was 10 s; the evidence deadline (3× the hold) is what ran out.
    assert!(started.elapsed() >= Duration::from_secs(30), "{:?}", started.elapsed());
    let evidence = paused.view().evidence.unwrap();
    assert_eq!(
        (evidence.requests, evidence.min_requests, evidence.enough),
        (0, 20, false)
    );
    assert_eq!(green(&routing), 25, "paused where it stood");
    // Nothing moves on by itself.
    tokio::time::sleep(Duration::from_secs(300)).await;
    assert_eq!(engine.current().unwrap().phase, Phase::Paused(0));
    // An operator's promote is the evidence it lacked.
    engine.command(Command::Promote { full: false }).unwrap();
    wait_until(&engine, "completed", |s| s.phase == Phase::Completed).await;
    assert_eq!(green(&routing), 100);
}

#[tokio::test(start_paused = true)]
async fn traffic_only_to_the_stable_pool_is_no_evidence_for_the_canary() {
    let (routing, engine) = setup();
    traffic(&routing, "blue", 50, Duration::ZERO);
    engine.start(canary(NoEvidence::Abort), json!({})).unwrap();
    let ended = wait_until(&engine, "finished", |s| s.phase.finished()).await;
    assert_eq!(ended.phase, Phase::Aborted);
    assert!(
        ended
            .reason
            .contains("no evidence: step 1 (green at 25%) saw at most 0 of the 20 requests"),
        "{}",
        ended.reason
    );
    assert!(ended.reason.ends_with("(on_no_evidence = abort)"), "{}", ended.reason);
    assert_eq!(green(&routing), 0, "the weights went back");
}

#[tokio::test(start_paused = true)]
async fn promote_on_no_evidence_is_an_explicit_choice() {
    let (routing, engine) = setup();
    engine.start(canary(NoEvidence::Promote), json!({})).unwrap();
    wait_until(&engine, "completed", |s| s.phase.finished()).await;
    assert_eq!(engine.current().unwrap().phase, Phase::Completed);
    assert_eq!(green(&routing), 100);
}

#[tokio::test(start_paused = true)]
async fn a_step_with_enough_judged_traffic_ends_at_its_hold() {
    let (routing, engine) = setup();
    traffic(&routing, "green", 5, Duration::ZERO);
    let started = Instant::now();
    engine.start(canary(NoEvidence::Pause), json!({})).unwrap();
    wait_until(&engine, "completed", |s| s.phase.finished()).await;
    assert_eq!(engine.current().unwrap().phase, Phase::Completed);
    let took = started.elapsed();
    assert!(took < Duration::from_secs(12), "{took:?}");
}

#[tokio::test(start_paused = true)]
async fn evidence_that_comes_late_ends_the_step_as_soon_as_it_is_judged() {
    let (routing, engine) = setup();
    // Traffic starts 15 s in: after the 10 s hold, before the 30 s deadline.
    traffic(&routing, "green", 5, Duration::from_secs(15));
    let started = Instant::now();
    engine.start(canary(NoEvidence::Pause), json!({})).unwrap();
    let waiting = wait_until(&engine, "waiting for evidence", |s| {
        s.reason.contains("waiting for evidence")
    })
    .await;
    assert_eq!(waiting.phase, Phase::Step(0));
    wait_until(&engine, "completed", |s| s.phase.finished()).await;
    assert_eq!(engine.current().unwrap().phase, Phase::Completed);
    // 20 requests at 5 a second are there ~4 s after traffic starts.
    let took = started.elapsed();
    assert!(
        took > Duration::from_secs(18) && took < Duration::from_secs(25),
        "{took:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn resume_after_a_pause_for_evidence_waits_for_it_again() {
    let (routing, engine) = setup();
    engine.start(canary(NoEvidence::Pause), json!({})).unwrap();
    wait_until(&engine, "paused", |s| matches!(s.phase, Phase::Paused(_))).await;
    traffic(&routing, "green", 5, Duration::ZERO);
    engine.command(Command::Resume).unwrap();
    wait_until(&engine, "completed", |s| s.phase.finished()).await;
    assert_eq!(engine.current().unwrap().phase, Phase::Completed);
}

#[tokio::test(start_paused = true)]
async fn on_failure_pause_gives_the_traffic_back_and_waits_for_an_operator() {
    let (routing, engine) = setup();
    let failing = Arc::new(AtomicBool::new(true));
    failing_traffic(&routing, "green", 10, Duration::ZERO, Arc::clone(&failing));
    let mut spec = canary(NoEvidence::Pause);
    spec.on_failure = AnalysisFailure::Pause;
    engine.start(spec, json!({})).unwrap();
    let paused = wait_until(&engine, "paused", |s| {
        s.phase.finished() || matches!(s.phase, Phase::Paused(_))
    })
    .await;
    assert_eq!(paused.phase, Phase::Paused(0), "{}", paused.reason);
    assert!(paused.reason.starts_with("analysis failed: "), "{}", paused.reason);
    assert!(paused.reason.contains("green back to 0%"), "{}", paused.reason);
    assert_eq!(green(&routing), 0, "users were protected at once");
    // It stays paused, with the traffic where it was before the rollout.
    tokio::time::sleep(Duration::from_secs(120)).await;
    assert_eq!(engine.current().unwrap().phase, Phase::Paused(0));
    assert_eq!(green(&routing), 0);
    // Fixed: resume retries the step, judged on what comes from now on.
    failing.store(false, Ordering::SeqCst);
    engine.command(Command::Resume).unwrap();
    wait_until(&engine, "back at step 1", |_| green(&routing) == 25).await;
    wait_until(&engine, "completed", |s| s.phase.finished()).await;
    assert_eq!(engine.current().unwrap().phase, Phase::Completed);
    assert_eq!(green(&routing), 100);
}

#[tokio::test(start_paused = true)]
async fn on_failure_abort_is_the_default() {
    let (routing, engine) = setup();
    failing_traffic(&routing, "green", 10, Duration::ZERO, Arc::new(AtomicBool::new(true)));
    engine.start(canary(NoEvidence::Pause), json!({})).unwrap();
    let ended = wait_until(&engine, "finished", |s| s.phase.finished()).await;
    assert_eq!(ended.phase, Phase::Aborted, "{}", ended.reason);
    assert_eq!(green(&routing), 0);
}

/// Keeps every transition's reason.
#[derive(Default)]
struct Reasons(std::sync::Mutex<Vec<String>>);
impl RolloutSink for Reasons {
    fn transition(&self, status: &Status) {
        self.0.lock().unwrap().push(status.reason.clone());
    }
}

#[tokio::test(start_paused = true)]
async fn a_passed_step_says_what_it_was_judged_on() {
    let (routing, _) = setup();
    let reasons = Arc::new(Reasons::default());
    let engine = Engine::new(Arc::clone(&routing), Arc::clone(&reasons) as Arc<dyn RolloutSink>);
    traffic(&routing, "green", 5, Duration::ZERO);
    engine.start(canary(NoEvidence::Pause), json!({})).unwrap();
    wait_until(&engine, "completed", |s| s.phase.finished()).await;
    let said = reasons.0.lock().unwrap().clone();
    let passed = said
        .iter()
        .find(|r| r.starts_with("step 1 passed: "))
        .expect("no step explained");
    assert!(passed.contains("green at 25%; judged healthy on "), "{passed}");
    assert!(passed.contains(" requests (0 errors"), "{passed}");
    assert!(
        passed.contains("in one window, 20 needed; since the step began "),
        "{passed}"
    );
    assert!(
        passed.contains(" errors, 0 slower than max_p95: evidence errors "),
        "{passed}"
    );
    assert!(passed.ends_with("(a step fails at 2000)"), "{passed}");
}
