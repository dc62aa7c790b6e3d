//! A rollout request (the JSON of `POST /api/v1/rollouts`, also stored to
//! resume one) made into a [`RolloutSpec`], with [`RolloutDefaults`] where
//! it is silent. Every problem is a [`SpecError`] naming the field.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;
use sluice_config::Weight;

use super::fields::{CheckBody, GateBody, SpecError, checks, duration, gate, invalid};
use super::spec::{AnalysisFailure, Comparison, GrpcSmoke, NoEvidence, RollbackMode, RolloutSpec, SmokeCheck, Step};
use crate::hooks::{Hook, HookAction, HookPoint, OnFailure};

/// What a rollout uses when its request leaves something out.
#[derive(Debug, Clone)]
pub struct RolloutDefaults {
    /// The analysis policy (the `[rollback]` section).
    pub analysis: sluice_config::RollbackConfig,
    /// First canary step (`CANARY_PERCENTAGE`).
    pub canary_percentage: Weight,
    /// Hold of each canary step (`CANARY_DURATION`).
    pub canary_duration: Duration,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepBody {
    weight: Option<Weight>,
    /// Percent of live requests copied to `to`.
    mirror: Option<f64>,
    hold: Option<String>,
    #[serde(default)]
    pause: bool,
    gate: Option<GateBody>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct AnalysisBody {
    interval: Option<String>,
    window: Option<String>,
    max_error_ratio: Option<f64>,
    max_p95: Option<String>,
    min_requests: Option<u64>,
    alpha: Option<f64>,
    max_failed_checks: Option<u32>,
    max_error_ratio_increase: Option<f64>,
    max_p95_ratio: Option<f64>,
    max_slower_share: Option<f64>,
    evidence_deadline: Option<String>,
    on_no_evidence: Option<String>,
    #[serde(default)]
    checks: Vec<CheckBody>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct HooksBody {
    #[serde(default)]
    pre_rollout: Vec<HookBody>,
    #[serde(default)]
    pre_switch: Vec<HookBody>,
    #[serde(default)]
    post_promotion: Vec<HookBody>,
    #[serde(default)]
    on_rollback: Vec<HookBody>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HookBody {
    name: Option<String>,
    command: Option<Vec<String>>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    dir: Option<String>,
    webhook: Option<String>,
    timeout: Option<String>,
    on_failure: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmokeBody {
    name: String,
    #[serde(default)]
    method: Option<String>,
    path: Option<String>,
    /// `{"service": ""}`: the gRPC health checking protocol.
    grpc_health: Option<GrpcHealthBody>,
    /// A unary gRPC call and the status it must end with.
    grpc: Option<GrpcCallBody>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    body: Option<String>,
    json_pointer: Option<String>,
    json_equals: Option<Value>,
    #[serde(default = "ok_status")]
    expect_status: u16,
    body_contains: Option<String>,
    max_latency: Option<String>,
}

fn ok_status() -> u16 {
    200
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrpcHealthBody {
    #[serde(default)]
    service: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrpcCallBody {
    method: String,
    #[serde(default)]
    message_base64: String,
    #[serde(default = "ok_code")]
    expect_code: String,
}

fn ok_code() -> String {
    "OK".into()
}

/// The gRPC part of smoke check `i`, if it has one; exactly one of
/// `path`, `grpc_health` and `grpc` is given.
fn grpc_smoke(i: usize, s: &mut SmokeBody) -> Result<Option<GrpcSmoke>, SpecError> {
    let kinds = [s.path.is_some(), s.grpc_health.is_some(), s.grpc.is_some()];
    if kinds.iter().filter(|k| **k).count() != 1 {
        return Err(invalid(format!(
            "smoke[{i}]: give exactly one of path, grpc_health and grpc"
        )));
    }
    if let Some(h) = s.grpc_health.take() {
        return Ok(Some(GrpcSmoke::Health { service: h.service }));
    }
    let Some(call) = s.grpc.take() else { return Ok(None) };
    if !call.method.starts_with('/') || call.method[1..].split('/').count() != 2 {
        return Err(invalid(format!(
            "smoke[{i}].grpc.method: {:?} is not /package.Service/Method",
            call.method
        )));
    }
    use base64::Engine as _;
    let message = base64::engine::general_purpose::STANDARD
        .decode(call.message_base64.as_bytes())
        .map_err(|e| invalid(format!("smoke[{i}].grpc.message_base64: {e}")))?;
    let expect_code = sluice_routing::grpc::CODE_NAMES
        .iter()
        .position(|n| *n == call.expect_code)
        .and_then(|p| u8::try_from(p).ok())
        .ok_or_else(|| {
            invalid(format!(
                "smoke[{i}].grpc.expect_code: {:?} is not a gRPC status (OK, NOT_FOUND, UNAVAILABLE, …)",
                call.expect_code
            ))
        })?;
    Ok(Some(GrpcSmoke::Call {
        method: call.method,
        message,
        expect_code,
    }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RolloutBody {
    from: String,
    to: String,
    #[serde(default = "canary")]
    strategy: String,
    steps: Option<Vec<StepBody>>,
    #[serde(default)]
    analysis: AnalysisBody,
    #[serde(default)]
    smoke: Vec<SmokeBody>,
    post_promotion: Option<String>,
    health_gate: Option<String>,
    #[serde(default)]
    hooks: HooksBody,
    rollback: Option<String>,
    on_failure: Option<String>,
    #[serde(default)]
    dry_run: bool,
    #[serde(default)]
    force: bool,
}

fn hooks(body: HooksBody) -> Result<Vec<(HookPoint, Hook)>, SpecError> {
    let mut hooks = Vec::new();
    let points = [
        (HookPoint::PreRollout, body.pre_rollout),
        (HookPoint::PreSwitch, body.pre_switch),
        (HookPoint::PostPromotion, body.post_promotion),
        (HookPoint::OnRollback, body.on_rollback),
    ];
    for (point, list) in points {
        for (i, h) in list.into_iter().enumerate() {
            let at = format!("hooks.{}[{i}]", point.name());
            let action = match (h.command, h.webhook) {
                (Some(argv), None) if !argv.is_empty() => HookAction::Command {
                    argv,
                    env: h.env,
                    dir: h.dir,
                },
                (None, Some(url)) if url.starts_with("http://") || url.starts_with("https://") => {
                    HookAction::Webhook { url }
                }
                (None, Some(url)) => {
                    return Err(invalid(format!(
                        "{at}.webhook: {url:?} must be an http:// or https:// URL"
                    )));
                }
                _ => {
                    return Err(invalid(format!(
                        "{at}: give either \"command\" (a non-empty argv list) or \"webhook\" (a URL)"
                    )));
                }
            };
            let on_failure = match h.on_failure.as_deref() {
                None | Some("abort") => OnFailure::Abort,
                Some("warn") => OnFailure::Warn,
                Some(other) => {
                    return Err(invalid(format!(
                        "{at}.on_failure: {other:?}: use \"abort\" or \"warn\""
                    )));
                }
            };
            let timeout = h
                .timeout
                .as_deref()
                .map(|t| duration(&format!("{at}.timeout"), t))
                .transpose()?
                .unwrap_or(Duration::from_secs(60));
            hooks.push((
                point,
                Hook {
                    name: h.name.unwrap_or_else(|| format!("{}-{}", point.name(), i + 1)),
                    action,
                    timeout,
                    on_failure,
                },
            ));
        }
    }
    Ok(hooks)
}

fn canary() -> String {
    "canary".into()
}

/// A rollout request (as sent to `POST /api/v1/rollouts`) as a spec, with
/// `defaults` where it is silent. Also used to resume a stored rollout.
pub fn parse_request(request: &Value, defaults: &RolloutDefaults) -> Result<RolloutSpec, SpecError> {
    let body: RolloutBody = serde_json::from_value(request.clone()).map_err(|e| SpecError::Shape(e.to_string()))?;
    spec(body, defaults)
}

fn spec(mut body: RolloutBody, d: &RolloutDefaults) -> Result<RolloutSpec, SpecError> {
    let steps = match (body.steps.take(), body.strategy.as_str()) {
        (Some(steps), _) => steps
            .into_iter()
            .enumerate()
            .map(|(i, s)| {
                if let Some(g) = s.gate {
                    if s.pause || s.weight.is_some() || s.mirror.is_some() || s.hold.is_some() {
                        return Err(invalid(format!("steps[{i}]: a gate step has only its gate")));
                    }
                    return gate(i, g);
                }
                let hold = || {
                    s.hold
                        .as_deref()
                        .map(|h| duration(&format!("steps[{i}].hold"), h))
                        .transpose()
                        .map(Option::unwrap_or_default)
                };
                match (s.pause, s.weight, s.mirror) {
                    (true, None, None) => Ok(Step::Pause),
                    (false, Some(weight), None) => Ok(Step::Weight { weight, hold: hold()? }),
                    (false, None, Some(percent)) if percent > 0.0 && percent <= 100.0 => {
                        let hold = hold()?;
                        if hold.is_zero() {
                            return Err(invalid(format!(
                                "steps[{i}]: a mirror step needs a hold (the copies are what it analyses)"
                            )));
                        }
                        Ok(Step::Mirror { percent, hold })
                    }
                    (false, None, Some(percent)) => Err(invalid(format!(
                        "steps[{i}].mirror: {percent} is not a share; write the percent of requests copied, above 0, up to 100"
                    ))),
                    _ => Err(SpecError::Invalid(format!(
                        "steps[{i}]: give a weight (and a hold), a mirror percent and a hold, or \"pause\": true"
                    ))),
                }
            })
            .collect::<Result<Vec<_>, _>>()?,
        (None, "blue-green") => vec![Step::Weight {
            weight: Weight::FULL,
            hold: Duration::ZERO,
        }],
        (None, "canary") => vec![
            Step::Weight {
                weight: d.canary_percentage,
                hold: d.canary_duration,
            },
            Step::Weight {
                weight: Weight::percent(25).unwrap_or(Weight::FULL),
                hold: d.canary_duration,
            },
            Step::Weight {
                weight: Weight::FULL,
                hold: Duration::ZERO,
            },
        ],
        (None, other) => {
            return Err(SpecError::Invalid(format!(
                "strategy {other:?}: use \"canary\" or \"blue-green\""
            )));
        }
    };
    if !matches!(body.strategy.as_str(), "canary" | "blue-green") {
        return Err(SpecError::Invalid(format!(
            "strategy {:?}: use \"canary\" or \"blue-green\"",
            body.strategy
        )));
    }
    let a = body.analysis;
    let mut analysis = d.analysis.clone();
    if let Some(w) = &a.window {
        analysis.window = duration("analysis.window", w)?;
    }
    if let Some(r) = a.max_error_ratio {
        analysis.max_error_ratio = r;
    }
    if let Some(p) = &a.max_p95 {
        analysis.max_p95 = duration("analysis.max_p95", p)?;
    }
    if let Some(m) = a.min_requests {
        analysis.min_requests = m;
    }
    match a.alpha {
        Some(alpha) if alpha > 0.0 && alpha < 0.5 => analysis.alpha = alpha,
        Some(alpha) => {
            return Err(invalid(format!(
                "analysis.alpha: {alpha} is not a level; write one above 0 and below 0.5 (e.g. 0.001)"
            )));
        }
        None => {}
    }
    let smoke = body
        .smoke
        .into_iter()
        .enumerate()
        .map(|(i, mut s)| {
            let grpc = grpc_smoke(i, &mut s)?;
            let method = s
                .method
                .as_deref()
                .unwrap_or("GET")
                .parse::<http::Method>()
                .map_err(|_| invalid(format!("smoke[{i}].method: not an HTTP method")))?;
            let path = s.path.unwrap_or_else(|| "/".into());
            if !path.starts_with('/') {
                return Err(invalid(format!("smoke[{i}].path: {path:?} must start with /")));
            }
            let json_pointer = match (s.json_pointer, s.json_equals) {
                (Some(p), Some(v)) if p.starts_with('/') => Some((p, v)),
                (None, None) => None,
                _ => {
                    return Err(invalid(format!(
                        "smoke[{i}]: json_pointer (starting with /) and json_equals go together"
                    )));
                }
            };
            Ok(SmokeCheck {
                method,
                headers: s.headers.into_iter().collect(),
                body: s.body,
                json_pointer,
                max_latency: s
                    .max_latency
                    .as_deref()
                    .map(|l| duration("smoke.max_latency", l))
                    .transpose()?
                    .unwrap_or(Duration::from_secs(5)),
                name: s.name,
                path,
                grpc,
                expect_status: s.expect_status,
                body_contains: s.body_contains,
            })
        })
        .collect::<Result<Vec<_>, SpecError>>()?;
    let rollback = match body.rollback.as_deref() {
        None | Some("instant") => RollbackMode::Instant,
        Some("gradual") => RollbackMode::Gradual,
        Some(other) => {
            return Err(invalid(format!("rollback: {other:?}: use \"instant\" or \"gradual\"")));
        }
    };
    let comparison = Comparison {
        // The request's, else [rollback]'s, else the rollout default.
        max_slower_share: a
            .max_slower_share
            .or(d.analysis.max_slower_share)
            .unwrap_or(Comparison::default().max_slower_share),
        max_error_ratio_increase: a.max_error_ratio_increase.or(d.analysis.max_error_ratio_increase),
        max_p95_ratio: a.max_p95_ratio.or(d.analysis.max_p95_ratio),
    };
    if !(0.5..=1.0).contains(&comparison.max_slower_share) {
        return Err(invalid(
            "analysis.max_slower_share: a share between 0.5 (no difference) and 1 (off)".into(),
        ));
    }
    if comparison
        .max_error_ratio_increase
        .is_some_and(|v| !(0.0..=1.0).contains(&v))
    {
        return Err(invalid(
            "analysis.max_error_ratio_increase: a ratio between 0 and 1".into(),
        ));
    }
    if comparison.max_p95_ratio.is_some_and(|v| !(v >= 1.0 && v.is_finite())) {
        return Err(invalid(
            "analysis.max_p95_ratio: a factor of at least 1, e.g. 1.5".into(),
        ));
    }
    let on_no_evidence = match a.on_no_evidence.as_deref() {
        None | Some("pause") => NoEvidence::Pause,
        Some("abort") => NoEvidence::Abort,
        Some("promote") => NoEvidence::Promote,
        Some(other) => {
            return Err(invalid(format!(
                "analysis.on_no_evidence: {other:?}: use \"pause\", \"abort\" or \"promote\""
            )));
        }
    };
    let on_failure = match body.on_failure.as_deref() {
        None | Some("abort") => AnalysisFailure::Abort,
        Some("pause") => AnalysisFailure::Pause,
        Some(other) => {
            return Err(invalid(format!("on_failure: {other:?}: use \"abort\" or \"pause\"")));
        }
    };
    let evidence_deadline = a
        .evidence_deadline
        .as_deref()
        .map(|d| duration("analysis.evidence_deadline", d))
        .transpose()?;
    let analysis_interval = a
        .interval
        .as_deref()
        .map(|i| duration("analysis.interval", i))
        .transpose()?
        .unwrap_or(Duration::from_secs(10));
    let checks = checks(a.checks, analysis_interval)?;
    Ok(RolloutSpec {
        checks,
        on_failure,
        evidence_deadline,
        on_no_evidence,
        comparison,
        hooks: hooks(body.hooks)?,
        rollback,
        dry_run: body.dry_run,
        force: body.force,
        from: body.from,
        to: body.to,
        strategy: body.strategy,
        steps,
        analysis,
        analysis_interval,
        max_failed_checks: a.max_failed_checks.unwrap_or(2).max(1),
        smoke,
        post_promotion: body
            .post_promotion
            .as_deref()
            .map(|p| duration("post_promotion", p))
            .transpose()?
            .unwrap_or(Duration::from_secs(30 * 60)),
        health_gate: body
            .health_gate
            .as_deref()
            .map(|g| duration("health_gate", g))
            .transpose()?
            .unwrap_or(Duration::from_secs(60)),
    })
}
