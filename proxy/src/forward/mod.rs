//! The request path: check → load the table once → pick pool and backend →
//! rewrite headers → send on a pooled connection → stream the response back.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;

use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode, Version};
use http_body::Body as _;
use sluice_config::{Engine, UpstreamProtocol};
use tracing::debug;

use crate::access::AccessLog;
use crate::body::ProxyBody;
use crate::client::{ClientConn, Scratch};
use crate::deadline::Deadline;
use crate::grpc::{CallTally, Seen};
use crate::headers::{self};
use crate::http1::{self, HeaderLines, HeadersAs};
use crate::limits::Limits;
use crate::noted;
use crate::request_body::{ClientBody, RequestBody};
use crate::request_id::IdHeader;
use crate::respond::ErrorResponse;
use crate::rewrite::{authority_value, original_authority, respond, upstream_uri};
use crate::shadow::{self, Shadows};
use crate::trace::{Mode, Tracing};
use crate::tunnel::{TunnelGuard, Tunnels, tunnel};
use crate::upstream::{UpstreamError, Upstreams};
use sluice_routing::error::ProxyError;
use sluice_routing::grpc;
use sluice_routing::handle::RoutingHandle;
use sluice_routing::mirror::MirrorRule;
use sluice_routing::outlier::OutlierReport;
use sluice_routing::outlier::{self, OutlierHook};
use sluice_routing::select;
use sluice_routing::stats::{PoolStats, UpstreamErrorKind};
use sluice_routing::table::{Backend, Cap, InFlight};
use sluice_routing::window::Outcome;

/// What the request path tells its caller to count the response by.
#[derive(Debug, Default)]
struct Counting {
    /// The chosen pool's counters (none before a pool is chosen).
    stats: Option<Arc<PoolStats>>,
    /// The request is a gRPC call to an HTTP/2 pool.
    grpc_call: bool,
    grpc: Seen,
}

/// What the request path answers one request with: the response and,
/// when the caller asked for them ([`HeadersAs::Lines`]) and the backend's
/// head was read by sluice's own exchange, the backend's header lines to
/// write as they are (the response's header map then holds only what
/// sluice adds).
#[derive(Debug)]
pub struct Answer {
    pub response: Response<ProxyBody>,
    pub lines: Option<HeaderLines>,
}

/// What the pool's counters see of a backend's answer: the HTTP status (a
/// gRPC call's mapped from its code), the outcome and the gRPC code.
#[inline]
fn answered(res: &Response<ProxyBody>, grpc_seen: Seen) -> (u16, Outcome, Option<u8>) {
    let (status, code) = match grpc_seen {
        Seen::Ended(code) => (grpc::http_status(code), Some(code)),
        _ => (res.status().as_u16(), None),
    };
    (status, Outcome::of_status(status), code)
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
    access_log: AccessLog,
    tracing: Tracing,
    limits: Limits,
    /// The header carrying request ids (`proxy.request_id_header`).
    request_ids: Option<IdHeader>,
    /// Copies of requests for mirror pools.
    shadows: Shadows,
}

impl Proxy {
    /// The access log, turned on, off or moved by `[access_log]`.
    pub fn access_log(&self) -> &AccessLog {
        &self.access_log
    }

    /// Rate limits, as `[[rate_limits]]` sets them.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Trace context and spans, as `[tracing]` sets them.
    pub fn tracing(&self) -> &Tracing {
        &self.tracing
    }

    /// The backend connections this proxy sends on.
    pub fn upstreams(&self) -> &Upstreams {
        &self.upstreams
    }

    pub fn new(routing: Arc<RoutingHandle>, upstreams: Upstreams) -> Self {
        Self {
            shadows: Shadows::new(),
            routing,
            upstreams,
            outliers: None,
            draining: std::sync::atomic::AtomicBool::new(false),
            tunnels: Arc::default(),
            access_log: AccessLog::default(),
            tracing: Tracing::default(),
            limits: Limits::default(),
            request_ids: None,
        }
    }

    /// The request id line an own server writes after the backend's header
    /// `lines` (when it sent none of its own); a response without lines
    /// got the id in its map from [`Proxy::handle`].
    pub(crate) fn id_line<'a>(
        &'a self,
        scratch: &'a Scratch,
        lines: Option<&HeaderLines>,
    ) -> Option<(&'a IdHeader, &'a [u8])> {
        if lines.is_none_or(|l| l.has_id) {
            return None;
        }
        Some((self.request_ids.as_ref()?, scratch.request_id.as_bytes()?))
    }

    /// Gives every request an id in `header` (see [`crate::request_id`]).
    pub fn with_request_ids(mut self, header: Option<http::HeaderName>) -> Self {
        self.request_ids = header.map(IdHeader::new);
        self
    }

    /// Upgraded connections (WebSocket tunnels) open right now.
    pub fn open_tunnels(&self) -> usize {
        self.tunnels.open()
    }

    /// Waits until every upgraded connection has closed, at most until
    /// `deadline`; whether they all did.
    pub async fn wait_for_tunnels(&self, deadline: Instant) -> bool {
        self.tunnels.wait_closed(deadline).await
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
    /// `scratch` is the connection's (see [`Scratch`]). `headers_as` says
    /// whether the caller can write a backend's header lines as they are
    /// (sluice's own servers) or needs a header map (hyper's).
    ///
    /// Written as a function returning an `async move` block rather than an
    /// `async fn` (here and in `forward`): an `async fn` moves its arguments
    /// into locals when first polled, so the 264-byte request was stored
    /// twice in the future and copied once more per request.
    #[allow(clippy::manual_async_fn)]
    pub fn handle(
        &self,
        mut req: Request<ClientBody>,
        conn: &ClientConn,
        scratch: &mut Scratch,
        headers_as: HeadersAs,
    ) -> impl Future<Output = Answer> {
        // Before the future, so the request is not held in it twice; out of
        // line, so this function stays small enough to be inlined and its
        // future built in place (inlined, the context's code made the
        // future be built aside and copied: +330 instructions on h2c).
        self.take_context(req.headers_mut(), scratch);
        async move {
            let started = Instant::now();
            let http1 = req.version() <= Version::HTTP_11;
            // Kept in the connection's scratch rather than in this future,
            // which every request moves: the log costs nothing there when off.
            scratch.log = self.access_log.begin(
                &req,
                conn.peer.ip(),
                started,
                &scratch.request_id,
                scratch.trace.get(),
                &self.tracing,
            );
            let mut counting = Counting::default();
            // What the pool's counters see: the HTTP status (a gRPC call's
            // mapped from its code), the outcome and the gRPC code.
            let mut lines = None;
            let (mut res, status, outcome, grpc_code) = match self
                .forward(req, conn, scratch, started, &mut counting, headers_as)
                .await
            {
                Ok((res, backend_lines)) => {
                    lines = backend_lines;
                    let (status, outcome, code) = answered(&res, counting.grpc);
                    (res, status, outcome, code)
                }
                Err(Failed::Error(err)) => self.failure(err, counting.grpc_call, scratch, conn),
                // Awaited here rather than in `forward` (a second wait there
                // would keep its locals apart from the other path's), and the
                // reply handed over whole: a part moved out would keep the
                // rest's room across the wait.
                again @ Err(Failed::Retry(_)) => match self.retrying(again, scratch).await {
                    Ok((res, backend_lines)) => {
                        lines = backend_lines;
                        let (status, outcome, code) = answered(&res, counting.grpc);
                        (res, status, outcome, code)
                    }
                    Err(failed) => self.failure(failed.into_error(), counting.grpc_call, scratch, conn),
                },
            };
            // The id goes back with the response, unless the backend already
            // gave one: with the backend's lines the own server writes it
            // (see `id_line`), else it goes into the map.
            if lines.is_none()
                && let Some(ids) = &self.request_ids
                && let http::header::Entry::Vacant(slot) = res.headers_mut().entry(&ids.name)
                && let Some(value) = scratch.request_id.value()
            {
                slot.insert(value);
            }
            if http1 && self.draining.load(std::sync::atomic::Ordering::Relaxed) {
                res.headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            if let Some(mut entry) = scratch.log.take() {
                entry.status = res.status().as_u16();
                entry.grpc_status = grpc_code;
                res.body_mut().log_to(entry);
            }
            // A call whose status is in its trailers is counted by its body.
            if let Some(stats) = counting.stats
                && counting.grpc != Seen::Deferred
            {
                stats.count(started, status, outcome, grpc_code);
                scratch.count_route(outcome);
            }
            Answer { response: res, lines }
        }
    }

    /// sluice's own answer to a request that failed (`err`), and what the
    /// pool's counters see of it.
    fn failure(
        &self,
        err: ProxyError,
        grpc_call: bool,
        scratch: &mut Scratch,
        conn: &ClientConn,
    ) -> (Response<ProxyBody>, u16, Outcome, Option<u8>) {
        debug!(peer = %conn.peer, error = err.code(), "request failed");
        let outcome = if UpstreamErrorKind::of(err).is_some() {
            Outcome::UpstreamFailure
        } else if err.is_upstream() {
            Outcome::Error
        } else {
            Outcome::Success
        };
        let status = err.status().as_u16();
        if let Some(entry) = &mut scratch.log {
            entry.error = Some(err.code());
        }
        if grpc_call {
            let code = grpc::code_for_status(status);
            (err.into_grpc_response(code), status, outcome, Some(code))
        } else {
            (err.into_response(scratch.request_id.as_bytes()), status, outcome, None)
        }
    }

    /// The request's id and trace context, from one pass over its header
    /// names, into `scratch`.
    #[inline(never)]
    fn take_context(&self, headers: &mut http::HeaderMap, scratch: &mut Scratch) {
        let trace = self.tracing.mode();
        if self.request_ids.is_none() && trace == Mode::Off {
            scratch.request_id.clear();
            scratch.trace.clear();
            return;
        }
        let ids = self.request_ids.as_ref();
        let mut noted = noted::note(headers, ids.map(|i| &i.name), trace != Mode::Off);
        match ids {
            Some(ids) => scratch
                .request_id
                .take_noted(noted.id.take(), noted.ids, &ids.name, headers),
            None => scratch.request_id.clear(),
        }
        self.tracing.take(trace, &mut scratch.trace, headers, &noted);
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
        headers_as: HeadersAs,
    ) -> impl Future<Output = Reply> {
        async move {
            self.limits.check(&req, conn.peer.ip(), started)?;
            // The table is loaded once, and released before any await. Settings
            // live in it, so a reload changes them for new requests only.
            let (backend, protocol, tls, set_cookie, pool_name, settings) = {
                let table = self.routing.load();
                let settings = table.policy().forward;
                let framing_checked = matches!(req.body(), ClientBody::Read(_));
                headers::check_request(&req, settings.max_request_body_bytes, framing_checked)?;
                let choice = select::choose_pool(&table, req.headers(), conn.peer.ip())?;
                counting.stats = Some(Arc::clone(&choice.pool.stats));
                // Retries, mirrors and routes, out of line: most tables have none.
                if choice.pool.retry.is_some() || table.has_request_policy() || scratch.policy.is_some() {
                    tries::note_policy(scratch, table.policy(), choice.pool, &req);
                }
                // gRPC backends are HTTP/2 pools: only their requests are
                // looked at (for sluice's own errors in gRPC's terms).
                counting.grpc_call = choice.pool.protocol == UpstreamProtocol::Http2 && grpc::is_grpc(req.headers());
                if let Some(entry) = &mut scratch.log {
                    entry.pool = Some(Arc::clone(&choice.pool.name));
                    entry.pool_version = Some(Arc::clone(&choice.pool.version));
                }
                let backend = select::choose_backend(choice.pool).ok_or(ProxyError::NoBackend)?;
                if let Some(entry) = &mut scratch.log {
                    entry.backend = Some(Arc::clone(backend));
                }
                // P2C picked the less loaded of two: if even it is full, shed.
                let cap = settings.max_in_flight_per_backend;
                if cap > 0 && backend.in_flight() >= u64::from(cap) {
                    backend.count_shed(Cap::InFlight);
                    return Err(ProxyError::BackendOverloaded.into());
                }
                // Connects piling up: the backend (or the path to it) is not
                // taking connections; fail fast instead of queueing more.
                let cap = settings.max_pending_per_backend;
                if cap > 0 && backend.pending() >= cap {
                    backend.count_shed(Cap::Pending);
                    return Err(ProxyError::UpstreamOverloaded.into());
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

            // HTTP/2 has no Upgrade (RFC 9113 §8.2.2): to an HTTP/2 pool an
            // upgrade request goes as a plain one.
            let upgrade = headers::upgrade_request(&req).filter(|_| protocol == UpstreamProtocol::Http1);
            let client_upgrade = upgrade.as_ref().map(|_| hyper::upgrade::on(&mut req));

            let (mut parts, body) = req.into_parts();
            // An absolute-form target's authority replaces any Host (RFC
            // 9112 §3.2.2), as HTTP/2's :authority does (RFC 9113 §8.3.1);
            // an HTTP/1.0 client may name none; HTTP/1.1 backends need a Host.
            let host = match (original_authority(&parts.uri), parts.headers.get(header::HOST)) {
                (None, Some(host)) => host.clone(),
                (authority, _) => {
                    let host = authority.unwrap_or_else(|| {
                        // Named after this backend: not one to send to another.
                        if let Some(policy) = &mut scratch.policy {
                            policy.retry = None;
                        }
                        authority_value(&backend)
                    });
                    parts.headers.insert(header::HOST, host.clone());
                    host
                }
            };
            // `te: trailers` is the one hop-by-hop field an HTTP/2 backend
            // gets (gRPC servers refuse calls without it).
            headers::strip_for_backend(&mut parts.headers, protocol == UpstreamProtocol::Http2);

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
                let overall = settings.upstream_response_timeout;
                let timeout = (started, tries::first_try_timeout(scratch, started, overall));
                let head = &mut scratch.head;
                head.clear();
                head.reserve(384 + parts.headers.len() * 48 + len as usize);
                let made = match (&self.request_ids, scratch.request_id.as_bytes()) {
                    (Some(ids), Some(id)) if scratch.request_id.is_made() => Some((ids, id)),
                    _ => None,
                };
                let trace = scratch.trace.line();
                http1::encode_head(&parts, &conn.forwarded, &host, len, made, trace, head);
                let body = RequestBody::new(body, settings.max_request_body_bytes);
                let res = {
                    let sent = std::pin::pin!(async {
                        if len > 0 {
                            body.append_to(head).await.map_err(UpstreamError::RequestBody)?;
                        }
                        let id_name = self.request_ids.as_ref().map(|ids| ids.name.as_str().as_bytes());
                        self.upstreams
                            .send_raw(&backend, head, &parts.method, headers_as, id_name)
                            .await
                    });
                    self.response_head(sent, &mut scratch.deadline, timeout, &backend, &pool_name)
                        .await
                };
                if let Some(rule) = scratch.take_shadow()
                    && res.is_ok()
                {
                    self.shadow_raw(&rule, &parts, scratch, &conn.forwarded, &host, len);
                }
                // The head is sent: the map goes back for the next request.
                scratch.give_back(std::mem::take(&mut parts.headers));
                if scratch.retry().is_some() && tries::worth_a_look(&res) {
                    let overall = settings.upstream_response_timeout;
                    let tried = Tried::once(backend, in_flight);
                    let again = (pool_name, parts.method, headers_as, set_cookie, (started, overall));
                    return Err(tries::retry_raw(res, tried, again));
                }
                let (res, lines) = res?;
                if let Some(entry) = &mut scratch.log {
                    entry.upstream = Some(started.elapsed());
                }
                self.count_exchange(&pool_name, &backend, res.status().is_server_error());
                let (parts, body) = res.into_parts();
                return Ok((respond(parts, set_cookie, ProxyBody::raw(body, in_flight)), lines));
            }

            parts.uri = upstream_uri(&parts.uri, protocol, &backend)?;
            headers::add_forwarding(&mut parts.headers, &conn.forwarded, &host);
            if let Some(ids) = &self.request_ids
                && scratch.request_id.is_made()
                && let Some(value) = scratch.request_id.value()
            {
                parts.headers.insert(ids.name.clone(), value);
            }
            if let Some(trace) = scratch.trace.get().filter(|t| t.as_line)
                && let Some(value) = trace.header_value()
            {
                parts.headers.insert(&crate::trace::context::TRACEPARENT, value);
            }
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
            // In a block: nothing here lives across the awaits below (the
            // request future's size is held by a test).
            let grpc_deadline = {
                let asked = counting.grpc_call.then(|| grpc::timeout_of(&parts.headers)).flatten();
                let capped = asked.map(|t| t.min(settings.max_grpc_timeout));
                if asked > capped
                    && let Some(capped) = capped
                {
                    // The backend is told the deadline sluice keeps, so it
                    // stops working on the call when sluice has given up.
                    parts.headers.insert(grpc::GRPC_TIMEOUT, grpc::timeout_value(capped));
                }
                capped
            };
            if scratch.retry().is_some() {
                // Only a request without a body can go again here.
                let again = body.is_end_stream() && upgrade.is_none() && !counting.grpc_call;
                tries::keep_replay(scratch, &parts, again);
            }
            if let Some(rule) = scratch.take_shadow()
                && body.is_end_stream()
            {
                self.shadow(&rule, &parts, Bytes::new());
            }
            let upstream_req = Request::from_parts(parts, RequestBody::new(body, settings.max_request_body_bytes));
            let first = {
                // Pinned in place: the exchange's state is large, and the timeout
                // would otherwise copy it in (callgrind: ~2% of the instructions).
                let sent = std::pin::pin!(self.upstreams.send(
                    &backend,
                    (protocol, settings.engine),
                    tls.as_deref(),
                    upstream_req
                ));
                let overall = settings.upstream_response_timeout;
                let each = tries::first_try_timeout(scratch, started, overall);
                let timeout = (started, grpc_deadline.unwrap_or(each));
                self.response_head(sent, &mut scratch.deadline, timeout, &backend, &pool_name)
                    .await
            };
            if scratch
                .policy
                .as_ref()
                .is_some_and(|p| p.retry.is_some() && p.replay.is_some())
                && tries::worth_a_look(&first)
            {
                let overall = settings.upstream_response_timeout;
                let tried = Tried::once(backend, in_flight);
                return Err(tries::retry_hyper(
                    first,
                    tried,
                    (pool_name, protocol, tls, set_cookie, (started, overall)),
                ));
            }
            let (mut res, mut lease) = first?;
            if let Some(entry) = &mut scratch.log {
                entry.upstream = Some(started.elapsed());
            }
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
                        (grpc_deadline, self.upstreams.stream_idle()),
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
                return Ok((Response::from_parts(parts, ProxyBody::empty()), None));
            }

            let (parts, body) = res.into_parts();
            let body = ProxyBody::upstream(body, lease, in_flight, tally);
            Ok((respond(parts, set_cookie, body), None))
        }
    }

    /// Sends a copy of a request to `rule`'s pool (see [`crate::shadow`]).
    #[inline(never)]
    fn shadow(&self, rule: &MirrorRule, parts: &http::request::Parts, body: Bytes) {
        let copy = shadow::Copy {
            method: parts.method.clone(),
            uri: parts.uri.clone(),
            headers: parts.headers.clone(),
            body,
        };
        self.shadows.send((&self.routing, &self.upstreams), rule, copy);
    }

    /// [`Proxy::shadow`] for a request sent on sluice's own exchange: its
    /// map lacks the forwarding headers (written straight into the head),
    /// and its body (`len` bytes) ends the encoded request in
    /// `scratch.head`.
    #[inline(never)]
    fn shadow_raw(
        &self,
        rule: &MirrorRule,
        parts: &http::request::Parts,
        scratch: &Scratch,
        forwarded: &crate::headers::ForwardedFor,
        host: &HeaderValue,
        len: u64,
    ) {
        let at = scratch
            .head
            .len()
            .saturating_sub(usize::try_from(len).unwrap_or(usize::MAX));
        let body = Bytes::copy_from_slice(scratch.head.get(at..).unwrap_or_default());
        let mut headers = parts.headers.clone();
        headers::add_forwarding(&mut headers, forwarded, host);
        if let Some(ids) = &self.request_ids
            && scratch.request_id.is_made()
            && let Some(value) = scratch.request_id.value()
        {
            headers.insert(ids.name.clone(), value);
        }
        let copy = shadow::Copy {
            method: parts.method.clone(),
            uri: parts.uri.clone(),
            headers,
            body,
        };
        self.shadows.send((&self.routing, &self.upstreams), rule, copy);
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
            Ok(sent) => sent.map_err(|e| e.cause()),
        };
        outcome.inspect_err(|&err| {
            if let Some(kind) = UpstreamErrorKind::of(err) {
                backend.errors().record(kind);
                self.count_exchange(pool_name, backend, true);
            }
        })
    }
}

mod retry;
mod tries;
pub use tries::RETRIES_HEADER;
use tries::{Failed, Reply, Tried};

#[cfg(test)]
pub(crate) mod tests;
