//! What a rollout is asked to do: its steps, checks, hooks and comparison,
//! and the plan they make for people.

use std::time::Duration;

use serde_json::Value;
use sluice_config::RollbackConfig;

use crate::hooks::{Hook, HookPoint};

#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Give `to` this share and hold it for a while, analysing.
    Weight {
        weight: sluice_config::Weight,
        hold: Duration,
    },
    /// Wait for `promote` (or `resume`).
    Pause,
    /// Copy `percent` of live requests to `to` (answers discarded) and
    /// hold, analysing `to` on those copies; the weights do not change.
    Mirror { percent: f64, hold: Duration },
    /// Wait until `url` answers a POST with 2xx (asked every `interval`),
    /// for at most `timeout`; an operator's promote passes it too.
    Gate {
        url: String,
        timeout: Duration,
        interval: Duration,
    },
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

/// What a held step that never gathered evidence does at its deadline
/// (`analysis.on_no_evidence`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoEvidence {
    /// Waits for an operator (promote, resume to wait again, or abort);
    /// the default.
    Pause,
    Abort,
    /// Ends the step anyway (an explicit opt-in).
    Promote,
}

impl NoEvidence {
    pub fn name(self) -> &'static str {
        match self {
            NoEvidence::Pause => "pause",
            NoEvidence::Abort => "abort",
            NoEvidence::Promote => "promote",
        }
    }
}

/// What a failed analysis does to a rollout (`on_failure`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnalysisFailure {
    /// The weights before the rollout come back and it ends; the default.
    Abort,
    /// The weights before the rollout come back and it waits for an
    /// operator: resume retries the step, promote goes on, abort ends it.
    Pause,
}

pub use crate::compare::Comparison;

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
    /// How long a held step may wait for evidence in all (none: three
    /// times its hold).
    pub evidence_deadline: Option<Duration>,
    pub on_no_evidence: NoEvidence,
    pub on_failure: AnalysisFailure,
    /// `analysis.checks`: Prometheus queries and webhooks judged with the
    /// pools' own numbers at every analysed step.
    pub checks: Vec<crate::checks::ExternalCheck>,
}

impl RolloutSpec {
    /// Whether a step must gather evidence before it ends: it is held and
    /// sends `to` traffic (a step at 0% or without a hold is not analysed).
    pub fn needs_evidence(&self, weight: sluice_config::Weight, hold: Duration) -> bool {
        !weight.is_zero() && !hold.is_zero()
    }

    /// How long a step held `hold` may wait for evidence in all.
    pub fn evidence_deadline(&self, hold: Duration) -> Duration {
        self.evidence_deadline.unwrap_or(hold * 3).max(hold)
    }

    pub(super) fn hooks_at(&self, point: HookPoint) -> impl Iterator<Item = &Hook> {
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
                Step::Weight { weight, hold } if self.needs_evidence(*weight, *hold) => format!(
                    "step {}: {} at {weight}%, held {hold:?}, analysed every {:?}; ends once a window of {} \
                     requests was judged healthy (else waits up to {:?}, then {})",
                    i + 1,
                    self.to,
                    self.analysis_interval,
                    self.analysis.min_requests.max(1),
                    self.evidence_deadline(*hold),
                    self.on_no_evidence.name()
                ),
                Step::Weight { weight, hold } => format!(
                    "step {}: {} at {weight}%, held {hold:?}, analysed every {:?}",
                    i + 1,
                    self.to,
                    self.analysis_interval
                ),
                Step::Pause => format!("step {}: pause until promote", i + 1),
                Step::Gate { url, timeout, interval } => format!(
                    "step {}: gate: waits until {url} answers 2xx (asked every {interval:?}, at most {timeout:?})",
                    i + 1
                ),
                Step::Mirror { percent, hold } => format!(
                    "step {}: {percent}% of live requests copied to {} (answers discarded), held {hold:?}, \
                     analysed every {:?}; ends once a window of {} copies was judged healthy (else waits up to {:?}, then {})",
                    i + 1,
                    self.to,
                    self.analysis_interval,
                    self.analysis.min_requests.max(1),
                    self.evidence_deadline(*hold),
                    self.on_no_evidence.name()
                ),
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
        plan.push(match self.on_failure {
            AnalysisFailure::Abort => format!("on failure: traffic back to {} {mode}", self.from),
            AnalysisFailure::Pause => format!(
                "on failure: traffic back to {} at once, then paused for an operator (resume retries the step)",
                self.from
            ),
        });
        plan.extend(hooks(HookPoint::OnRollback));
        plan
    }
}
