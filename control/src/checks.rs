//! A rollout's external checks (`analysis.checks`) and webhook gates: a
//! Prometheus instant query whose one value must stay within a bound, or a
//! webhook that must answer 2xx. Each run gives a verdict and a line for
//! the rollout's status, its audit rows and notifications.

use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use serde_json::{Value, json};

use crate::hooks::HookContext;

/// Answers larger than this are not read further (a query should return
/// one value).
const MAX_ANSWER: usize = 64 * 1024;

/// One external check, run every `interval` while a step is analysed.
#[derive(Debug, Clone, PartialEq)]
pub struct ExternalCheck {
    pub name: String,
    pub kind: CheckKind,
    pub interval: Duration,
    /// Each run's limit (a query, a webhook).
    pub timeout: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub enum CheckKind {
    /// `query` at `url` (Prometheus' HTTP API): one value, at most `max`
    /// and at least `min`.
    Prometheus {
        url: String,
        query: String,
        max: Option<f64>,
        min: Option<f64>,
        /// A query without data passes instead of failing.
        ignore_no_data: bool,
    },
    /// POST of the rollout's context to `url`; 2xx passes.
    Webhook { url: String },
}

/// What one run of a check found.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckOutcome {
    pub pass: bool,
    /// The query's value, when it had one.
    pub value: Option<f64>,
    /// For people: `name: value (bound): pass`, or why it failed.
    pub line: String,
}

/// Runs `check` once for the rollout `ctx` (its step `step`, from 1).
pub async fn run(check: &ExternalCheck, ctx: &HookContext, step: Option<usize>) -> CheckOutcome {
    match &check.kind {
        CheckKind::Prometheus {
            url,
            query,
            max,
            min,
            ignore_no_data,
        } => {
            let found = tokio::time::timeout(check.timeout, instant_query(url, query))
                .await
                .unwrap_or_else(|_| Err(format!("no answer within {:?}", check.timeout)));
            judge_value(&check.name, found, *max, *min, *ignore_no_data)
        }
        CheckKind::Webhook { url } => {
            let (pass, why) = webhook(url, "check", &check.name, ctx, step, check.timeout).await;
            CheckOutcome {
                pass,
                value: None,
                line: format!("{}: {why}", check.name),
            }
        }
    }
}

/// The verdict on a query's result against its bounds.
fn judge_value(
    name: &str,
    found: Result<Option<f64>, String>,
    max: Option<f64>,
    min: Option<f64>,
    ignore_no_data: bool,
) -> CheckOutcome {
    let bounds = match (min, max) {
        (Some(lo), Some(hi)) => format!("{lo} to {hi}"),
        (None, Some(hi)) => format!("max {hi}"),
        (Some(lo), None) => format!("min {lo}"),
        (None, None) => "no bound".to_owned(),
    };
    let (pass, value, why) = match found {
        Err(e) => (false, None, format!("failed: {e}")),
        Ok(None) if ignore_no_data => (true, None, "no data (ignored)".to_owned()),
        Ok(None) => (false, None, "no data (a check without data fails)".to_owned()),
        Ok(Some(v)) => {
            let pass = v.is_finite() && max.is_none_or(|hi| v <= hi) && min.is_none_or(|lo| v >= lo);
            (
                pass,
                Some(v),
                format!("{v} ({bounds}): {}", if pass { "pass" } else { "fail" }),
            )
        }
    };
    CheckOutcome {
        pass,
        value,
        line: format!("{name}: {why}"),
    }
}

/// One value from Prometheus' instant query API at `base` (none: no
/// series); a query that returns several series is an error.
async fn instant_query(base: &str, query: &str) -> Result<Option<f64>, String> {
    let url = format!("{}/api/v1/query", base.trim_end_matches('/'));
    let form = [(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-www-form-urlencoded"),
    )];
    let body = Bytes::from(format!("query={}", form_encode(query)));
    let answer = sluice_transport::webclient::post(&url, &form, body, MAX_ANSWER)
        .await
        .map_err(|e| format!("Prometheus {e}"))?;
    let parsed: Value = serde_json::from_slice(&answer.body)
        .map_err(|_| format!("Prometheus answered {} without JSON", answer.status))?;
    if parsed["status"] != "success" {
        let error = parsed["error"].as_str().unwrap_or("no reason given");
        return Err(format!("Prometheus answered {}: {error}", answer.status));
    }
    let data = &parsed["data"];
    let sample = match data["resultType"].as_str() {
        Some("scalar") => &data["result"],
        Some("vector") => match data["result"].as_array().map(Vec::as_slice) {
            None | Some([]) => return Ok(None),
            Some([one]) => &one["value"],
            Some(many) => {
                return Err(format!(
                    "the query returned {} series; it must return one value (use sum(), max()…)",
                    many.len()
                ));
            }
        },
        other => {
            return Err(format!(
                "the query returned a {}, not one value",
                other.unwrap_or("nothing")
            ));
        }
    };
    let text = sample[1].as_str().ok_or("the query's value is missing")?;
    text.parse::<f64>()
        .map(Some)
        .map_err(|_| format!("the query's value {text:?} is not a number"))
}

/// `application/x-www-form-urlencoded` for one value.
fn form_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len() * 3);
    for b in text.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => out.push(char::from(b)),
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// POSTs the rollout's context to `url` as a `what` (`check`, `gate`)
/// named `name`; whether it answered 2xx, and what happened in words.
pub async fn webhook(
    url: &str,
    what: &str,
    name: &str,
    ctx: &HookContext,
    step: Option<usize>,
    timeout: Duration,
) -> (bool, String) {
    let body = json!({
        "source": "sluice",
        "kind": what,
        "name": name,
        "rollout_id": ctx.rollout_id,
        "from_pool": ctx.from_pool,
        "to_pool": ctx.to_pool,
        "from_version": ctx.from_version,
        "to_version": ctx.to_version,
        "step": step,
    });
    let exchange = sluice_transport::webclient::post_json(url, Bytes::from(body.to_string()), MAX_ANSWER);
    match tokio::time::timeout(timeout, exchange).await {
        Err(_) => (false, format!("{url} did not answer within {timeout:?}")),
        Ok(Err(e)) => (false, e),
        Ok(Ok((status, _))) if status.is_success() => (true, format!("{url} answered {status}: pass")),
        Ok(Ok((status, _))) => (false, format!("{url} answered {status}: fail")),
    }
}

/// When each external check last ran during one wait, and how many rounds
/// in a row had a failing one.
#[derive(Debug)]
pub struct CheckRuns {
    pub(crate) last: Vec<Option<tokio::time::Instant>>,
    pub(crate) failed: u32,
}

impl CheckRuns {
    pub fn new(checks: usize) -> Self {
        Self {
            last: vec![None; checks],
            failed: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_is_judged_against_its_bounds() {
        let v = |x| Ok(Some(x));
        assert!(judge_value("q", v(0.5), Some(1.0), None, false).pass);
        assert!(!judge_value("q", v(1.5), Some(1.0), None, false).pass);
        assert!(!judge_value("q", v(0.9), None, Some(0.95), false).pass);
        assert!(judge_value("q", v(0.97), Some(1.0), Some(0.95), false).pass);
        assert!(
            !judge_value("q", v(f64::NAN), Some(1.0), None, false).pass,
            "NaN is no value"
        );
        let line = judge_value("checkout", v(0.9), None, Some(0.95), false).line;
        assert_eq!(line, "checkout: 0.9 (min 0.95): fail");
    }

    #[test]
    fn no_data_fails_unless_ignored_and_an_error_always_fails() {
        assert!(!judge_value("q", Ok(None), Some(1.0), None, false).pass);
        assert!(judge_value("q", Ok(None), Some(1.0), None, true).pass);
        let down = judge_value(
            "q",
            Err("Prometheus unreachable: refused".into()),
            Some(1.0),
            None,
            true,
        );
        assert!(!down.pass, "a Prometheus that is down never passes");
        assert_eq!(down.line, "q: failed: Prometheus unreachable: refused");
    }

    #[test]
    fn queries_are_form_encoded() {
        assert_eq!(
            form_encode("sum(rate(x{a=\"b c\"}[1m]))"),
            "sum%28rate%28x%7Ba%3D%22b+c%22%7D%5B1m%5D%29%29"
        );
    }
}
