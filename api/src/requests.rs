//! Request bodies: what `sluice ctl` sends and the server reads.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// `PUT /api/v1/weights`: every pool's percentage (up to two decimals),
/// summing to 100. (The server reads `weights` loosely first, to name a pool
/// whose weight is not a percentage from 0 to 100.)
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WeightsRequest {
    pub weights: BTreeMap<String, crate::Weight>,
    /// Past contract fences and onto pools without backends.
    #[serde(default)]
    pub force: bool,
}

/// `PUT /api/v1/pools/{pool}`: a new version label and/or backend list.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolUpdate {
    pub version: Option<String>,
    pub backends: Option<Vec<String>>,
    /// Testers sent to the pool whatever the weights (`[]`: none).
    pub matches: Option<Vec<crate::MatchRule>>,
    /// While the pool carries traffic.
    #[serde(default)]
    pub force: bool,
}

/// `POST /api/v1/pools/{pool}/backends`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendAdd {
    /// `host:port`.
    pub addr: String,
}
