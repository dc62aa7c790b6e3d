//! sluice's admin HTTP API (axum) on its own listener: health, Prometheus
//! metrics, and the authenticated `/api/v1` routes through which operators
//! and pipelines read and change routing.
//!
//! Every change goes through the routing handle, so it is validated, stored
//! with its audit row and only then served; a refused change is audited as
//! a rejection and changes nothing.

pub mod auth;
mod dashboard;
pub mod error;
mod events;
mod health;
pub mod leader;
mod logs;
pub mod metrics;
mod read;
pub mod rollouts;
mod watch;
mod write;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use http::Method;
use sluice_config::Role;
use sluice_routing::RoutingHandle;
use sluice_store::{AuditEntry, Store};
use tokio::net::TcpListener;
use tokio::time::Instant;

pub use auth::{Caller, TokenError, TokenSet};
pub use error::{ApiError, ErrorCode};
pub use metrics::Metrics;
pub use watch::watch_token_files;

use sluice_control::rollout::RolloutDefaults;

/// Everything the handlers share.
/// This replica's name and which replica leads, as last seen: refreshed
/// by the leadership loop, so answering never waits for the store.
#[derive(Debug, Default)]
pub struct ReplicaView {
    /// Set once the admin listener is bound (its port is part of it).
    name: std::sync::OnceLock<String>,
    leader: std::sync::Mutex<Option<String>>,
}

impl ReplicaView {
    pub fn named(name: String) -> Self {
        let view = Self::default();
        view.set_name(name);
        view
    }

    pub fn set_name(&self, name: String) {
        let _ = self.name.set(name);
    }

    pub fn name(&self) -> &str {
        self.name.get().map_or("unnamed", String::as_str)
    }

    pub fn set_leader(&self, leader: Option<String>) {
        *self.leader.lock().unwrap_or_else(|e| e.into_inner()) = leader;
    }

    pub fn leader(&self) -> Option<String> {
        self.leader.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

#[derive(Debug, Clone)]
pub struct AdminState {
    /// Whether this replica leads the rollout controller (always, alone).
    pub leading: Arc<std::sync::atomic::AtomicBool>,
    pub replica: Arc<ReplicaView>,
    pub routing: Arc<RoutingHandle>,
    pub store: Store,
    pub tokens: Arc<TokenSet>,
    pub metrics: Arc<Metrics>,
    /// `DEPLOYMENT_ENV`, recorded with audit rows.
    pub environment: Option<String>,
    /// How long a backend drain waits for in-flight requests.
    pub drain_timeout: Duration,
    /// Put `/metrics` behind a token too.
    pub metrics_require_token: bool,
    /// Span of the live-window numbers shown (the rollback window).
    pub window: Duration,
    /// The rollback thresholds, drawn on the dashboard's charts.
    pub max_error_ratio: f64,
    pub max_p95: Duration,
    /// Set once the first round of health checks is done.
    pub health_ready: Arc<std::sync::atomic::AtomicBool>,
    /// The rollout engine.
    pub rollouts: Arc<sluice_control::rollout::Engine>,
    pub rollout_defaults: RolloutDefaults,
    pub started: Instant,
    /// Access-log lines published by the proxy's log writer.
    pub log_tap: Arc<sluice_routing::tap::LogTap>,
}

impl AdminState {
    /// Records a refused change (the only trace a rejected request leaves).
    pub(crate) async fn audit_rejection(&self, caller: &Caller, action: &str, target: &str, err: &ApiError) {
        // Refused because the store is unreachable: the audit row could not
        // be written either, and trying would hold the caller for another
        // connection timeout. The log keeps it.
        if err.code == ErrorCode::StoreUnavailable {
            tracing::warn!(actor = %caller.name, action, target, error = %err.message, "refused: the store is unreachable");
            return;
        }
        let entry = AuditEntry {
            actor: caller.name.to_string(),
            action: action.to_owned(),
            target: target.to_owned(),
            before: None,
            after: None,
            result: format!("rejected {}: {}", err.status.as_u16(), err.message),
            request_id: None,
            environment: self.environment.clone(),
        };
        if let Err(e) = self.store.append_audit(&entry).await {
            tracing::warn!(error = %e, "could not audit a rejected change");
        }
    }
}

/// Largest admin request body: a rollout spec with hooks fits many times.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// The whole admin router.
pub fn router(state: AdminState) -> Router {
    let api = Router::new()
        .route("/status", get(read::status))
        .route("/pools", get(read::pools))
        .route("/pools/{pool}", get(read::pool).put(write::put_pool))
        .route("/pools/{pool}/backends", post(write::add_backend))
        .route("/pools/{pool}/backends/{addr}", delete(write::remove_backend))
        .route("/pools/{pool}/backends/{addr}/drain", post(write::drain_backend))
        .route("/weights", put(write::put_weights))
        .route("/rollback", post(write::rollback))
        .route("/audit", get(read::audit))
        .route("/history", get(read::history))
        .route("/rollouts", get(rollouts::list).post(rollouts::start))
        .route("/rollouts/current", get(rollouts::current))
        .route("/rollouts/{id}", get(rollouts::one))
        .route("/rollouts/current/{action}", post(rollouts::command))
        .route("/events", get(events::events))
        .route("/stats/history", get(events::history))
        .route("/logs", get(logs::recent))
        .route("/logs/stream", get(logs::stream))
        .route_layer(middleware::from_fn_with_state(state.clone(), authorize));
    Router::new()
        .route("/", get(dashboard::page))
        .route("/dashboard.js", get(dashboard::script))
        .route("/health/live", get(health::live))
        .route("/health/ready", get(health::ready))
        .route("/metrics", get(metrics::scrape))
        .nest("/api/v1", api)
        .fallback(not_found)
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(middleware::from_fn_with_state(state.clone(), count_requests))
        .with_state(state)
}

async fn not_found() -> ApiError {
    ApiError::not_found("no such endpoint; the API lives under /api/v1 (see docs/admin-api.yaml)")
}

/// Authenticates `/api/v1` calls: viewers may read, operators may also
/// change. With no tokens configured (allowed on loopback only) every caller
/// is an anonymous operator.
async fn authorize(State(state): State<AdminState>, mut req: Request, next: Next) -> Response {
    let caller = match caller_of(&state, &req) {
        Ok(c) => c,
        Err(e) => return e.into_response(),
    };
    let reads = req.method() == Method::GET || req.method() == Method::HEAD;
    if !reads && caller.role != Role::Operator {
        return ApiError::forbidden("viewer").into_response();
    }
    // Rollouts run on the leader: a follower passes the request on (once).
    if leader::is_rollout_change(req.method(), req.uri().path())
        && !state.leading.load(std::sync::atomic::Ordering::Relaxed)
        && !req.headers().contains_key(leader::FORWARDED)
        && let Some(leader) = state.replica.leader()
        && leader != state.replica.name()
    {
        return leader::pass_on(&leader, state.replica.name(), req).await;
    }
    req.extensions_mut().insert(caller);
    next.run(req).await
}

pub(crate) fn caller_of(state: &AdminState, req: &Request) -> Result<Caller, ApiError> {
    if !state.tokens.required() {
        return Ok(Caller {
            name: "anonymous".into(),
            role: Role::Operator,
        });
    }
    let presented = req
        .headers()
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "))
        .ok_or_else(ApiError::unauthorized)?;
    state.tokens.authenticate(presented).ok_or_else(ApiError::unauthorized)
}

async fn count_requests(State(state): State<AdminState>, req: Request, next: Next) -> Response {
    let res = next.run(req).await;
    state.metrics.admin_request(res.status().as_u16());
    res
}

/// Serves the admin API on `listener` until `shutdown` resolves.
pub async fn serve(listener: TcpListener, state: AdminState, shutdown: impl Future<Output = ()> + Send + 'static) {
    if let Err(e) = axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await
    {
        tracing::error!(error = %e, "admin listener failed");
    }
}
