//! Rollout routes: start one, read the current one and the history, and
//! pause, resume, promote or abort the one running.

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Extension, Path, State};
use serde::Deserialize;
use serde_json::Value;
use sluice_api as api;
use sluice_control::rollout::{Command, RolloutError, SpecError, parse_request};

use crate::error::ErrorCode;
use crate::{AdminState, ApiError, Caller};

/// A rollout request's problem as an API error: not the shape of one
/// (400 `bad-json`) or not one that can run (422 `invalid-rollout`).
fn spec_error(e: SpecError) -> ApiError {
    match e {
        SpecError::Shape(_) => ApiError::bad_request(ErrorCode::BadJson, e.to_string()),
        SpecError::Invalid(m) => ApiError::invalid(ErrorCode::InvalidRollout, m),
    }
}

/// Rollouts run on the leading replica only.
fn require_leader(state: &AdminState) -> Result<(), ApiError> {
    if state.leading.load(std::sync::atomic::Ordering::Relaxed) {
        Ok(())
    } else {
        let leader = match state.replica.leader() {
            Some(name) => format!("replica {name} leads it"),
            None => "no replica leads it right now (is the store reachable?)".to_owned(),
        };
        Err(ApiError::conflict(
            ErrorCode::NotLeader,
            format!(
                "this replica ({}) does not lead the rollout controller: {leader}. Send rollout requests to the \
                 replica whose GET /api/v1/status shows \"leader\": true",
                state.replica.name()
            ),
        ))
    }
}

fn engine_error(e: RolloutError) -> ApiError {
    match e {
        RolloutError::Busy(_) => ApiError::conflict(ErrorCode::RolloutRunning, e.to_string()),
        RolloutError::NoneRunning => ApiError::not_found(e.to_string()),
        RolloutError::Invalid(m) => ApiError::invalid(ErrorCode::InvalidRollout, m),
        RolloutError::Fenced(m) => ApiError::conflict(ErrorCode::Contracted, m),
    }
}

pub(crate) async fn start(
    State(state): State<AdminState>,
    Extension(caller): Extension<Caller>,
    parsed: Result<Json<Value>, JsonRejection>,
) -> Result<Json<api::Rollout>, ApiError> {
    let result = parsed.map_err(|e| ApiError::bad_body(&e)).and_then(|Json(request)| {
        require_leader(&state)?;
        let spec = parse_request(&request, &state.rollout_defaults).map_err(spec_error)?;
        state.rollouts.start(spec, request).map_err(engine_error)
    });
    if let Err(e) = &result {
        state.audit_rejection(&caller, "rollout.start", "rollouts", e).await;
    }
    Ok(Json(result?.view()))
}

pub(crate) async fn current(State(state): State<AdminState>) -> Result<Json<api::Rollout>, ApiError> {
    state
        .rollouts
        .current()
        .map(|s| Json(s.view()))
        .ok_or_else(|| ApiError::not_found("no rollout has run since this sluice started"))
}

fn record_view(r: &sluice_store::RolloutRecord) -> api::RolloutRecord {
    api::RolloutRecord {
        id: r.id,
        spec: serde_json::from_str::<Value>(&r.spec).unwrap_or(Value::Null),
        state: r.state.clone(),
        step: r.current_step,
        started_at: r.started_at.clone(),
        updated_at: r.updated_at.clone(),
        finished_at: r.finished_at.clone(),
        reason: r.reason.clone(),
    }
}

pub(crate) async fn list(State(state): State<AdminState>) -> Result<Json<api::RolloutList>, ApiError> {
    let rows = state
        .store
        .rollouts(50)
        .await
        .map_err(|e| ApiError::unavailable(e.to_string()))?;
    Ok(Json(api::RolloutList {
        rollouts: rows.iter().map(record_view).collect(),
    }))
}

/// One stored rollout (the URL in rollout notifications).
pub(crate) async fn one(
    State(state): State<AdminState>,
    Path(id): Path<i64>,
) -> Result<Json<api::RolloutRecord>, ApiError> {
    state
        .store
        .rollout(id)
        .await
        .map_err(|e| ApiError::unavailable(e.to_string()))?
        .map(|r| Json(record_view(&r)))
        .ok_or_else(|| ApiError::not_found(format!("no rollout {id}")))
}

#[derive(Debug, Deserialize, Default)]
pub(crate) struct PromoteParams {
    #[serde(default)]
    full: bool,
}

pub(crate) async fn command(
    State(state): State<AdminState>,
    Extension(caller): Extension<Caller>,
    Path(action): Path<String>,
    axum::extract::Query(PromoteParams { full }): axum::extract::Query<PromoteParams>,
) -> Result<Json<api::Rollout>, ApiError> {
    let command = match action.as_str() {
        "pause" => Command::Pause,
        "resume" => Command::Resume,
        "promote" => Command::Promote { full },
        "abort" => Command::Abort,
        other => {
            return Err(ApiError::not_found(format!(
                "no rollout action {other:?}; use pause, resume, promote or abort"
            )));
        }
    };
    let result = require_leader(&state).and_then(|()| state.rollouts.command(command).map_err(engine_error));
    if let Err(e) = &result {
        state
            .audit_rejection(&caller, &format!("rollout.{action}"), "rollouts/current", e)
            .await;
    }
    Ok(Json(result?.view()))
}
