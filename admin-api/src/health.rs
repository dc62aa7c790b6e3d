//! `/health/live` (the process answers) and `/health/ready` (a routing table
//! that can serve, the first health round done, and an embedded store that
//! answers). A shared PostgreSQL store that is down does not make a replica
//! unready: traffic must keep flowing on the last routing table while
//! changes wait (`sluice_store_up` and its alert say so).

use axum::Json;
use axum::extract::State;
use http::StatusCode;
use sluice_api as api;

use crate::AdminState;

pub(crate) async fn live() -> Json<api::Liveness> {
    Json(api::Liveness {
        status: "live".to_owned(),
    })
}

pub(crate) async fn ready(State(state): State<AdminState>) -> (StatusCode, Json<api::Readiness>) {
    let table = state.routing.snapshot();
    let routable = table
        .pools()
        .iter()
        .any(|p| !p.weight.is_zero() && !p.backends.is_empty());
    let store = state.store.ping().await;
    let probed = state.health_ready.load(std::sync::atomic::Ordering::Acquire);
    let store_needed = state.store.engine() == sluice_store::Engine::Sqlite;
    let ready = routable && probed && (store || !store_needed);
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(api::Readiness {
            status: if ready { "ready" } else { "not-ready" }.to_owned(),
            routing_table: routable,
            store,
            first_health_round: probed,
            generation: table.generation(),
        }),
    )
}
