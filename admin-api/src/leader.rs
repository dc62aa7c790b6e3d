//! Rollout requests made to a replica that does not lead are passed on to
//! the one that does (named on the store's leadership lock, host:port of
//! its admin listener), with the caller's own credentials; the leader
//! checks and audits them as if they came straight to it. A request that
//! was already passed on once is never passed on again: a replica that
//! lost the leadership in between answers `409 not-leader` instead.

use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use http::{HeaderName, HeaderValue, header};
use http_body_util::{BodyExt, Limited};

use crate::MAX_BODY_BYTES;
use crate::error::ApiError;
use crate::error::ErrorCode;

/// Set on a request one replica passes to another.
pub const FORWARDED: HeaderName = HeaderName::from_static("x-sluice-forwarded-by");
/// Names the replica that answered a passed-on request.
pub const LEADER: HeaderName = HeaderName::from_static("x-sluice-leader");

const TIMEOUT: Duration = Duration::from_secs(10);

/// Whether `path` (below `/api/v1`) is a rollout change only the leader makes.
pub(crate) fn is_rollout_change(method: &http::Method, path: &str) -> bool {
    method == http::Method::POST && (path == "/rollouts" || path.starts_with("/rollouts/current/"))
}

/// Sends `req` to the admin API of `leader` and returns its answer.
pub(crate) async fn pass_on(leader: &str, from: &str, req: Request) -> Response {
    match tokio::time::timeout(TIMEOUT, exchange(leader, from, req)).await {
        Ok(Ok(res)) => res,
        Ok(Err(e)) => e.into_response(),
        Err(_) => unreachable_leader(leader, "timed out").into_response(),
    }
}

fn unreachable_leader(leader: &str, why: &str) -> ApiError {
    ApiError::new(
        http::StatusCode::BAD_GATEWAY,
        ErrorCode::LeaderUnreachable,
        format!("this replica does not lead rollouts, and the leader {leader} could not be reached: {why}"),
    )
}

async fn exchange(leader: &str, from: &str, req: Request) -> Result<Response, ApiError> {
    let (parts, body) = req.into_parts();
    let body = Limited::new(body, MAX_BODY_BYTES)
        .collect()
        .await
        .map_err(|_| {
            ApiError::new(
                http::StatusCode::PAYLOAD_TOO_LARGE,
                ErrorCode::BodyTooLarge,
                "request body too large",
            )
        })?
        .to_bytes();
    // Seen from inside the `/api/v1` router, the path lost that prefix.
    let url = format!(
        "http://{leader}/api/v1{}",
        parts.uri.path_and_query().map_or("", |p| p.as_str())
    );
    let mut headers = vec![(
        FORWARDED,
        HeaderValue::from_str(from).unwrap_or(HeaderValue::from_static("replica")),
    )];
    for name in [header::AUTHORIZATION, header::CONTENT_TYPE] {
        if let Some(v) = parts.headers.get(&name) {
            headers.push((name, v.clone()));
        }
    }
    let answer = sluice_transport::webclient::post(&url, &headers, body, 1024 * 1024)
        .await
        .map_err(|e| unreachable_leader(leader, &e))?;
    let mut res = Response::new(Body::from(answer.body));
    *res.status_mut() = answer.status;
    if let Some(ct) = answer.headers.get(header::CONTENT_TYPE) {
        res.headers_mut().insert(header::CONTENT_TYPE, ct.clone());
    }
    if let Ok(name) = HeaderValue::from_str(leader) {
        res.headers_mut().insert(LEADER, name);
    }
    Ok(res)
}
