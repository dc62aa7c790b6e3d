//! One rollout's run: pre-checks, steps with analysis, promotion and the
//! watch after it, or the way back.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sluice_config::Weight;
use sluice_routing::{Actor, RoutingAction, WeightChange};
use sluice_routing::{Fence, RoutingHandle};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::{info, warn};

use crate::guard::Verdict;
use crate::hooks::{self, HookContext, HookPoint, OnFailure};
use crate::sequential::{self, Since};

use super::spec::*;
use super::status::*;
use crate::compare::{Pair, compare};

/// How often a step the store refused is tried again.
const STORE_RETRY: Duration = Duration::from_secs(1);

pub(super) struct Run {
    pub(super) routing: Arc<RoutingHandle>,
    sink: Arc<dyn RolloutSink>,
    pub(super) status: Arc<Mutex<Status>>,
    commands: mpsc::UnboundedReceiver<Command>,
    pub(super) spec: RolloutSpec,
    /// Weights before the rollout: what an abort restores.
    pub(super) original: HashMap<String, Weight>,
    /// What hooks are told; versions as they were at the start.
    pub(super) context: HookContext,
    peers: Arc<crate::cluster::PeerWindows>,
    /// The rollout changed weights: an abort must put them back.
    pub(super) weighed: bool,
    /// `pre_switch` (the expand step) started: an abort runs `on_rollback`.
    expanded: bool,
    /// A held step's hold is over and it waits for evidence: the wait ends
    /// as soon as an analysis finds enough.
    pub(super) awaiting_evidence: bool,
    /// A step failed and was retried then: analyses look no further back.
    pub(super) fresh_since: Option<Instant>,
    /// A mirror step copies requests to `to` now.
    pub(super) mirroring: bool,
    /// `to`'s and `from`'s totals since the traffic last changed (a step's
    /// weights, a mirror, a retried step): what the sequential test judges.
    pub(super) since: Option<(Since, Option<Since>)>,
}

/// How a wait ended.
pub(super) enum Wake {
    Elapsed,
    Promote {
        full: bool,
    },
    /// An operator resumed a wait for promotion (a pause step, or a step
    /// paused for want of evidence).
    Resumed,
    Abort(String),
    /// The analysis failed `max_failed_checks` times in a row.
    Failed(String),
}

impl Run {
    pub(super) fn set(&self, phase: Phase, reason: String) {
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
                s.hooks.push(outcome.view());
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

    async fn weigh(&mut self, to_weight: Weight, why: &str) -> Result<(), String> {
        self.weighed = true;
        self.count_afresh();
        let mut weights: HashMap<String, Weight> = self
            .routing
            .snapshot()
            .pools()
            .iter()
            .map(|p| (p.name.to_string(), Weight::ZERO))
            .collect();
        weights.insert(self.spec.from.clone(), to_weight.rest());
        weights.insert(self.spec.to.clone(), to_weight);
        let before = lock(&self.status).reason.clone();
        loop {
            match self
                .routing
                .change_weights(WeightChange {
                    weights: &weights,
                    actor: Actor::Rollout,
                    action: RoutingAction::RolloutStep,
                    reason: Some(why),
                    // Fences were checked when the rollout started.
                    force: true,
                })
                .await
            {
                Ok(_) => break,
                // The store is unreachable: a step that cannot be stored is
                // not served, and giving up would need the store too. Wait.
                Err(sluice_routing::TableError::Persist(e)) => {
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
    /// interval and obeying commands; a paused hold does not expire. Its
    /// end is in the status while it runs (the API shows what is left).
    pub(super) async fn hold(&mut self, hold: Option<Duration>, analyse: bool) -> Wake {
        if hold == Some(Duration::ZERO) {
            return Wake::Elapsed;
        }
        let until = hold.map(|h| Instant::now() + h);
        lock(&self.status).hold_until = until;
        let wake = self.wait(until, hold.is_none(), analyse).await;
        lock(&self.status).hold_until = None;
        wake
    }

    async fn wait(&mut self, until: Option<Instant>, gate: bool, analyse: bool) -> Wake {
        let mut failed = 0;
        let mut checks = crate::checks::CheckRuns::new(self.spec.checks.len());
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
                        if gate {
                            return Wake::Resumed;
                        }
                        paused = false;
                    }
                },
                _ = tick.tick() => {
                    if analyse && let Some(reason) = self.analyse(&mut failed) {
                        return Wake::Failed(reason);
                    }
                    if analyse && let Some(reason) = self.run_checks(&mut checks).await {
                        return Wake::Failed(reason);
                    }
                    if self.awaiting_evidence && self.enough_evidence() {
                        return Wake::Elapsed;
                    }
                }
                () = expire => return Wake::Elapsed,
            }
        }
    }

    /// The sequential test starts over from now: the traffic changed.
    pub(super) fn count_afresh(&mut self) {
        let table = self.routing.snapshot();
        let now = Instant::now();
        self.since = table.pool(&self.spec.to).map(|to| {
            (
                Since::start(to, &self.peers, now),
                table.pool(&self.spec.from).map(|p| Since::start(p, &self.peers, now)),
            )
        });
    }

    /// One analysis: `Some(reason)` once `max_failed_checks` fail in a row.
    fn analyse(&mut self, failed: &mut u32) -> Option<String> {
        let table = self.routing.snapshot();
        // Someone else changed the weights (an operator, the rollback guard).
        let expected = lock(&self.status).phase.clone();
        if let (Some(to), Phase::Step(_)) = (table.pool(&self.spec.to), expected)
            && !self.mirroring
            && to.weight.is_zero()
            && self
                .spec
                .steps
                .iter()
                .all(|s| !matches!(s, Step::Weight { weight, .. } if weight.is_zero()))
        {
            return Some(format!("{} was taken out of traffic by another change", self.spec.to));
        }
        let now = Instant::now();
        // After a retried step, only what came since it was retried.
        let window = match self.fresh_since {
            Some(since) => self
                .spec
                .analysis
                .window
                .min(now.saturating_duration_since(since))
                .max(Duration::from_secs(1)),
            None => self.spec.analysis.window,
        };
        let to_pool = table.pool(&self.spec.to)?;
        let from_pool = table.pool(&self.spec.from);
        let mut to = to_pool.stats.window.snapshot(now, window);
        self.peers.add_to(&self.spec.to, &mut to);
        let from = from_pool.map(|p| {
            let mut snap = p.stats.window.snapshot(now, window);
            self.peers.add_to(&self.spec.from, &mut snap);
            snap
        });
        // Everything since the traffic last changed, judged sequentially
        // (the pool, its latency and every route); then `to` against
        // `from` over the window.
        let peers = &self.peers;
        let (to_since, from_since) = self.since.get_or_insert_with(|| {
            (
                Since::start(to_pool, peers, now),
                from_pool.map(|p| Since::start(p, peers, now)),
            )
        });
        let to_totals = to_since.totals(to_pool, peers, now);
        let from_totals = match (from_since, from_pool) {
            (Some(since), Some(p)) => Some(since.totals(p, peers, now)),
            _ => None,
        };
        let proven = sequential::judge(
            &self.spec.to,
            &to_totals,
            from_totals.as_ref(),
            &table.policy().routes,
            &self.spec.analysis,
        );
        // Sequential evidence fails the step at once; a comparison over a
        // window needs `max_failed_checks` in a row.
        let decisive = matches!(proven, Verdict::Breach { .. });
        let verdict = match proven {
            Verdict::Healthy => compare(
                &Pair {
                    to: &self.spec.to,
                    from: &self.spec.from,
                    min_requests: self.spec.analysis.min_requests,
                },
                &self.spec.comparison,
                &to,
                from.as_ref(),
            ),
            other => other,
        };
        let explained = sequential::explain(&to_totals, &table.policy().routes, &self.spec.analysis);
        self.note_evidence(&to, &verdict, explained);
        match verdict {
            Verdict::Breach { reason, .. } => {
                *failed += 1;
                warn!(%reason, failed = *failed, "rollout analysis failed");
                (decisive || *failed >= self.spec.max_failed_checks).then_some(reason)
            }
            _ => {
                *failed = 0;
                None
            }
        }
    }

    /// The weights before the rollout, back in one routing change (an
    /// abort, or a pause after a failed analysis).
    pub(super) async fn restore_original(&self, why: &str) -> Result<(), sluice_routing::TableError> {
        self.routing
            .change_weights(WeightChange {
                weights: &self.original,
                actor: Actor::Rollout,
                action: RoutingAction::RolloutAbort,
                reason: Some(why),
                force: true,
            })
            .await
            .map(|_| ())
    }

    async fn abort(&mut self, reason: String) {
        self.stop_mirror().await;
        if self.weighed {
            if self.spec.rollback == RollbackMode::Gradual {
                self.walk_back(&reason).await;
            }
            if let Err(e) = self.restore_original(&format!("rollout aborted: {reason}")).await {
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
        let now = self
            .routing
            .snapshot()
            .pool(&self.spec.to)
            .map_or(Weight::ZERO, |p| p.weight);
        let mut back: Vec<Weight> = self
            .spec
            .steps
            .iter()
            .filter_map(|s| match s {
                Step::Weight { weight, .. } if *weight < now && !weight.is_zero() => Some(*weight),
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

pub(super) async fn drive(
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
    let mut original: HashMap<String, Weight> = table.pools().iter().map(|p| (p.name.to_string(), p.weight)).collect();
    if resume_at.is_some() {
        // The weights before the rollout are gone with the old process:
        // an abort sends everything back to `from`.
        original.values_mut().for_each(|w| *w = Weight::ZERO);
        original.insert(spec.from.clone(), Weight::FULL);
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
        awaiting_evidence: false,
        fresh_since: None,
        since: None,
        mirroring: false,
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
        let wake = match &steps[i] {
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
                if *weight == Weight::FULL {
                    // The switch: check the new version again before holding.
                    if let Err(reason) = smoke(&run).await {
                        run.abort(reason).await;
                        return;
                    }
                }
                // After a restart, only what was left of the hold.
                let left = hold.saturating_sub(std::mem::take(&mut already_held));
                let what = format!("{} at {weight}%", run.spec.to);
                let evidence = run.spec.needs_evidence(*weight, *hold);
                run.held_step(i, &what, evidence, (left, *hold)).await
            }
            Step::Mirror { percent, hold } => {
                let what = format!("{percent}% of requests copied to {}", run.spec.to);
                run.set(Phase::Step(i), format!("step {}: {what}", i + 1));
                run.start_mirror(*percent).await;
                let left = hold.saturating_sub(std::mem::take(&mut already_held));
                let wake = run.held_step(i, &what, true, (left, *hold)).await;
                run.stop_mirror().await;
                wake
            }
            Step::Gate { url, timeout, interval } => run.gate(i, url, *timeout, *interval).await,
            Step::Pause => {
                run.set(
                    Phase::Paused(i),
                    format!("paused at step {}: waiting for promote", i + 1),
                );
                match run.hold(None, true).await {
                    // Resuming a pause step passes it.
                    Wake::Resumed => Wake::Elapsed,
                    wake => wake,
                }
            }
        };
        let wake = match wake {
            Wake::Failed(reason) if run.spec.on_failure == AnalysisFailure::Pause => {
                run.pause_after_failure(i, &reason).await
            }
            wake => wake,
        };
        match wake {
            Wake::Elapsed | Wake::Promote { full: false } => {}
            // Only a step paused after a failure is resumed here: it runs
            // again, analysed on what comes from now on.
            Wake::Resumed => {
                run.fresh_since = Some(Instant::now());
                run.count_afresh();
                continue;
            }
            Wake::Promote { full: true } => break,
            Wake::Abort(reason) | Wake::Failed(reason) => {
                run.abort(reason).await;
                return;
            }
        }
        i += 1;
    }
    if let Err(e) = run.weigh(Weight::FULL, "rollout promoted").await {
        run.abort(format!("could not promote: {e}")).await;
        return;
    }
    run.set(
        Phase::Monitoring,
        format!("promoted; {} watched for {:?}", run.spec.to, run.spec.post_promotion),
    );
    let monitoring = run.spec.post_promotion.saturating_sub(already_held);
    // After promotion a failure aborts whatever on_failure says: there is
    // no step to go back to.
    if let Wake::Abort(reason) | Wake::Failed(reason) = run.hold(Some(monitoring), true).await {
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
