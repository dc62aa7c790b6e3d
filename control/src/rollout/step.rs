//! How a held step ends besides its hold: not before evidence (an
//! analysis window of `min_requests` judged healthy, see `held_step`), and,
//! with `on_failure = "pause"`, a failed analysis that gives the traffic
//! back and waits for an operator instead of aborting.

use std::time::Duration;

use sluice_routing::mirror::MirrorRule;
use sluice_routing::window::WindowSnapshot;
use tokio::time::Instant;
use tracing::warn;

use super::run::{Run, Wake};
use super::spec::NoEvidence;
use super::status::{Phase, lock};
use crate::checks;
use crate::guard::Verdict;

impl Run {
    /// Starts copying `percent` of live requests to `to` (a mirror step).
    pub(super) async fn start_mirror(&mut self, percent: f64) {
        let rule = MirrorRule::for_rollout(&self.spec.to, percent);
        self.routing.set_rollout_mirror(Some(rule)).await;
        self.mirroring = true;
        self.count_afresh();
    }

    /// Ends a mirror step's copies, if one runs.
    pub(super) async fn stop_mirror(&mut self) {
        if self.mirroring {
            self.routing.set_rollout_mirror(None).await;
            self.mirroring = false;
        }
    }

    /// Keeps what a held step's analysis saw: the fullest window, and
    /// whether one of at least `min_requests` was judged healthy.
    pub(super) fn note_evidence(&self, to: &WindowSnapshot, verdict: &Verdict, since: sluice_api::SequentialEvidence) {
        let mut status = lock(&self.status);
        let Some(evidence) = status.evidence.as_mut() else {
            return;
        };
        evidence.since = since;
        let judged = matches!(verdict, Verdict::Healthy) && to.requests >= evidence.min_requests;
        // Until a window is judged, the fullest one; then the first judged.
        if !evidence.enough && (judged || to.requests >= evidence.requests) {
            evidence.requests = to.requests;
            evidence.errors = to.errors;
            evidence.p95_ms = to.quantile(0.95).map(|d| d.as_secs_f64() * 1e3);
        }
        evidence.enough |= judged;
    }

    pub(super) fn enough_evidence(&self) -> bool {
        lock(&self.status).evidence.as_ref().is_some_and(|e| e.enough)
    }

    /// Holds step `step` (`what`: `to` at its weight, or shadowing) for
    /// `hold` (what is left of `full_hold`), and then, when `evidence` is
    /// asked for and no
    /// analysis found a window of `min_requests` judged healthy, until one
    /// does or the evidence deadline passes; then `on_no_evidence`.
    pub(super) async fn held_step(
        &mut self,
        step: usize,
        what: &str,
        evidence: bool,
        (hold, full_hold): (Duration, Duration),
    ) -> Wake {
        if !evidence {
            return self.hold(Some(hold), true).await;
        }
        let min_requests = self.spec.analysis.min_requests.max(1);
        lock(&self.status).evidence = Some(sluice_api::StepEvidence {
            min_requests,
            ..Default::default()
        });
        let wait = self.spec.evidence_deadline(full_hold).saturating_sub(full_hold - hold);
        let mut deadline = Instant::now() + wait;
        let mut wake = self.hold(Some(hold), true).await;
        let wake = loop {
            if !matches!(wake, Wake::Elapsed) || self.enough_evidence() {
                break wake;
            }
            let seen = {
                let status = lock(&self.status);
                let requests = status.evidence.as_ref().map_or(0, |e| e.requests);
                format!("at most {requests} of the {min_requests} requests a window needs")
            };
            let now = Instant::now();
            if now < deadline {
                self.set(
                    Phase::Step(step),
                    format!(
                        "step {}: {what}, hold over; waiting for evidence ({seen} so far), {:?} more at most",
                        step + 1,
                        deadline - now
                    ),
                );
                self.awaiting_evidence = true;
                wake = self.hold(Some(deadline - now), true).await;
                self.awaiting_evidence = false;
                continue;
            }
            let missing = format!(
                "no evidence: step {} ({what}) saw {seen} within {:?}",
                step + 1,
                self.spec.evidence_deadline(full_hold)
            );
            match self.spec.on_no_evidence {
                NoEvidence::Abort => break Wake::Abort(format!("{missing} (on_no_evidence = abort)")),
                NoEvidence::Promote => {
                    self.set(
                        Phase::Step(step),
                        format!("{missing}; going on (on_no_evidence = promote)"),
                    );
                    break Wake::Elapsed;
                }
                NoEvidence::Pause => {
                    self.set(
                        Phase::Paused(step),
                        format!("{missing}; paused: promote to go on, resume to wait for evidence again, or abort"),
                    );
                    wake = match self.hold(None, true).await {
                        Wake::Resumed => {
                            self.set(
                                Phase::Step(step),
                                format!("step {}: resumed; waiting for evidence again", step + 1),
                            );
                            deadline = Instant::now() + self.spec.evidence_deadline(full_hold);
                            Wake::Elapsed
                        }
                        // An operator's promote ends the step.
                        Wake::Promote { full: false } => break Wake::Elapsed,
                        other => break other,
                    };
                }
            }
        };
        // The decision explained, in the status and its audit row: what
        // the step was judged on.
        let judged = lock(&self.status).evidence.take().filter(|e| e.enough);
        if let (Wake::Elapsed, Some(e)) = (&wake, judged) {
            let p95 = e.p95_ms.map(|ms| format!(", P95 {ms:.0} ms")).unwrap_or_default();
            let checks = {
                let status = lock(&self.status);
                if status.checks.is_empty() {
                    String::new()
                } else {
                    format!("; checks: {}", status.checks.join("; "))
                }
            };
            let s = &e.since;
            let routes: String = s
                .routes
                .iter()
                .map(|r| {
                    format!(
                        ", route {} {:.2} ({} errors in {})",
                        r.name, r.evidence, r.errors, r.requests
                    )
                })
                .collect();
            self.set(
                Phase::Step(step),
                format!(
                    "step {} passed: {what}; judged healthy on {} requests ({} errors{p95}) in one window, {} needed; \
                     since the step began {} requests, {} errors, {} slower than max_p95: evidence errors {:.2}, \
                     latency {:.2}{routes} (a step fails at {:.0}){checks}",
                    step + 1,
                    e.requests,
                    e.errors,
                    e.min_requests,
                    s.requests,
                    s.errors,
                    s.slow,
                    s.error_evidence,
                    s.latency_evidence,
                    s.bar
                ),
            );
        }
        wake
    }

    /// After a failed analysis under `on_failure = "pause"`: the weights
    /// before the rollout come back at once (users protected) and the
    /// rollout waits for an operator: resume retries step `step`, promote
    /// goes on, abort ends it.
    pub(super) async fn pause_after_failure(&mut self, step: usize, reason: &str) -> Wake {
        self.stop_mirror().await;
        let back = self.original.get(&self.spec.to).copied().unwrap_or_default();
        if let Err(e) = self.restore_original(&format!("rollout paused: {reason}")).await {
            warn!(error = %e, "could not restore the weights after a failed analysis; aborting");
            return Wake::Abort(format!("{reason}; the weights could not be restored ({e})"));
        }
        self.set(
            Phase::Paused(step),
            format!(
                "analysis failed: {reason}; {} back to {back}%; paused (on_failure = pause): resume retries step {}, \
                 promote goes on, abort ends the rollout",
                self.spec.to,
                step + 1
            ),
        );
        // Nothing to analyse while the new pool has its old share.
        self.hold(None, false).await
    }

    /// Runs the external checks that are due; the reason once
    /// `max_failed_checks` rounds in a row had a failing one.
    pub(super) async fn run_checks(&self, runs: &mut checks::CheckRuns) -> Option<String> {
        let step = match lock(&self.status).phase {
            Phase::Step(i) | Phase::Paused(i) => Some(i + 1),
            _ => None,
        };
        let mut failing = Vec::new();
        let mut ran = false;
        for (k, check) in self.spec.checks.iter().enumerate() {
            let due = runs
                .last
                .get(k)
                .copied()
                .flatten()
                .is_none_or(|at| at.elapsed() >= check.interval);
            if !due {
                continue;
            }
            ran = true;
            let outcome = checks::run(check, &self.context, step).await;
            if let Some(at) = runs.last.get_mut(k) {
                *at = Some(Instant::now());
            }
            {
                let mut status = lock(&self.status);
                if status.checks.len() != self.spec.checks.len() {
                    status.checks = vec![String::new(); self.spec.checks.len()];
                }
                if let Some(line) = status.checks.get_mut(k) {
                    line.clone_from(&outcome.line);
                }
            }
            if !outcome.pass {
                warn!(check = %outcome.line, "rollout check failed");
                failing.push(outcome.line);
            }
        }
        if !ran {
            return None;
        }
        if failing.is_empty() {
            runs.failed = 0;
            return None;
        }
        runs.failed += 1;
        (runs.failed >= self.spec.max_failed_checks).then(|| format!("check failed: {}", failing.join("; ")))
    }

    /// A gate step: asks `url` every `interval` until it answers 2xx, for
    /// at most `timeout`, analysing meanwhile; an operator's promote passes
    /// it, abort ends the rollout.
    pub(super) async fn gate(&mut self, step: usize, url: &str, timeout: Duration, interval: Duration) -> Wake {
        let deadline = Instant::now() + timeout;
        let mut first = true;
        loop {
            let (pass, line) = checks::webhook(
                url,
                "gate",
                "gate",
                &self.context,
                Some(step + 1),
                interval.max(Duration::from_secs(10)),
            )
            .await;
            if pass {
                self.set(Phase::Step(step), format!("step {}: gate passed: {line}", step + 1));
                return Wake::Elapsed;
            }
            let now = Instant::now();
            if now >= deadline {
                return Wake::Abort(format!("gate not passed within {timeout:?}: {line}"));
            }
            let waiting = format!(
                "step {}: gate: waiting for {url} to answer 2xx ({line}); {:?} left",
                step + 1,
                deadline - now
            );
            // Told (stored, audited, alerted) once; later answers only
            // update the status.
            if std::mem::take(&mut first) {
                self.set(Phase::Paused(step), waiting);
            } else {
                lock(&self.status).reason = waiting;
            }
            match self.hold(Some(interval.min(deadline - now)), true).await {
                Wake::Elapsed => {}
                other => return other,
            }
        }
    }
}
