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
use sluice_proxy::window::WindowSnapshot;
use sluice_proxy::{Fence, RoutingHandle};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::{info, warn};

use crate::guard::{BreachKind, Verdict, judge};
use crate::hooks::{self, Hook, HookContext, HookOutcome, HookPoint, OnFailure};

/// The actor recorded for the engine's own routing changes.
pub const ROLLOUT_ACTOR: &str = "rollout";

/// How often a step the store refused is tried again.
const STORE_RETRY: Duration = Duration::from_secs(1);

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
    pub method: http::Method,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Option<String>,
    pub expect_status: u16,
    pub body_contains: Option<String>,
    /// The answer is JSON and the value at this pointer (RFC 6901) equals
    /// `json_equals`.
    pub json_pointer: Option<(String, Value)>,
    pub max_latency: Duration,
    /// A gRPC check instead of the HTTP request (then only `name` and
    /// `max_latency` apply).
    pub grpc: Option<GrpcSmoke>,
}

/// A gRPC smoke check, for pools of gRPC servers (`protocol = "http2"`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GrpcSmoke {
    /// `grpc.health.v1.Health/Check` for `service` answers SERVING.
    Health { service: String },
    /// `method` (`/pkg.Service/Method`) called with `message` (one encoded
    /// protobuf message) ends with status `expect_code`.
    Call {
        method: String,
        message: Vec<u8>,
        expect_code: u8,
    },
}

/// How an abort gives the traffic back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RollbackMode {
    /// All of it at once (the default).
    Instant,
    /// Back down through the earlier steps, one analysis interval each.
    Gradual,
}

/// `to` judged against `from` over the same window, on top of the
/// absolute thresholds.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Comparison {
    /// Most `to`'s error ratio may exceed `from`'s (0.005: half a point).
    pub max_error_ratio_increase: Option<f64>,
    /// Most `to`'s P95 may be as a multiple of `from`'s.
    pub max_p95_ratio: Option<f64>,
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
    pub comparison: Comparison,
    pub hooks: Vec<(HookPoint, Hook)>,
    pub rollback: RollbackMode,
    /// Pre-checks and hooks (with `SLUICE_DRY_RUN=1`) only; no weight changes.
    pub dry_run: bool,
    /// Start even if `to` runs a version fenced off by a contract step.
    pub force: bool,
}

impl RolloutSpec {
    fn hooks_at(&self, point: HookPoint) -> impl Iterator<Item = &Hook> {
        self.hooks.iter().filter(move |(p, _)| *p == point).map(|(_, h)| h)
    }

    /// What the rollout will do, step by step, for people (and dry runs).
    pub fn plan(&self) -> Vec<String> {
        let hooks = |point: HookPoint| {
            let names: Vec<&str> = self.hooks_at(point).map(|h| h.name.as_str()).collect();
            (!names.is_empty()).then(|| format!("{} hooks: {}", point.name(), names.join(", ")))
        };
        let mut plan = Vec::new();
        plan.extend(hooks(HookPoint::PreRollout));
        plan.push(format!(
            "pre-checks: every backend of {} healthy within {:?}, then {} smoke check(s) on each",
            self.to,
            self.health_gate,
            self.smoke.len()
        ));
        plan.extend(hooks(HookPoint::PreSwitch));
        for (i, step) in self.steps.iter().enumerate() {
            plan.push(match step {
                Step::Weight { weight, hold } => format!(
                    "step {}: {} at {weight}%, held {hold:?}, analysed every {:?}",
                    i + 1,
                    self.to,
                    self.analysis_interval
                ),
                Step::Pause => format!("step {}: pause until promote", i + 1),
            });
        }
        plan.push(format!(
            "promote: {} at 100%, watched for {:?}",
            self.to, self.post_promotion
        ));
        plan.extend(hooks(HookPoint::PostPromotion));
        let mode = match self.rollback {
            RollbackMode::Instant => "at once",
            RollbackMode::Gradual => "back through the steps",
        };
        plan.push(format!("on failure: traffic back to {} {mode}", self.from));
        plan.extend(hooks(HookPoint::OnRollback));
        plan
    }
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
    /// Stopped here without an outcome: this replica lost the store or the
    /// leadership. The stored record is where the leader continues from.
    Suspended,
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
            Phase::Suspended => "suspended",
        }
    }

    pub fn finished(&self) -> bool {
        matches!(self, Phase::Completed | Phase::Aborted)
    }

    /// Driven by this process right now.
    pub fn active(&self) -> bool {
        !self.finished() && *self != Phase::Suspended
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
    /// Every hook run so far, in order.
    pub hooks: Vec<Value>,
    /// The pools' versions when the rollout started.
    pub from_version: String,
    pub to_version: String,
    /// Set once the contract step ran: `from`'s version is fenced off.
    pub fence: Option<Fence>,
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
            "from_version": self.from_version,
            "to_version": self.to_version,
            "strategy": self.spec.strategy,
            "state": self.phase.name(),
            "step": step,
            "steps": self.spec.steps.len(),
            "reason": self.reason,
            "smoke": self.smoke,
            "hooks": self.hooks,
            "dry_run": self.spec.dry_run,
            "plan": self.spec.plan(),
            "contracted": self.fence.is_some(),
            "elapsed_seconds": self.started.elapsed().as_secs_f64(),
        })
    }
}

/// Told about every transition (storage, audit, alerts).
pub trait RolloutSink: Send + Sync {
    fn transition(&self, status: &Status);
    /// A hook ran (audit trail; a failure is also worth an alert).
    fn hook(&self, _status: &Status, _outcome: &HookOutcome) {}
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
    /// `to` runs a version a contract step fenced off.
    #[error("{0}")]
    Fenced(String),
}

struct Running {
    status: Arc<Mutex<Status>>,
    commands: mpsc::UnboundedSender<Command>,
    task: tokio::task::AbortHandle,
}

/// Starts rollouts and routes commands to the one running.
pub struct Engine {
    routing: Arc<RoutingHandle>,
    /// Other replicas' windows, added to this one's in every analysis.
    peers: Arc<crate::cluster::PeerWindows>,
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
            peers: Arc::default(),
            sink,
            current: Mutex::new(None),
            next_id: Mutex::new(1),
        }
    }

    /// Analyses with the other replicas' windows added (shared store).
    pub fn with_peers(mut self, peers: Arc<crate::cluster::PeerWindows>) -> Self {
        self.peers = peers;
        self
    }

    /// Validates and starts a rollout; `request` is kept with it.
    pub fn start(&self, spec: RolloutSpec, request: Value) -> Result<Status, RolloutError> {
        self.launch(spec, request, None)
    }

    /// Continues a stored rollout after a restart from step `step` (0-based),
    /// `elapsed` into its hold, without pre-checks; an abort then restores
    /// all traffic to `from`.
    pub fn resume(
        &self,
        spec: RolloutSpec,
        request: Value,
        step: usize,
        elapsed: Duration,
    ) -> Result<Status, RolloutError> {
        self.launch(spec, request, Some((step, elapsed)))
    }

    fn launch(
        &self,
        spec: RolloutSpec,
        request: Value,
        resume_at: Option<(usize, Duration)>,
    ) -> Result<Status, RolloutError> {
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
        let version = |pool: &str| table.pool(pool).map(|p| p.version.to_string()).unwrap_or_default();
        let to_weight = HashMap::from([(spec.to.clone(), 100)]);
        if !spec.force
            && resume_at.is_none()
            && let Some(reason) = self.routing.fenced(&to_weight)
        {
            return Err(RolloutError::Fenced(reason));
        }
        let mut current = lock(&self.current);
        if let Some(r) = current.as_ref() {
            let s = lock(&r.status);
            if s.phase.active() {
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
            hooks: Vec::new(),
            from_version: version(&spec.from),
            to_version: version(&spec.to),
            fence: None,
        }));
        let (tx, rx) = mpsc::unbounded_channel();
        let snapshot = lock(&status).clone();
        self.sink.transition(&snapshot);
        let task = tokio::spawn(drive(
            Arc::clone(&self.routing),
            Arc::clone(&self.peers),
            Arc::clone(&self.sink),
            Arc::clone(&status),
            rx,
            resume_at,
        ))
        .abort_handle();
        *current = Some(Running {
            status,
            commands: tx,
            task,
        });
        Ok(snapshot)
    }

    /// The latest rollout, running or finished.
    pub fn current(&self) -> Option<Status> {
        lock(&self.current).as_ref().map(|r| lock(&r.status).clone())
    }

    pub fn command(&self, command: Command) -> Result<Status, RolloutError> {
        let current = lock(&self.current);
        let running = current.as_ref().ok_or(RolloutError::NoneRunning)?;
        if !lock(&running.status).phase.active() {
            return Err(RolloutError::NoneRunning);
        }
        running.commands.send(command).map_err(|_| RolloutError::NoneRunning)?;
        Ok(lock(&running.status).clone())
    }

    /// Stops driving the running rollout without an outcome: no weight is
    /// restored and nothing is stored (the store may be gone). Whichever
    /// replica leads next continues it from the stored record; until then
    /// its status here says why it stopped.
    pub fn suspend(&self, reason: &str) {
        let current = lock(&self.current);
        let Some(running) = current.as_ref() else { return };
        let mut status = lock(&running.status);
        if !status.phase.active() {
            return;
        }
        running.task.abort();
        warn!(id = status.id, %reason, "rollout suspended");
        status.phase = Phase::Suspended;
        status.reason = reason.to_owned();
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
    /// What hooks are told; versions as they were at the start.
    context: HookContext,
    peers: Arc<crate::cluster::PeerWindows>,
    /// The rollout changed weights: an abort must put them back.
    weighed: bool,
    /// `pre_switch` (the expand step) started: an abort runs `on_rollback`.
    expanded: bool,
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

    /// Runs the hooks at `point` in order; `Err` on the first failing one
    /// whose failure aborts.
    async fn hooks(&self, point: HookPoint) -> Result<(), String> {
        for hook in self.spec.hooks_at(point) {
            let outcome = hooks::run(hook, point, &self.context).await;
            let snapshot = {
                let mut s = lock(&self.status);
                s.hooks.push(outcome.json());
                s.clone()
            };
            self.sink.hook(&snapshot, &outcome);
            if !outcome.ok {
                match hook.on_failure {
                    OnFailure::Abort => return Err(format!("{} failed: {}", point.name(), outcome.summary())),
                    OnFailure::Warn => warn!(hook = %outcome.summary(), "hook failed; continuing (on_failure = warn)"),
                }
            }
        }
        Ok(())
    }

    async fn weigh(&mut self, to_weight: u32, why: &str) -> Result<(), String> {
        self.weighed = true;
        let mut weights: HashMap<String, u32> = self
            .routing
            .snapshot()
            .pools()
            .iter()
            .map(|p| (p.name.to_string(), 0))
            .collect();
        weights.insert(self.spec.from.clone(), 100 - to_weight);
        weights.insert(self.spec.to.clone(), to_weight);
        let before = lock(&self.status).reason.clone();
        loop {
            match self
                .routing
                .apply_weights_because(&weights, ROLLOUT_ACTOR, "rollout.step", Some(why), true)
                .await
            {
                Ok(_) => break,
                // The store is unreachable: a step that cannot be stored is
                // not served, and giving up would need the store too. Wait.
                Err(sluice_proxy::TableError::Persist(e)) => {
                    let waiting = format!(
                        "paused: the store is unreachable ({e}); {why} ({} at {to_weight}%) is retried every second",
                        self.spec.to
                    );
                    warn!(reason = %waiting, "rollout waiting for the store");
                    lock(&self.status).reason = waiting;
                    tokio::select! {
                        command = self.commands.recv() => {
                            if matches!(command, Some(Command::Abort) | None) {
                                return Err("aborted by an operator while the store was unreachable".into());
                            }
                        }
                        () = tokio::time::sleep(STORE_RETRY) => {}
                    }
                }
                Err(e) => return Err(e.to_string()),
            }
        }
        lock(&self.status).reason = before;
        Ok(())
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
        let mut to = table.pool(&self.spec.to)?.stats.window.snapshot(now, window);
        self.peers.add_to(&self.spec.to, &mut to);
        let from = table.pool(&self.spec.from).map(|p| {
            let mut snap = p.stats.window.snapshot(now, window);
            self.peers.add_to(&self.spec.from, &mut snap);
            snap
        });
        let verdict = match judge(&self.spec.to, &to, from.as_ref(), &self.spec.analysis) {
            Verdict::Healthy => compare(&self.spec, &to, from.as_ref()),
            other => other,
        };
        match verdict {
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

    async fn abort(&mut self, reason: String) {
        if self.weighed {
            if self.spec.rollback == RollbackMode::Gradual {
                self.walk_back(&reason).await;
            }
            let why = format!("rollout aborted: {reason}");
            if let Err(e) = self
                .routing
                .apply_weights_because(&self.original, ROLLOUT_ACTOR, "rollout.abort", Some(&why), true)
                .await
            {
                warn!(error = %e, "could not restore the weights after an abort");
            }
        }
        // The backward migration, once the expand step may have run.
        let rollback = if self.expanded && !self.spec.dry_run {
            self.hooks(HookPoint::OnRollback).await.err()
        } else {
            None
        };
        let reason = match rollback {
            Some(failed) => format!("{reason}; then {failed}"),
            None => reason,
        };
        self.set(Phase::Aborted, reason);
    }

    /// Gradual rollback: `to` goes back down through the earlier steps'
    /// weights, one analysis interval each, before the original weights.
    async fn walk_back(&mut self, reason: &str) {
        let now = self.routing.snapshot().pool(&self.spec.to).map_or(0, |p| p.weight);
        let mut back: Vec<u32> = self
            .spec
            .steps
            .iter()
            .filter_map(|s| match s {
                Step::Weight { weight, .. } if *weight < now && *weight > 0 => Some(*weight),
                _ => None,
            })
            .collect();
        back.sort_unstable_by(|a, b| b.cmp(a));
        back.dedup();
        for weight in back {
            let phase = lock(&self.status).phase.clone();
            self.set(
                phase,
                format!("rolling back gradually: {} at {weight}% ({reason})", self.spec.to),
            );
            if let Err(e) = self.weigh(weight, "gradual rollback").await {
                warn!(error = %e, "gradual rollback step failed; restoring at once");
                return;
            }
            tokio::time::sleep(self.spec.analysis_interval).await;
        }
    }
}

/// The optional comparison of `to` with `from` over the same window.
fn compare(spec: &RolloutSpec, to: &WindowSnapshot, from: Option<&WindowSnapshot>) -> Verdict {
    let min = spec.analysis.min_requests.max(1);
    let Some(from) = from.filter(|f| f.requests >= min && to.requests >= min) else {
        return Verdict::Healthy;
    };
    if let Some(max) = spec.comparison.max_error_ratio_increase {
        let (t, f) = (to.error_ratio(), from.error_ratio());
        if t - f > max {
            return Verdict::Breach {
                kind: BreachKind::ErrorRatio,
                reason: format!(
                    "{} error ratio {:.2}% is {:.2} points above {}'s {:.2}% (max increase {:.2} points)",
                    spec.to,
                    t * 100.0,
                    (t - f) * 100.0,
                    spec.from,
                    f * 100.0,
                    max * 100.0
                ),
            };
        }
    }
    if let (Some(max), Some(t), Some(f)) = (spec.comparison.max_p95_ratio, to.quantile(0.95), from.quantile(0.95))
        && !f.is_zero()
        && t.as_secs_f64() / f.as_secs_f64() > max
    {
        return Verdict::Breach {
            kind: BreachKind::Latency,
            reason: format!(
                "{} P95 {} ms is {:.1}× {}'s {} ms (max {max}×)",
                spec.to,
                t.as_millis(),
                t.as_secs_f64() / f.as_secs_f64(),
                spec.from,
                f.as_millis()
            ),
        };
    }
    Verdict::Healthy
}

async fn drive(
    routing: Arc<RoutingHandle>,
    peers: Arc<crate::cluster::PeerWindows>,
    sink: Arc<dyn RolloutSink>,
    status: Arc<Mutex<Status>>,
    commands: mpsc::UnboundedReceiver<Command>,
    resume_at: Option<(usize, Duration)>,
) {
    let (spec, id, from_version, to_version) = {
        let s = lock(&status);
        (s.spec.clone(), s.id, s.from_version.clone(), s.to_version.clone())
    };
    let table = routing.snapshot();
    let mut original: HashMap<String, u32> = table.pools().iter().map(|p| (p.name.to_string(), p.weight)).collect();
    if resume_at.is_some() {
        // The weights before the rollout are gone with the old process:
        // an abort sends everything back to `from`.
        original.values_mut().for_each(|w| *w = 0);
        original.insert(spec.from.clone(), 100);
    }
    let context = HookContext {
        rollout_id: id,
        from_pool: spec.from.clone(),
        to_pool: spec.to.clone(),
        from_version,
        to_version,
        dry_run: spec.dry_run,
    };
    let mut run = Run {
        routing,
        sink,
        status,
        commands,
        spec,
        original,
        context,
        peers,
        weighed: resume_at.is_some(),
        expanded: resume_at.is_some(),
    };
    if resume_at.is_none() {
        let prepared = async {
            run.hooks(HookPoint::PreRollout).await?;
            pre_checks(&run).await?;
            run.expanded = true;
            run.hooks(HookPoint::PreSwitch).await
        }
        .await;
        if let Err(reason) = prepared {
            run.abort(reason).await;
            return;
        }
    }
    if run.spec.dry_run {
        dry_run(&mut run).await;
        return;
    }
    let steps = run.spec.steps.clone();
    let (mut i, mut already_held) = resume_at.unwrap_or_default();
    i = i.min(steps.len());
    let mut resumed_step = resume_at.map(|_| i);
    while i < steps.len() {
        match &steps[i] {
            Step::Weight { weight, hold } => {
                run.set(Phase::Step(i), format!("step {}: {} at {weight}%", i + 1, run.spec.to));
                // A resumed step whose weights are already served was
                // applied by the replica that stored it: not again.
                let applied = resumed_step.take() == Some(i)
                    && run.routing.snapshot().pool(&run.spec.to).map(|p| p.weight) == Some(*weight);
                if !applied && let Err(e) = run.weigh(*weight, &format!("rollout step {}", i + 1)).await {
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
                // After a restart, only what was left of the hold.
                let hold = hold.saturating_sub(std::mem::take(&mut already_held));
                match run.hold(Some(hold), true).await {
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
    let monitoring = run.spec.post_promotion.saturating_sub(already_held);
    if let Wake::Abort(reason) = run.hold(Some(monitoring), true).await {
        run.abort(reason).await;
        return;
    }
    // The contract step: only once the new version has proved itself.
    if let Err(reason) = run.hooks(HookPoint::PostPromotion).await {
        run.abort(reason).await;
        return;
    }
    let contracted = run.spec.hooks_at(HookPoint::PostPromotion).next().is_some();
    if contracted {
        let fence = Fence {
            pool: run.spec.from.clone(),
            version: run.context.from_version.clone(),
            reason: format!(
                "pool {:?} runs {}, and rollout {}'s post_promotion (contract) hooks have run since: {} may not work \
                 on the contracted schema. Roll forward with a new version instead, or force the change",
                run.spec.from, run.context.from_version, run.context.rollout_id, run.context.from_version
            ),
        };
        run.routing.add_fence(fence.clone());
        lock(&run.status).fence = Some(fence);
    }
    run.set(Phase::Completed, format!("{} serves all traffic", run.spec.to));
}

/// The rest of a dry run once pre-checks and the first hooks passed: the
/// later hooks (told `SLUICE_DRY_RUN=1`), then the plan; no weight changes.
async fn dry_run(run: &mut Run) {
    for point in [HookPoint::PostPromotion, HookPoint::OnRollback] {
        if let Err(reason) = run.hooks(point).await {
            run.set(Phase::Aborted, format!("dry run failed: {reason}"));
            return;
        }
    }
    run.set(
        Phase::Completed,
        format!(
            "dry run passed: pre-checks and {} hook(s) ok; no weight was changed",
            lock(&run.status).hooks.len()
        ),
    );
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
            let outcome = crate::smoke::run(backend.addr(), pool.tls.as_deref(), pool.protocol, check).await;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(comparison: Comparison) -> RolloutSpec {
        RolloutSpec {
            from: "blue".into(),
            to: "green".into(),
            strategy: "canary".into(),
            steps: vec![
                Step::Weight {
                    weight: 10,
                    hold: Duration::from_secs(60),
                },
                Step::Pause,
                Step::Weight {
                    weight: 100,
                    hold: Duration::ZERO,
                },
            ],
            analysis: RollbackConfig::default(),
            analysis_interval: Duration::from_secs(10),
            max_failed_checks: 2,
            smoke: Vec::new(),
            post_promotion: Duration::from_secs(60),
            health_gate: Duration::from_secs(60),
            comparison,
            hooks: Vec::new(),
            rollback: RollbackMode::Instant,
            dry_run: false,
            force: false,
        }
    }

    fn window(requests: u64, errors: u64, p95_ms: u64) -> WindowSnapshot {
        WindowSnapshot::from_counts(requests, errors, Duration::from_secs(30))
            .with_latency(Duration::from_millis(p95_ms))
    }

    #[test]
    fn the_comparison_judges_to_against_from() {
        let strict = spec(Comparison {
            max_error_ratio_increase: Some(0.002),
            max_p95_ratio: Some(1.5),
        });
        // 0.5% vs 0.1%: within the absolute 1%, but 0.4 points worse.
        let verdict = compare(&strict, &window(1000, 5, 10), Some(&window(1000, 1, 10)));
        let Verdict::Breach { kind, reason } = verdict else {
            panic!("{verdict:?}")
        };
        assert_eq!(kind, BreachKind::ErrorRatio);
        assert!(reason.contains("0.40 points above blue"), "{reason}");
        // Twice as slow as blue.
        let verdict = compare(&strict, &window(1000, 0, 40), Some(&window(1000, 0, 20)));
        assert!(
            matches!(
                verdict,
                Verdict::Breach {
                    kind: BreachKind::Latency,
                    ..
                }
            ),
            "{verdict:?}"
        );
        // Alike, or not enough data on one side: healthy.
        assert_eq!(
            compare(&strict, &window(1000, 1, 20), Some(&window(1000, 1, 20))),
            Verdict::Healthy
        );
        assert_eq!(
            compare(&strict, &window(1000, 9, 90), Some(&window(5, 0, 20))),
            Verdict::Healthy
        );
        // Without a comparison configured, nothing is compared.
        let lax = spec(Comparison::default());
        assert_eq!(
            compare(&lax, &window(1000, 9, 90), Some(&window(1000, 0, 20))),
            Verdict::Healthy
        );
    }

    #[test]
    fn the_plan_lists_every_stage() {
        let mut s = spec(Comparison::default());
        s.hooks.push((
            HookPoint::PreSwitch,
            Hook {
                name: "expand".into(),
                action: hooks::HookAction::Webhook {
                    url: "http://127.0.0.1:1/".into(),
                },
                timeout: Duration::from_secs(1),
                on_failure: OnFailure::Abort,
            },
        ));
        let plan = s.plan();
        assert_eq!(plan[1], "pre_switch hooks: expand");
        assert!(plan[2].starts_with("step 1: green at 10%"), "{plan:?}");
        assert_eq!(plan[3], "step 2: pause until promote");
        assert!(
            plan.last()
                .unwrap()
                .starts_with("on failure: traffic back to blue at once")
        );
    }
}
