//! `/api/v1/events`: server-sent events. A `snapshot` event first (the
//! current table), then one `routing` event per change with who made it;
//! later capabilities (health, rollouts) publish on the same stream.

use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::Stream;
use serde_json::json;
use sluice_proxy::{RoutingEvent, RoutingHandle};
use tokio::sync::broadcast::Receiver;
use tokio::sync::broadcast::error::RecvError;

use crate::AdminState;
use crate::read::pool_json;

fn table_event(kind: &str, routing: &RoutingHandle, change: Option<&RoutingEvent>) -> Event {
    let table = routing.snapshot();
    let data = json!({
        "type": kind,
        "generation": change.map_or(table.generation(), |c| c.generation),
        "actor": change.map(|c| &*c.actor),
        "action": change.map(|c| &*c.action),
        "pools": table.pools().iter().map(pool_json).collect::<Vec<_>>(),
    });
    Event::default().event(kind).data(data.to_string())
}

struct Feed {
    rx: Receiver<RoutingEvent>,
    routing: Arc<RoutingHandle>,
    started: bool,
}

pub(crate) async fn events(State(state): State<AdminState>) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let feed = Feed {
        rx: state.routing.subscribe(),
        routing: Arc::clone(&state.routing),
        started: false,
    };
    let stream = futures_util::stream::unfold(feed, |mut feed| async move {
        if !feed.started {
            feed.started = true;
            let first = table_event("snapshot", &feed.routing, None);
            return Some((Ok(first), feed));
        }
        let event = match feed.rx.recv().await {
            Ok(change) => table_event("routing", &feed.routing, Some(&change)),
            // A slow reader missed some changes: say so; the next event
            // carries the whole current table anyway.
            Err(RecvError::Lagged(missed)) => Event::default().event("lagged").data(missed.to_string()),
            Err(RecvError::Closed) => return None,
        };
        Some((Ok(event), feed))
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
}
