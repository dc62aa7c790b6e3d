//! `/api/v1/events`: server-sent events. A `snapshot` event first (the
//! current table), then one `routing` event per change with who made it,
//! and a `stats` event every second (each pool's live window over the last
//! 10 s: requests/s, error ratio, P95) for live charts.

use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::Stream;
use sluice_api as api;
use sluice_routing::{RoutingEvent, RoutingHandle};
use tokio::sync::broadcast::Receiver;
use tokio::sync::broadcast::error::RecvError;

use crate::AdminState;
use crate::read::{pool_view, pool_with_window};

fn table_event(kind: &str, routing: &RoutingHandle, change: Option<&RoutingEvent>) -> Event {
    let table = routing.snapshot();
    let data = api::TableEvent {
        kind: kind.to_owned(),
        generation: change.map_or(table.generation(), |c| c.generation),
        actor: change.map(|c| c.actor.as_str().to_owned()),
        action: change.map(|c| c.action.as_str().to_owned()),
        pools: table.pools().iter().map(pool_view).collect(),
    };
    Event::default()
        .event(kind)
        .data(serde_json::to_string(&data).unwrap_or_default())
}

/// The span of the `stats` events' windows.
const STATS_SPAN: std::time::Duration = std::time::Duration::from_secs(10);

fn stats_event(routing: &RoutingHandle) -> Event {
    let table = routing.snapshot();
    let data = api::StatsEvent {
        kind: "stats".to_owned(),
        generation: table.generation(),
        pools: table
            .pools()
            .iter()
            .map(|p| pool_with_window(p, &table.policy().routes, STATS_SPAN))
            .collect(),
    };
    Event::default()
        .event("stats")
        .data(serde_json::to_string(&data).unwrap_or_default())
}

/// Points in `/api/v1/stats/history`: the windows' 60 s of buckets hold
/// this many 10 s windows.
const HISTORY_POINTS: u64 = 50;

/// `GET /api/v1/stats/history`: what the `stats` events showed over the
/// last minute, so charts start full.
pub(crate) async fn history(State(state): State<AdminState>) -> axum::Json<api::StatsHistory> {
    let now = tokio::time::Instant::now();
    // Before sluice started there was no traffic (a window asked about an
    // earlier time would read its first second instead).
    let uptime = state.started.elapsed().as_secs();
    let table = state.routing.snapshot();
    let pools = table
        .pools()
        .iter()
        .map(|p| api::PoolHistory {
            name: p.name.to_string(),
            points: (0..HISTORY_POINTS)
                .rev()
                .filter_map(|ago| {
                    if ago > uptime {
                        return Some(api::StatsPoint {
                            ago,
                            ..Default::default()
                        });
                    }
                    let at = now.checked_sub(std::time::Duration::from_secs(ago))?;
                    let snap = p.stats.window.snapshot(at, STATS_SPAN);
                    Some(api::StatsPoint {
                        ago,
                        rate: snap.rate(),
                        error_ratio: snap.error_ratio(),
                        p95_ms: snap.quantile(0.95).map(|d| d.as_secs_f64() * 1000.0),
                    })
                })
                .collect(),
        })
        .collect();
    axum::Json(api::StatsHistory {
        span_seconds: STATS_SPAN.as_secs(),
        max_error_ratio: state.max_error_ratio,
        max_p95_ms: state.max_p95.as_secs_f64() * 1000.0,
        pools,
    })
}

struct Feed {
    rx: Receiver<RoutingEvent>,
    routing: Arc<RoutingHandle>,
    started: bool,
    tick: tokio::time::Interval,
}

pub(crate) async fn events(State(state): State<AdminState>) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let feed = Feed {
        rx: state.routing.subscribe(),
        routing: Arc::clone(&state.routing),
        started: false,
        tick: tokio::time::interval_at(
            tokio::time::Instant::now() + std::time::Duration::from_secs(1),
            std::time::Duration::from_secs(1),
        ),
    };
    let stream = futures_util::stream::unfold(feed, |mut feed| async move {
        if !feed.started {
            feed.started = true;
            let first = table_event("snapshot", &feed.routing, None);
            return Some((Ok(first), feed));
        }
        let event = tokio::select! {
            change = feed.rx.recv() => match change {
                Ok(change) => table_event("routing", &feed.routing, Some(&change)),
                // A slow reader missed some changes: say so; the next event
                // carries the whole current table anyway.
                Err(RecvError::Lagged(missed)) => Event::default().event("lagged").data(missed.to_string()),
                Err(RecvError::Closed) => return None,
            },
            _ = feed.tick.tick() => stats_event(&feed.routing),
        };
        Some((Ok(event), feed))
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
}
