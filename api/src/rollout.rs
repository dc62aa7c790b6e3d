//! A rollout as the engine reports it: `POST /api/v1/rollouts`,
//! `GET /api/v1/rollouts/current` and the commands on it.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Rollout {
    /// Counted from 1 in each process.
    pub id: u64,
    pub from: String,
    pub to: String,
    /// The pools' versions when the rollout started.
    pub from_version: String,
    pub to_version: String,
    /// `canary` or `blue-green`.
    pub strategy: String,
    /// A phase name: `pre-checks`, `step`, `paused`, `monitoring`,
    /// `completed`, `aborted` or `suspended`.
    pub state: String,
    /// The step (from 1) while in `step` or `paused`.
    pub step: Option<usize>,
    pub steps: usize,
    /// What happened last, for people.
    pub reason: String,
    /// The smoke checks' results, one line each.
    pub smoke: Vec<String>,
    /// Every hook run so far, in order.
    pub hooks: Vec<HookRun>,
    pub dry_run: bool,
    /// What the rollout does, step by step.
    pub plan: Vec<String>,
    /// The contract step ran: `from`'s version is fenced off.
    pub contracted: bool,
    pub elapsed_seconds: f64,
    /// What is left of the current timed hold (a step's or monitoring's),
    /// when one runs; a paused hold keeps counting but does not end.
    #[serde(default)]
    pub hold_remaining_seconds: Option<f64>,
    /// What the current held step's analysis has seen of `to` so far.
    #[serde(default)]
    pub evidence: Option<StepEvidence>,
    /// `analysis.checks`' latest results (Prometheus queries, webhooks),
    /// one line each.
    #[serde(default)]
    pub checks: Vec<String>,
}

/// The evidence a held step gathers before it may end: requests to `to`
/// (every replica's) judged in one analysis window.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StepEvidence {
    /// The most requests one analysis window of the step has held.
    pub requests: u64,
    /// Errors in that window.
    pub errors: u64,
    /// That window's P95, in milliseconds (none without requests).
    pub p95_ms: Option<f64>,
    /// Requests a window needs before it is judged (`analysis.min_requests`).
    pub min_requests: u64,
    /// A window of at least `min_requests` was judged healthy: the step
    /// may end when its hold does.
    pub enough: bool,
    /// Everything `to` served since the step's traffic began, as the
    /// sequential tests judge it.
    #[serde(default)]
    pub since: SequentialEvidence,
}

/// The sequential tests' statistics over everything `to` served since the
/// step's traffic began (every replica's): the step fails as soon as one
/// reaches `bar`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SequentialEvidence {
    pub requests: u64,
    pub errors: u64,
    /// Requests slower than `max_p95`.
    pub slow: u64,
    /// The errors test's evidence (its likelihood ratio against
    /// `max_error_ratio`, averaged over the alternatives).
    pub error_evidence: f64,
    /// The latency test's (slower than `max_p95` against 5%).
    pub latency_evidence: f64,
    /// What either (or a route's) must reach: 1 / its share of `alpha`.
    pub bar: f64,
    pub routes: Vec<RouteEvidence>,
}

/// One `[[analysis.routes]]` route's share of [`SequentialEvidence`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RouteEvidence {
    pub name: String,
    pub requests: u64,
    pub errors: u64,
    pub evidence: f64,
}

/// One run of a rollout hook.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HookRun {
    pub name: String,
    /// `pre_rollout`, `pre_switch`, `post_promotion` or `on_rollback`.
    pub point: String,
    pub ok: bool,
    /// Exit code of a command, HTTP status of a webhook.
    pub code: Option<i32>,
    pub duration_ms: u64,
    /// stdout then stderr (or the response body), cut at 4 KiB.
    pub output: String,
    /// Why it failed, for people.
    pub error: Option<String>,
}
