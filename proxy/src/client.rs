//! What a client connection lends the request path and tells it: the
//! buffers each request borrows in turn ([`Scratch`]) and the peer,
//! scheme and protocol ([`ClientConn`]).

use std::net::SocketAddr;

use http::header::HeaderMap;

use crate::deadline::Deadline;
use crate::headers::ForwardedFor;

/// Buffers a client connection lends to each of its requests in turn, so
/// that a request allocates neither the head it sends the backend nor,
/// on sluice's own HTTP/1.1 loop, its header map.
#[derive(Debug, Default)]
pub struct Scratch {
    /// The backend request's head while it is sent; free otherwise (the
    /// own loop writes responses in it).
    pub(crate) head: Vec<u8>,
    headers: Option<HeaderMap>,
    /// The backend response deadline's timer, kept across requests.
    pub(crate) deadline: Deadline,
    /// The id of the request being served (see [`crate::request_id`]).
    pub(crate) request_id: crate::request_id::RequestId,
    /// The trace context of the request being served (see [`crate::trace`]).
    pub(crate) trace: crate::trace::TraceSlot,
    /// The request's access-log entry while it is served (log on, or its
    /// span recorded).
    pub(crate) log: Option<Box<crate::access::Entry>>,
    /// Retries and shadow copies of the request being served: boxed, and
    /// only once a pool with either is met, so that a connection that never
    /// meets one lends 8 bytes (a scratch moves with each HTTP/2 stream).
    pub(crate) policy: Option<Box<PolicyScratch>>,
}

/// See [`Scratch::policy`].
#[derive(Debug, Default)]
pub(crate) struct PolicyScratch {
    /// The chosen pool's retries (none: it makes one try).
    pub(crate) retry: Option<sluice_routing::retry::RetryPolicy>,
    /// The head a request without a body went out with, kept while its
    /// pool retries and it could be retried on the hyper clients.
    pub(crate) replay: Option<crate::replay::Replay>,
    /// The mirror rule the request is copied under.
    pub(crate) shadow: Option<sluice_routing::mirror::MirrorRule>,
    /// The chosen pool's route windows and the request's route in them
    /// (`[[analysis.routes]]`).
    pub(crate) route: Option<(std::sync::Arc<sluice_routing::routes::RouteWindows>, usize)>,
}

impl Drop for Scratch {
    fn drop(&mut self) {
        // An entry still here belongs to a request whose future was dropped
        // before its answer (a client that closed its connection, an
        // HTTP/2 stream it reset, hyper giving up on a gone client).
        if let Some(entry) = self.log.take() {
            entry.abandoned();
        }
    }
}

impl Scratch {
    /// The last request's header map, emptied, for the next request.
    pub(crate) fn take_headers(&mut self) -> Option<HeaderMap> {
        self.headers.take()
    }

    /// Frees what is kept for the next request (an idle connection).
    pub(crate) fn release(&mut self) {
        self.head = Vec::new();
        self.headers = None;
        // A client's id shares the last request's read buffer.
        self.request_id.clear();
        self.trace.release();
        self.log = None;
        self.policy = None;
    }

    /// The request's retries and shadow rule, from its pool and the
    /// mirrors (out of line: called only when either is, or was, set).
    #[inline(never)]
    pub(crate) fn set_policy(
        &mut self,
        retry: Option<sluice_routing::retry::RetryPolicy>,
        shadow: Option<sluice_routing::mirror::MirrorRule>,
        route: Option<(std::sync::Arc<sluice_routing::routes::RouteWindows>, usize)>,
    ) {
        let policy = self.policy.get_or_insert_with(Box::default);
        policy.retry = retry;
        policy.shadow = shadow;
        policy.route = route;
        policy.replay = None;
    }

    /// Counts the answer in its route's window, when it has one.
    #[inline]
    pub(crate) fn count_route(&self, outcome: sluice_routing::window::Outcome) {
        if let Some(policy) = &self.policy
            && let Some((windows, route)) = &policy.route
        {
            windows.record(*route, tokio::time::Instant::now(), outcome);
        }
    }

    /// The request's retries, when its pool has them.
    #[inline]
    pub(crate) fn retry(&self) -> Option<&sluice_routing::retry::RetryPolicy> {
        self.policy.as_ref().and_then(|p| p.retry.as_ref())
    }

    /// The rule the request is to be copied under, taken (once).
    #[inline]
    pub(crate) fn take_shadow(&mut self) -> Option<sluice_routing::mirror::MirrorRule> {
        self.policy.as_mut().and_then(|p| p.shadow.take())
    }

    pub(crate) fn give_back(&mut self, mut headers: HeaderMap) {
        // A request with unusually many headers does not pin its map's
        // memory to an idle connection (a kept map of up to 32 entries is
        // a few KiB).
        if headers.capacity() <= crate::spare_maps::MAX_CAPACITY {
            headers.clear();
            self.headers = Some(headers);
        }
    }
}

/// What the request path knows about the client connection.
#[derive(Debug)]
pub struct ClientConn {
    pub peer: SocketAddr,
    pub forwarded: ForwardedFor,
    /// Which server serves the connection now (for a caught panic's log).
    pub protocol: std::sync::atomic::AtomicU8,
}

/// [`ClientConn::protocol`] values.
pub const PROTOCOL_HTTP1: u8 = 0;
pub const PROTOCOL_HTTP2: u8 = 1;
pub const PROTOCOL_HTTP1_HYPER: u8 = 2;
pub const PROTOCOL_HYPER: u8 = 3;

impl ClientConn {
    pub fn new(peer: SocketAddr, tls: bool) -> Self {
        Self {
            peer,
            forwarded: ForwardedFor::new(peer.ip(), tls),
            protocol: std::sync::atomic::AtomicU8::new(PROTOCOL_HTTP1),
        }
    }

    pub fn set_protocol(&self, protocol: u8) {
        self.protocol.store(protocol, std::sync::atomic::Ordering::Relaxed);
    }

    /// The protocol's name for logs.
    pub fn protocol_name(&self) -> &'static str {
        match self.protocol.load(std::sync::atomic::Ordering::Relaxed) {
            PROTOCOL_HTTP2 => "h2",
            PROTOCOL_HTTP1_HYPER => "http/1.1 (hyper)",
            PROTOCOL_HYPER => "hyper engine",
            _ => "http/1.1",
        }
    }
}
