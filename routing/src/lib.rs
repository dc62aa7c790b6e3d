//! sluice's routing model, apart from the wire.
//!
//! One immutable [`RoutingTable`] snapshot holds every pool, its weight and
//! its routable backends; [`RoutingHandle`] builds a whole new snapshot for
//! each change and publishes it with one atomic store, so a request loads
//! it once and takes no lock. [`select`] picks a pool (weights, sticky hash,
//! override) and a backend (power of two choices); [`stats`] and [`window`]
//! count what each pool's traffic did, for metrics, the guard and rollouts.
//! Backends carry an id ([`table::BackendId`]) by which the data plane
//! keeps their connections: nothing here opens a socket.

#![deny(
    clippy::indexing_slicing,
    clippy::panic,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::unreachable,
    clippy::todo,
    clippy::unimplemented,
    clippy::panic_in_result_fn
)]

pub mod change;
pub mod discovered;
pub mod error;
pub mod grpc;
pub mod handle;
pub mod mirror;
pub mod outlier;
pub mod ratelimit;
pub mod retry;
pub mod routes;
pub mod select;
pub mod stats;
pub mod table;
pub mod tap;
pub mod totals;
pub mod window;

pub use change::{Actor, PoolChange, RoutingAction, WeightChange};
pub use error::{ProxyError, TableError};
pub use handle::{Change, Fence, PersistError, RoutingEvent, RoutingHandle, RoutingStore};
pub use table::{Backend, BackendId, ForwardSettings, Pool, PoolSpec, RoutingPolicy, RoutingTable};

use sluice_config::Config;

/// The routing specs and policy a config describes.
pub fn routing_from_config(config: &Config) -> Result<(Vec<PoolSpec>, RoutingPolicy), TableError> {
    let specs = config
        .pools
        .iter()
        .map(PoolSpec::from_config)
        .collect::<Result<_, _>>()?;
    let policy = RoutingPolicy {
        forward: ForwardSettings {
            upstream_response_timeout: config.proxy.timeouts.upstream_response,
            max_grpc_timeout: config.proxy.timeouts.max_grpc_timeout,
            max_request_body_bytes: config.proxy.limits.max_request_body_bytes,
            max_in_flight_per_backend: config.proxy.limits.max_in_flight_per_backend,
            max_pending_per_backend: config.proxy.limits.max_pending_per_backend,
            engine: config.proxy.engine,
        },
        sticky: config.sticky.clone(),
        allow_pool_override: config.proxy.allow_pool_override,
        probe_new_backends: false,
        slow_start: config
            .pools
            .iter()
            .filter(|p| !p.health.slow_start.is_zero())
            .map(|p| (p.name.clone(), p.health.slow_start))
            .collect(),
        retry: config
            .pools
            .iter()
            .filter_map(|p| Some((p.name.clone(), retry::RetryPolicy::from_config(&p.retry)?)))
            .collect(),
        mirrors: config.mirrors.iter().map(mirror::MirrorRule::from_config).collect(),
        rollout_mirror: None,
        resolved: Default::default(),
        routes: config
            .analysis_routes
            .iter()
            .map(|r| routes::RouteRule {
                name: r.name.as_str().into(),
                prefix: r.prefix.clone(),
            })
            .collect(),
    };
    Ok((specs, policy))
}
