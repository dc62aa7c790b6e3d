//! Routes that change routing: weights, a pool's version and backends,
//! adding, removing and draining a backend, and rollback. Each validates
//! before anything changes; a refusal is audited and leaves the table,
//! its generation and the store as they were.

use std::collections::HashMap;
use std::time::Duration;

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Extension, Path, Query, State};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use sluice_config::Weight;
use sluice_routing::{PoolChange, RoutingAction, RoutingTable, TableError, WeightChange};
use sluice_store::AuditQuery;
use tokio::time::Instant;

use crate::error::ErrorCode;
use crate::read::pool_view;
use crate::{AdminState, ApiError, Caller};
use sluice_api as api;

fn body<T: DeserializeOwned>(parsed: Result<Json<T>, JsonRejection>) -> Result<T, ApiError> {
    parsed.map(|Json(v)| v).map_err(|e| ApiError::bad_body(&e))
}

fn changed(table: &RoutingTable) -> Json<api::Routing> {
    Json(api::Routing {
        generation: table.generation(),
        pools: table.pools().iter().map(pool_view).collect(),
    })
}

/// Runs a change; a refusal is audited before it is returned.
async fn audited<T>(
    state: &AdminState,
    caller: &Caller,
    action: &str,
    target: &str,
    result: Result<T, ApiError>,
) -> Result<T, ApiError> {
    if let Err(e) = &result {
        state.audit_rejection(caller, action, target, e).await;
    }
    result
}

/// `UnknownPool` names a path segment here: 404, not 400.
fn in_path(e: TableError) -> ApiError {
    match e {
        TableError::UnknownPool(p) => ApiError::not_found(format!("no pool named {p:?}")),
        other => other.into(),
    }
}

/// [`api::WeightsRequest`] read loosely: a weight that is not a percentage
/// from 0 to 100 (two decimals at most) gets a 422 naming its pool, not
/// serde's 400.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct WeightsBody {
    weights: HashMap<String, Value>,
    #[serde(default)]
    force: bool,
}

/// Percentages 0–100 in steps of 0.01, or a 422 naming the pool.
fn weights_of(raw: &HashMap<String, Value>) -> Result<HashMap<String, Weight>, ApiError> {
    raw.iter()
        .map(|(pool, v)| {
            Weight::deserialize(v).map(|w| (pool.clone(), w)).map_err(|_| {
                ApiError::invalid(
                    ErrorCode::InvalidWeights,
                    format!(
                        "weight of pool {pool:?} must be a percentage from 0 to 100 with at most two decimals, got {v}"
                    ),
                )
            })
        })
        .collect()
}

pub(crate) async fn put_weights(
    State(state): State<AdminState>,
    Extension(caller): Extension<Caller>,
    parsed: Result<Json<WeightsBody>, JsonRejection>,
) -> Result<Json<api::Routing>, ApiError> {
    let result = async {
        let req = body(parsed)?;
        let weights = weights_of(&req.weights)?;
        let table = state
            .routing
            .change_weights(WeightChange {
                weights: &weights,
                actor: caller.actor(),
                action: RoutingAction::WeightsSet,
                reason: None,
                force: req.force,
            })
            .await?;
        Ok(changed(&table))
    }
    .await;
    audited(&state, &caller, RoutingAction::WeightsSet.as_str(), "routing", result).await
}

pub(crate) async fn put_pool(
    State(state): State<AdminState>,
    Extension(caller): Extension<Caller>,
    Path(pool): Path<String>,
    parsed: Result<Json<api::PoolUpdate>, JsonRejection>,
) -> Result<Json<api::Routing>, ApiError> {
    let result = async {
        let req = body(parsed)?;
        if req.version.is_none() && req.backends.is_none() && req.matches.is_none() {
            return Err(ApiError::invalid(
                ErrorCode::NothingToChange,
                "give a version, backends or matches",
            ));
        }
        if req.version.as_deref().is_some_and(|v| v.trim().is_empty()) {
            return Err(ApiError::invalid(
                ErrorCode::InvalidVersion,
                "version must not be empty",
            ));
        }
        let matches = req.matches.as_deref().map(match_rules).transpose()?;
        let change = PoolChange::Update {
            version: req.version,
            backends: req.backends,
            matches,
            force: req.force,
        };
        let table = state
            .routing
            .change_pool(&pool, &change, &caller.actor())
            .await
            .map_err(in_path)?;
        Ok(changed(&table))
    }
    .await;
    audited(
        &state,
        &caller,
        RoutingAction::PoolUpdate.as_str(),
        &format!("pools/{pool}"),
        result,
    )
    .await
}

pub(crate) async fn add_backend(
    State(state): State<AdminState>,
    Extension(caller): Extension<Caller>,
    Path(pool): Path<String>,
    parsed: Result<Json<api::BackendAdd>, JsonRejection>,
) -> Result<Json<api::Routing>, ApiError> {
    let result = async {
        let req = body(parsed)?;
        let table = state
            .routing
            .change_pool(&pool, &PoolChange::AddBackend(req.addr), &caller.actor())
            .await
            .map_err(in_path)?;
        Ok(changed(&table))
    }
    .await;
    audited(
        &state,
        &caller,
        RoutingAction::BackendAdd.as_str(),
        &format!("pools/{pool}"),
        result,
    )
    .await
}

#[derive(Debug, Deserialize, Default)]
pub(crate) struct ForceParam {
    #[serde(default)]
    force: bool,
}

pub(crate) async fn remove_backend(
    State(state): State<AdminState>,
    Extension(caller): Extension<Caller>,
    Path((pool, addr)): Path<(String, String)>,
    Query(ForceParam { force }): Query<ForceParam>,
) -> Result<Json<api::Routing>, ApiError> {
    let change = PoolChange::RemoveBackend {
        addr: addr.clone(),
        force,
    };
    let result = state
        .routing
        .change_pool(&pool, &change, &caller.actor())
        .await
        .map_err(in_path)
        .map(|t| changed(&t));
    audited(
        &state,
        &caller,
        change.action().as_str(),
        &format!("pools/{pool}/backends/{addr}"),
        result,
    )
    .await
}

/// Stops new requests to a backend, waits (up to the drain timeout) for its
/// in-flight ones, and reports how many there were.
pub(crate) async fn drain_backend(
    State(state): State<AdminState>,
    Extension(caller): Extension<Caller>,
    Path((pool, addr)): Path<(String, String)>,
    Query(ForceParam { force }): Query<ForceParam>,
) -> Result<Json<api::Drained>, ApiError> {
    // Keep the backend object: requests already on it hold it too.
    let backend = state
        .routing
        .snapshot()
        .pool(&pool)
        .and_then(|p| p.backends.iter().find(|b| b.addr() == addr).cloned());
    let change = PoolChange::DrainBackend {
        addr: addr.clone(),
        force,
    };
    let result = state
        .routing
        .change_pool(&pool, &change, &caller.actor())
        .await
        .map_err(in_path);
    let table = audited(
        &state,
        &caller,
        change.action().as_str(),
        &format!("pools/{pool}/backends/{addr}"),
        result,
    )
    .await?;
    let at_start = backend.as_ref().map_or(0, |b| b.in_flight());
    let deadline = Instant::now() + state.drain_timeout;
    let mut now_in_flight = at_start;
    if let Some(b) = &backend {
        while b.in_flight() > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        now_in_flight = b.in_flight();
    }
    Ok(Json(api::Drained {
        generation: table.generation(),
        pool,
        backend: addr,
        in_flight_at_start: at_start,
        in_flight_now: now_in_flight,
        drained: now_in_flight == 0,
    }))
}

/// Restores the weights in force before the latest weight change.
pub(crate) async fn rollback(
    State(state): State<AdminState>,
    Extension(caller): Extension<Caller>,
    Query(ForceParam { force }): Query<ForceParam>,
) -> Result<Json<api::Routing>, ApiError> {
    let result = async {
        let last = state
            .store
            .audit(&AuditQuery {
                action: Some(RoutingAction::WeightsSet.as_str().into()),
                limit: Some(50),
                ..Default::default()
            })
            .await
            .map_err(|e| ApiError::unavailable(e.to_string()))?;
        let before = last
            .iter()
            .find(|r| r.entry.result == "ok")
            .and_then(|r| r.entry.before.as_deref())
            .and_then(|b| serde_json::from_str::<Value>(b).ok())
            .ok_or_else(|| {
                ApiError::conflict(
                    ErrorCode::NothingToRollBack,
                    "no earlier weights are recorded to roll back to",
                )
            })?;
        let weights: HashMap<String, Weight> = before["pools"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| Some((p["name"].as_str()?.to_owned(), Weight::deserialize(&p["weight"]).ok()?)))
            .collect();
        let table = state
            .routing
            .change_weights(WeightChange {
                weights: &weights,
                actor: caller.actor(),
                action: RoutingAction::Rollback,
                reason: None,
                force,
            })
            .await?;
        state.metrics.manual_rollback();
        Ok(changed(&table))
    }
    .await;
    audited(&state, &caller, RoutingAction::Rollback.as_str(), "routing", result).await
}

/// At most this many match rules per pool: each is looked at for every
/// request.
const MAX_MATCHES: usize = 16;

/// The API's match rules as routing takes them; a bad one refuses the
/// whole change.
fn match_rules(rules: &[api::MatchRule]) -> Result<Vec<sluice_config::MatchRule>, ApiError> {
    let bad = |why: String| ApiError::invalid(ErrorCode::InvalidMatch, why);
    if rules.len() > MAX_MATCHES {
        return Err(bad(format!("at most {MAX_MATCHES} match rules per pool")));
    }
    rules
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let token = |name: &str| {
                !name.is_empty()
                    && name
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
            };
            let on = match (&r.header, &r.cookie) {
                (Some(h), None) if token(h) => sluice_config::MatchOn::Header(h.to_ascii_lowercase()),
                (None, Some(c)) if token(c) => sluice_config::MatchOn::Cookie(c.clone()),
                (Some(_), None) | (None, Some(_)) => {
                    return Err(bad(format!("matches[{i}]: not a header or cookie name")));
                }
                _ => return Err(bad(format!("matches[{i}]: give one of header or cookie"))),
            };
            if r.value.is_empty() || !r.value.bytes().all(|b| (0x21..0x7f).contains(&b)) {
                return Err(bad(format!(
                    "matches[{i}].value: one or more visible ASCII characters (compared exactly)"
                )));
            }
            Ok(sluice_config::MatchRule {
                on,
                value: r.value.clone(),
            })
        })
        .collect()
}
