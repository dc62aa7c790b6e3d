//! The request bodies `sluice ctl` sends: weights from `POOL=PERCENT`
//! pairs, a rollout from flags on top of an optional `--spec` file.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::{Value, json};
use sluice_config::Weight;

use crate::error::AppError;

/// The flags of `ctl rollout start`, on top of an optional `--spec` body.
pub(super) struct StartFlags<'a> {
    pub(super) from: &'a str,
    pub(super) to: &'a str,
    pub(super) strategy: &'a str,
    pub(super) steps: Option<&'a str>,
    pub(super) smoke: &'a [String],
    pub(super) dry_run: bool,
    pub(super) rollback: Option<&'a str>,
    pub(super) spec: Option<&'a Path>,
}

pub(super) fn rollout_body(f: StartFlags<'_>) -> Result<Value, AppError> {
    let StartFlags {
        from,
        to,
        strategy,
        steps,
        smoke,
        dry_run,
        rollback,
        spec,
    } = f;
    let mut body = match spec {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| AppError::Other(format!("--spec {}: {e}", path.display())))?;
            let value: Value = serde_json::from_str(&text)
                .map_err(|e| AppError::Other(format!("--spec {}: not JSON: {e}", path.display())))?;
            if !value.is_object() {
                return Err(AppError::Other(format!(
                    "--spec {}: must be a JSON object",
                    path.display()
                )));
            }
            value
        }
        None => json!({}),
    };
    body["from"] = json!(from);
    body["to"] = json!(to);
    if spec.is_none() || strategy != "canary" {
        body["strategy"] = json!(strategy);
    }
    if dry_run {
        body["dry_run"] = json!(true);
    }
    if let Some(mode) = rollback {
        body["rollback"] = json!(mode);
    }
    if let Some(steps) = steps {
        let parsed: Result<Vec<Value>, AppError> = steps
            .split(',')
            .map(|s| {
                let s = s.trim();
                if s == "pause" {
                    return Ok(json!({"pause": true}));
                }
                let (weight, hold) = s.split_once(':').unwrap_or((s, "0s"));
                let weight: Weight = weight.parse().map_err(|_| {
                    AppError::Other(format!(
                        "step {s:?}: write WEIGHT:HOLD (e.g. 25:5m or 0.5:10m; a percentage with up to two decimals) or pause"
                    ))
                })?;
                Ok(json!({"weight": weight, "hold": hold}))
            })
            .collect();
        body["steps"] = Value::Array(parsed?);
    }
    let checks: Result<Vec<Value>, AppError> = smoke
        .iter()
        .map(|s| {
            let (name, path) = s
                .split_once('=')
                .ok_or_else(|| AppError::Other(format!("smoke {s:?}: write NAME=PATH")))?;
            Ok(json!({"name": name, "path": path}))
        })
        .collect();
    let checks = checks?;
    if !checks.is_empty() {
        body["smoke"] = Value::Array(checks);
    }
    Ok(body)
}

pub(super) fn parse_weights(pairs: &[String]) -> Result<BTreeMap<String, Weight>, AppError> {
    let mut weights = BTreeMap::new();
    for pair in pairs {
        let (pool, weight) = pair
            .split_once('=')
            .ok_or_else(|| AppError::Other(format!("{pair:?}: write weights as POOL=PERCENT, e.g. blue=90")))?;
        let weight: Weight = weight.parse().map_err(|_| {
            AppError::Other(format!(
                "{pair:?}: the weight must be a percentage from 0 to 100 with at most two decimals (e.g. 90 or 99.9)"
            ))
        })?;
        weights.insert(pool.to_owned(), weight);
    }
    Ok(weights)
}
