//! What the store remembers, as the API shows it: the audit trail, the
//! deployment history and past rollouts.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// `GET /api/v1/audit`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AuditPage {
    pub entries: Vec<AuditEntry>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AuditEntry {
    pub id: i64,
    /// RFC 3339.
    pub at: String,
    pub actor: String,
    pub action: String,
    pub target: String,
    /// The routing before and after a change (JSON), when it was one.
    pub before: Option<Value>,
    pub after: Option<Value>,
    pub result: String,
    pub environment: Option<String>,
}

/// `GET /api/v1/history`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct History {
    pub deployments: Vec<Deployment>,
}

/// A version that moved into a pool.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Deployment {
    pub pool: String,
    pub from_version: Option<String>,
    pub to_version: String,
    pub result: String,
    pub started_at: String,
    pub finished_at: Option<String>,
}

/// `GET /api/v1/rollouts`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RolloutList {
    pub rollouts: Vec<RolloutRecord>,
}

/// A stored rollout (`GET /api/v1/rollouts/{id}`, and each of the list).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RolloutRecord {
    pub id: i64,
    /// The request it was started with.
    pub spec: Value,
    pub state: String,
    pub step: i64,
    pub started_at: String,
    pub updated_at: String,
    pub finished_at: Option<String>,
    pub reason: Option<String>,
}

/// `GET /api/v1/logs`: the last lines of failed requests, oldest first.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AccessLines {
    pub lines: Vec<AccessLine>,
}

/// One access-log line (the JSON format's fields; see docs/operations.md,
/// "Find one request").
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AccessLine {
    /// The request's start, RFC 3339 UTC with milliseconds.
    pub ts: String,
    pub client: String,
    pub method: String,
    pub path: String,
    pub protocol: String,
    pub status: u16,
    pub pool: Option<String>,
    pub version: Option<String>,
    pub backend: Option<String>,
    pub duration_ms: f64,
    pub upstream_ms: Option<f64>,
    pub bytes_in: Option<u64>,
    pub bytes_out: u64,
    pub request_id: Option<String>,
    pub trace_id: Option<String>,
    /// sluice's own error code (`x-sluice-error`).
    pub error: Option<String>,
    pub retries: u32,
    /// gRPC calls only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grpc_status: Option<u8>,
}
