//! The admin API's bodies, one type each: the server (`sluice-admin-api`)
//! builds its answers from these, `sluice ctl` reads them back into the
//! same types, and a test holds `docs/admin-api.yaml`'s schemas to their
//! fields. Field names are the wire names; `Option` fields are `null` when
//! unknown (never left out), except a pool's `window`, which only the
//! routes that measure one carry.

mod records;
mod requests;
mod rollout;
mod routing;
mod weight;

pub use records::{AccessLine, AccessLines, AuditEntry, AuditPage, Deployment, History, RolloutList, RolloutRecord};
pub use requests::{BackendAdd, PoolUpdate, WeightsRequest};
pub use rollout::{HookRun, Rollout, RouteEvidence, SequentialEvidence, StepEvidence};
pub use routing::{
    Backend, Drained, MatchRule, Pool, PoolDetail, PoolHistory, RouteWindow, Routing, StatsEvent, StatsHistory,
    StatsPoint, Status, StoreState, TableEvent, Window,
};
pub use weight::{Weight, WeightError, total as weight_total, total_text as weight_total_text};

use serde::{Deserialize, Serialize};

/// Every refusal: `{"error": {"code", "message"}}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ErrorDetail {
    /// Stable and machine-readable, e.g. `invalid-weights`.
    pub code: String,
    /// For people: what was wrong and what to do.
    pub message: String,
}

/// `GET /health/live`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Liveness {
    pub status: String,
}

/// `GET /health/ready`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Readiness {
    /// `ready` or `not-ready`.
    pub status: String,
    pub routing_table: bool,
    pub store: bool,
    pub first_health_round: bool,
    pub generation: u64,
}
