//! Connections to the backends: keep-alive pools per backend, for sluice's
//! own HTTP/1.1 exchange ([`h1raw`]: small requests to plain backends) and
//! for hyper's connection-level client (everything else).
//!
//! Why not hyper-util's pooled `Client`: measured with callgrind, its
//! checkout/return (a mutex-guarded map keyed by SipHash, a select between
//! checkout and connect, a spawned task per response to return the
//! connection) cost about a quarter of the proxy's instructions per request.
//! Here each [`Backend`] owns a lock-free queue of idle HTTP/1.1 senders, a
//! sender goes back to it when the response body has been read to the end
//! (see [`Lease`]), and HTTP/2 pools share one multiplexed connection.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use crossbeam_queue::ArrayQueue;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use sluice_config::{Timeouts, UpstreamProtocol};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::time::Instant;
use tracing::debug;

use crate::body::RequestBody;
use crate::h1raw::{self, RawBody, RawConn, RawError};
use crate::table::Backend;
use crate::upstream_tls::UpstreamTls;

/// Idle HTTP/1.1 connections kept per backend; more are closed when freed.
const MAX_IDLE_PER_BACKEND: usize = 512;

/// Why a request could not be exchanged with a backend.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("connect timed out")]
    ConnectTimeout,
    #[error("connect failed: {0}")]
    Connect(#[source] std::io::Error),
    #[error("TLS handshake with the backend failed: {0}")]
    Tls(#[source] std::io::Error),
    #[error("handshake failed: {0}")]
    Handshake(#[source] hyper::Error),
    #[error("exchange failed: {0}")]
    Exchange(#[source] hyper::Error),
    #[error("exchange failed: {0}")]
    Raw(#[source] RawError),
    /// The client's body, read whole before a small request goes out.
    #[error("{0}")]
    RequestBody(#[source] crate::body::RequestBodyError),
}

struct IdleConn {
    sender: http1::SendRequest<RequestBody>,
    since: Instant,
}

/// A backend's connections. Lives inside [`Backend`], so it survives
/// routing-table swaps along with the backend.
pub struct ConnPool {
    idle: ArrayQueue<IdleConn>,
    /// Idle connections of sluice's own exchange ([`h1raw`]), with the
    /// time each went idle.
    raw: ArrayQueue<(RawConn, Instant)>,
    h2: ArcSwapOption<http2::SendRequest<RequestBody>>,
    /// Held while an HTTP/2 connection is dialled, so a burst of requests
    /// meeting no connection opens one, not one each (taken only then).
    h2_dialing: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for ConnPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnPool").field("idle", &self.idle.len()).finish()
    }
}

impl Default for ConnPool {
    fn default() -> Self {
        Self {
            idle: ArrayQueue::new(MAX_IDLE_PER_BACKEND),
            raw: ArrayQueue::new(MAX_IDLE_PER_BACKEND),
            h2: ArcSwapOption::empty(),
            h2_dialing: tokio::sync::Mutex::new(()),
        }
    }
}

impl ConnPool {
    /// Idle HTTP/1.1 connections right now.
    pub fn idle(&self) -> usize {
        self.idle.len() + self.raw.len()
    }

    /// A connection whose last exchange ended cleanly; a full queue drops
    /// (closes) it.
    pub(crate) fn put_raw(&self, conn: RawConn) {
        let _ = self.raw.push((conn, Instant::now()));
    }

    /// Closes the idle connections of sluice's own exchanges that the
    /// backend has closed or that sat idle past `idle_timeout`. They are
    /// otherwise only noticed when next taken, and a backend that closes
    /// its side would leave them half-closed until traffic returns.
    /// One at a time, so requests meanwhile still find the others.
    pub fn close_stale(&self, idle_timeout: Duration) {
        for _ in 0..self.raw.len() {
            let Some((mut conn, since)) = self.raw.pop() else {
                return;
            };
            if usable(&mut conn, since, idle_timeout) {
                let _ = self.raw.push((conn, since));
            }
        }
    }

    fn put(&self, sender: http1::SendRequest<RequestBody>) {
        if !sender.is_closed() {
            // A full queue drops the sender, which closes that connection.
            let _ = self.idle.push(IdleConn {
                sender,
                since: Instant::now(),
            });
        }
    }
}

/// A connection on loan to one exchange. When the response body has been
/// read to its end, [`Lease::release`] hands the connection back for reuse;
/// dropped without that, the connection closes with it, since its state is
/// unknown.
#[derive(Debug)]
pub struct Lease {
    backend: Arc<Backend>,
    sender: Option<http1::SendRequest<RequestBody>>,
}

impl Lease {
    pub fn release(&mut self) {
        if let Some(sender) = self.sender.take() {
            repool(&self.backend, sender);
        }
    }

    /// The connection becomes something else (a 101 upgrade): never reuse it.
    pub fn forget(&mut self) {
        self.sender = None;
    }
}

/// Opens and reuses backend connections.
#[derive(Debug, Clone)]
pub struct Upstreams {
    connect_timeout: Duration,
    idle_timeout: Duration,
}

/// Whether an idle connection of the own exchange may carry a request: idle
/// no longer than `idle_timeout`, and not closed by the backend meanwhile.
fn usable(conn: &mut RawConn, since: Instant, idle_timeout: Duration) -> bool {
    since.elapsed() <= idle_timeout && conn.alive()
}

/// Every few seconds, closes the stale idle connections of every backend
/// in the served table ([`ConnPool::close_stale`]).
pub async fn close_stale_connections(routing: Arc<crate::handle::RoutingHandle>, idle_timeout: Duration) {
    let mut tick = tokio::time::interval(STALE_SWEEP);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let table = routing.snapshot();
        for backend in table.pools().iter().flat_map(|p| &p.backends) {
            backend.pool().close_stale(idle_timeout);
        }
    }
}

/// How often idle connections are checked for a backend's close.
const STALE_SWEEP: Duration = Duration::from_secs(2);

impl Upstreams {
    pub fn new(timeouts: &Timeouts) -> Self {
        Self {
            connect_timeout: timeouts.connect,
            idle_timeout: timeouts.keep_alive_idle,
        }
    }

    /// Sends `req` to `backend`, on a pooled connection when one is idle.
    pub async fn send(
        &self,
        backend: &Arc<Backend>,
        protocol: UpstreamProtocol,
        tls: Option<&UpstreamTls>,
        req: Request<RequestBody>,
    ) -> Result<(Response<Incoming>, Lease), UpstreamError> {
        match protocol {
            UpstreamProtocol::Http1 => self.send_h1(backend, tls, req).await,
            UpstreamProtocol::Http2 => self.send_h2(backend, tls, req).await,
        }
    }

    /// Sends a request over plain HTTP/1.1 with sluice's own exchange
    /// ([`h1raw`]): `head` is the encoded request, head and body. An
    /// idempotent request that meets a connection the backend had closed
    /// while it sat idle goes out again on the next (or a new) one.
    pub async fn send_raw(
        &self,
        backend: &Arc<Backend>,
        head: &[u8],
        method: &http::Method,
        headers: h1raw::HeadersAs,
    ) -> Result<Response<RawBody>, UpstreamError> {
        let retry = method.is_idempotent();
        while let Some((mut conn, since)) = backend.pool().raw.pop() {
            if !usable(&mut conn, since, self.idle_timeout) {
                continue;
            }
            match h1raw::exchange(conn, head, method, backend, headers).await {
                Err(RawError::ClosedBeforeResponse) if retry => continue,
                result => return result.map_err(UpstreamError::Raw),
            }
        }
        // Boxed, as in `send_h1`: only new connections pay for connecting.
        let tcp = Box::pin(self.connect(backend)).await?;
        h1raw::exchange(RawConn::new(tcp), head, method, backend, headers)
            .await
            .map_err(UpstreamError::Raw)
    }

    async fn send_h1(
        &self,
        backend: &Arc<Backend>,
        tls: Option<&UpstreamTls>,
        mut req: Request<RequestBody>,
    ) -> Result<(Response<Incoming>, Lease), UpstreamError> {
        while let Some(IdleConn { mut sender, since }) = backend.pool().idle.pop() {
            if sender.is_closed() || since.elapsed() > self.idle_timeout {
                continue;
            }
            if !sender.is_ready() {
                // Still finishing its last exchange: no request waits on it.
                repool(backend, sender);
                continue;
            }
            match sender.try_send_request(req).await {
                Ok(res) => return Ok((res, lease(backend, Some(sender)))),
                Err(mut e) => match e.take_message() {
                    // The connection died before the request left: the
                    // request is intact, try the next connection.
                    Some(unsent) => req = unsent,
                    None => return Err(UpstreamError::Exchange(e.into_error())),
                },
            }
        }
        // Boxed: connecting and the handshakes keep kilobytes of state that
        // would otherwise sit inline in every request's future and be copied
        // each time it moves (callgrind: twice the instructions per request
        // once TLS was inline); only a new connection pays the allocation.
        let mut sender = Box::pin(self.dial_h1(backend, tls)).await?;
        let res = sender.send_request(req).await.map_err(UpstreamError::Exchange)?;
        Ok((res, lease(backend, Some(sender))))
    }

    /// A new HTTP/1.1 connection to `backend`, over TLS when `tls` is given.
    async fn dial_h1(
        &self,
        backend: &Backend,
        tls: Option<&UpstreamTls>,
    ) -> Result<http1::SendRequest<RequestBody>, UpstreamError> {
        let tcp = self.connect(backend).await?;
        match tls {
            None => handshake_h1(tcp).await,
            Some(tls) => handshake_h1(self.secure(tls, backend, tcp).await?).await,
        }
    }

    /// A new HTTP/2 connection to `backend`, over TLS when `tls` is given.
    async fn dial_h2(
        &self,
        backend: &Backend,
        tls: Option<&UpstreamTls>,
    ) -> Result<http2::SendRequest<RequestBody>, UpstreamError> {
        let tcp = self.connect(backend).await?;
        match tls {
            None => handshake_h2(tcp).await,
            Some(tls) => handshake_h2(self.secure(tls, backend, tcp).await?).await,
        }
    }

    /// An exchange on the backend's shared HTTP/2 connection. A request
    /// the backend did not process — a stream it refused, or one above its
    /// GOAWAY's last-stream-id (RFC 9113 §8.7) — is sent again, whatever
    /// its method, at most `RETRIES` times after a growing pause, while the
    /// body sent so far fits in `REPLAY_CAP` (a unary gRPC call, a small
    /// POST; the rest of a body still arriving follows the copy);
    /// otherwise it fails as before.
    async fn send_h2(
        &self,
        backend: &Arc<Backend>,
        tls: Option<&UpstreamTls>,
        mut req: Request<RequestBody>,
    ) -> Result<(Response<Incoming>, Lease), UpstreamError> {
        let mut attempt = 0;
        loop {
            let mut sender = self.shared_h2(backend, tls).await?;
            sender.ready().await.map_err(UpstreamError::Exchange)?;
            let (give_back, unsent) = oneshot::channel();
            let head = (attempt < RETRIES).then(|| {
                req.body_mut().keep_for_replay(REPLAY_CAP, give_back);
                (
                    req.method().clone(),
                    req.uri().clone(),
                    req.version(),
                    req.headers().clone(),
                )
            });
            let err = match sender.send_request(req).await {
                Ok(res) => return Ok((res, lease(backend, None))),
                Err(e) => e,
            };
            let (Some((method, uri, version, headers)), Some(goaway)) = (head, unprocessed(&err)) else {
                debug!(backend = backend.addr(), attempt, error = %err, "HTTP/2 exchange failed, not retried");
                return Err(UpstreamError::Exchange(err));
            };
            // hyper drops the body once the stream is gone; it comes back
            // with what it sent, if that was kept whole.
            let Ok(Ok(body)) = tokio::time::timeout(Duration::from_secs(1), unsent).await else {
                return Err(UpstreamError::Exchange(err));
            };
            if goaway {
                // That connection takes no new streams: the next attempt
                // dials another.
                backend.pool().h2.store(None);
            }
            // A backend that refuses streams is at its limit by its own
            // count (grpc-core's lags the client's view): give it a moment
            // before the next attempt, longer each time (25, 50, 100, …
            // ms; the request's deadline still bounds the whole).
            tokio::time::sleep(REFUSED_BACKOFF * (1 << attempt)).await;
            attempt += 1;
            req = Request::new(RequestBody::resume(body));
            *req.method_mut() = method;
            *req.uri_mut() = uri;
            *req.version_mut() = version;
            *req.headers_mut() = headers;
        }
    }

    /// The backend's shared HTTP/2 connection, dialled when there is none.
    async fn shared_h2(
        &self,
        backend: &Arc<Backend>,
        tls: Option<&UpstreamTls>,
    ) -> Result<http2::SendRequest<RequestBody>, UpstreamError> {
        let usable = || backend.pool().h2.load_full().filter(|s| !s.is_closed());
        if let Some(s) = usable() {
            return Ok((*s).clone());
        }
        let _dialing = backend.pool().h2_dialing.lock().await;
        // Dialled by another request while this one waited.
        if let Some(s) = usable() {
            return Ok((*s).clone());
        }
        // Boxed for the same reason as in `send_h1`.
        let sender = Box::pin(self.dial_h2(backend, tls)).await?;
        backend.pool().h2.store(Some(Arc::new(sender.clone())));
        Ok(sender)
    }

    /// TLS over a fresh connection, within the connect timeout.
    async fn secure(
        &self,
        tls: &UpstreamTls,
        backend: &Backend,
        tcp: TcpStream,
    ) -> Result<tokio_rustls::client::TlsStream<TcpStream>, UpstreamError> {
        tokio::time::timeout(self.connect_timeout, tls.connect(backend.addr(), tcp))
            .await
            .map_err(|_| UpstreamError::ConnectTimeout)?
            .map_err(UpstreamError::Tls)
    }

    async fn connect(&self, backend: &Backend) -> Result<TcpStream, UpstreamError> {
        let stream = tokio::time::timeout(self.connect_timeout, TcpStream::connect(backend.addr()))
            .await
            .map_err(|_| UpstreamError::ConnectTimeout)?
            .map_err(UpstreamError::Connect)?;
        if let Err(e) = stream.set_nodelay(true) {
            debug!(error = %e, "set_nodelay failed");
        }
        Ok(stream)
    }
}

/// An HTTP/1.1 connection over `io`, driven by its own task.
async fn handshake_h1<IO>(io: IO) -> Result<http1::SendRequest<RequestBody>, UpstreamError>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) = http1::Builder::new()
        .writev(false)
        .handshake(TokioIo::new(io))
        .await
        .map_err(UpstreamError::Handshake)?;
    tokio::spawn(async move {
        if let Err(e) = conn.with_upgrades().await {
            debug!(error = %e, "upstream connection ended with an error");
        }
    });
    Ok(sender)
}

/// The most request body kept to send a refused request again.
const REPLAY_CAP: usize = 64 * 1024;
/// How many times a refused request is sent again.
const RETRIES: u32 = 5;
/// The pause before the first retry of a refused request (doubling).
const REFUSED_BACKOFF: Duration = Duration::from_millis(25);

/// Whether the backend did not process the exchange that failed with
/// `err` (RFC 9113 §8.7): `Some(false)` for a refused stream,
/// `Some(true)` for one beyond a GOAWAY (the connection is going away).
fn unprocessed(err: &hyper::Error) -> Option<bool> {
    let mut source = std::error::Error::source(err);
    while let Some(e) = source {
        if let Some(h2) = e.downcast_ref::<h2::Error>() {
            return if h2.is_go_away() && h2.is_remote() {
                Some(true)
            } else if h2.reason() == Some(h2::Reason::REFUSED_STREAM) {
                Some(false)
            } else {
                None
            };
        }
        source = e.source();
    }
    None
}

/// An HTTP/2 connection over `io`, driven by its own task.
async fn handshake_h2<IO>(io: IO) -> Result<http2::SendRequest<RequestBody>, UpstreamError>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    // No BDP pings (adaptive window) and keep-alive pings no more often
    // than every 5 minutes: grpc-core and grpc-go servers count pings that
    // come without data between them and answer a third with GOAWAY
    // ENHANCE_YOUR_CALM ("too_many_pings"), which breaks every call on the
    // connection (the likely cause of an INTERNAL reset seen once in the
    // grpcio e2e test under full-suite load).
    // hyper's fixed windows (2 MiB a stream, 5 MiB the connection) are
    // ample for backends near the proxy.
    let (sender, conn) = http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .keep_alive_interval(Duration::from_secs(300))
        .keep_alive_timeout(Duration::from_secs(20))
        .handshake(TokioIo::new(io))
        .await
        .map_err(UpstreamError::Handshake)?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            debug!(error = %e, "upstream h2 connection ended with an error");
        }
    });
    Ok(sender)
}

/// Returns a connection to its backend's idle queue as soon as hyper is done
/// with its previous exchange: at once when it is (the usual case), else
/// from a small task, so that a request never waits on a connection that is,
/// say, still streaming an earlier upload the backend answered early.
fn repool(backend: &Arc<Backend>, mut sender: http1::SendRequest<RequestBody>) {
    if sender.is_ready() {
        backend.pool().put(sender);
    } else if !sender.is_closed()
        && let Ok(runtime) = tokio::runtime::Handle::try_current()
    {
        let backend = Arc::clone(backend);
        runtime.spawn(async move {
            if sender.ready().await.is_ok() {
                backend.pool().put(sender);
            }
        });
    }
}

fn lease(backend: &Arc<Backend>, sender: Option<http1::SendRequest<RequestBody>>) -> Lease {
    Lease {
        backend: Arc::clone(backend),
        sender,
    }
}
