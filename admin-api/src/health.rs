//! `/health/live` (the process answers) and `/health/ready` (a routing table
//! that can serve, and a reachable store).

use axum::Json;
use axum::extract::State;
use http::StatusCode;
use serde_json::{Value, json};

use crate::AdminState;

pub(crate) async fn live() -> Json<Value> {
    Json(json!({"status": "live"}))
}

pub(crate) async fn ready(State(state): State<AdminState>) -> (StatusCode, Json<Value>) {
    let table = state.routing.snapshot();
    let routable = table.pools().iter().any(|p| p.weight > 0 && !p.backends.is_empty());
    let store = state.store.ping().await;
    let probed = state.health_ready.load(std::sync::atomic::Ordering::Acquire);
    let ready = routable && store && probed;
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(json!({
            "status": if ready { "ready" } else { "not-ready" },
            "routing_table": routable,
            "store": store,
            "first_health_round": probed,
            "generation": table.generation(),
        })),
    )
}
