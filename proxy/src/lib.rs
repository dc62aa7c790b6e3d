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

pub mod access;
pub mod body;
pub mod client;
mod date;
mod deadline;
pub mod forward;
pub mod grpc;
pub mod h2;
pub mod h2client;
pub mod headers;
pub mod http1;
mod ids;
pub mod limits;
mod noted;
pub mod options;
mod replay;
pub mod request_body;
pub mod request_id;
pub mod respond;
pub mod rewrite;
pub mod server;
pub mod shadow;
mod spare_maps;
#[cfg(test)]
mod test_peers;
pub mod trace;
pub mod tunnel;
pub mod upstream;

use std::sync::Arc;

pub use access::AccessLog;
pub use forward::Proxy;
pub use options::ListenerOptions;
pub use respond::{ERROR_HEADER, ErrorResponse};
pub use server::{serve, serve_moving, serve_with};
pub use trace::Tracing;
pub use upstream::Upstreams;

use sluice_config::Config;
use sluice_routing::{RoutingHandle, TableError, routing_from_config};

/// Builds the routing handle (without a store) and proxy service a config
/// describes.
pub fn build(config: &Config) -> Result<(Arc<RoutingHandle>, Arc<Proxy>), TableError> {
    let (specs, policy) = routing_from_config(config)?;
    let routing = Arc::new(RoutingHandle::new(&specs, policy)?);
    Ok((Arc::clone(&routing), Arc::new(proxy_for(config, routing))))
}

/// The proxy service for `config`, routing through `routing`, with its
/// access log started when `[access_log]` turns it on and its span
/// exporter when `[tracing]` names a collector.
pub fn proxy_for(config: &Config, routing: Arc<RoutingHandle>) -> Proxy {
    let ids = config.proxy.request_id_header.as_deref();
    let proxy = Proxy::new(routing, Upstreams::new(&config.proxy.timeouts))
        .with_request_ids(ids.and_then(|name| http::HeaderName::from_bytes(name.as_bytes()).ok()));
    proxy.access_log().configure(&config.access_log);
    proxy.tracing().configure(&config.tracing);
    proxy.limits().configure(&config.rate_limits);
    proxy
}
