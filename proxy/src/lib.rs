//! sluice's data plane.
//!
//! A request flows listener ([`server`]) → [`forward::Proxy::handle`] →
//! one load of the [`RoutingTable`] → pool choice (weights or sticky hash)
//! and backend choice (power of two choices) in [`select`] → header rewrite
//! ([`headers`]) → a pooled upstream client ([`upstream`]) → the response
//! streamed back ([`body`]). The table is changed only through
//! [`RoutingHandle`], which swaps whole snapshots atomically.

// The data plane reads bytes from clients and backends: no construct in
// it may panic on them (docs/security.md, "Panic-free protocol code").
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

pub mod body;
mod date;
mod deadline;
pub mod error;
pub mod forward;
pub mod grpc;
mod h1head;
pub mod h1raw;
pub mod h1server;
pub mod h2;
pub mod handle;
pub mod headers;
pub mod outlier;
pub mod select;
pub mod server;
pub mod stats;
pub mod table;
pub mod tls;
pub mod upstream;
pub mod upstream_tls;
pub mod window;

use std::sync::Arc;

pub use error::{ProxyError, TableError};
pub use forward::Proxy;
pub use handle::{Change, Fence, PersistError, RoutingEvent, RoutingHandle, RoutingStore};
pub use server::{ListenerOptions, serve, serve_moving, serve_with};
pub use table::{ForwardSettings, PoolSpec, RoutingPolicy, RoutingTable};
pub use upstream::Upstreams;

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
            engine: config.proxy.engine,
        },
        sticky: config.sticky.clone(),
        allow_pool_override: config.proxy.allow_pool_override,
        probe_new_backends: false,
    };
    Ok((specs, policy))
}

/// Builds the routing handle (without a store) and proxy service a config
/// describes.
pub fn build(config: &Config) -> Result<(Arc<RoutingHandle>, Arc<Proxy>), TableError> {
    let (specs, policy) = routing_from_config(config)?;
    let routing = Arc::new(RoutingHandle::new(&specs, policy)?);
    Ok((Arc::clone(&routing), Arc::new(proxy_for(config, routing))))
}

/// The proxy service for `config`, routing through `routing`.
pub fn proxy_for(config: &Config, routing: Arc<RoutingHandle>) -> Proxy {
    Proxy::new(routing, Upstreams::new(&config.proxy.timeouts))
}
