//! The rollout engine: takes a version from the `from` pool to the `to`
//! pool step by step (canary) or in one switch (blue-green), checking it
//! before any traffic (health, smoke checks) and at every step (the same
//! verdict as the rollback guard, [`crate::guard::judge`]), and reverses
//! itself on a failed check, a failed smoke test or a routing change made
//! by someone else. One rollout runs at a time; every transition is
//! reported to a [`RolloutSink`] (stored, audited, alerted).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use sluice_config::RollbackConfig;
use sluice_proxy::RoutingHandle;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::{info, warn};

use crate::guard::{Verdict, judge};

/// The actor recorded for the engine's own routing changes.
pub const ROLLOUT_ACTOR: &str = "rollout";

#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Give `to` this share and hold it for a while, analysing.
    Weight { weight: u32, hold: Duration },
    /// Wait for `promote` (or `resume`).
    Pause,
}

/// One smoke check, sent to every `to` backend directly.
#[derive(Debug, Clone, PartialEq)]
pub struct SmokeCheck {
    pub name: String,
    pub path: String,
    pub expect_status: u16,
    pub body_contains: Option<String>,
    pub max_latency: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RolloutSpec {
    pub from: String,
    pub to: String,
    /// `canary` or `blue-green`.
    pub strategy: String,
    pub steps: Vec<Step>,
    pub analysis: RollbackConfig,
    pub analysis_interval: Duration,
    pub max_failed_checks: u32,
    pub smoke: Vec<SmokeCheck>,
    pub post_promotion: Duration,
    /// How long pre-checks wait for every `to` backend to be healthy.
    pub health_gate: Duration,
}

/// Where a rollout stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Phase {
    PreChecks,
    Step(usize),
    Paused(usize),
    Monitoring,
    Completed,
    Aborted,
}

impl Phase {
    pub fn name(&self) -> &'static str {
        match self {
            Phase::PreChecks => "pre-checks",
            Phase::Step(_) => "step",
            Phase::Paused(_) => "paused",
            Phase::Monitoring => "monitoring",
            Phase::Completed => "completed",
            Phase::Aborted => "aborted",
        }
    }

    pub fn finished(&self) -> bool {
        matches!(self, Phase::Completed | Phase::Aborted)
    }
}

/// A rollout's public state.
#[derive(Debug, Clone)]
pub struct Status {
    pub id: u64,
    pub spec: RolloutSpec,
    pub phase: Phase,
    /// What happened last, for people: "step 2: weight 25", the abort reason…
    pub reason: String,
    pub smoke: Vec<String>,
    pub started: Instant,
    /// The request that started it (stored, so a restart can resume it).
    pub request: Value,
}

impl Status {
    pub fn json(&self) -> Value {
        let step = match self.phase {
            Phase::Step(i) | Phase::Paused(i) => Some(i + 1),
            _ => None,
        };
        json!({
            "id": self.id,
            "from": self.spec.from,
            "to": self.spec.to,
            "strategy": self.spec.strategy,
            "state": self.phase.name(),
            "step": step,
            "steps": self.spec.steps.len(),
            "reason": self.reason,
            "smoke": self.smoke,
            "elapsed_seconds": self.started.elapsed().as_secs_f64(),
        })
    }
}

/// Told about every transition (storage, audit, alerts).
pub trait RolloutSink: Send + Sync {
    fn transition(&self, status: &Status);
}

/// What operators may ask of a running rollout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Pause,
    Resume,
    /// Pass the gate or end the current hold; `full`: straight to 100%.
    Promote {
        full: bool,
    },
    Abort,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RolloutError {
    #[error("a rollout is already running ({0})")]
    Busy(String),
    #[error("no rollout is running")]
    NoneRunning,
    #[error("{0}")]
    Invalid(String),
}

struct Running {
    status: Arc<Mutex<Status>>,
    commands: mpsc::UnboundedSender<Command>,
}

/// Starts rollouts and routes commands to the one running.
pub struct Engine {
    routing: Arc<RoutingHandle>,
    sink: Arc<dyn RolloutSink>,
    current: Mutex<Option<Running>>,
    next_id: Mutex<u64>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine").finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Engine {
    pub fn new(routing: Arc<RoutingHandle>, sink: Arc<dyn RolloutSink>) -> Self {
        Self {
            routing,
            sink,
            current: Mutex::new(None),
            next_id: Mutex::new(1),
        }
    }

    /// Validates and starts a rollout; `request` is kept with it.
    pub fn start(&self, spec: RolloutSpec, request: Value) -> Result<Status, RolloutError> {
        self.launch(spec, request, None)
    }

    /// Continues a stored rollout after a restart from step `step` (0-based),
    /// without pre-checks; an abort then restores all traffic to `from`.
    pub fn resume(&self, spec: RolloutSpec, request: Value, step: usize) -> Result<Status, RolloutError> {
        self.launch(spec, request, Some(step))
    }

    fn launch(&self, spec: RolloutSpec, request: Value, resume_at: Option<usize>) -> Result<Status, RolloutError> {
        let table = self.routing.snapshot();
        for pool in [&spec.from, &spec.to] {
            if table.pool(pool).is_none() {
                return Err(RolloutError::Invalid(format!("no pool named {pool:?}")));
            }
        }
        if spec.from == spec.to {
            return Err(RolloutError::Invalid("from and to must be different pools".into()));
        }
        if spec
            .steps
            .iter()
            .any(|s| matches!(s, Step::Weight { weight, .. } if *weight > 100))
        {
            return Err(RolloutError::Invalid("step weights are percentages, 0 to 100".into()));
        }
        if table.pool(&spec.to).is_some_and(|p| p.backends.is_empty()) {
            return Err(RolloutError::Invalid(format!(
                "pool {:?} has no backends to roll out to",
                spec.to
            )));
        }
        let mut current = lock(&self.current);
        if let Some(r) = current.as_ref() {
            let s = lock(&r.status);
            if !s.phase.finished() {
                return Err(RolloutError::Busy(format!(
                    "{} → {}, {}",
                    s.spec.from,
                    s.spec.to,
                    s.phase.name()
                )));
            }
        }
        let id = {
            let mut n = lock(&self.next_id);
            let id = *n;
            *n += 1;
            id
        };
        let status = Arc::new(Mutex::new(Status {
            id,
            spec: spec.clone(),
            phase: Phase::PreChecks,
            reason: "started".into(),
            smoke: Vec::new(),
            started: Instant::now(),
            request,
        }));
        let (tx, rx) = mpsc::unbounded_channel();
        let snapshot = lock(&status).clone();
        self.sink.transition(&snapshot);
        tokio::spawn(drive(
            Arc::clone(&self.routing),
            Arc::clone(&self.sink),
            Arc::clone(&status),
            rx,
            resume_at,
        ));
        *current = Some(Running { status, commands: tx });
        Ok(snapshot)
    }

    /// The latest rollout, running or finished.
    pub fn current(&self) -> Option<Status> {
        lock(&self.current).as_ref().map(|r| lock(&r.status).clone())
    }

    pub fn command(&self, command: Command) -> Result<Status, RolloutError> {
        let current = lock(&self.current);
        let running = current.as_ref().ok_or(RolloutError::NoneRunning)?;
        if lock(&running.status).phase.finished() {
            return Err(RolloutError::NoneRunning);
        }
        running.commands.send(command).map_err(|_| RolloutError::NoneRunning)?;
        Ok(lock(&running.status).clone())
    }
}

struct Run {
    routing: Arc<RoutingHandle>,
    sink: Arc<dyn RolloutSink>,
    status: Arc<Mutex<Status>>,
    commands: mpsc::UnboundedReceiver<Command>,
    spec: RolloutSpec,
    /// Weights before the rollout: what an abort restores.
    original: HashMap<String, u32>,
}

/// How a wait ended.
enum Wake {
    Elapsed,
    Promote { full: bool },
    Abort(String),
}

impl Run {
    fn set(&self, phase: Phase, reason: String) {
        let snapshot = {
            let mut s = lock(&self.status);
            s.phase = phase;
            s.reason = reason;
            s.clone()
        };
        info!(state = snapshot.phase.name(), reason = %snapshot.reason, "rollout");
        self.sink.transition(&snapshot);
    }

    async fn weigh(&self, to_weight: u32, why: &str) -> Result<(), String> {
        let mut weights: HashMap<String, u32> = self
            .routing
            .snapshot()
            .pools()
            .iter()
            .map(|p| (p.name.to_string(), 0))
            .collect();
        weights.insert(self.spec.from.clone(), 100 - to_weight);
        weights.insert(self.spec.to.clone(), to_weight);
        self.routing
            .apply_weights_because(&weights, ROLLOUT_ACTOR, "rollout.step", Some(why), true)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    /// Waits `hold` (forever when `None`: a gate), analysing `to` every
    /// interval and obeying commands; a paused hold does not expire.
    async fn hold(&mut self, hold: Option<Duration>, analyse: bool) -> Wake {
        if hold == Some(Duration::ZERO) {
            return Wake::Elapsed;
        }
        let until = hold.map(|h| Instant::now() + h);
        let mut failed = 0;
        let mut paused = false;
        let mut tick = tokio::time::interval(self.spec.analysis_interval);
        tick.tick().await;
        loop {
            let expire = async {
                match until {
                    Some(at) if !paused => tokio::time::sleep_until(at).await,
                    _ => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                command = self.commands.recv() => match command {
                    Some(Command::Abort) | None => return Wake::Abort("aborted by an operator".into()),
                    Some(Command::Promote { full }) => return Wake::Promote { full },
                    Some(Command::Pause) => paused = true,
                    Some(Command::Resume) => {
                        if hold.is_none() {
                            return Wake::Promote { full: false };
                        }
                        paused = false;
                    }
                },
                _ = tick.tick() => {
                    if analyse && let Some(reason) = self.analyse(&mut failed) {
                        return Wake::Abort(reason);
                    }
                }
                () = expire => return Wake::Elapsed,
            }
        }
    }

    /// One analysis: `Some(reason)` once `max_failed_checks` fail in a row.
    fn analyse(&self, failed: &mut u32) -> Option<String> {
        let table = self.routing.snapshot();
        // Someone else changed the weights (an operator, the rollback guard).
        let expected = lock(&self.status).phase.clone();
        if let (Some(to), Phase::Step(_)) = (table.pool(&self.spec.to), expected)
            && to.weight == 0
            && self
                .spec
                .steps
                .iter()
                .all(|s| !matches!(s, Step::Weight { weight: 0, .. }))
        {
            return Some(format!("{} was taken out of traffic by another change", self.spec.to));
        }
        let now = Instant::now();
        let window = self.spec.analysis.window;
        let to = table.pool(&self.spec.to)?.stats.window.snapshot(now, window);
        let from = table
            .pool(&self.spec.from)
            .map(|p| p.stats.window.snapshot(now, window));
        match judge(&self.spec.to, &to, from.as_ref(), &self.spec.analysis) {
            Verdict::Breach { reason, .. } => {
                *failed += 1;
                warn!(%reason, failed = *failed, "rollout analysis failed");
                (*failed >= self.spec.max_failed_checks).then_some(reason)
            }
            _ => {
                *failed = 0;
                None
            }
        }
    }

    async fn abort(&self, reason: String) {
        let why = format!("rollout aborted: {reason}");
        if let Err(e) = self
            .routing
            .apply_weights_because(&self.original, ROLLOUT_ACTOR, "rollout.abort", Some(&why), true)
            .await
        {
            warn!(error = %e, "could not restore the weights after an abort");
        }
        self.set(Phase::Aborted, reason);
    }
}

async fn drive(
    routing: Arc<RoutingHandle>,
    sink: Arc<dyn RolloutSink>,
    status: Arc<Mutex<Status>>,
    commands: mpsc::UnboundedReceiver<Command>,
    resume_at: Option<usize>,
) {
    let spec = lock(&status).spec.clone();
    let mut original: HashMap<String, u32> = routing
        .snapshot()
        .pools()
        .iter()
        .map(|p| (p.name.to_string(), p.weight))
        .collect();
    if resume_at.is_some() {
        // The weights before the rollout are gone with the old process:
        // an abort sends everything back to `from`.
        original.values_mut().for_each(|w| *w = 0);
        original.insert(spec.from.clone(), 100);
    }
    let mut run = Run {
        routing,
        sink,
        status,
        commands,
        spec,
        original,
    };
    if resume_at.is_none()
        && let Err(reason) = pre_checks(&run).await
    {
        run.abort(reason).await;
        return;
    }
    let steps = run.spec.steps.clone();
    let mut i = resume_at.unwrap_or(0).min(steps.len());
    while i < steps.len() {
        match &steps[i] {
            Step::Weight { weight, hold } => {
                run.set(Phase::Step(i), format!("step {}: {} at {weight}%", i + 1, run.spec.to));
                if let Err(e) = run.weigh(*weight, &format!("rollout step {}", i + 1)).await {
                    run.abort(format!("could not set the weights: {e}")).await;
                    return;
                }
                if *weight == 100 {
                    // The switch: check the new version again before holding.
                    if let Err(reason) = smoke(&run).await {
                        run.abort(reason).await;
                        return;
                    }
                }
                match run.hold(Some(*hold), true).await {
                    Wake::Elapsed | Wake::Promote { full: false } => {}
                    Wake::Promote { full: true } => break,
                    Wake::Abort(reason) => {
                        run.abort(reason).await;
                        return;
                    }
                }
            }
            Step::Pause => {
                run.set(
                    Phase::Paused(i),
                    format!("paused at step {}: waiting for promote", i + 1),
                );
                match run.hold(None, true).await {
                    Wake::Elapsed | Wake::Promote { full: false } => {}
                    Wake::Promote { full: true } => break,
                    Wake::Abort(reason) => {
                        run.abort(reason).await;
                        return;
                    }
                }
            }
        }
        i += 1;
    }
    if let Err(e) = run.weigh(100, "rollout promoted").await {
        run.abort(format!("could not promote: {e}")).await;
        return;
    }
    run.set(
        Phase::Monitoring,
        format!("promoted; {} watched for {:?}", run.spec.to, run.spec.post_promotion),
    );
    match run.hold(Some(run.spec.post_promotion), true).await {
        Wake::Abort(reason) => run.abort(reason).await,
        _ => run.set(Phase::Completed, format!("{} serves all traffic", run.spec.to)),
    }
}

/// Every `to` backend healthy (within the health gate), then smoke checks.
async fn pre_checks(run: &Run) -> Result<(), String> {
    let deadline = Instant::now() + run.spec.health_gate;
    loop {
        let table = run.routing.snapshot();
        let pool = table.pool(&run.spec.to).ok_or("the pool is gone")?;
        let unhealthy: Vec<&str> = pool
            .backends
            .iter()
            .filter(|b| !b.is_routable())
            .map(|b| b.addr())
            .collect();
        if unhealthy.is_empty() {
            break;
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "backends of {} not healthy: {}",
                run.spec.to,
                unhealthy.join(", ")
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    smoke(run).await
}

/// Runs the smoke checks against every `to` backend directly.
async fn smoke(run: &Run) -> Result<(), String> {
    let table = run.routing.snapshot();
    let pool = table.pool(&run.spec.to).ok_or("the pool is gone")?;
    let mut results = Vec::new();
    for backend in &pool.backends {
        for check in &run.spec.smoke {
            let outcome = crate::smoke::run(backend.addr(), check).await;
            let line = match &outcome {
                Ok(ms) => format!("{} on {}: ok in {ms} ms", check.name, backend.addr()),
                Err(why) => format!("{} on {}: {why}", check.name, backend.addr()),
            };
            results.push(line.clone());
            lock(&run.status).smoke = results.clone();
            if outcome.is_err() {
                return Err(format!("smoke check failed: {line}"));
            }
        }
    }
    Ok(())
}
