//! The other replicas' live windows, as last read from the shared store:
//! decisions on the leading replica add them to its own, so a canary is
//! judged on all the traffic it gets, not on one replica's share.

use std::collections::HashMap;
use std::sync::RwLock;

use sluice_routing::window::WindowSnapshot;

/// Per pool, the sum of the other replicas' windows (empty when alone).
#[derive(Debug, Default)]
pub struct PeerWindows {
    by_pool: RwLock<HashMap<String, WindowSnapshot>>,
}

impl PeerWindows {
    /// Replaces what is known of the other replicas.
    pub fn set(&self, by_pool: HashMap<String, WindowSnapshot>) {
        *self.by_pool.write().unwrap_or_else(|e| e.into_inner()) = by_pool;
    }

    /// Adds the other replicas' window of `pool` to `local`.
    pub fn add_to(&self, pool: &str, local: &mut WindowSnapshot) {
        let by_pool = self.by_pool.read().unwrap_or_else(|e| e.into_inner());
        if let Some(peers) = by_pool.get(pool) {
            local.merge(peers);
        }
    }
}
