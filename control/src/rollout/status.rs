//! Where a rollout stands, as operators see it, and what they may ask of
//! it.

use std::sync::Mutex;

use serde_json::Value;
use sluice_routing::Fence;
use tokio::time::Instant;

use crate::hooks::HookOutcome;

use super::spec::*;

/// The state a stored rollout record is closed with when a later process
/// continued it (as a new record).
pub const RESUMED: &str = "resumed";

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

    /// Every phase, in the order a rollout meets them (the steps at
    /// `step`).
    pub fn every(step: usize) -> [Phase; 7] {
        [
            Phase::PreChecks,
            Phase::Step(step),
            Phase::Paused(step),
            Phase::Monitoring,
            Phase::Completed,
            Phase::Aborted,
            Phase::Suspended,
        ]
    }

    /// The phase a stored rollout record names ([`Phase::name`], at
    /// `step`); `None` for [`RESUMED`] and anything else.
    pub fn from_stored(name: &str, step: usize) -> Option<Phase> {
        Phase::every(step).into_iter().find(|p| p.name() == name)
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
    pub hooks: Vec<sluice_api::HookRun>,
    /// The pools' versions when the rollout started.
    pub from_version: String,
    pub to_version: String,
    /// Set once the contract step ran: `from`'s version is fenced off.
    pub fence: Option<Fence>,
    /// When the timed hold running now ends (a step's or monitoring's).
    pub hold_until: Option<Instant>,
    /// What the held step running now has seen of `to`.
    pub evidence: Option<sluice_api::StepEvidence>,
    /// The external checks' latest results, one line each.
    pub checks: Vec<String>,
}

impl Status {
    /// As the API shows it.
    pub fn view(&self) -> sluice_api::Rollout {
        let step = match self.phase {
            Phase::Step(i) | Phase::Paused(i) => Some(i + 1),
            _ => None,
        };
        sluice_api::Rollout {
            id: self.id,
            from: self.spec.from.clone(),
            to: self.spec.to.clone(),
            from_version: self.from_version.clone(),
            to_version: self.to_version.clone(),
            strategy: self.spec.strategy.clone(),
            state: self.phase.name().to_owned(),
            step,
            steps: self.spec.steps.len(),
            reason: self.reason.clone(),
            smoke: self.smoke.clone(),
            hooks: self.hooks.clone(),
            dry_run: self.spec.dry_run,
            plan: self.spec.plan(),
            contracted: self.fence.is_some(),
            elapsed_seconds: self.started.elapsed().as_secs_f64(),
            hold_remaining_seconds: self
                .hold_until
                .map(|until| until.saturating_duration_since(Instant::now()).as_secs_f64()),
            evidence: self.evidence.clone(),
            checks: self.checks.clone(),
        }
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

/// A lock that a panic elsewhere does not poison for good.
pub(super) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
