//! Connections to the backends: keep-alive pools per backend, for sluice's
//! own HTTP/1.1 exchange ([`h1raw`]: small requests to plain backends), for
//! hyper's connection-level client (other HTTP/1.1 exchanges) and one
//! shared HTTP/2 connection per backend: sluice's own client
//! ([`crate::h2client`]), or with the hyper engine one driven with `h2`
//! ([`h2_exchange`]).
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

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use sluice_config::{Engine, Timeouts, UpstreamProtocol};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tracing::debug;

use sluice_routing::Backend;
use sluice_transport::UpstreamTls;

use crate::http1::{HeaderLines, HeadersAs, RawBody, RawConn, RawError, exchange};
use crate::request_body::RequestBody;

mod body;
mod conns;
mod error;
mod h2;
mod h2_exchange;
mod h2_pipe;
mod shared_h2;

pub(crate) use h2_pipe::{Start, declare_length, start};

pub use body::UpstreamBody;
pub use conns::{BackendConns, Connections, Lease};
use conns::{IdleConn, repool};
pub use error::UpstreamError;

/// Opens and reuses backend connections.
#[derive(Debug, Clone)]
pub struct Upstreams {
    connect_timeout: Duration,
    idle_timeout: Duration,
    /// `[proxy.timeouts] stream_idle`: read when a gRPC stream begins.
    stream_idle: Duration,
    conns: Arc<Connections>,
}

impl Upstreams {
    pub fn new(timeouts: &Timeouts) -> Self {
        Self {
            connect_timeout: timeouts.connect,
            idle_timeout: timeouts.keep_alive_idle,
            stream_idle: timeouts.stream_idle,
            conns: Arc::default(),
        }
    }

    /// How long a gRPC stream's backend may send nothing (zero: forever).
    pub fn stream_idle(&self) -> Duration {
        self.stream_idle
    }

    /// Closes stale idle connections of the backends in `live` and drops
    /// those of backends gone from the table ([`Connections::sweep`]);
    /// the caller runs it every few seconds.
    pub fn sweep(&self, live: &std::collections::BTreeSet<sluice_routing::BackendId>) {
        self.conns.sweep(live, self.idle_timeout);
    }

    /// Sends `req` to `backend`, on a pooled connection when one is idle;
    /// to an HTTP/2 backend with the `engine`'s client.
    pub async fn send(
        &self,
        backend: &Arc<Backend>,
        (protocol, engine): (UpstreamProtocol, Engine),
        tls: Option<&UpstreamTls>,
        req: Request<RequestBody>,
    ) -> Result<(Response<UpstreamBody>, Lease), UpstreamError> {
        match protocol {
            UpstreamProtocol::Http1 => {
                let (res, lease) = self.send_h1(backend, tls, req).await?;
                Ok((res.map(UpstreamBody::Hyper), lease))
            }
            // Boxed: the HTTP/2 exchange's state (the client's exchange,
            // the head kept for a retry) would otherwise sit inline in
            // every request's future, HTTP/1.1 ones included.
            UpstreamProtocol::Http2 => {
                Box::pin(self.send_h2(backend, tls, engine == Engine::Sluice, req.into_parts())).await
            }
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
        headers: HeadersAs,
        id_name: Option<&[u8]>,
    ) -> Result<(Response<RawBody>, Option<HeaderLines>), UpstreamError> {
        let retry = method.is_idempotent();
        let idle = self.conns.raw_idle(backend.id());
        while let Some(conn) = idle.take(self.idle_timeout) {
            match exchange(conn, head, method, &idle, headers, id_name).await {
                Err(RawError::ClosedBeforeResponse) if retry => continue,
                result => return result.map_err(UpstreamError::Raw),
            }
        }
        // Boxed, as in `send_h1`: only new connections pay for connecting.
        let tcp = Box::pin(self.connect(backend)).await?;
        exchange(RawConn::new(tcp), head, method, &idle, headers, id_name)
            .await
            .map_err(UpstreamError::Raw)
    }

    /// [`Upstreams::send_raw`] for a retry: one try, on an idle connection
    /// or a new one. A function of its own so that the request path's
    /// `send_raw` keeps its one caller (and stays inlined there).
    pub async fn send_raw_again(
        &self,
        backend: &Arc<Backend>,
        head: &[u8],
        method: &http::Method,
        headers: HeadersAs,
        id_name: Option<&[u8]>,
    ) -> Result<(Response<RawBody>, Option<HeaderLines>), UpstreamError> {
        let idle = self.conns.raw_idle(backend.id());
        let conn = match idle.take(self.idle_timeout) {
            Some(conn) => conn,
            None => RawConn::new(Box::pin(self.connect(backend)).await?),
        };
        exchange(conn, head, method, &idle, headers, id_name)
            .await
            .map_err(UpstreamError::Raw)
    }

    async fn send_h1(
        &self,
        backend: &Arc<Backend>,
        tls: Option<&UpstreamTls>,
        mut req: Request<RequestBody>,
    ) -> Result<(Response<Incoming>, Lease), UpstreamError> {
        let pool = self.conns.of(backend.id());
        while let Some(IdleConn { mut sender, since }) = pool.idle.pop() {
            if sender.is_closed() || since.elapsed() > self.idle_timeout {
                continue;
            }
            if !sender.is_ready() {
                // Still finishing its last exchange: no request waits on it.
                repool(&pool, sender);
                continue;
            }
            match sender.try_send_request(req).await {
                Ok(res) => return Ok((res, Lease::new(pool, Some(sender)))),
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
        Ok((res, Lease::new(pool, Some(sender))))
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

    /// TLS over a fresh connection, within the connect timeout.
    pub(super) async fn secure(
        &self,
        tls: &UpstreamTls,
        backend: &Backend,
        tcp: TcpStream,
    ) -> Result<tokio_rustls::client::TlsStream<TcpStream>, UpstreamError> {
        tokio::time::timeout(self.connect_timeout, tls.connect(backend.tls_name(), tcp))
            .await
            .map_err(|_| UpstreamError::ConnectTimeout)?
            .map_err(UpstreamError::Tls)
    }

    pub(super) async fn connect(&self, backend: &Backend) -> Result<TcpStream, UpstreamError> {
        // Counted while connecting: `max_pending_per_backend` reads it.
        let _pending = backend.connecting();
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
