//! Notifications to webhooks (generic JSON or Slack-compatible), sent from
//! their own task with retries and back-off. Raising an alert never waits:
//! a full queue drops the alert with a warning rather than slow a decision.

use std::time::Duration;

use bytes::Bytes;
use serde_json::{Value, json};
use sluice_config::{WebhookConfig, WebhookFormat};
use tokio::sync::mpsc;
use tracing::{debug, warn};

use sluice_transport::webclient::post_json;

const ATTEMPTS: u32 = 3;
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(2);

/// Something an operator should hear about.
#[derive(Debug, Clone, PartialEq)]
pub struct Alert {
    /// `rollback`, `rollback-advised`, `backend-down`, …
    pub kind: &'static str,
    pub pool: String,
    pub message: String,
}

/// The sending side; cheap to clone.
#[derive(Debug, Clone)]
pub struct Alerter {
    tx: Option<mpsc::Sender<Alert>>,
}

impl Alerter {
    /// Starts the sender task for `webhooks` (none: alerts are only logged).
    pub fn start(webhooks: Vec<WebhookConfig>, environment: Option<String>) -> Self {
        if webhooks.is_empty() {
            return Self { tx: None };
        }
        let (tx, mut rx) = mpsc::channel::<Alert>(1024);
        tokio::spawn(async move {
            while let Some(alert) = rx.recv().await {
                for hook in &webhooks {
                    let body = payload(&alert, hook.format, environment.as_deref());
                    deliver(hook, body).await;
                }
            }
        });
        Self { tx: Some(tx) }
    }

    /// Queues an alert without waiting.
    pub fn raise(&self, alert: Alert) {
        tracing::warn!(kind = alert.kind, pool = %alert.pool, message = %alert.message, "alert");
        if let Some(tx) = &self.tx
            && tx.try_send(alert).is_err()
        {
            warn!("alert queue full or closed; alert dropped");
        }
    }
}

fn payload(alert: &Alert, format: WebhookFormat, environment: Option<&str>) -> Value {
    match format {
        WebhookFormat::Json => json!({
            "source": "sluice",
            "event": alert.kind,
            "pool": alert.pool,
            "message": alert.message,
            "environment": environment,
            "at": humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string(),
        }),
        WebhookFormat::Slack => {
            let env = environment.map(|e| format!(" [{e}]")).unwrap_or_default();
            json!({"text": format!(":rotating_light: sluice{env} {}: {}", alert.kind, alert.message)})
        }
    }
}

async fn deliver(hook: &WebhookConfig, body: Value) {
    let bytes = Bytes::from(body.to_string());
    let mut backoff = Duration::from_millis(200);
    for attempt in 1..=ATTEMPTS {
        match tokio::time::timeout(ATTEMPT_TIMEOUT, post_json(&hook.url, bytes.clone(), 64 * 1024)).await {
            Ok(Ok((status, _))) if status.is_success() => {
                debug!(url = %hook.url, attempt, "alert delivered");
                return;
            }
            Ok(Ok((status, _))) => warn!(url = %hook.url, %status, attempt, "webhook refused the alert"),
            Ok(Err(e)) => warn!(url = %hook.url, error = %e, attempt, "webhook failed"),
            Err(_) => warn!(url = %hook.url, attempt, "webhook timed out"),
        }
        if attempt < ATTEMPTS {
            tokio::time::sleep(backoff).await;
            backoff *= 2;
        }
    }
}
