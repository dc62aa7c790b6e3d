//! Read-only routes: status, pools, one pool, the audit trail.

use axum::Json;
use axum::extract::{Path, Query, State};
use serde::Deserialize;
use serde_json::Value;
use sluice_api as api;
use sluice_routing::routes::RouteRule;
use sluice_routing::table::Pool;
use sluice_store::AuditQuery;

use crate::error::ErrorCode;
use crate::{AdminState, ApiError};

/// A pool as the API shows it.
pub(crate) fn pool_view(p: &Pool) -> api::Pool {
    let statuses = p.stats.statuses();
    let requests: u64 = statuses.iter().map(|(_, n)| n).sum();
    let server_errors: u64 = statuses.iter().filter(|(c, _)| *c >= 500).map(|(_, n)| n).sum();
    api::Pool {
        name: p.name.to_string(),
        version: p.version.to_string(),
        weight: p.weight,
        effective_weight: p.effective_weight,
        protocol: match p.protocol {
            sluice_config::UpstreamProtocol::Http1 => "http1",
            sluice_config::UpstreamProtocol::Http2 => "http2",
        }
        .to_owned(),
        requests,
        server_errors,
        // gRPC calls by status code, the codes seen (empty without gRPC).
        grpc: sluice_routing::grpc::CODE_NAMES
            .iter()
            .zip(p.stats.grpc_codes())
            .filter(|(_, n)| *n > 0)
            .map(|(code, n)| ((*code).to_owned(), n))
            .collect(),
        matches: p
            .matches
            .iter()
            .map(|m| match &m.on {
                sluice_config::MatchOn::Header(h) => api::MatchRule {
                    header: Some(h.clone()),
                    cookie: None,
                    value: m.value.clone(),
                },
                sluice_config::MatchOn::Cookie(c) => api::MatchRule {
                    header: None,
                    cookie: Some(c.clone()),
                    value: m.value.clone(),
                },
            })
            .collect(),
        names: p
            .entries
            .iter()
            .filter(|e| sluice_routing::discovered::is_name(e))
            .cloned()
            .collect(),
        // With a window only (see `pool_with_window`).
        routes: Vec::new(),
        backends: p
            .backends
            .iter()
            .map(|b| api::Backend {
                addr: b.addr().to_owned(),
                discovered_as: b.discovered_as().map(str::to_owned),
                healthy: b.is_healthy(),
                ejected: b.is_ejected(),
                in_flight: b.in_flight(),
                requests: b.requests(),
            })
            .collect(),
        window: None,
    }
}

/// A pool with its live window over `span`: rate, error ratio, quantiles.
pub(crate) fn pool_with_window(p: &Pool, routes: &[RouteRule], span: std::time::Duration) -> api::Pool {
    let now = tokio::time::Instant::now();
    let snap = p.stats.window.snapshot(now, span);
    let ms = |q: f64| snap.quantile(q).map(|d| d.as_secs_f64() * 1000.0);
    api::Pool {
        window: Some(api::Window {
            seconds: snap.span.as_secs(),
            requests: snap.requests,
            rate: snap.rate(),
            error_ratio: snap.error_ratio(),
            p50_ms: ms(0.5),
            p95_ms: ms(0.95),
            p99_ms: ms(0.99),
        }),
        routes: routes
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let route = p.routes.snapshot(i, now, span);
                api::RouteWindow {
                    name: r.name.to_string(),
                    requests: route.requests,
                    errors: route.errors,
                    error_ratio: route.error_ratio(),
                }
            })
            .collect(),
        ..pool_view(p)
    }
}

pub(crate) async fn status(State(state): State<AdminState>) -> Json<api::Status> {
    let table = state.routing.snapshot();
    Json(api::Status {
        version: env!("CARGO_PKG_VERSION").to_owned(),
        generation: table.generation(),
        uptime_seconds: state.started.elapsed().as_secs(),
        leader: state.leading.load(std::sync::atomic::Ordering::Relaxed),
        replica: state.replica.name().to_owned(),
        leader_replica: state.replica.leader(),
        environment: state.environment.clone(),
        store: api::StoreState {
            engine: format!("{:?}", state.store.engine()).to_lowercase(),
            reachable: state.store.ping().await,
        },
        pools: table
            .pools()
            .iter()
            .map(|p| pool_with_window(p, &table.policy().routes, state.window))
            .collect(),
    })
}

pub(crate) async fn pools(State(state): State<AdminState>) -> Json<api::Routing> {
    let table = state.routing.snapshot();
    Json(api::Routing {
        generation: table.generation(),
        pools: table
            .pools()
            .iter()
            .map(|p| pool_with_window(p, &table.policy().routes, state.window))
            .collect(),
    })
}

pub(crate) async fn pool(
    State(state): State<AdminState>,
    Path(name): Path<String>,
) -> Result<Json<api::PoolDetail>, ApiError> {
    let table = state.routing.snapshot();
    let pool = table
        .pool(&name)
        .ok_or_else(|| ApiError::not_found(format!("no pool named {name:?}")))?;
    Ok(Json(api::PoolDetail {
        pool: pool_with_window(pool, &table.policy().routes, state.window),
        generation: table.generation(),
    }))
}

#[derive(Debug, Deserialize)]
pub(crate) struct AuditParams {
    since: Option<String>,
    until: Option<String>,
    actor: Option<String>,
    action: Option<String>,
    limit: Option<i64>,
}

pub(crate) async fn audit(
    State(state): State<AdminState>,
    params: Result<Query<AuditParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<api::AuditPage>, ApiError> {
    let Query(p) = params?;
    // Stored times are RFC 3339 with milliseconds and compared as text:
    // bring the filters to the same form.
    let normalize = |name: &str, value: Option<String>| -> Result<Option<String>, ApiError> {
        value
            .map(|v| {
                humantime::parse_rfc3339_weak(&v)
                    .map(|t| humantime::format_rfc3339_millis(t).to_string())
                    .map_err(|_| {
                        ApiError::bad_request(
                            ErrorCode::BadQuery,
                            format!("{name}={v:?} is not a time; use RFC 3339, e.g. 2026-11-26T15:00:00Z"),
                        )
                    })
            })
            .transpose()
    };
    let since = normalize("since", p.since)?;
    let until = normalize("until", p.until)?;
    if p.limit.is_some_and(|l| !(1..=10_000).contains(&l)) {
        return Err(ApiError::bad_request(
            ErrorCode::BadQuery,
            "limit must be between 1 and 10000",
        ));
    }
    let rows = state
        .store
        .audit(&AuditQuery {
            since,
            until,
            actor: p.actor,
            action: p.action,
            limit: p.limit,
        })
        .await
        .map_err(|e| ApiError::unavailable(e.to_string()))?;
    let parse = |s: Option<String>| s.map(|t| serde_json::from_str::<Value>(&t).unwrap_or(Value::String(t)));
    let entries = rows
        .into_iter()
        .map(|r| api::AuditEntry {
            id: r.id,
            at: r.at,
            actor: r.entry.actor,
            action: r.entry.action,
            target: r.entry.target,
            before: parse(r.entry.before),
            after: parse(r.entry.after),
            result: r.entry.result,
            environment: r.entry.environment,
        })
        .collect();
    Ok(Json(api::AuditPage { entries }))
}

#[derive(Debug, Deserialize)]
pub(crate) struct HistoryParams {
    limit: Option<i64>,
}

/// Deployment history: which version moved into which pool, newest first.
pub(crate) async fn history(
    State(state): State<AdminState>,
    params: Result<Query<HistoryParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<api::History>, ApiError> {
    let Query(p) = params?;
    let limit = p.limit.unwrap_or(50);
    if !(1..=10_000).contains(&limit) {
        return Err(ApiError::bad_request(
            ErrorCode::BadQuery,
            "limit must be between 1 and 10000",
        ));
    }
    let rows = state
        .store
        .deployments(limit)
        .await
        .map_err(|e| ApiError::unavailable(e.to_string()))?;
    Ok(Json(api::History {
        deployments: rows
            .into_iter()
            .map(|d| api::Deployment {
                pool: d.pool,
                from_version: d.from_version,
                to_version: d.to_version,
                result: d.result,
                started_at: d.started_at,
                finished_at: d.finished_at,
            })
            .collect(),
    }))
}
