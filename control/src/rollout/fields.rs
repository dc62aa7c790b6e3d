//! The parts of a rollout request that name external systems (checks in
//! `analysis.checks`, webhook gates), and the error every part of a
//! request is refused with.

use std::time::Duration;

use serde::Deserialize;

use super::spec::Step;
use crate::checks::{CheckKind, ExternalCheck};

/// Why a rollout request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    /// Not the shape of a rollout request (unknown field, wrong type).
    #[error("request body: {0}")]
    Shape(String),
    /// Well-formed, but not a rollout that can run.
    #[error("{0}")]
    Invalid(String),
}

pub(super) fn duration(field: &str, text: &str) -> Result<Duration, SpecError> {
    humantime::parse_duration(text)
        .map_err(|_| SpecError::Invalid(format!("{field}: {text:?} is not a duration like \"30s\"")))
}

pub(super) fn invalid(message: String) -> SpecError {
    SpecError::Invalid(message)
}

/// One of `analysis.checks`: a Prometheus query or a webhook.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckBody {
    name: Option<String>,
    prometheus: Option<PrometheusBody>,
    webhook: Option<WebhookBody>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrometheusBody {
    url: String,
    query: String,
    max: Option<f64>,
    min: Option<f64>,
    interval: Option<String>,
    timeout: Option<String>,
    on_no_data: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookBody {
    url: String,
    timeout: Option<String>,
    interval: Option<String>,
}

/// `{"gate": {"webhook": {"url", "timeout"}}}`: a step that waits for a
/// webhook's 2xx.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GateBody {
    webhook: WebhookBody,
}

fn web_url(field: &str, url: &str) -> Result<(), SpecError> {
    match url.parse::<http::Uri>() {
        Ok(u) if matches!(u.scheme_str(), Some("http" | "https")) && u.host().is_some() => Ok(()),
        _ => Err(invalid(format!("{field}: {url:?} is not an http:// or https:// URL"))),
    }
}

/// `analysis.checks`, each checked every `interval` (default: the
/// analysis interval).
pub(super) fn checks(bodies: Vec<CheckBody>, analysis_interval: Duration) -> Result<Vec<ExternalCheck>, SpecError> {
    bodies
        .into_iter()
        .enumerate()
        .map(|(i, c)| {
            let at = format!("analysis.checks[{i}]");
            let every = |text: &Option<String>, what: &str| {
                text.as_deref()
                    .map(|t| duration(&format!("{at}.{what}"), t))
                    .transpose()
            };
            match (c.prometheus, c.webhook) {
                (Some(p), None) => {
                    web_url(&format!("{at}.prometheus.url"), &p.url)?;
                    if p.max.is_none() && p.min.is_none() {
                        return Err(invalid(format!("{at}.prometheus: give max, min or both")));
                    }
                    if p.query.trim().is_empty() {
                        return Err(invalid(format!("{at}.prometheus.query: empty")));
                    }
                    let ignore_no_data = match p.on_no_data.as_deref() {
                        None | Some("fail") => false,
                        Some("ignore") => true,
                        Some(other) => {
                            return Err(invalid(format!(
                                "{at}.prometheus.on_no_data: {other:?}: use \"fail\" or \"ignore\""
                            )));
                        }
                    };
                    Ok(ExternalCheck {
                        name: c.name.unwrap_or_else(|| format!("prometheus check {}", i + 1)),
                        interval: every(&p.interval, "prometheus.interval")?.unwrap_or(analysis_interval),
                        timeout: every(&p.timeout, "prometheus.timeout")?.unwrap_or(Duration::from_secs(10)),
                        kind: CheckKind::Prometheus {
                            url: p.url,
                            query: p.query,
                            max: p.max,
                            min: p.min,
                            ignore_no_data,
                        },
                    })
                }
                (None, Some(w)) => {
                    web_url(&format!("{at}.webhook.url"), &w.url)?;
                    Ok(ExternalCheck {
                        name: c.name.unwrap_or_else(|| format!("webhook check {}", i + 1)),
                        interval: every(&w.interval, "webhook.interval")?.unwrap_or(analysis_interval),
                        timeout: every(&w.timeout, "webhook.timeout")?.unwrap_or(Duration::from_secs(10)),
                        kind: CheckKind::Webhook { url: w.url },
                    })
                }
                _ => Err(invalid(format!("{at}: give one of prometheus or webhook"))),
            }
        })
        .collect()
}

/// A gate step: polls the webhook every `interval` (default 10 s) until
/// it answers 2xx, for at most `timeout` (default 1 h).
pub(super) fn gate(i: usize, body: GateBody) -> Result<Step, SpecError> {
    let w = body.webhook;
    let at = format!("steps[{i}].gate.webhook");
    web_url(&format!("{at}.url"), &w.url)?;
    let timeout = w
        .timeout
        .as_deref()
        .map(|t| duration(&format!("{at}.timeout"), t))
        .transpose()?
        .unwrap_or(Duration::from_secs(3600));
    let interval = w
        .interval
        .as_deref()
        .map(|t| duration(&format!("{at}.interval"), t))
        .transpose()?
        .unwrap_or(Duration::from_secs(10))
        .max(Duration::from_millis(100));
    Ok(Step::Gate {
        url: w.url,
        timeout,
        interval,
    })
}
