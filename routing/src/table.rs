//! The routing table: one immutable snapshot of every pool, its weight and
//! its routable backends, plus the routing policy (stickiness, override).
//!
//! A request loads the snapshot once and uses nothing else; a change builds
//! a complete new snapshot and publishes it in one store (see
//! [`crate::RoutingHandle`]). Backends are `Arc`s carried from one snapshot
//! to the next, so their in-flight counters survive a swap.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use http::uri::Authority;
use sluice_config::{Sticky, UpstreamProtocol, WEIGHT_TOTAL, Weight};

use sluice_transport::UpstreamTls;

use crate::error::TableError;
use crate::stats::{BackendErrors, PoolStats};

/// Resolution of the cumulative weight ranges: a weight of 1% is 100 slots.
pub const SLOTS: u32 = 10_000;

/// Names one backend for as long as the process runs: the data plane
/// keeps the backend's connections under it (`sluice_proxy::upstream`).
/// Never reused, so a removed backend's connections are never handed to a
/// new one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BackendId(u64);

impl BackendId {
    fn next() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        Self(NEXT.fetch_add(1, Ordering::Relaxed))
    }

    pub fn get(self) -> u64 {
        self.0
    }

    /// An id made up by a test (real ones come from [`Backend::new`]).
    #[doc(hidden)]
    pub fn from_raw(n: u64) -> Self {
        Self(n)
    }
}

/// One upstream server. Shared between snapshots; its counters are atomics.
#[derive(Debug)]
pub struct Backend {
    id: BackendId,
    addr: Box<str>,
    authority: Authority,
    in_flight: AtomicU64,
    /// Requests waiting for a new connection (connecting).
    pending: AtomicU32,
    /// Requests refused at this backend's caps: in flight, then pending.
    shed: [AtomicU64; 2],
    requests: AtomicU64,
    errors: BackendErrors,
    /// The health checker's verdict; read when snapshots are built, never
    /// per request.
    healthy: AtomicBool,
    /// Ejected by passive outlier detection (see `sluice_control::outlier`).
    ejected: AtomicBool,
    /// Upstream failures in a row, reset by any success.
    consecutive_failures: AtomicU32,
    /// When it last became routable again, in milliseconds on [`clock_ms`]
    /// (0: routable from the start, or its ramp is over).
    returned_at: AtomicU64,
    /// The DNS name it was found under, when discovered (not written).
    host: Option<Arc<str>>,
    /// Its share among the pool's backends (an SRV weight; 1 otherwise).
    weight: AtomicU32,
}

impl Backend {
    pub fn new(addr: &str) -> Result<Self, TableError> {
        Self::with_health(addr, true)
    }

    /// A backend that starts healthy or, when it must pass a probe before
    /// it gets traffic, not.
    pub fn with_health(addr: &str, healthy: bool) -> Result<Self, TableError> {
        let authority = addr
            .parse::<Authority>()
            .ok()
            .filter(|a| a.port_u16().is_some())
            .ok_or_else(|| TableError::BadBackend(addr.to_owned()))?;
        Ok(Self {
            id: BackendId::next(),
            addr: addr.into(),
            authority,
            in_flight: AtomicU64::new(0),
            pending: AtomicU32::new(0),
            shed: [AtomicU64::new(0), AtomicU64::new(0)],
            requests: AtomicU64::new(0),
            errors: BackendErrors::default(),
            healthy: AtomicBool::new(healthy),
            ejected: AtomicBool::new(false),
            consecutive_failures: AtomicU32::new(0),
            returned_at: AtomicU64::new(0),
            host: None,
            weight: AtomicU32::new(1),
        })
    }

    /// Its share among the pool's backends (1 unless an SRV record says).
    pub fn weight(&self) -> u32 {
        self.weight.load(Ordering::Relaxed)
    }

    /// The DNS name this backend was found under, when it was discovered.
    pub fn discovered_as(&self) -> Option<&str> {
        self.host.as_deref()
    }

    /// The name TLS checks by default: the DNS name it was found under,
    /// else its address as written.
    pub fn tls_name(&self) -> &str {
        self.host.as_deref().unwrap_or(&self.addr)
    }

    /// Whether requests may be sent here (healthy and not ejected).
    pub fn is_routable(&self) -> bool {
        self.is_healthy() && !self.is_ejected()
    }

    pub fn is_ejected(&self) -> bool {
        self.ejected.load(Ordering::Acquire)
    }

    /// Sets the ejection flag; takes effect with the next snapshot. Back
    /// from an ejection, it ramps up again where the pool has `slow_start`.
    pub fn set_ejected(&self, ejected: bool) {
        if self.ejected.swap(ejected, Ordering::AcqRel) && !ejected {
            self.returned(clock_ms());
        }
    }

    /// Marks it as routable again from `at` (ms on [`clock_ms`]).
    pub fn returned(&self, at: u64) {
        self.returned_at.store(at.max(1), Ordering::Relaxed);
    }

    /// Whether it returned and may still be ramping up.
    pub fn ramping(&self) -> bool {
        self.returned_at.load(Ordering::Relaxed) != 0
    }

    /// Its share of traffic under a `window` ramp at `now` (ms): from 0.1
    /// when it returned to 1 at the window's end; 1 when not ramping.
    pub fn ramp(&self, window: Duration, now: u64) -> f64 {
        let at = self.returned_at.load(Ordering::Relaxed);
        if at == 0 {
            return 1.0;
        }
        let window_ms = window.as_millis().max(1) as f64;
        let f = now.saturating_sub(at) as f64 / window_ms;
        if f >= 1.0 {
            // Over: later requests skip the clock.
            self.returned_at.store(0, Ordering::Relaxed);
            return 1.0;
        }
        0.1 + 0.9 * f
    }

    /// Counts one exchange for outlier detection; returns the number of
    /// failures in a row (0 after a success).
    #[inline]
    pub fn record_exchange(&self, failed: bool) -> u32 {
        if failed {
            self.consecutive_failures.fetch_add(1, Ordering::Relaxed) + 1
        } else {
            // Avoid a write (and cache-line traffic) when already zero.
            if self.consecutive_failures.load(Ordering::Relaxed) != 0 {
                self.consecutive_failures.store(0, Ordering::Relaxed);
            }
            0
        }
    }

    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Acquire)
    }

    /// Sets the health verdict; takes effect with the next snapshot
    /// ([`crate::RoutingHandle::refresh_health`]). Returns the previous one.
    /// Healthy again, it ramps up where the pool has `slow_start`.
    pub fn set_healthy(&self, healthy: bool) -> bool {
        let was = self.healthy.swap(healthy, Ordering::AcqRel);
        if healthy && !was {
            self.returned(clock_ms());
        }
        was
    }

    pub fn addr(&self) -> &str {
        &self.addr
    }

    pub fn authority(&self) -> &Authority {
        &self.authority
    }

    /// Upstream failures of this backend, by kind.
    pub fn errors(&self) -> &BackendErrors {
        &self.errors
    }

    pub fn id(&self) -> BackendId {
        self.id
    }

    /// Requests currently being served (response body not yet finished).
    pub fn in_flight(&self) -> u64 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Requests waiting for a new connection to this backend.
    pub fn pending(&self) -> u32 {
        self.pending.load(Ordering::Relaxed)
    }

    /// Counts a request as waiting for a new connection while the guard
    /// lives.
    pub fn connecting(&self) -> Connecting<'_> {
        self.pending.fetch_add(1, Ordering::Relaxed);
        Connecting(self)
    }

    /// Counts a request refused at a cap ([`Cap`]).
    pub fn count_shed(&self, cap: Cap) {
        if let Some(n) = self.shed.get(cap as usize) {
            n.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Requests refused at a cap since the backend was added.
    pub fn shed(&self, cap: Cap) -> u64 {
        self.shed.get(cap as usize).map_or(0, |n| n.load(Ordering::Relaxed))
    }

    /// Requests sent to this backend since it was added.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }
}

/// Milliseconds since the process's first look at this clock (never 0
/// after the first millisecond; ramps count on it).
pub fn clock_ms() -> u64 {
    static EPOCH: std::sync::OnceLock<tokio::time::Instant> = std::sync::OnceLock::new();
    let epoch = EPOCH.get_or_init(tokio::time::Instant::now);
    u64::try_from(epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// A backend's per-request caps (`[proxy.limits]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cap {
    /// `max_in_flight_per_backend`: 503 `backend-overloaded`.
    InFlight = 0,
    /// `max_pending_per_backend`: 503 `upstream-overloaded`.
    Pending = 1,
}

impl Cap {
    pub const ALL: [Cap; 2] = [Cap::InFlight, Cap::Pending];

    pub fn label(self) -> &'static str {
        match self {
            Cap::InFlight => "in_flight",
            Cap::Pending => "pending",
        }
    }
}

/// A request waiting for a new connection to a backend, until dropped.
#[derive(Debug)]
pub struct Connecting<'a>(&'a Backend);

impl Drop for Connecting<'_> {
    fn drop(&mut self) {
        self.0.pending.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Counts a request against its backend until dropped (when the response
/// body ends or the request fails), which is what power-of-two-choices reads.
#[derive(Debug)]
pub struct InFlight(Arc<Backend>);

impl InFlight {
    pub fn start(backend: &Arc<Backend>) -> Self {
        backend.in_flight.fetch_add(1, Ordering::Relaxed);
        backend.requests.fetch_add(1, Ordering::Relaxed);
        Self(Arc::clone(backend))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A pool as published in one snapshot.
#[derive(Debug, Clone)]
pub struct Pool {
    pub name: Arc<str>,
    pub version: Arc<str>,
    /// Share of traffic (0.01% steps).
    pub weight: Weight,
    pub protocol: UpstreamProtocol,
    /// TLS to the backends, when the pool has it.
    pub tls: Option<Arc<UpstreamTls>>,
    /// The pool's `backends` as written: addresses and names.
    pub entries: Vec<String>,
    /// Every backend: the addresses, and what the names resolved to.
    pub backends: Vec<Arc<Backend>>,
    /// The healthy, not ejected ones: what requests are sent to.
    pub routable: Vec<Arc<Backend>>,
    /// Some routable backend has a weight other than 1 (SRV records): the
    /// choice follows the weights.
    pub weighted: bool,
    /// Share of traffic actually served: the weight, or 0 while the pool has
    /// no healthy backend (its share then goes to the others).
    pub effective_weight: Weight,
    /// Traffic counters, kept across snapshots.
    pub stats: Arc<PoolStats>,
    /// A returning backend's ramp (zero: none).
    pub slow_start: Duration,
    /// Testers matched by header or cookie go here (see
    /// [`crate::select::choose_pool`]).
    pub matches: Vec<sluice_config::MatchRule>,
    /// Counts per route of the policy's `routes`, kept across snapshots
    /// while the routes stay the same.
    pub routes: Arc<crate::routes::RouteWindows>,
    /// Which failed tries go again on another backend (none: no retries).
    pub retry: Option<crate::retry::RetryPolicy>,
}

/// What a caller asks for; [`RoutingTable::build`] turns it into a snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolSpec {
    pub name: String,
    pub version: String,
    pub weight: Weight,
    pub protocol: UpstreamProtocol,
    pub backends: Vec<String>,
    /// Loaded from the pool's `[pools.NAME.tls]` (none: plain TCP).
    pub tls: Option<Arc<UpstreamTls>>,
    /// Testers sent here whatever the weights (`[[pools.NAME.match]]`, or
    /// `PUT /api/v1/pools/{pool}`): state, stored with the pool.
    pub matches: Vec<sluice_config::MatchRule>,
}

impl PoolSpec {
    /// The spec a config pool describes; reads its TLS files, if any.
    pub fn from_config(p: &sluice_config::PoolConfig) -> Result<Self, TableError> {
        let tls = p
            .tls
            .as_ref()
            .map(|t| UpstreamTls::load(t, p.protocol).map(Arc::new))
            .transpose()
            .map_err(|e| TableError::BackendTls(p.name.clone(), e.to_string()))?;
        Ok(Self {
            name: p.name.clone(),
            version: p.version.clone(),
            weight: p.weight,
            protocol: p.protocol,
            backends: p.backends.clone(),
            tls,
            matches: p.matches.clone(),
        })
    }
}

/// Request-path settings from the config, reloadable with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ForwardSettings {
    pub upstream_response_timeout: Duration,
    /// Caps a gRPC call's `grpc-timeout`.
    pub max_grpc_timeout: Duration,
    pub max_request_body_bytes: u64,
    /// 0: no limit.
    pub max_in_flight_per_backend: u32,
    /// 0: no limit.
    pub max_pending_per_backend: u32,
    /// Read once per accepted connection, and per request for the
    /// backend client.
    pub engine: sluice_config::Engine,
}

impl Default for ForwardSettings {
    fn default() -> Self {
        Self {
            upstream_response_timeout: Duration::from_secs(30),
            max_grpc_timeout: Duration::from_secs(3600),
            max_request_body_bytes: 10 * 1024 * 1024,
            max_in_flight_per_backend: 0,
            max_pending_per_backend: 0,
            engine: sluice_config::Engine::Sluice,
        }
    }
}

/// How pools are chosen and requests forwarded, apart from the weights.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoutingPolicy {
    pub forward: ForwardSettings,
    pub sticky: Option<Sticky>,
    /// Honour `x-sluice-pool`.
    pub allow_pool_override: bool,
    /// Backends added after start must pass a health probe before they get
    /// traffic (set when a health checker runs).
    pub probe_new_backends: bool,
    /// Pools whose returning backends ramp up (`slow_start`), by name.
    pub slow_start: std::collections::BTreeMap<String, std::time::Duration>,
    /// `[[mirror]]` rules, in the config's order.
    pub mirrors: Vec<crate::mirror::MirrorRule>,
    /// A running rollout's mirror step (kept across reloads; see
    /// [`crate::RoutingHandle::set_rollout_mirror`]).
    pub rollout_mirror: Option<crate::mirror::MirrorRule>,
    /// `[[analysis.routes]]`: path prefixes each pool counts apart.
    pub routes: Vec<crate::routes::RouteRule>,
    /// Pools that retry failed tries, by name.
    pub retry: std::collections::BTreeMap<String, crate::retry::RetryPolicy>,
    /// What the names among the pools' backends resolved to (this
    /// replica's discovery; kept across reloads).
    pub resolved: Arc<crate::discovered::ResolvedNames>,
}

/// One immutable, complete view of routing.
#[derive(Debug)]
pub struct RoutingTable {
    generation: u64,
    pools: Vec<Pool>,
    /// `upper[i]` is the exclusive end of pool `i`'s slot range in `[0, SLOTS)`.
    upper: Vec<u32>,
    policy: RoutingPolicy,
    /// Some pool has match rules (else choosing skips looking for them).
    has_matches: bool,
    /// Mirrors or routes are configured (else the request path skips them).
    has_request_policy: bool,
}

impl RoutingTable {
    /// Builds a snapshot, validating weights and backends. Backends already
    /// present in `previous` (same pool, same address) are reused.
    pub fn build(
        generation: u64,
        specs: &[PoolSpec],
        policy: RoutingPolicy,
        previous: Option<&RoutingTable>,
    ) -> Result<Self, TableError> {
        if specs.is_empty() {
            return Err(TableError::NoPools);
        }
        // Summed wide: weights come from API callers (found by fuzzing).
        let total = sluice_config::weight_total(specs.iter().map(|p| &p.weight));
        if total != u64::from(WEIGHT_TOTAL.hundredths()) {
            return Err(TableError::WeightSum(total));
        }
        let mut pools = Vec::with_capacity(specs.len());
        let same_routes = previous.is_some_and(|t| t.policy().routes == policy.routes);
        for spec in specs {
            if pools.iter().any(|p: &Pool| *p.name == *spec.name) {
                return Err(TableError::DuplicatePool(spec.name.clone()));
            }
            let old = previous.and_then(|t| t.pool(&spec.name));
            let mut backends: Vec<Arc<Backend>> = Vec::with_capacity(spec.backends.len());
            // Each entry: an address as written, or every address its name
            // resolved to (the same address found twice is one backend).
            let mut found: Vec<(&str, Option<&Arc<str>>, u32)> = Vec::with_capacity(spec.backends.len());
            for entry in &spec.backends {
                match crate::discovered::expand(entry, &policy.resolved) {
                    crate::discovered::Expanded::Literal(addr) => {
                        if found.iter().any(|(a, ..)| *a == addr) {
                            return Err(TableError::DuplicateBackend(spec.name.clone(), addr.to_owned()));
                        }
                        found.push((addr, None, 1));
                    }
                    crate::discovered::Expanded::Name(list) => {
                        for r in list {
                            if !found.iter().any(|(a, ..)| *a == r.addr) {
                                found.push((&r.addr, Some(&r.host), r.weight.max(1)));
                            }
                        }
                    }
                }
            }
            for (addr, host, weight) in found {
                let reused = old.and_then(|p| p.backends.iter().find(|b| b.addr() == addr));
                // At start every backend is presumed healthy until probed;
                // one added later waits for its first passing probe.
                let starts_healthy = previous.is_none() || !policy.probe_new_backends;
                backends.push(match reused {
                    Some(b) => {
                        // An SRV record's weight may change; the backend stays.
                        b.weight.store(weight, Ordering::Relaxed);
                        Arc::clone(b)
                    }
                    None => {
                        let mut added = Backend::with_health(addr, starts_healthy)?;
                        added.host = host.cloned();
                        added.weight = AtomicU32::new(weight);
                        // Added to a running pool and routable at once: it
                        // ramps up like a returning one (a probed one does
                        // when it passes).
                        if starts_healthy && old.is_some() {
                            added.returned(clock_ms());
                        }
                        Arc::new(added)
                    }
                });
            }
            let routable: Vec<Arc<Backend>> = backends.iter().filter(|b| b.is_routable()).cloned().collect();
            let weighted = routable.iter().any(|b| b.weight() != 1);
            let effective_weight = if routable.is_empty() { Weight::ZERO } else { spec.weight };
            pools.push(Pool {
                name: spec.name.as_str().into(),
                version: spec.version.as_str().into(),
                weight: spec.weight,
                protocol: spec.protocol,
                tls: spec.tls.clone(),
                entries: spec.backends.clone(),
                backends,
                routable,
                weighted,
                effective_weight,
                stats: old.map_or_else(Default::default, |p| Arc::clone(&p.stats)),
                slow_start: policy.slow_start.get(&spec.name).copied().unwrap_or_default(),
                matches: spec.matches.clone(),
                retry: policy.retry.get(&spec.name).copied(),
                routes: match old {
                    Some(p) if same_routes => Arc::clone(&p.routes),
                    _ => Arc::new(crate::routes::RouteWindows::new(policy.routes.len())),
                },
            });
        }
        // Slot ranges follow effective weights, scaled back to the whole
        // range: a pool without healthy backends hands its share to the
        // others in proportion to their weights.
        let effective_total: u32 = pools.iter().map(|p| p.effective_weight.hundredths()).sum();
        let mut upper = Vec::with_capacity(pools.len());
        let mut end: u64 = 0;
        for p in &pools {
            if effective_total > 0 {
                end += u64::from(p.effective_weight.hundredths()) * u64::from(SLOTS) / u64::from(effective_total);
            }
            upper.push(u32::try_from(end).unwrap_or(SLOTS));
        }
        // Rounding: the last pool with a share ends exactly at SLOTS.
        if let Some(last) = pools.iter().rposition(|p| !p.effective_weight.is_zero()) {
            upper
                .get_mut(last..)
                .unwrap_or_default()
                .iter_mut()
                .for_each(|u| *u = SLOTS);
        }
        let has_matches = pools.iter().any(|p| !p.matches.is_empty());
        Ok(Self {
            generation,
            pools,
            upper,
            has_request_policy: !policy.mirrors.is_empty()
                || policy.rollout_mirror.is_some()
                || !policy.routes.is_empty(),
            policy,
            has_matches,
        })
    }

    /// Monotonic number of this snapshot; every published change adds one.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    pub fn pools(&self) -> &[Pool] {
        &self.pools
    }

    /// Whether mirrors or routes are configured.
    #[inline]
    pub fn has_request_policy(&self) -> bool {
        self.has_request_policy
    }

    /// Whether any pool has match rules.
    #[inline]
    pub fn has_matches(&self) -> bool {
        self.has_matches
    }

    pub fn pool(&self, name: &str) -> Option<&Pool> {
        self.pools.iter().find(|p| &*p.name == name)
    }

    pub fn policy(&self) -> &RoutingPolicy {
        &self.policy
    }

    /// The pool whose slot range holds `slot` (`slot < SLOTS`). Pools with
    /// weight 0 have empty ranges and are never returned.
    pub fn pool_for_slot(&self, slot: u32) -> Option<&Pool> {
        // Few pools in practice: a linear scan beats a binary search here.
        let i = self.upper.iter().position(|&end| slot < end)?;
        self.pools.get(i)
    }

    /// The specs this snapshot was built from, for read-modify-write changes.
    pub fn specs(&self) -> Vec<PoolSpec> {
        self.pools
            .iter()
            .map(|p| PoolSpec {
                name: p.name.to_string(),
                version: p.version.to_string(),
                weight: p.weight,
                protocol: p.protocol,
                backends: p.entries.clone(),
                tls: p.tls.clone(),
                matches: p.matches.clone(),
            })
            .collect()
    }
}
