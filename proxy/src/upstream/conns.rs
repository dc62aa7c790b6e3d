//! Every backend's connections, kept under the backend's id
//! ([`BackendId`]) rather than inside the routing model: a lock-free table
//! of slots that grows in doubling buckets, one slot per id, filled on a
//! backend's first request and emptied by [`Connections::sweep`] once the
//! backend has left the routing table.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use arc_swap::{ArcSwap, ArcSwapOption};
use crossbeam_queue::ArrayQueue;
use hyper::client::conn::http1;
use sluice_routing::BackendId;
use sluice_routing::table::clock_ms;
use tokio::time::Instant;

use crate::http1::RawIdle;
use crate::request_body::RequestBody;

/// Idle HTTP/1.1 connections kept per backend; more are closed when freed.
const MAX_IDLE_PER_BACKEND: usize = 512;

pub(super) struct IdleConn {
    pub(super) sender: http1::SendRequest<RequestBody>,
    pub(super) since: Instant,
}

/// One backend's connections.
pub struct BackendConns {
    pub(super) idle: ArrayQueue<IdleConn>,
    /// Idle connections of sluice's own exchange ([`crate::http1`]).
    pub(super) raw: Arc<RawIdle>,
    /// HTTP/2 connections, the first one shared by every call; more only
    /// while long streams occupy those before ([`super::h2`]).
    pub(super) h2: ArcSwap<Vec<Arc<super::shared_h2::SharedH2>>>,
    /// Held while an HTTP/2 connection is dialled, so a burst of requests
    /// meeting no connection opens one, not one each (taken only then).
    pub(super) h2_dialing: tokio::sync::Mutex<()>,
    /// Until when (`clock_ms`) no spare HTTP/2 connection is dialled: the
    /// last dial failed.
    h2_redial_at: AtomicU64,
}

impl std::fmt::Debug for BackendConns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackendConns").field("idle", &self.idle()).finish()
    }
}

impl Default for BackendConns {
    fn default() -> Self {
        Self {
            idle: ArrayQueue::new(MAX_IDLE_PER_BACKEND),
            raw: Arc::new(RawIdle::new(MAX_IDLE_PER_BACKEND)),
            h2: ArcSwap::from_pointee(Vec::new()),
            h2_dialing: tokio::sync::Mutex::new(()),
            h2_redial_at: AtomicU64::new(0),
        }
    }
}

impl BackendConns {
    /// Idle HTTP/1.1 connections right now.
    pub fn idle(&self) -> usize {
        self.idle.len() + self.raw.len()
    }

    /// Whether a spare HTTP/2 connection failed to be dialled just now.
    pub(super) fn h2_redial_paused(&self) -> bool {
        clock_ms() < self.h2_redial_at.load(Ordering::Relaxed)
    }

    /// No spare HTTP/2 connection is dialled for `pause`.
    pub(super) fn h2_redial_after(&self, pause: Duration) {
        let ms = u64::try_from(pause.as_millis()).unwrap_or(u64::MAX);
        self.h2_redial_at
            .store(clock_ms().saturating_add(ms), Ordering::Relaxed);
    }

    /// Lets go of the HTTP/2 connections that can take no new stream, and
    /// of spares: of the connections without a bulk stream, all but one,
    /// once they have had none at this sweep and the last. The one kept
    /// takes the calls while long streams occupy the others (however long
    /// they last: no dialling anew every few seconds). A connection let go
    /// takes no new call and closes once its streams are done.
    fn trim_h2(&self) {
        let set = self.h2.load();
        let mut kept = Vec::with_capacity(set.len());
        let mut free_kept = false;
        for c in set.iter() {
            if c.is_closed() {
                continue;
            }
            let spare = c.bulk_free_twice() && free_kept;
            free_kept |= c.bulk_streams() == 0;
            if !spare {
                kept.push(Arc::clone(c));
            }
        }
        if kept.len() != set.len() {
            // Unless a dial or a GOAWAY changed the set meanwhile.
            self.h2.compare_and_swap(&set, Arc::new(kept));
        }
    }

    pub(super) fn put(&self, sender: http1::SendRequest<RequestBody>) {
        if !sender.is_closed() {
            // A full queue drops the sender, which closes that connection.
            let _ = self.idle.push(IdleConn {
                sender,
                since: Instant::now(),
            });
        }
    }
}

/// The first bucket's size (a power of two); each next one is twice the
/// last, so 40 buckets hold more ids than a process makes.
const FIRST: u64 = 32;
const FIRST_BITS: u32 = FIRST.trailing_zeros();
const BUCKETS: usize = 40;

type Bucket = Box<[ArcSwapOption<BackendConns>]>;

/// Connection pools by backend id.
pub struct Connections {
    buckets: [OnceLock<Bucket>; BUCKETS],
    /// The ids with a pool, for the sweep; written only when a pool is
    /// made or dropped, never on a request that finds its pool.
    filled: Mutex<BTreeSet<BackendId>>,
}

impl std::fmt::Debug for Connections {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connections").finish_non_exhaustive()
    }
}

impl Default for Connections {
    fn default() -> Self {
        Self {
            buckets: std::array::from_fn(|_| OnceLock::new()),
            filled: Mutex::new(BTreeSet::new()),
        }
    }
}

impl Connections {
    fn slot(&self, id: BackendId) -> Option<&ArcSwapOption<BackendConns>> {
        let n = id.get().checked_add(FIRST)?;
        let bucket = (63 - n.leading_zeros()).checked_sub(FIRST_BITS)?;
        let size = FIRST.checked_shl(bucket)?;
        let offset = usize::try_from(n - size).ok()?;
        let slots = self
            .buckets
            .get(usize::try_from(bucket).ok()?)?
            .get_or_init(|| (0..size).map(|_| ArcSwapOption::empty()).collect());
        slots.get(offset)
    }

    /// The connections of backend `id`, made on its first request.
    pub fn of(&self, id: BackendId) -> Arc<BackendConns> {
        let Some(slot) = self.slot(id) else {
            // Past every bucket (2^45 backends made): unpooled.
            return Arc::new(BackendConns::default());
        };
        if let Some(pool) = slot.load_full() {
            return pool;
        }
        let made = Arc::new(BackendConns::default());
        let before = slot.compare_and_swap(&None::<Arc<BackendConns>>, Some(Arc::clone(&made)));
        match &*before {
            // Another request made it first.
            Some(pool) => Arc::clone(pool),
            None => {
                if let Ok(mut filled) = self.filled.lock() {
                    filled.insert(id);
                }
                made
            }
        }
    }

    /// The idle queue of backend `id`'s own-exchange connections. The
    /// request path's lookup: one slot load and one reference count, as
    /// when the queue lived in the backend itself.
    pub fn raw_idle(&self, id: BackendId) -> Arc<RawIdle> {
        if let Some(slot) = self.slot(id)
            && let Some(pool) = &*slot.load()
        {
            return Arc::clone(&pool.raw);
        }
        Arc::clone(&self.of(id).raw)
    }

    /// Closes the stale idle connections of the backends in `live` (see
    /// [`RawIdle::close_stale`]) and drops the pools, and with them the
    /// connections, of backends no longer in it. The caller runs it every
    /// few seconds with the backends of the table it serves.
    pub fn sweep(&self, live: &BTreeSet<BackendId>, idle_timeout: Duration) {
        let filled: Vec<BackendId> = match self.filled.lock() {
            Ok(mut filled) => {
                let gone: Vec<BackendId> = filled.difference(live).copied().collect();
                for id in &gone {
                    filled.remove(id);
                }
                for id in gone {
                    if let Some(slot) = self.slot(id) {
                        slot.store(None);
                    }
                }
                filled.iter().copied().collect()
            }
            Err(_) => return,
        };
        for id in filled {
            if let Some(pool) = self.slot(id).and_then(ArcSwapOption::load_full) {
                pool.raw.close_stale(idle_timeout);
                pool.trim_h2();
            }
        }
    }
}

/// A connection on loan to one exchange. When the response body has been
/// read to its end, [`Lease::release`] hands the connection back for reuse;
/// dropped without that, the connection closes with it, since its state is
/// unknown.
#[derive(Debug)]
pub struct Lease {
    pool: Arc<BackendConns>,
    sender: Option<http1::SendRequest<RequestBody>>,
}

impl Lease {
    pub(super) fn new(pool: Arc<BackendConns>, sender: Option<http1::SendRequest<RequestBody>>) -> Self {
        Self { pool, sender }
    }

    pub fn release(&mut self) {
        if let Some(sender) = self.sender.take() {
            repool(&self.pool, sender);
        }
    }

    /// The connection becomes something else (a 101 upgrade): never reuse it.
    pub fn forget(&mut self) {
        self.sender = None;
    }
}

/// Returns a connection to its backend's idle queue as soon as hyper is done
/// with its previous exchange: at once when it is (the usual case), else
/// from a small task, so that a request never waits on a connection that is,
/// say, still streaming an earlier upload the backend answered early.
pub(super) fn repool(pool: &Arc<BackendConns>, mut sender: http1::SendRequest<RequestBody>) {
    if sender.is_ready() {
        pool.put(sender);
    } else if !sender.is_closed()
        && let Ok(runtime) = tokio::runtime::Handle::try_current()
    {
        let pool = Arc::clone(pool);
        runtime.spawn(async move {
            if sender.ready().await.is_ok() {
                pool.put(sender);
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_find_their_own_slot_across_buckets() {
        let conns = Connections::default();
        let ids: Vec<u64> = vec![0, 1, 31, 32, 95, 96, 1000, 100_000];
        for &i in &ids {
            let p = conns.slot(BackendId::from_raw(i)).map(|s| s as *const _);
            assert!(p.is_some(), "{i}");
            for &j in &ids {
                if j != i {
                    let q = conns.slot(BackendId::from_raw(j)).map(|s| s as *const _);
                    assert_ne!(p, q, "{i} and {j} share a slot");
                }
            }
        }
    }

    #[test]
    fn a_backend_gone_from_the_table_loses_its_pool() {
        let conns = Connections::default();
        let (a, b) = (BackendId::from_raw(3), BackendId::from_raw(70));
        let pa = conns.of(a);
        assert!(Arc::ptr_eq(&pa, &conns.of(a)), "one pool per backend");
        let pb = conns.of(b);
        conns.sweep(&BTreeSet::from([a]), Duration::from_secs(1));
        assert!(Arc::ptr_eq(&pa, &conns.of(a)), "a live backend keeps its pool");
        assert_eq!(conns.filled.lock().map(|f| f.len()).unwrap_or(0), 1);
        assert!(
            conns.slot(b).is_some_and(|s| s.load().is_none()),
            "the gone backend's slot was emptied"
        );
        assert!(!Arc::ptr_eq(&pb, &conns.of(b)), "it would start over with a new pool");
    }
}
