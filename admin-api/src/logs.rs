//! `/api/v1/logs`: access-log lines, for operators only (they name
//! clients and paths). `GET /api/v1/logs` answers the last lines of failed
//! requests (5xx, or an error of sluice's own); `GET /api/v1/logs/stream`
//! sends those as server-sent `line` events, then every new line as it is
//! written. Both take `pool` and `status` (`5xx`, `4xx`, … or a code)
//! filters. Lines exist while `[access_log]` is on.

use std::convert::Infallible;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Extension, Query, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::Stream;
use serde::Deserialize;
use sluice_api as api;
use sluice_config::Role;
use tokio::sync::broadcast::error::RecvError;

use crate::error::ErrorCode;
use crate::{AdminState, ApiError, Caller};

#[derive(Debug, Default, Deserialize)]
pub(crate) struct LogParams {
    pool: Option<String>,
    status: Option<String>,
}

/// Which lines a reader wants.
#[derive(Debug, Clone)]
struct Filter {
    pool: Option<String>,
    /// A class (`5` for `5xx`) or an exact code.
    status: Option<(u16, bool)>,
}

impl Filter {
    fn from(params: LogParams) -> Result<Self, ApiError> {
        let status = match params.status.as_deref() {
            None => None,
            Some(s) if s.len() == 3 && s.ends_with("xx") => match s.as_bytes().first() {
                Some(d @ b'1'..=b'5') => Some((u16::from(d - b'0'), true)),
                _ => return Err(bad_status(s)),
            },
            Some(s) => match s.parse::<u16>() {
                Ok(code) if (100..600).contains(&code) => Some((code, false)),
                _ => return Err(bad_status(s)),
            },
        };
        Ok(Self {
            pool: params.pool,
            status,
        })
    }

    /// The line, when it passes.
    fn pass(&self, line: &str) -> Option<api::AccessLine> {
        let parsed: api::AccessLine = serde_json::from_str(line).ok()?;
        if let Some(pool) = &self.pool
            && parsed.pool.as_ref() != Some(pool)
        {
            return None;
        }
        match self.status {
            Some((class, true)) if parsed.status / 100 != class => None,
            Some((code, false)) if parsed.status != code => None,
            _ => Some(parsed),
        }
    }
}

fn bad_status(s: &str) -> ApiError {
    ApiError::bad_request(
        ErrorCode::BadQuery,
        format!("status {s:?}: write a class such as 5xx or a code such as 502"),
    )
}

fn operator(caller: &Caller) -> Result<(), ApiError> {
    if caller.role == Role::Operator {
        Ok(())
    } else {
        Err(ApiError::forbidden("viewer"))
    }
}

pub(crate) async fn recent(
    State(state): State<AdminState>,
    Extension(caller): Extension<Caller>,
    query: Result<Query<LogParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<api::AccessLines>, ApiError> {
    operator(&caller)?;
    let filter = Filter::from(query?.0)?;
    let lines = state
        .log_tap
        .recent_errors()
        .iter()
        .filter_map(|l| filter.pass(l))
        .collect();
    Ok(Json(api::AccessLines { lines }))
}

pub(crate) async fn stream(
    State(state): State<AdminState>,
    Extension(caller): Extension<Caller>,
    query: Result<Query<LogParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    operator(&caller)?;
    let filter = Filter::from(query?.0)?;
    // Subscribed before the kept lines are read: nothing falls between.
    let rx = state.log_tap.subscribe();
    let kept: Vec<Arc<str>> = state.log_tap.recent_errors();
    let kept = futures_util::stream::iter(
        kept.into_iter()
            .filter(|l| filter.pass(l).is_some())
            .map(|l| Ok(line_event(&l)))
            .collect::<Vec<_>>(),
    );
    let live = futures_util::stream::unfold((rx, filter), |(mut rx, filter)| async move {
        loop {
            let event = match rx.recv().await {
                Ok(line) if filter.pass(&line).is_some() => line_event(&line),
                Ok(_) => continue,
                // A slow reader missed lines: say how many.
                Err(RecvError::Lagged(missed)) => Event::default().event("lagged").data(missed.to_string()),
                Err(RecvError::Closed) => return None,
            };
            return Some((Ok(event), (rx, filter)));
        }
    });
    Ok(Sse::new(futures_util::StreamExt::chain(kept, live)).keep_alive(KeepAlive::default()))
}

fn line_event(line: &str) -> Event {
    Event::default().event("line").data(line)
}
