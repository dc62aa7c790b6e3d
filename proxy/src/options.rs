//! What a listener serves each client connection with: the header limits,
//! timeouts and connection cap from the config, shared by both of sluice's
//! own servers (`h1server`, `h2`) and hyper's.

use std::time::Duration;

use sluice_config::ProxyConfig;

/// Time between requests after which a client connection frees its
/// buffers (both servers: `h1server` and `h2`), when the idle limit is
/// longer: a keep-alive connection that went quiet holds its task and
/// socket, not buffers it may never use again.
pub const IDLE_RELEASE_AFTER: Duration = Duration::from_secs(1);

/// Connection-level settings of a listener.
#[derive(Debug, Clone, Copy)]
pub struct ListenerOptions {
    pub header_read_timeout: Duration,
    pub max_header_bytes: usize,
    pub max_headers: usize,
    pub drain_timeout: Duration,
    /// Open connections past which new ones are closed at once.
    pub max_connections: usize,
}

impl From<&ProxyConfig> for ListenerOptions {
    fn from(c: &ProxyConfig) -> Self {
        Self {
            header_read_timeout: c.timeouts.request_header,
            max_header_bytes: c.limits.max_header_bytes,
            max_headers: c.limits.max_headers,
            drain_timeout: c.drain_timeout,
            max_connections: c.limits.max_connections,
        }
    }
}

/// A request for this path panics inside its connection's task
/// (`server::tests`); not compiled into the product.
#[cfg(test)]
pub(crate) const PANIC_PATH: &str = "/__sluice_test_panic";
