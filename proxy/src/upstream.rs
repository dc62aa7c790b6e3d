//! Pooled keep-alive clients towards the backends: one for HTTP/1.1 and one
//! for HTTP/2 with prior knowledge. Connections are reused across requests
//! and keyed by backend address; a request never opens its own connection
//! unless the pool has none idle.

use std::time::Duration;

use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use sluice_config::{Timeouts, UpstreamProtocol};

use crate::body::RequestBody;

pub type UpstreamClient = Client<HttpConnector, RequestBody>;

#[derive(Debug, Clone)]
pub struct Upstreams {
    http1: UpstreamClient,
    http2: UpstreamClient,
}

impl Upstreams {
    pub fn new(timeouts: &Timeouts) -> Self {
        Self {
            http1: client(timeouts, false),
            http2: client(timeouts, true),
        }
    }

    #[inline]
    pub fn for_protocol(&self, protocol: UpstreamProtocol) -> &UpstreamClient {
        match protocol {
            UpstreamProtocol::Http1 => &self.http1,
            UpstreamProtocol::Http2 => &self.http2,
        }
    }
}

fn client(timeouts: &Timeouts, http2: bool) -> UpstreamClient {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(timeouts.connect));
    connector.set_keepalive(Some(Duration::from_secs(60)));
    let mut builder = Client::builder(TokioExecutor::new());
    builder
        .pool_idle_timeout(timeouts.keep_alive_idle)
        .pool_timer(TokioTimer::new())
        .timer(TokioTimer::new())
        // The client's own Host header is kept; the backend sees what the
        // user asked for.
        .set_host(true);
    if http2 {
        builder
            .http2_only(true)
            .http2_keep_alive_interval(Duration::from_secs(20))
            .http2_keep_alive_timeout(Duration::from_secs(10))
            .http2_adaptive_window(true);
    }
    builder.build(connector)
}
