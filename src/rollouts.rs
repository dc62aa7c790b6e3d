//! Rollout transitions into the store (the `rollouts` table, in order),
//! the audit trail and the alert webhooks.

use std::collections::HashMap;

use sluice_control::alerts::{Alert, Alerter};
use sluice_control::rollout::{Phase, RolloutSink, Status};
use sluice_store::{AuditEntry, Store};
use tokio::sync::mpsc;
use tracing::warn;

/// Queues transitions for one writer task, so they are stored in order.
pub struct Recorder {
    tx: mpsc::UnboundedSender<Status>,
}

impl Recorder {
    pub fn start(store: Store, alerter: Alerter, environment: Option<String>) -> Self {
        let (tx, mut rx) = mpsc::unbounded_channel::<Status>();
        tokio::spawn(async move {
            let mut ids: HashMap<u64, i64> = HashMap::new();
            while let Some(status) = rx.recv().await {
                let step = match status.phase {
                    Phase::Step(i) | Phase::Paused(i) => i as i64 + 1,
                    _ => 0,
                };
                let state = status.phase.name();
                let id = match ids.get(&status.id) {
                    Some(id) => *id,
                    None => match store.insert_rollout(&status.request.to_string(), state).await {
                        Ok(id) => {
                            ids.insert(status.id, id);
                            id
                        }
                        Err(e) => {
                            warn!(error = %e, "could not store a rollout");
                            continue;
                        }
                    },
                };
                if let Err(e) = store
                    .update_rollout(id, state, step, &status.reason, status.phase.finished())
                    .await
                {
                    warn!(error = %e, "could not store a rollout transition");
                }
                let entry = AuditEntry {
                    actor: "rollout".into(),
                    action: format!("rollout.{state}"),
                    target: format!("rollouts/{id}"),
                    after: Some(status.json().to_string()),
                    result: status.reason.clone(),
                    environment: environment.clone(),
                    ..Default::default()
                };
                if let Err(e) = store.append_audit(&entry).await {
                    warn!(error = %e, "could not audit a rollout transition");
                }
                let kind = match status.phase {
                    Phase::Aborted => Some("rollout-aborted"),
                    Phase::Completed => Some("rollout-completed"),
                    Phase::Paused(_) => Some("rollout-paused"),
                    Phase::Monitoring => Some("rollout-promoted"),
                    Phase::PreChecks => Some("rollout-started"),
                    Phase::Step(_) => None,
                };
                if let Some(kind) = kind {
                    alerter.raise(Alert {
                        kind,
                        pool: status.spec.to.clone(),
                        message: format!(
                            "rollout {id} {} → {}: {}",
                            status.spec.from, status.spec.to, status.reason
                        ),
                    });
                }
            }
        });
        Self { tx }
    }
}

impl RolloutSink for Recorder {
    fn transition(&self, status: &Status) {
        let _ = self.tx.send(status.clone());
    }
}
