//! [`RoutingHandle`]: the one `ArcSwap` that holds the current
//! [`RoutingTable`], and the only way to change it.
//!
//! Readers (every request) do a lock-free `load`. Writers (admin API, config
//! reload, later health and rollouts) are serialised by a mutex that is held
//! only while a new snapshot is built, never across an await; each write
//! builds a complete snapshot with the next generation and stores it once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use arc_swap::{ArcSwap, Guard};
use tokio::sync::watch;

use crate::error::TableError;
use crate::table::{PoolSpec, RoutingPolicy, RoutingTable};

#[derive(Debug)]
pub struct RoutingHandle {
    current: ArcSwap<RoutingTable>,
    writer: Mutex<()>,
    /// Publishes each new generation to whoever watches (events, metrics).
    changes: watch::Sender<u64>,
}

impl RoutingHandle {
    /// Starts at generation 1 with `specs`.
    pub fn new(specs: &[PoolSpec], policy: RoutingPolicy) -> Result<Self, TableError> {
        let table = RoutingTable::build(1, specs, policy, None)?;
        Ok(Self {
            current: ArcSwap::from_pointee(table),
            writer: Mutex::new(()),
            changes: watch::Sender::new(1),
        })
    }

    /// The current snapshot, for one request. Do not hold it across `.await`.
    #[inline]
    pub fn load(&self) -> Guard<Arc<RoutingTable>> {
        self.current.load()
    }

    /// The current snapshot as an owned `Arc`, for control-plane readers.
    pub fn snapshot(&self) -> Arc<RoutingTable> {
        self.current.load_full()
    }

    /// Notified with the generation after every published change.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// Sets every pool's weight at once. Every pool must be named, no unknown
    /// pool may be, and the weights must sum to 100.
    pub fn set_weights(&self, weights: &HashMap<String, u32>) -> Result<Arc<RoutingTable>, TableError> {
        self.update(|current| {
            if let Some(unknown) = weights.keys().find(|name| current.pool(name).is_none()) {
                return Err(TableError::UnknownPool(unknown.clone()));
            }
            let mut specs = current.specs();
            for spec in &mut specs {
                spec.weight = *weights
                    .get(&spec.name)
                    .ok_or_else(|| TableError::MissingPool(spec.name.clone()))?;
            }
            Ok((specs, current.policy().clone()))
        })
    }

    /// Replaces a pool's version label and/or backends.
    pub fn set_pool(
        &self,
        pool: &str,
        version: Option<String>,
        backends: Option<Vec<String>>,
    ) -> Result<Arc<RoutingTable>, TableError> {
        self.update(|current| {
            let mut specs = current.specs();
            let spec = specs
                .iter_mut()
                .find(|s| s.name == pool)
                .ok_or_else(|| TableError::UnknownPool(pool.to_owned()))?;
            if let Some(v) = version {
                spec.version = v;
            }
            if let Some(b) = backends {
                spec.backends = b;
            }
            Ok((specs, current.policy().clone()))
        })
    }

    /// Replaces everything, e.g. after a config reload.
    pub fn replace(&self, specs: Vec<PoolSpec>, policy: RoutingPolicy) -> Result<Arc<RoutingTable>, TableError> {
        self.update(|_| Ok((specs, policy)))
    }

    fn update(
        &self,
        change: impl FnOnce(&RoutingTable) -> Result<(Vec<PoolSpec>, RoutingPolicy), TableError>,
    ) -> Result<Arc<RoutingTable>, TableError> {
        // A poisoned lock only means an earlier writer panicked between
        // building and storing; the stored table is still whole.
        let _writer = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        let current = self.current.load_full();
        let (specs, policy) = change(&current)?;
        let next = Arc::new(RoutingTable::build(
            current.generation() + 1,
            &specs,
            policy,
            Some(&current),
        )?);
        self.current.store(Arc::clone(&next));
        self.changes.send_replace(next.generation());
        Ok(next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_config::UpstreamProtocol;

    fn handle() -> RoutingHandle {
        let spec = |name: &str, weight, port| PoolSpec {
            name: name.into(),
            version: "v1".into(),
            weight,
            protocol: UpstreamProtocol::Http1,
            backends: vec![format!("127.0.0.1:{port}")],
        };
        RoutingHandle::new(&[spec("blue", 100, 1), spec("green", 0, 2)], RoutingPolicy::default()).unwrap()
    }

    fn weights(pairs: &[(&str, u32)]) -> HashMap<String, u32> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect()
    }

    #[test]
    fn weight_change_bumps_generation_and_keeps_backends() {
        let h = handle();
        let before = h.snapshot();
        let after = h.set_weights(&weights(&[("blue", 20), ("green", 80)])).unwrap();
        assert_eq!(after.generation(), before.generation() + 1);
        assert_eq!(after.pool("green").unwrap().weight, 80);
        // Same backend objects: in-flight counts carry over the swap.
        assert!(Arc::ptr_eq(
            &before.pools()[0].backends[0],
            &after.pools()[0].backends[0]
        ));
    }

    #[test]
    fn rejected_changes_leave_the_table_alone() {
        let h = handle();
        let cases = [
            (weights(&[("blue", 50), ("green", 40)]), TableError::WeightSum(90)),
            (
                weights(&[("blue", 50), ("green", 40), ("red", 10)]),
                TableError::UnknownPool("red".into()),
            ),
            (weights(&[("blue", 100)]), TableError::MissingPool("green".into())),
        ];
        for (w, expected) in cases {
            assert_eq!(h.set_weights(&w).unwrap_err(), expected);
            assert_eq!(h.snapshot().generation(), 1);
        }
        assert_eq!(
            h.set_pool("green", None, Some(vec![]))
                .and_then(|_| h.set_weights(&weights(&[("blue", 0), ("green", 100)])))
                .unwrap_err(),
            TableError::NoBackends("green".into())
        );
        assert_eq!(h.snapshot().pool("blue").unwrap().weight, 100);
    }
}
