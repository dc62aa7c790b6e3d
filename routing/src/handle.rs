//! [`RoutingHandle`]: the one `ArcSwap` that holds the current
//! [`RoutingTable`], and the only way to change it.
//!
//! Readers (every request) do a lock-free `load`. Writers (admin API, config
//! reload, health, rollouts) take turns on an async mutex: each builds a
//! complete snapshot with the next generation, hands it to the
//! [`RoutingStore`] (if any) and only when that succeeded stores it in one
//! step. A change the store refuses is never served.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use arc_swap::{ArcSwap, Guard};
use sluice_config::Weight;
use tokio::sync::{Mutex, broadcast};

use crate::change::{Actor, PoolChange, RoutingAction, WeightChange};
use crate::error::TableError;
use crate::table::{PoolSpec, RoutingPolicy, RoutingTable};

/// One routing change, as the store and the audit trail see it.
#[derive(Debug, Clone, Copy)]
pub struct Change<'a> {
    /// Who asked.
    pub actor: &'a Actor,
    /// What was asked.
    pub action: RoutingAction,
    pub before: &'a RoutingTable,
    pub after: &'a RoutingTable,
    /// Why, when the change was decided rather than asked for (a rollback).
    pub reason: Option<&'a str>,
}

/// Why a change could not be stored; the text is shown to whoever asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PersistError {
    /// Another writer (a replica) stored a newer generation first.
    Conflict(String),
    Failed(String),
}

/// Durable storage for routing changes. `persist` must succeed before a
/// change is served.
pub trait RoutingStore: Send + Sync {
    fn persist<'a>(&'a self, change: Change<'a>)
    -> Pin<Box<dyn Future<Output = Result<(), PersistError>> + Send + 'a>>;
}

/// A version that must not get traffic back without `force`: a rollout's
/// contract step changed something it depends on (e.g. dropped a column).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fence {
    pub pool: String,
    pub version: String,
    /// Why, for the person whose change is refused.
    pub reason: String,
}

/// Published after every change is served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoutingEvent {
    pub generation: u64,
    pub actor: Actor,
    pub action: RoutingAction,
    pub reason: Option<Arc<str>>,
}

pub struct RoutingHandle {
    current: ArcSwap<RoutingTable>,
    writer: Mutex<()>,
    store: Option<Arc<dyn RoutingStore>>,
    /// Tells whoever listens (event stream, dashboards) about each change.
    changes: broadcast::Sender<RoutingEvent>,
    /// Written by rollouts, read by writers only: never on the request path.
    fences: std::sync::Mutex<Vec<Fence>>,
}

impl fmt::Debug for RoutingHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RoutingHandle")
            .field("generation", &self.current.load().generation())
            .field("persistent", &self.store.is_some())
            .finish()
    }
}

impl RoutingHandle {
    /// Starts at generation 1 with `specs`, without a store.
    pub fn new(specs: &[PoolSpec], policy: RoutingPolicy) -> Result<Self, TableError> {
        Self::restore(1, specs, policy, None)
    }

    /// Starts at `generation` (e.g. the one last stored) with `specs`; later
    /// changes go through `store` before they are served.
    pub fn restore(
        generation: u64,
        specs: &[PoolSpec],
        policy: RoutingPolicy,
        store: Option<Arc<dyn RoutingStore>>,
    ) -> Result<Self, TableError> {
        let table = RoutingTable::build(generation, specs, policy, None)?;
        Ok(Self {
            current: ArcSwap::from_pointee(table),
            writer: Mutex::new(()),
            store,
            changes: broadcast::Sender::new(256),
            fences: std::sync::Mutex::new(Vec::new()),
        })
    }

    /// Refuses traffic for `fence.version` in `fence.pool` from now on
    /// (unless forced), replacing an earlier fence on that pool.
    pub fn add_fence(&self, fence: Fence) {
        let mut fences = self.fences.lock().unwrap_or_else(|e| e.into_inner());
        fences.retain(|f| f.pool != fence.pool);
        fences.push(fence);
    }

    /// Why `weights` would give traffic to a fenced version, if they would.
    /// A fence holds only while its pool still runs the fenced version.
    pub fn fenced(&self, weights: &HashMap<String, Weight>) -> Option<String> {
        let table = self.current.load();
        let fences = self.fences.lock().unwrap_or_else(|e| e.into_inner());
        fences
            .iter()
            .find(|f| {
                weights.get(&f.pool).is_some_and(|w| !w.is_zero())
                    && table.pool(&f.pool).is_some_and(|p| *p.version == *f.version)
            })
            .map(|f| f.reason.clone())
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

    /// Every change from now on, in order (a slow listener may lag and
    /// miss some; the current table is always `snapshot()`).
    pub fn subscribe(&self) -> broadcast::Receiver<RoutingEvent> {
        self.changes.subscribe()
    }

    /// Sets every pool's weight at once, under [`WeightChange::apply`]'s
    /// rule and the contract fences (unless forced).
    pub async fn change_weights(&self, change: WeightChange<'_>) -> Result<Arc<RoutingTable>, TableError> {
        if !change.force
            && let Some(reason) = self.fenced(change.weights)
        {
            return Err(TableError::Fenced(reason));
        }
        self.update_because(&change.actor, change.action, change.reason, |current| {
            let mut specs = current.specs();
            change.apply(&mut specs)?;
            Ok((specs, current.policy().clone()))
        })
        .await
    }

    /// Changes one pool's version or backends, under
    /// [`PoolChange::apply`]'s rule.
    pub async fn change_pool(
        &self,
        pool: &str,
        change: &PoolChange,
        actor: &Actor,
    ) -> Result<Arc<RoutingTable>, TableError> {
        self.update(actor, change.action(), |current| {
            let mut specs = current.specs();
            change.apply(pool, &mut specs)?;
            Ok((specs, current.policy().clone()))
        })
        .await
    }

    /// Replaces everything, e.g. after a config reload (a running
    /// rollout's mirror stays).
    pub async fn replace(
        &self,
        specs: Vec<PoolSpec>,
        mut policy: RoutingPolicy,
        actor: &Actor,
        action: RoutingAction,
    ) -> Result<Arc<RoutingTable>, TableError> {
        self.update(actor, action, |current| {
            policy.rollout_mirror = current.policy().rollout_mirror.clone();
            policy.resolved = Arc::clone(&current.policy().resolved);
            Ok((specs, policy))
        })
        .await
    }

    /// Starts or ends a rollout's mirror step: copies of live requests to
    /// a pool, on this replica. Same pools, weights and generation
    /// (nothing to store).
    pub async fn set_rollout_mirror(&self, mirror: Option<crate::mirror::MirrorRule>) -> Arc<RoutingTable> {
        let _writer = self.writer.lock().await;
        let current = self.current.load_full();
        let mut policy = current.policy().clone();
        policy.rollout_mirror = mirror;
        self.rebuild_in_place(current, policy, None)
    }

    /// What `name` (an entry among the pools' backends) resolves to now,
    /// on this replica: same pools, weights and generation (nothing to
    /// store: each replica resolves on its own and only names are shared).
    /// New addresses wait for a passing probe when a health checker runs;
    /// vanished ones leave the table while requests in flight on them
    /// finish. Published as an event; returns the addresses added and
    /// removed (both empty: nothing changed).
    pub async fn set_resolved(
        &self,
        name: &str,
        found: Vec<crate::discovered::Resolved>,
    ) -> (Vec<String>, Vec<String>) {
        let _writer = self.writer.lock().await;
        let current = self.current.load_full();
        let before: Vec<String> = current
            .policy()
            .resolved
            .get(name)
            .map(|v| v.iter().map(|r| r.addr.clone()).collect())
            .unwrap_or_default();
        let after: Vec<String> = found.iter().map(|r| r.addr.clone()).collect();
        let added: Vec<String> = after.iter().filter(|a| !before.contains(a)).cloned().collect();
        let removed: Vec<String> = before.iter().filter(|a| !after.contains(a)).cloned().collect();
        if added.is_empty() && removed.is_empty() && current.policy().resolved.contains_key(name) {
            return (added, removed);
        }
        let mut policy = current.policy().clone();
        let mut resolved = (*policy.resolved).clone();
        resolved.insert(name.to_owned(), found);
        policy.resolved = Arc::new(resolved);
        let reason = format!("{name}: +{added:?} -{removed:?}");
        self.rebuild_in_place(
            current,
            policy,
            Some((Actor::Discovery, RoutingAction::Discovery, reason.into())),
        );
        (added, removed)
    }

    /// Rebuilds the snapshot after backends' health changed: same pools,
    /// weights and generation (nothing to store), new routable sets and
    /// failover shares. `reason` is published with the event.
    pub async fn refresh_health(&self, reason: &str) -> Arc<RoutingTable> {
        let _writer = self.writer.lock().await;
        let current = self.current.load_full();
        let policy = current.policy().clone();
        self.rebuild_in_place(
            current,
            policy,
            Some((Actor::Health, RoutingAction::Health, reason.into())),
        )
    }

    /// Serves `current`'s pools under its generation with `policy` (nothing
    /// to store: what changed is this replica's own), publishing `event`
    /// when given. The caller holds the writer lock. A build that fails
    /// keeps `current`: its specs were valid a moment ago.
    fn rebuild_in_place(
        &self,
        current: Arc<RoutingTable>,
        policy: RoutingPolicy,
        event: Option<(Actor, RoutingAction, Arc<str>)>,
    ) -> Arc<RoutingTable> {
        let Ok(next) = RoutingTable::build(current.generation(), &current.specs(), policy, Some(&current)) else {
            return current;
        };
        let next = Arc::new(next);
        self.current.store(Arc::clone(&next));
        if let Some((actor, action, reason)) = event {
            let _ = self.changes.send(RoutingEvent {
                generation: next.generation(),
                actor,
                action,
                reason: Some(reason),
            });
        }
        next
    }

    /// Stores the current table as it is (e.g. the first state of a fresh
    /// store) under the next generation.
    pub async fn persist_current(&self, actor: &Actor, action: RoutingAction) -> Result<Arc<RoutingTable>, TableError> {
        self.update(actor, action, |current| Ok((current.specs(), current.policy().clone())))
            .await
    }

    /// Applies `change` to the current table as one routing change by
    /// `actor`: built, stored, then served — or refused whole. Private:
    /// callers change routing through the methods above, each with its
    /// rule (`crate::change`).
    async fn update(
        &self,
        actor: &Actor,
        action: RoutingAction,
        change: impl FnOnce(&RoutingTable) -> Result<(Vec<PoolSpec>, RoutingPolicy), TableError>,
    ) -> Result<Arc<RoutingTable>, TableError> {
        self.update_because(actor, action, None, change).await
    }

    /// [`Self::update`] with the reason for the change recorded.
    async fn update_because(
        &self,
        actor: &Actor,
        action: RoutingAction,
        reason: Option<&str>,
        change: impl FnOnce(&RoutingTable) -> Result<(Vec<PoolSpec>, RoutingPolicy), TableError>,
    ) -> Result<Arc<RoutingTable>, TableError> {
        let _writer = self.writer.lock().await;
        let current = self.current.load_full();
        let (specs, policy) = change(&current)?;
        let next = Arc::new(RoutingTable::build(
            current.generation() + 1,
            &specs,
            policy,
            Some(&current),
        )?);
        if let Some(store) = &self.store {
            store
                .persist(Change {
                    actor,
                    action,
                    before: &current,
                    after: &next,
                    reason,
                })
                .await
                .map_err(|e| match e {
                    PersistError::Conflict(m) => TableError::Conflict(m),
                    PersistError::Failed(m) => TableError::Persist(m),
                })?;
        }
        self.current.store(Arc::clone(&next));
        // No listener is fine.
        let _ = self.changes.send(RoutingEvent {
            generation: next.generation(),
            actor: actor.clone(),
            action,
            reason: reason.map(Into::into),
        });
        Ok(next)
    }

    /// Serves `specs` as generation `generation` without storing them: a
    /// change another replica already stored. Older or equal generations
    /// are ignored (`None`).
    pub async fn adopt(
        &self,
        generation: u64,
        specs: &[PoolSpec],
        actor: &Actor,
    ) -> Result<Option<Arc<RoutingTable>>, TableError> {
        let _writer = self.writer.lock().await;
        let current = self.current.load_full();
        if generation <= current.generation() {
            return Ok(None);
        }
        let next = Arc::new(RoutingTable::build(
            generation,
            specs,
            current.policy().clone(),
            Some(&current),
        )?);
        self.current.store(Arc::clone(&next));
        let _ = self.changes.send(RoutingEvent {
            generation,
            actor: actor.clone(),
            action: RoutingAction::RoutingSync,
            reason: None,
        });
        Ok(Some(next))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::change::{Actor, PoolChange, WeightChange};
    use sluice_config::UpstreamProtocol;
    use std::sync::Mutex as StdMutex;

    fn specs() -> Vec<PoolSpec> {
        let spec = |name: &str, weight, port| PoolSpec {
            name: name.into(),
            version: "v1".into(),
            weight,
            protocol: UpstreamProtocol::Http1,
            backends: vec![format!("127.0.0.1:{port}")],
            tls: None,
            matches: Vec::new(),
        };
        vec![
            spec("blue", sluice_config::Weight::percent(100).unwrap(), 1),
            spec("green", sluice_config::Weight::percent(0).unwrap(), 2),
        ]
    }

    fn weights(pairs: &[(&str, u32)]) -> HashMap<String, Weight> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), Weight::percent(*v).unwrap()))
            .collect()
    }

    /// Records what it is asked to persist; fails while `fail` is set.
    #[derive(Default)]
    struct FakeStore {
        seen: StdMutex<Vec<(String, String, u64, u64)>>,
        fail: StdMutex<bool>,
    }

    impl RoutingStore for FakeStore {
        fn persist<'a>(&'a self, c: Change<'a>) -> Pin<Box<dyn Future<Output = Result<(), PersistError>> + Send + 'a>> {
            let result = if *self.fail.lock().unwrap() {
                Err(PersistError::Failed("disk full".to_owned()))
            } else {
                self.seen.lock().unwrap().push((
                    c.actor.as_str().to_owned(),
                    c.action.as_str().to_owned(),
                    c.before.generation(),
                    c.after.generation(),
                ));
                Ok(())
            };
            Box::pin(async move { result })
        }
    }

    #[tokio::test]
    async fn weight_change_bumps_generation_and_keeps_backends() {
        let h = RoutingHandle::new(&specs(), RoutingPolicy::default()).unwrap();
        let before = h.snapshot();
        let after = h
            .change_weights(WeightChange::set(
                &weights(&[("blue", 20), ("green", 80)]),
                Actor::operator("t"),
            ))
            .await
            .unwrap();
        assert_eq!(after.generation(), before.generation() + 1);
        assert_eq!(after.pool("green").unwrap().weight, 80);
        // Same backend objects: in-flight counts and pools carry over.
        assert!(Arc::ptr_eq(
            &before.pools()[0].backends[0],
            &after.pools()[0].backends[0]
        ));
    }

    #[tokio::test]
    async fn rejected_changes_leave_the_table_alone() {
        let h = RoutingHandle::new(&specs(), RoutingPolicy::default()).unwrap();
        let cases = [
            (weights(&[("blue", 50), ("green", 40)]), TableError::WeightSum(9_000)),
            (
                weights(&[("blue", 50), ("green", 40), ("red", 10)]),
                TableError::UnknownPool("red".into()),
            ),
            (weights(&[("blue", 100)]), TableError::MissingPool("green".into())),
        ];
        for (w, expected) in cases {
            assert_eq!(
                h.change_weights(WeightChange::set(&w, Actor::operator("t")))
                    .await
                    .unwrap_err(),
                expected
            );
            assert_eq!(h.snapshot().generation(), 1);
        }
        h.change_pool(
            "green",
            &PoolChange::Update {
                version: None,
                backends: Some(vec![]),
                matches: None,
                force: true,
            },
            &Actor::operator("t"),
        )
        .await
        .unwrap();
        assert_eq!(
            h.change_weights(WeightChange::set(
                &weights(&[("blue", 0), ("green", 100)]),
                Actor::operator("t")
            ))
            .await
            .unwrap_err(),
            TableError::NoBackends("green".into())
        );
        // Forced, the weight is taken (and the pool answers 503 until it has backends).
        let forced = h
            .change_weights(WeightChange::set(&weights(&[("blue", 50), ("green", 50)]), Actor::operator("t")).forced())
            .await
            .unwrap();
        assert_eq!(forced.pool("green").unwrap().weight, 50);
        assert_eq!(h.snapshot().pool("blue").unwrap().weight, 50);
    }

    #[tokio::test]
    async fn changes_are_persisted_before_they_are_served() {
        let store = Arc::new(FakeStore::default());
        let h = RoutingHandle::restore(7, &specs(), RoutingPolicy::default(), Some(store.clone())).unwrap();
        h.change_weights(WeightChange::set(
            &weights(&[("blue", 90), ("green", 10)]),
            Actor::operator("ci"),
        ))
        .await
        .unwrap();
        assert_eq!(
            store.seen.lock().unwrap().as_slice(),
            [("ci".to_owned(), "weights.set".to_owned(), 7, 8)]
        );

        *store.fail.lock().unwrap() = true;
        let err = h
            .change_weights(WeightChange::set(
                &weights(&[("blue", 0), ("green", 100)]),
                Actor::operator("ci"),
            ))
            .await
            .unwrap_err();
        assert_eq!(err, TableError::Persist("disk full".into()));
        let served = h.snapshot();
        assert_eq!(served.generation(), 8, "a change the store refused was served");
        assert_eq!(served.pool("green").unwrap().weight, 10);
    }

    #[tokio::test]
    async fn concurrent_writers_never_lose_an_update() {
        let h = Arc::new(RoutingHandle::new(&specs(), RoutingPolicy::default()).unwrap());
        let mut tasks = Vec::new();
        for t in 0..2u32 {
            let h = h.clone();
            tasks.push(tokio::spawn(async move {
                let mut generations = Vec::new();
                for i in 0..50u32 {
                    let green = (t * 50 + i) % 101;
                    let table = h
                        .change_weights(WeightChange::set(
                            &weights(&[("blue", 100 - green), ("green", green)]),
                            Actor::operator("t"),
                        ))
                        .await
                        .unwrap();
                    generations.push(table.generation());
                }
                generations
            }));
        }
        for t in tasks {
            let gens = t.await.unwrap();
            assert!(
                gens.windows(2).all(|w| w[0] < w[1]),
                "generations went backwards: {gens:?}"
            );
        }
        assert_eq!(h.snapshot().generation(), 101);
    }
}
