//! Every request's future is copied as it moves (into hyper's in-flight
//! slot, into an HTTP/2 stream's task): state that grows it is paid on
//! every request. Once a TLS handshake sat inline in it and doubled the
//! instructions per request; these bounds catch that kind of change.

use std::sync::Arc;

use sluice_config::{Engine, UpstreamProtocol};
use sluice_routing::{PoolSpec, RoutingHandle, RoutingPolicy};

use crate::client::{ClientConn, Scratch};
use crate::forward::Proxy;
use crate::test_peers::{future_size, never};
use crate::upstream::Upstreams;

/// A proxy for unit tests: one pool, `blue`, with one backend at
/// 127.0.0.1:1, where nothing listens (sluice answers 502); and its
/// upstream clients.
#[cfg(test)]
#[allow(clippy::unwrap_used)]
pub(crate) fn test_proxy() -> (Proxy, Upstreams) {
    let upstreams = Upstreams::new(&sluice_config::Timeouts::default());
    let pool = PoolSpec {
        name: "blue".into(),
        version: "v1".into(),
        weight: sluice_config::Weight::percent(100).unwrap(),
        protocol: UpstreamProtocol::Http1,
        backends: vec!["127.0.0.1:1".into()],
        tls: None,
        matches: Vec::new(),
    };
    let routing = Arc::new(RoutingHandle::new(&[pool], RoutingPolicy::default()).unwrap());
    (Proxy::new(routing, upstreams.clone()), upstreams)
}

#[test]
fn the_request_future_stays_small() {
    let (_proxy, upstreams) = test_proxy();
    // Never called: only the futures' types are needed.
    let handle = return_size(handle_alone);
    let send = move || async move {
        let backend: Arc<sluice_routing::table::Backend> = never();
        upstreams
            .send(&backend, (UpstreamProtocol::Http1, Engine::Sluice), None, never())
            .await
    };
    let send = future_size(&send);
    // 3,128 and 1,320 bytes with toolchain 1.95. (Measured with the
    // connection's `Scratch` inside, the request's was 2,952 before it
    // grew, 3,312 while `handle` and `forward` were `async fn`s, 4,272 and
    // 2,416 before connecting and handshakes were boxed.)
    assert!(handle <= 3136, "the request future is {handle} bytes");
    assert!(send <= 2048, "the upstream exchange future is {send} bytes");
}

#[test]
fn the_response_body_stays_small() {
    // Moved with every response (in `Answer`): 120 bytes, the size before
    // the access-log entry joined it (the own exchange's connection made
    // room). A larger one measurably slows every request in memcpy.
    let size = std::mem::size_of::<crate::body::ProxyBody>();
    assert!(size <= 120, "the response body is {size} bytes");
}

/// The request future by itself (a closure's `async` block would add the
/// `Scratch` it borrows from, which lives in the connection instead).
fn handle_alone(
    args: (&'static Proxy, &'static ClientConn, &'static mut Scratch),
) -> impl Future<Output = crate::forward::Answer> + 'static {
    args.0.handle(never(), args.1, args.2, crate::http1::HeadersAs::Lines)
}

fn return_size<A, R>(_: fn(A) -> R) -> usize {
    std::mem::size_of::<R>()
}
