//! Where the control loops report to the rest of the process: health
//! changes into the audit trail and alerts, the guard's rollbacks into the
//! admin metrics.

use std::sync::Arc;

use sluice_admin_api::Metrics;
use sluice_control::alerts::{Alert, Alerter};
use sluice_control::discovery::DiscoverySink;
use sluice_control::guard::RollbackCounter;
use sluice_control::health::HealthSink;
use sluice_store::{AuditEntry, Store};
use tracing::error;

/// Health changes go to the audit trail and, when they hurt, to the alerts.
pub struct HealthAudit {
    pub store: Store,
    pub alerter: Alerter,
    pub environment: Option<String>,
}

impl HealthSink for HealthAudit {
    fn changed(&self, pool: &str, backend: &str, healthy: bool, detail: &str) {
        if !healthy {
            self.alerter.raise(Alert {
                kind: if backend == "*" {
                    "pool-unhealthy"
                } else {
                    "backend-down"
                },
                pool: pool.to_owned(),
                message: detail.to_owned(),
            });
        }
        let entry = AuditEntry {
            actor: sluice_routing::Actor::Health.as_str().into(),
            action: if healthy {
                "backend.up".into()
            } else {
                "backend.down".into()
            },
            target: format!("pools/{pool}/backends/{backend}"),
            result: detail.to_owned(),
            environment: self.environment.clone(),
            ..Default::default()
        };
        audit_later(&self.store, entry, "a health change");
    }
}

/// The guard's rollbacks, counted in the admin metrics.
pub struct GuardMetrics(pub Arc<Metrics>);

impl RollbackCounter for GuardMetrics {
    fn rollback(&self, pool: &str, reason: &str) {
        self.0.rollback(pool, reason);
    }
}

/// DNS discovery: each resolution counted, each change of addresses
/// audited (actor `discovery`, with the name), stale names and capped
/// answers alerted.
pub struct DiscoveryAudit {
    pub store: Store,
    pub alerter: Alerter,
    pub environment: Option<String>,
    pub metrics: Arc<Metrics>,
}

impl DiscoverySink for DiscoveryAudit {
    fn resolved(&self, name: &str, result: &str, _addresses: usize) {
        self.metrics.discovery_resolved(name, result);
    }

    fn changed(&self, name: &str, added: &[String], removed: &[String]) {
        let entry = AuditEntry {
            actor: sluice_routing::Actor::Discovery.as_str().into(),
            action: "discovery.change".into(),
            target: format!("names/{name}"),
            result: format!("added {added:?}, removed {removed:?}"),
            before: Some(serde_json::json!({ "removed": removed }).to_string()),
            after: Some(serde_json::json!({ "added": added }).to_string()),
            environment: self.environment.clone(),
            ..Default::default()
        };
        audit_later(&self.store, entry, "a discovery change");
    }

    fn stale(&self, name: &str, for_how_long: std::time::Duration, error: &str) {
        let age = if for_how_long == std::time::Duration::MAX {
            "never resolved".to_owned()
        } else {
            format!("no good answer for {}s", for_how_long.as_secs())
        };
        self.alerter.raise(Alert {
            kind: "discovery-stale",
            pool: "all".into(),
            message: format!("{name}: {age} ({error}); the last good addresses keep serving"),
        });
    }

    fn capped(&self, name: &str, found: usize, kept: usize) {
        self.alerter.raise(Alert {
            kind: "discovery-capped",
            pool: "all".into(),
            message: format!(
                "{name} returned {found} addresses; only the first {kept} are used (max_backends_per_name)"
            ),
        });
    }
}

/// Writes `entry` to the audit trail on a task of its own (the control
/// loops do not wait for the store); a failure is logged as `what`.
fn audit_later(store: &Store, entry: AuditEntry, what: &'static str) {
    let store = store.clone();
    tokio::spawn(async move {
        if let Err(e) = store.append_audit(&entry).await {
            error!(error = %e, "could not audit {what}");
        }
    });
}
