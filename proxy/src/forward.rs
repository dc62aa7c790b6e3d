//! The request path: check → load the table once → pick pool and backend →
//! rewrite headers → send on a pooled connection → stream the response back.

use std::error::Error as StdError;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use http::header::{self, HeaderMap, HeaderValue};
use http::uri::{PathAndQuery, Scheme};
use http::{Request, Response, StatusCode, Uri, Version};
use http_body::Body as _;
use hyper_util::rt::TokioIo;
use sluice_config::{Engine, UpstreamProtocol};
use tracing::debug;

use crate::body::ProxyBody;
use crate::deadline::Deadline;
use crate::grpc::{CallTally, Seen};
use crate::headers::{self, ForwardedFor};
use crate::http1::{self, RawError};
use crate::request_body::{ClientBody, RequestBody, RequestBodyError};
use crate::respond::ErrorResponse;
use crate::upstream::{UpstreamError, Upstreams};
use sluice_routing::error::ProxyError;
use sluice_routing::grpc;
use sluice_routing::handle::RoutingHandle;
use sluice_routing::outlier::OutlierReport;
use sluice_routing::outlier::{self, OutlierHook};
use sluice_routing::select;
use sluice_routing::stats::{PoolStats, UpstreamErrorKind};
use sluice_routing::table::{Backend, InFlight};
use sluice_routing::window::Outcome;

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
    deadline: Deadline,
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
    }

    pub(crate) fn give_back(&mut self, mut headers: HeaderMap) {
        // A request with unusually many headers does not pin its map's
        // memory to an idle connection (a kept map of up to 32 entries is
        // a few KiB).
        if headers.capacity() <= 32 {
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

/// What the request path tells its caller to count the response by.
#[derive(Debug, Default)]
struct Counting {
    /// The chosen pool's counters (none before a pool is chosen).
    stats: Option<Arc<PoolStats>>,
    /// The request is a gRPC call to an HTTP/2 pool.
    grpc_call: bool,
    grpc: Seen,
}

/// The proxy service shared by every connection.
#[derive(Debug)]
pub struct Proxy {
    routing: Arc<RoutingHandle>,
    upstreams: Upstreams,
    /// Where backends failing `threshold` times in a row are reported.
    outliers: Option<OutlierHook>,
    /// Set when this process stops: HTTP/1 responses then announce
    /// `Connection: close`, so clients move to new connections in-band
    /// instead of racing a close of an idle one.
    draining: std::sync::atomic::AtomicBool,
    /// Upgraded connections (WebSocket tunnels) still open: a drain waits
    /// for them as it does for requests.
    tunnels: Arc<Tunnels>,
}

#[derive(Debug, Default)]
struct Tunnels {
    open: std::sync::atomic::AtomicUsize,
    closed: tokio::sync::Notify,
}

/// Counts one open tunnel while it lives.
struct TunnelGuard(Arc<Tunnels>);

impl TunnelGuard {
    fn open(tunnels: &Arc<Tunnels>) -> Self {
        tunnels.open.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        Self(Arc::clone(tunnels))
    }
}

impl Drop for TunnelGuard {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
        self.0.closed.notify_waiters();
    }
}

impl Proxy {
    /// The backend connections this proxy sends on.
    pub fn upstreams(&self) -> &Upstreams {
        &self.upstreams
    }

    pub fn new(routing: Arc<RoutingHandle>, upstreams: Upstreams) -> Self {
        Self {
            routing,
            upstreams,
            outliers: None,
            draining: std::sync::atomic::AtomicBool::new(false),
            tunnels: Arc::default(),
        }
    }

    /// Upgraded connections (WebSocket tunnels) open right now.
    pub fn open_tunnels(&self) -> usize {
        self.tunnels.open.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Waits until every upgraded connection has closed, at most until
    /// `deadline`; whether they all did.
    pub async fn wait_for_tunnels(&self, deadline: Instant) -> bool {
        loop {
            let closed = self.tunnels.closed.notified();
            tokio::pin!(closed);
            // Registered before the count is read, so a close in between
            // is not missed.
            closed.as_mut().enable();
            if self.open_tunnels() == 0 {
                return true;
            }
            if tokio::time::timeout_at(deadline, closed).await.is_err() {
                return self.open_tunnels() == 0;
            }
        }
    }

    /// From now on, HTTP/1 responses close their connection (and HTTP/2
    /// connections send GOAWAY).
    pub fn begin_drain(&self) {
        self.draining.store(true, std::sync::atomic::Ordering::Relaxed);
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Reports backends that fail `threshold` exchanges in a row to `tx`
    /// (never blocking: a full channel drops the report).
    pub fn with_outlier_reports(mut self, tx: tokio::sync::mpsc::Sender<OutlierReport>, threshold: u32) -> Self {
        self.outliers = Some(OutlierHook::new(tx, threshold));
        self
    }

    fn count_exchange(&self, pool: &Arc<str>, backend: &Arc<Backend>, failed: bool) {
        outlier::count_exchange(self.outliers.as_ref(), pool, backend, failed);
    }

    pub fn routing(&self) -> &Arc<RoutingHandle> {
        &self.routing
    }

    /// The engine new connections are served with (`proxy.engine`, as of
    /// the last reload).
    pub fn engine(&self) -> Engine {
        self.routing.load().policy().forward.engine
    }

    /// Serves one request; failures become short plain-text responses.
    /// `scratch` is the connection's (see [`Scratch`]).
    ///
    /// Written as a function returning an `async move` block rather than an
    /// `async fn` (here and in `forward`): an `async fn` moves its arguments
    /// into locals when first polled, so the 264-byte request was stored
    /// twice in the future and copied once more per request.
    #[allow(clippy::manual_async_fn)]
    pub fn handle(
        &self,
        req: Request<ClientBody>,
        conn: &ClientConn,
        scratch: &mut Scratch,
    ) -> impl Future<Output = Response<ProxyBody>> {
        async move {
            let started = Instant::now();
            let http1 = req.version() <= Version::HTTP_11;
            let mut counting = Counting::default();
            // What the pool's counters see: the HTTP status (a gRPC call's
            // mapped from its code), the outcome and the gRPC code.
            let (mut res, status, outcome, grpc_code) =
                match self.forward(req, conn, scratch, started, &mut counting).await {
                    Ok(res) => {
                        let (status, code) = match counting.grpc {
                            Seen::Ended(code) => (grpc::http_status(code), Some(code)),
                            _ => (res.status().as_u16(), None),
                        };
                        (res, status, Outcome::of_status(status), code)
                    }
                    Err(err) => {
                        debug!(peer = %conn.peer, error = err.code(), "request failed");
                        let outcome = if UpstreamErrorKind::of(err).is_some() {
                            Outcome::UpstreamFailure
                        } else if err.is_upstream() {
                            Outcome::Error
                        } else {
                            Outcome::Success
                        };
                        let status = err.status().as_u16();
                        if counting.grpc_call {
                            let code = grpc::code_for_status(status);
                            (err.into_grpc_response(code), status, outcome, Some(code))
                        } else {
                            (err.into_response(), status, outcome, None)
                        }
                    }
                };
            if http1 && self.draining.load(std::sync::atomic::Ordering::Relaxed) {
                res.headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            // A call whose status is in its trailers is counted by its body.
            if let Some(stats) = counting.stats
                && counting.grpc != Seen::Deferred
            {
                stats.count(started, status, outcome, grpc_code);
            }
            res
        }
    }

    /// Forwards one request; `counting` is set once a pool is chosen, so
    /// the caller can count the outcome against it.
    #[allow(clippy::manual_async_fn)] // see `handle`
    fn forward(
        &self,
        mut req: Request<ClientBody>,
        conn: &ClientConn,
        scratch: &mut Scratch,
        started: Instant,
        counting: &mut Counting,
    ) -> impl Future<Output = Result<Response<ProxyBody>, ProxyError>> {
        async move {
            // The table is loaded once, and released before any await. Settings
            // live in it, so a reload changes them for new requests only.
            let (backend, protocol, tls, set_cookie, pool_name, settings) = {
                let table = self.routing.load();
                let settings = table.policy().forward;
                let framing_checked = matches!(req.body(), ClientBody::Read(_));
                headers::check_request(&req, settings.max_request_body_bytes, framing_checked)?;
                let choice = select::choose_pool(&table, req.headers(), conn.peer.ip())?;
                counting.stats = Some(Arc::clone(&choice.pool.stats));
                // gRPC backends are HTTP/2 pools: only their requests are
                // looked at (for sluice's own errors in gRPC's terms).
                counting.grpc_call = choice.pool.protocol == UpstreamProtocol::Http2 && grpc::is_grpc(req.headers());
                let backend = select::choose_backend(choice.pool).ok_or(ProxyError::NoBackend)?;
                // P2C picked the less loaded of two: if even it is full, shed.
                let cap = settings.max_in_flight_per_backend;
                if cap > 0 && backend.in_flight() >= u64::from(cap) {
                    return Err(ProxyError::BackendOverloaded);
                }
                (
                    Arc::clone(backend),
                    choice.pool.protocol,
                    choice.pool.tls.clone(),
                    choice.set_cookie,
                    Arc::clone(&choice.pool.name),
                    settings,
                )
            };
            let in_flight = InFlight::start(&backend);

            let upgrade = headers::upgrade_request(&req);
            let client_upgrade = upgrade.as_ref().map(|_| hyper::upgrade::on(&mut req));

            let (mut parts, body) = req.into_parts();
            // An absolute-form target's authority replaces any Host (RFC
            // 9112 §3.2.2), as HTTP/2's :authority does (RFC 9113 §8.3.1);
            // an HTTP/1.0 client may name none; HTTP/1.1 backends need a Host.
            let host = match (original_authority(&parts.uri), parts.headers.get(header::HOST)) {
                (None, Some(host)) => host.clone(),
                (authority, _) => {
                    let host = authority.unwrap_or_else(|| authority_value(&backend));
                    parts.headers.insert(header::HOST, host.clone());
                    host
                }
            };
            // `te: trailers` is the one hop-by-hop field an HTTP/2 backend
            // gets (gRPC servers refuse calls without it); checked only for
            // HTTP/2 pools.
            let te_trailers = protocol == UpstreamProtocol::Http2 && headers::accepts_trailers(&parts.headers);
            headers::strip_hop_by_hop(&mut parts.headers);
            if te_trailers {
                parts.headers.insert(header::TE, HeaderValue::from_static("trailers"));
            }

            let buffered = body.size_hint().exact().filter(|&n| n <= http1::MAX_BUFFERED_BODY);
            if let Some(len) = buffered
                && protocol == UpstreamProtocol::Http1
                && tls.is_none()
                && upgrade.is_none()
                && settings.engine == Engine::Sluice
            {
                // The common request (no body or a small one of known length,
                // no upgrade, plain HTTP/1.1 to the backend) takes sluice's own
                // exchange; see `h1raw`. The head is written straight from the
                // client's parts (forwarding headers included), and a body is
                // read whole first and goes out in the same write.
                let head = &mut scratch.head;
                head.clear();
                head.reserve(384 + parts.headers.len() * 48 + len as usize);
                http1::encode_head(&parts, &conn.forwarded, &host, len, head);
                // sluice's own HTTP/1.1 loop (the one source of `ClientBody::Read`)
                // writes the backend's header lines as they are, and the HTTP/2
                // server (`ClientBody::Stream`) encodes them; hyper's
                // connections need a header map.
                let headers_as = match body {
                    ClientBody::Read(_) | ClientBody::Stream(_) => http1::HeadersAs::Lines,
                    // (Read-ahead bodies exist only on the way to HTTP/2 backends.)
                    ClientBody::Hyper(_) | ClientBody::Ahead(_) => http1::HeadersAs::Map,
                };
                let body = RequestBody::new(body, settings.max_request_body_bytes);
                let res = {
                    let sent = std::pin::pin!(async {
                        if len > 0 {
                            body.append_to(head).await.map_err(UpstreamError::RequestBody)?;
                        }
                        self.upstreams.send_raw(&backend, head, &parts.method, headers_as).await
                    });
                    let timeout = (started, settings.upstream_response_timeout);
                    self.response_head(sent, &mut scratch.deadline, timeout, &backend, &pool_name)
                        .await
                };
                // The head is sent: the map goes back for the next request.
                scratch.give_back(std::mem::take(&mut parts.headers));
                let res = res?;
                self.count_exchange(&pool_name, &backend, res.status().is_server_error());
                let (parts, body) = res.into_parts();
                return Ok(respond(parts, set_cookie, ProxyBody::raw(body, in_flight)));
            }

            parts.uri = upstream_uri(&parts.uri, protocol, &backend)?;
            headers::add_forwarding(&mut parts.headers, &conn.forwarded, &host);
            if let Some(proto) = &upgrade {
                parts
                    .headers
                    .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
                parts.headers.insert(header::UPGRADE, proto.clone());
            }
            parts.version = match protocol {
                UpstreamProtocol::Http1 => Version::HTTP_11,
                UpstreamProtocol::Http2 => Version::HTTP_2,
            };
            parts.extensions = http::Extensions::new();

            // A gRPC call's own deadline (capped) replaces the head timeout
            // and bounds the whole call.
            let grpc_deadline = counting
                .grpc_call
                .then(|| grpc::timeout_of(&parts.headers))
                .flatten()
                .map(|t| t.min(settings.max_grpc_timeout));
            let upstream_req = Request::from_parts(parts, RequestBody::new(body, settings.max_request_body_bytes));
            // Pinned in place: the exchange's state is large, and the timeout
            // would otherwise copy it in (callgrind: ~2% of the instructions).
            let sent = std::pin::pin!(self.upstreams.send(&backend, protocol, tls.as_deref(), upstream_req));
            let timeout = (started, grpc_deadline.unwrap_or(settings.upstream_response_timeout));
            let (mut res, mut lease) = self
                .response_head(sent, &mut scratch.deadline, timeout, &backend, &pool_name)
                .await?;
            // A gRPC call is judged by its grpc-status, not by its 200.
            counting.grpc = if protocol == UpstreamProtocol::Http2
                && res.status() == StatusCode::OK
                && grpc::is_grpc(res.headers())
            {
                grpc::status_of(res.headers()).map_or(Seen::Deferred, Seen::Ended)
            } else {
                Seen::Plain
            };
            let tally = match counting.grpc {
                Seen::Plain => {
                    self.count_exchange(&pool_name, &backend, res.status().is_server_error());
                    None
                }
                Seen::Ended(code) => {
                    self.count_exchange(&pool_name, &backend, grpc::server_failed(code));
                    None
                }
                Seen::Deferred => counting.stats.as_ref().map(|stats| {
                    CallTally::new(
                        Arc::clone(stats),
                        started,
                        Arc::clone(&pool_name),
                        Arc::clone(&backend),
                        self.outliers.clone(),
                        grpc_deadline,
                    )
                }),
            };

            if let Some(client_upgrade) = client_upgrade
                && res.status() == StatusCode::SWITCHING_PROTOCOLS
            {
                lease.forget();
                let upstream_upgrade = hyper::upgrade::on(&mut res);
                let open = TunnelGuard::open(&self.tunnels);
                tokio::spawn(tunnel(client_upgrade, upstream_upgrade, in_flight, open));
                let (parts, _) = res.into_parts();
                return Ok(Response::from_parts(parts, ProxyBody::empty()));
            }

            let (parts, body) = res.into_parts();
            Ok(respond(
                parts,
                set_cookie,
                ProxyBody::upstream(body, lease, in_flight, tally),
            ))
        }
    }

    /// Waits for the backend's response head within `timeout` of the
    /// request's start, on the connection's timer; a failure counts
    /// against the backend.
    async fn response_head<R>(
        &self,
        sent: impl Future<Output = Result<R, UpstreamError>>,
        deadline: &mut Deadline,
        (started, timeout): (Instant, Duration),
        backend: &Arc<Backend>,
        pool_name: &Arc<str>,
    ) -> Result<R, ProxyError> {
        let outcome = match deadline.within(started, timeout, sent).await {
            Err(_) => Err(ProxyError::UpstreamTimeout),
            Ok(sent) => sent.map_err(|e| classify(&e)),
        };
        outcome.inspect_err(|&err| {
            if let Some(kind) = UpstreamErrorKind::of(err) {
                backend.errors().record(kind);
                self.count_exchange(pool_name, backend, true);
            }
        })
    }
}

/// The backend's response on its way to the client: without hop-by-hop
/// headers, with the stickiness cookie when one was chosen.
fn respond(mut parts: http::response::Parts, set_cookie: Option<HeaderValue>, body: ProxyBody) -> Response<ProxyBody> {
    headers::strip_hop_by_hop(&mut parts.headers);
    if let Some(cookie) = set_cookie {
        parts.headers.append(header::SET_COOKIE, cookie);
    }
    Response::from_parts(parts, body)
}

/// The authority an HTTP/2 (or absolute-form) request addressed, as a Host
/// value (`check_request` refused one with userinfo).
fn original_authority(uri: &Uri) -> Option<HeaderValue> {
    HeaderValue::from_str(uri.authority()?.as_str()).ok()
}

fn authority_value(backend: &Backend) -> HeaderValue {
    // host:port text is always a valid header value.
    HeaderValue::from_str(backend.authority().as_str()).unwrap_or(HeaderValue::from_static("localhost"))
}

/// Copies bytes both ways between an upgraded client and backend connection
/// until either side closes.
async fn tunnel(
    client: hyper::upgrade::OnUpgrade,
    upstream: hyper::upgrade::OnUpgrade,
    _in_flight: InFlight,
    _open: TunnelGuard,
) {
    let (client, upstream) = match tokio::try_join!(client, upstream) {
        Ok(pair) => pair,
        Err(e) => {
            debug!(error = %e, "upgrade did not complete");
            return;
        }
    };
    let mut client = TokioIo::new(client);
    let mut upstream = TokioIo::new(upstream);
    if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
        debug!(error = %e, "upgraded connection ended with an error");
    }
}

/// The request target sent upstream: origin-form (`/path?query`) for
/// HTTP/1.1, whatever form the client used; absolute with the backend's
/// authority for HTTP/2, which needs `:scheme` and `:authority`.
fn upstream_uri(client_uri: &Uri, protocol: UpstreamProtocol, backend: &Backend) -> Result<Uri, ProxyError> {
    let path = client_uri
        .path_and_query()
        .cloned()
        .unwrap_or(PathAndQuery::from_static("/"));
    match protocol {
        // Origin-form already (the usual case): reuse it as is.
        UpstreamProtocol::Http1 if client_uri.scheme().is_none() && client_uri.authority().is_none() => {
            Ok(client_uri.clone())
        }
        UpstreamProtocol::Http1 => Ok(Uri::from(path)),
        UpstreamProtocol::Http2 => Uri::builder()
            .scheme(Scheme::HTTP)
            .authority(backend.authority().clone())
            .path_and_query(path)
            .build()
            .map_err(|_| ProxyError::BadTarget),
    }
}

/// Maps an upstream failure to its cause; request-body failures travel
/// inside hyper's error as its source.
fn classify(err: &UpstreamError) -> ProxyError {
    let hyper_err = match err {
        UpstreamError::Raw(RawError::Malformed(_)) => return ProxyError::UpstreamMalformed,
        UpstreamError::Raw(_) => return ProxyError::UpstreamReset,
        UpstreamError::RequestBody(body) => return body_error(body),
        UpstreamError::ConnectTimeout => return ProxyError::ConnectTimeout,
        UpstreamError::Connect(_) | UpstreamError::Tls(_) => return ProxyError::ConnectFailed,
        UpstreamError::Handshake(_) => return ProxyError::UpstreamReset,
        UpstreamError::Exchange(e) => e,
    };
    let mut source: Option<&(dyn StdError + 'static)> = hyper_err.source();
    while let Some(e) = source {
        if let Some(body) = e.downcast_ref::<RequestBodyError>() {
            return body_error(body);
        }
        source = e.source();
    }
    if hyper_err.is_parse() || hyper_err.is_parse_status() || hyper_err.is_parse_too_large() {
        ProxyError::UpstreamMalformed
    } else {
        ProxyError::UpstreamReset
    }
}

/// The client's body failed on its way up: too large, or the client's fault.
fn body_error(err: &RequestBodyError) -> ProxyError {
    match err {
        RequestBodyError::TooLarge => ProxyError::BodyTooLarge,
        RequestBodyError::Client(_) => ProxyError::ClientBodyFailed,
    }
}

/// A proxy for unit tests: one pool, `blue`, with one backend at
/// 127.0.0.1:1, where nothing listens (sluice answers 502); and its
/// upstream clients.
#[cfg(test)]
#[allow(clippy::unwrap_used)]
pub(crate) fn test_proxy() -> (Proxy, Upstreams) {
    let upstreams = Upstreams::new(&sluice_config::Timeouts::default());
    let pool = sluice_routing::table::PoolSpec {
        name: "blue".into(),
        version: "v1".into(),
        weight: 100,
        protocol: UpstreamProtocol::Http1,
        backends: vec!["127.0.0.1:1".into()],
        tls: None,
    };
    let routing = Arc::new(RoutingHandle::new(&[pool], sluice_routing::table::RoutingPolicy::default()).unwrap());
    (Proxy::new(routing, upstreams.clone()), upstreams)
}

#[cfg(test)]
mod future_size {
    //! Every request's future is copied as it moves (into hyper's in-flight
    //! slot, into an HTTP/2 stream's task): state that grows it is paid on
    //! every request. Once a TLS handshake sat inline in it and doubled the
    //! instructions per request; these bounds catch that kind of change.
    use std::sync::Arc;

    use sluice_config::UpstreamProtocol;

    fn future_size<F: FnOnce() -> Fut, Fut>(_: &F) -> usize {
        std::mem::size_of::<Fut>()
    }

    /// A value for a closure that is never called.
    fn never<T>() -> T {
        panic!("only the closure's type is used")
    }

    #[test]
    fn the_request_future_stays_small() {
        let (proxy, upstreams) = super::test_proxy();
        let conn = super::ClientConn::new("127.0.0.1:1".parse().unwrap(), false);
        // Never called: only the futures' types are needed.
        let handle = move || async move { proxy.handle(never(), &conn, &mut super::Scratch::default()).await };
        let send = move || async move {
            let backend: Arc<sluice_routing::table::Backend> = never();
            upstreams.send(&backend, UpstreamProtocol::Http1, None, never()).await
        };
        let (handle, send) = (future_size(&handle), future_size(&send));
        // 2,952 and 1,320 bytes with toolchain 1.95 (3,312 for the request
        // while `handle` and `forward` were `async fn`s, 4,272 and 2,416
        // before connecting and handshakes were boxed).
        assert!(handle <= 3584, "the request future is {handle} bytes");
        assert!(send <= 2048, "the upstream exchange future is {send} bytes");
    }
}
