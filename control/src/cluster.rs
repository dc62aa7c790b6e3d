//! The other replicas' live windows, as last read from the shared store:
//! decisions on the leading replica add them to its own, so a canary is
//! judged on all the traffic it gets, not on one replica's share.

use std::collections::HashMap;
use std::sync::RwLock;

use sluice_routing::totals::Totals;
use sluice_routing::window::WindowSnapshot;

/// Per pool, the sum of the other replicas' windows (empty when alone),
/// and each replica's running totals for the sequential tests.
#[derive(Debug, Default)]
pub struct PeerWindows {
    by_pool: RwLock<HashMap<String, WindowSnapshot>>,
    totals: RwLock<HashMap<String, Vec<(String, Totals)>>>,
}

impl PeerWindows {
    /// Replaces what is known of the other replicas.
    pub fn set(&self, by_pool: HashMap<String, WindowSnapshot>) {
        *self.by_pool.write().unwrap_or_else(|e| e.into_inner()) = by_pool;
    }

    /// Replaces the other replicas' running totals: per pool, by replica.
    pub fn set_totals(&self, by_pool: HashMap<String, Vec<(String, Totals)>>) {
        *self.totals.write().unwrap_or_else(|e| e.into_inner()) = by_pool;
    }

    /// The other replicas' running totals of `pool`, by replica.
    pub fn totals(&self, pool: &str) -> Vec<(String, Totals)> {
        let by_pool = self.totals.read().unwrap_or_else(|e| e.into_inner());
        by_pool.get(pool).cloned().unwrap_or_default()
    }

    /// Adds the other replicas' window of `pool` to `local`.
    pub fn add_to(&self, pool: &str, local: &mut WindowSnapshot) {
        let by_pool = self.by_pool.read().unwrap_or_else(|e| e.into_inner());
        if let Some(peers) = by_pool.get(pool) {
            local.merge(peers);
        }
    }
}
