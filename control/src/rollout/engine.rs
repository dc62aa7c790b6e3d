//! Starts rollouts, one at a time, and routes operators' commands to the
//! one running.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use sluice_routing::RoutingHandle;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::warn;

use super::run::drive;
use super::spec::*;
use super::status::*;

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
            .any(|s| matches!(s, Step::Weight { weight, .. } if *weight > sluice_config::Weight::FULL))
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
        let to_weight = HashMap::from([(spec.to.clone(), sluice_config::Weight::FULL)]);
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
            hold_until: None,
            evidence: None,
            checks: Vec::new(),
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
