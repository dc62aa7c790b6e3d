//! Rollout transitions into the store (the `rollouts` table, in order),
//! the audit trail and the alert webhooks; hook runs into the audit trail;
//! contract fences into the store, so a restart keeps refusing them.

use std::collections::HashMap;

use sluice_control::alerts::{Alert, Alerter};
use sluice_control::hooks::HookOutcome;
use sluice_control::rollout::{Phase, RolloutSink, Status};
use sluice_routing::Actor;
use sluice_store::{AuditEntry, FenceRecord, Store};
use tokio::sync::mpsc;
use tracing::warn;

enum Record {
    Transition(Status),
    Hook(Status, HookOutcome),
}

/// Queues records for one writer task, so they are stored in order.
pub struct Recorder {
    tx: mpsc::UnboundedSender<Record>,
}

/// Where people read about rollouts, for alert messages.
pub struct RecorderSettings {
    pub environment: Option<String>,
    /// e.g. `http://127.0.0.1:9901/api/v1/rollouts`.
    pub rollouts_url: String,
}

struct Writer {
    store: Store,
    alerter: Alerter,
    settings: RecorderSettings,
    /// Engine rollout id → stored rollout id.
    ids: HashMap<u64, i64>,
}

impl Recorder {
    pub fn start(store: Store, alerter: Alerter, settings: RecorderSettings) -> Self {
        let (tx, mut rx) = mpsc::unbounded_channel::<Record>();
        let mut writer = Writer {
            store,
            alerter,
            settings,
            ids: HashMap::new(),
        };
        tokio::spawn(async move {
            while let Some(record) = rx.recv().await {
                match record {
                    Record::Transition(status) => writer.transition(&status).await,
                    Record::Hook(status, outcome) => writer.hook(&status, &outcome).await,
                }
            }
        });
        Self { tx }
    }
}

impl Writer {
    async fn stored_id(&mut self, status: &Status) -> Option<i64> {
        if let Some(id) = self.ids.get(&status.id) {
            return Some(*id);
        }
        match self
            .store
            .insert_rollout(&status.request.to_string(), status.phase.name())
            .await
        {
            Ok(id) => {
                self.ids.insert(status.id, id);
                Some(id)
            }
            Err(e) => {
                warn!(error = %e, "could not store a rollout");
                None
            }
        }
    }

    fn alert(&self, kind: &'static str, id: i64, status: &Status, what: &str) {
        let s = &status.spec;
        self.alerter.raise(Alert {
            kind,
            pool: s.to.clone(),
            message: format!(
                "rollout {id} {} ({}) → {} ({}): {what} ({}/{id})",
                s.from, status.from_version, s.to, status.to_version, self.settings.rollouts_url
            ),
        });
    }

    async fn transition(&mut self, status: &Status) {
        let Some(id) = self.stored_id(status).await else { return };
        let step = match status.phase {
            Phase::Step(i) | Phase::Paused(i) => i as i64 + 1,
            _ => 0,
        };
        let state = status.phase.name();
        // The fence is stored before the rollout shows as completed.
        if status.phase == Phase::Completed
            && let Some(fence) = &status.fence
        {
            let record = FenceRecord {
                pool: fence.pool.clone(),
                version: fence.version.clone(),
                reason: fence.reason.clone(),
                rollout_id: Some(id),
                created_at: sluice_store::now(),
            };
            if let Err(e) = self.store.add_fence(&record).await {
                warn!(error = %e, "could not store the contract fence; it holds until restart");
            }
        }
        if let Err(e) = self
            .store
            .update_rollout(id, state, step, &status.reason, status.phase.finished())
            .await
        {
            warn!(error = %e, "could not store a rollout transition");
        }
        self.audit(AuditEntry {
            actor: Actor::Rollout.as_str().into(),
            action: format!("rollout.{state}"),
            target: format!("rollouts/{id}"),
            after: serde_json::to_string(&status.view()).ok(),
            result: status.reason.clone(),
            ..Default::default()
        })
        .await;
        let kind = match status.phase {
            _ if status.reason.starts_with("no evidence:") => "rollout-no-evidence",
            Phase::Paused(_) if status.reason.starts_with("analysis failed:") => "rollout-analysis-failed",
            Phase::Aborted if status.reason.contains("smoke check failed") => "rollout-smoke-failed",
            Phase::Aborted if status.reason.contains(" hook ") => "rollout-hook-failed",
            Phase::Aborted => "rollout-aborted",
            Phase::Completed => "rollout-completed",
            Phase::Paused(_) => "rollout-paused",
            Phase::Monitoring => "rollout-promoted",
            Phase::PreChecks => "rollout-started",
            Phase::Step(_) => "rollout-step",
            Phase::Suspended => "rollout-suspended",
        };
        self.alert(kind, id, status, &status.reason);
    }

    async fn hook(&mut self, status: &Status, outcome: &HookOutcome) {
        let Some(id) = self.stored_id(status).await else { return };
        self.audit(AuditEntry {
            actor: Actor::Rollout.as_str().into(),
            action: format!("rollout.hook.{}", outcome.point.name()),
            target: format!("rollouts/{id}/hooks/{}", outcome.name),
            after: serde_json::to_string(&outcome.view()).ok(),
            result: if outcome.ok { "ok".into() } else { outcome.summary() },
            ..Default::default()
        })
        .await;
        if !outcome.ok {
            self.alert("rollout-hook-failed", id, status, &outcome.summary());
        }
    }

    async fn audit(&self, mut entry: AuditEntry) {
        entry.environment = self.settings.environment.clone();
        if let Err(e) = self.store.append_audit(&entry).await {
            warn!(error = %e, "could not audit a rollout record");
        }
    }
}

impl RolloutSink for Recorder {
    fn transition(&self, status: &Status) {
        let _ = self.tx.send(Record::Transition(status.clone()));
    }

    fn hook(&self, status: &Status, outcome: &HookOutcome) {
        let _ = self.tx.send(Record::Hook(status.clone(), outcome.clone()));
    }
}
