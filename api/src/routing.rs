//! Routing as the API shows it: pools with their backends and live
//! windows, the generation they belong to, and the process's status.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// `GET /api/v1/status`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Status {
    pub version: String,
    pub generation: u64,
    pub uptime_seconds: u64,
    /// This replica leads the rollout controller and the rollback guard.
    pub leader: bool,
    /// This replica's name: host name and admin port.
    pub replica: String,
    /// The leading replica, as last seen; `None` while none leads.
    pub leader_replica: Option<String>,
    pub environment: Option<String>,
    pub store: StoreState,
    pub pools: Vec<Pool>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StoreState {
    /// `sqlite` or `postgres`.
    pub engine: String,
    pub reachable: bool,
}

/// `GET /api/v1/pools` and the answer to every routing change.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Routing {
    pub generation: u64,
    pub pools: Vec<Pool>,
}

/// `GET /api/v1/pools/{pool}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PoolDetail {
    #[serde(flatten)]
    pub pool: Pool,
    pub generation: u64,
}

/// One pool.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Pool {
    pub name: String,
    pub version: String,
    /// Percentage of traffic as set (up to two decimals).
    pub weight: crate::Weight,
    /// The share actually served: 0 while no backend is routable.
    pub effective_weight: crate::Weight,
    /// `http1` or `http2`.
    pub protocol: String,
    pub requests: u64,
    pub server_errors: u64,
    /// gRPC calls by `grpc-status` name, the codes seen.
    pub grpc: BTreeMap<String, u64>,
    pub backends: Vec<Backend>,
    /// Requests that go to this pool whatever the weights (testers).
    #[serde(default)]
    pub matches: Vec<MatchRule>,
    /// The names among the pool's backends (DNS discovery); the backends
    /// found under each name carry it in `discovered_as`.
    #[serde(default)]
    pub names: Vec<String>,
    /// The live window, on the routes that measure one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<Window>,
    /// Each `[[analysis.routes]]` route's counts over the same window
    /// (this replica's), when routes are configured.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<RouteWindow>,
}

/// One route of a pool over the live window.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RouteWindow {
    pub name: String,
    pub requests: u64,
    pub errors: u64,
    pub error_ratio: f64,
}

/// A request whose header (or cookie) has this exact value goes to the
/// pool: one of `header` and `cookie`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MatchRule {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cookie: Option<String>,
    pub value: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Backend {
    pub addr: String,
    /// The DNS name it was found under (DNS discovery), else none.
    #[serde(default)]
    pub discovered_as: Option<String>,
    pub healthy: bool,
    pub ejected: bool,
    pub in_flight: u64,
    pub requests: u64,
}

/// What a pool's traffic did over the last `seconds`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Window {
    pub seconds: u64,
    pub requests: u64,
    /// Requests per second.
    pub rate: f64,
    /// Server errors over requests, 0 to 1.
    pub error_ratio: f64,
    pub p50_ms: Option<f64>,
    pub p95_ms: Option<f64>,
    pub p99_ms: Option<f64>,
}

/// `POST /api/v1/pools/{pool}/backends/{addr}/drain`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Drained {
    pub generation: u64,
    pub pool: String,
    pub backend: String,
    pub in_flight_at_start: u64,
    pub in_flight_now: u64,
    pub drained: bool,
}

/// The `data` of a `snapshot` or `change` event on `GET /api/v1/events`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TableEvent {
    /// `snapshot` (the first) or `change`.
    #[serde(rename = "type")]
    pub kind: String,
    pub generation: u64,
    /// Who changed routing and how; `None` on the snapshot.
    pub actor: Option<String>,
    pub action: Option<String>,
    pub pools: Vec<Pool>,
}

/// The `data` of a `stats` event: every pool's window, each second.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StatsEvent {
    /// `stats`.
    #[serde(rename = "type")]
    pub kind: String,
    pub generation: u64,
    pub pools: Vec<Pool>,
}

/// `GET /api/v1/stats/history`: each pool's live window as the `stats`
/// events showed it, once a second over the last minute (for charts that
/// start full), and the rollback thresholds to draw against it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StatsHistory {
    /// The span of each point's window.
    pub span_seconds: u64,
    /// `rollback.max_error_ratio`.
    pub max_error_ratio: f64,
    /// `rollback.max_p95`.
    pub max_p95_ms: f64,
    pub pools: Vec<PoolHistory>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PoolHistory {
    pub name: String,
    /// Oldest first.
    pub points: Vec<StatsPoint>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StatsPoint {
    /// Seconds before now.
    pub ago: u64,
    pub rate: f64,
    pub error_ratio: f64,
    pub p95_ms: Option<f64>,
}
