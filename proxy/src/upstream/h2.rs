//! Exchanges on a backend's shared HTTP/2 connection (sluice's own client,
//! [`H2Client`], or for the hyper engine the `h2` crate's, [`H2Conn`]),
//! with requests the backend did not process sent again.

use std::sync::Arc;
use std::time::Duration;

use http::Response;
use http::request::Parts;
use sluice_routing::Backend;
use sluice_transport::UpstreamTls;
use tokio::sync::oneshot;
use tracing::debug;

use super::h2_exchange::H2Conn;
use super::shared_h2::SharedH2;
use super::{Lease, UpstreamBody, UpstreamError, Upstreams};
use crate::h2client::H2Client;
use crate::request_body::RequestBody;

impl Upstreams {
    /// A new HTTP/2 connection to `backend`, over TLS when `tls` is given:
    /// sluice's own client, or the `h2` crate's for the hyper engine.
    async fn dial_h2(
        &self,
        backend: &Backend,
        tls: Option<&UpstreamTls>,
        own: bool,
    ) -> Result<SharedH2, UpstreamError> {
        let tcp = self.connect(backend).await?;
        match (tls, own) {
            (None, true) => Ok(SharedH2::Own(H2Client::start(tcp))),
            (None, false) => H2Conn::handshake(tcp).await.map(SharedH2::Crate),
            (Some(tls), true) => Ok(SharedH2::Own(H2Client::start(self.secure(tls, backend, tcp).await?))),
            (Some(tls), false) => H2Conn::handshake(self.secure(tls, backend, tcp).await?)
                .await
                .map(SharedH2::Crate),
        }
    }

    /// An exchange on the backend's shared HTTP/2 connection. A request
    /// the backend did not process — a stream it refused, or one above its
    /// GOAWAY's last-stream-id (RFC 9113 §8.7) — is sent again, whatever
    /// its method, at most `RETRIES` times after a growing pause, while the
    /// body sent so far fits in `REPLAY_CAP` (a unary gRPC call, a small
    /// POST; the rest of a body still arriving follows the copy);
    /// otherwise it fails as before.
    ///
    /// Not an `async fn`: its arguments would be kept twice in the future
    /// (rust-lang/rust#62958), and the future stays under the 1,032 bytes
    /// glibc hands out from its per-thread cache (it is boxed per call).
    #[allow(clippy::manual_async_fn, reason = "an async fn keeps its arguments twice")]
    pub(super) fn send_h2(
        &self,
        backend: &Arc<Backend>,
        tls: Option<&UpstreamTls>,
        own: bool,
        (mut head, mut body): (Parts, RequestBody),
    ) -> impl Future<Output = Result<(Response<UpstreamBody>, Lease), UpstreamError>> {
        async move {
            let pool = self.conns.of(backend.id());
            let mut attempt = 0;
            loop {
                let conn = self.shared_h2(&pool, backend, tls, own).await?;
                let (give_back, unsent) = oneshot::channel();
                let again = attempt < RETRIES;
                if again {
                    body.keep_for_replay(REPLAY_CAP, give_back);
                }
                let err = match conn.exchange(&mut head, body, again).await {
                    Ok(res) => {
                        // Sent, and not to be sent again: its map serves another.
                        crate::spare_maps::give(std::mem::take(&mut head.headers));
                        return Ok((res, Lease::new(pool, None)));
                    }
                    Err(e) => e,
                };
                let (true, Some(goaway)) = (again, err.unprocessed()) else {
                    debug!(backend = backend.addr(), attempt, error = %err, "HTTP/2 exchange failed, not retried");
                    return Err(err);
                };
                // The body comes back with what was sent of it, if that was
                // kept whole.
                let Ok(Ok(unsent)) = tokio::time::timeout(Duration::from_secs(1), unsent).await else {
                    return Err(err);
                };
                if goaway {
                    // That connection takes no new streams: the next attempt
                    // dials another (unless a request did already) at once.
                    let current = pool.h2.load();
                    if current.as_ref().is_some_and(|c| Arc::ptr_eq(c, &conn)) {
                        pool.h2.compare_and_swap(&current, None);
                    }
                } else {
                    // A backend that refuses streams is at its limit by its own
                    // count (grpc-core's lags the client's view): give it a
                    // moment before the next attempt, longer each time (25, 50,
                    // 100, … ms; the request's deadline still bounds the whole).
                    tokio::time::sleep(REFUSED_BACKOFF * (1 << attempt)).await;
                }
                attempt += 1;
                body = RequestBody::resume(unsent);
            }
        }
    }

    /// The backend's shared HTTP/2 connection, dialled when there is none
    /// (or when it is of the other engine: a reload changed it).
    async fn shared_h2(
        &self,
        pool: &super::BackendConns,
        backend: &Arc<Backend>,
        tls: Option<&UpstreamTls>,
        own: bool,
    ) -> Result<Arc<SharedH2>, UpstreamError> {
        let usable = || {
            pool.h2
                .load_full()
                .filter(|c| !c.is_closed() && matches!(**c, SharedH2::Own(_)) == own)
        };
        if let Some(c) = usable() {
            return Ok(c);
        }
        let _dialing = pool.h2_dialing.lock().await;
        // Dialled by another request while this one waited.
        if let Some(c) = usable() {
            return Ok(c);
        }
        // Boxed for the same reason as in `send_h1`.
        let conn = Arc::new(Box::pin(self.dial_h2(backend, tls, own)).await?);
        pool.h2.store(Some(Arc::clone(&conn)));
        Ok(conn)
    }
}

/// The most request body kept to send a refused request again.
const REPLAY_CAP: usize = 64 * 1024;
/// How many times a refused request is sent again.
const RETRIES: u32 = 5;
/// The pause before the first retry of a refused request (doubling).
const REFUSED_BACKOFF: Duration = Duration::from_millis(25);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_peers::{future_size, never};

    #[test]
    fn the_boxed_http2_exchange_fits_glibcs_per_thread_cache() {
        // Boxed once per call (`Upstreams::send`): up to 1,032 bytes glibc
        // serves from its per-thread cache. 848 bytes with toolchain 1.95;
        // 1,808 as an `async fn`, which kept its arguments twice.
        let send = || {
            let upstreams: &'static Upstreams = never();
            let backend: &'static Arc<Backend> = never();
            upstreams.send_h2(backend, None, true, never())
        };
        let size = future_size(&send);
        assert!(size <= 1032, "the HTTP/2 exchange future is {size} bytes");
    }
}
