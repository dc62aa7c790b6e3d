//! Exchanges on a backend's shared HTTP/2 connection (hyper's client),
//! with requests the backend did not process sent again.

use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use sluice_routing::Backend;
use sluice_transport::UpstreamTls;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::oneshot;
use tracing::debug;

use super::{Lease, UpstreamError, Upstreams};
use crate::request_body::RequestBody;

impl Upstreams {
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
    pub(super) async fn send_h2(
        &self,
        backend: &Arc<Backend>,
        tls: Option<&UpstreamTls>,
        mut req: Request<RequestBody>,
    ) -> Result<(Response<Incoming>, Lease), UpstreamError> {
        let pool = self.conns.of(backend.id());
        let mut attempt = 0;
        loop {
            let mut sender = self.shared_h2(&pool, backend, tls).await?;
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
                Ok(res) => return Ok((res, Lease::new(pool, None))),
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
                pool.h2.store(None);
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
        pool: &super::BackendConns,
        backend: &Arc<Backend>,
        tls: Option<&UpstreamTls>,
    ) -> Result<http2::SendRequest<RequestBody>, UpstreamError> {
        let usable = || pool.h2.load_full().filter(|s| !s.is_closed());
        if let Some(s) = usable() {
            return Ok((*s).clone());
        }
        let _dialing = pool.h2_dialing.lock().await;
        // Dialled by another request while this one waited.
        if let Some(s) = usable() {
            return Ok((*s).clone());
        }
        // Boxed for the same reason as in `send_h1`.
        let sender = Box::pin(self.dial_h2(backend, tls)).await?;
        pool.h2.store(Some(Arc::new(sender.clone())));
        Ok(sender)
    }
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
