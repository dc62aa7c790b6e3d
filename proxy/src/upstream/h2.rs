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
            // The connection that refused the last attempt's stream.
            let mut refused: Option<Arc<SharedH2>> = None;
            loop {
                let conn = self.shared_h2(&pool, backend, tls, own, refused.as_ref()).await?;
                if refused.take().is_some_and(|r| Arc::ptr_eq(&r, &conn)) {
                    // No other connection to be had: a backend that refuses
                    // streams is at its limit by its own count (grpc-core's
                    // lags the client's view), so give it a moment, longer
                    // each time (25, 50, 100, … ms; the request's deadline
                    // still bounds the whole).
                    tokio::time::sleep(REFUSED_BACKOFF * (1 << (attempt - 1))).await;
                }
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
                    // goes to another, or dials one, at once.
                    pool.h2.rcu(|set| {
                        set.iter()
                            .filter(|c| !Arc::ptr_eq(c, &conn))
                            .cloned()
                            .collect::<Vec<_>>()
                    });
                } else {
                    // Refused: the next attempt goes on another connection to
                    // the backend (dialled if need be), or waits a moment.
                    refused = Some(conn);
                }
                attempt += 1;
                body = RequestBody::resume(unsent);
            }
        }
    }

    /// The backend's HTTP/2 connection for a new call: the first one that
    /// carries no bulk stream (see [`pick`]) other than `refused`, dialled
    /// when there is none. When a spare cannot be dialled, the call shares
    /// a connection with long streams (or goes back to `refused`), and for
    /// a second no call tries dialling another.
    async fn shared_h2(
        &self,
        pool: &super::BackendConns,
        backend: &Arc<Backend>,
        tls: Option<&UpstreamTls>,
        own: bool,
        refused: Option<&Arc<SharedH2>>,
    ) -> Result<Arc<SharedH2>, UpstreamError> {
        if let Ok(c) = choose(pool, own, refused) {
            return Ok(c);
        }
        let _dialing = pool.h2_dialing.lock().await;
        // Dialled (or failed to be) by another request while this one waited.
        let fallback = match choose(pool, own, refused) {
            Ok(c) => return Ok(c),
            Err(fallback) => fallback,
        };
        // Boxed for the same reason as in `send_h1`.
        let conn = match Box::pin(self.dial_h2(backend, tls, own)).await {
            Ok(conn) => Arc::new(conn),
            Err(e) => {
                pool.h2_redial_after(REDIAL_PAUSE);
                return fallback.ok_or(e);
            }
        };
        // Those that take no new stream (or are of the other engine: a
        // reload changed it) are let go; they close once their streams end.
        pool.h2.rcu(|set| {
            let mut next: Vec<_> = set.iter().filter(|c| usable(c, own)).cloned().collect();
            next.push(Arc::clone(&conn));
            next
        });
        Ok(conn)
    }
}

/// How long after a failed dial of a spare connection calls share the
/// connections there are rather than dial again (each dial may wait the
/// connect timeout).
const REDIAL_PAUSE: Duration = Duration::from_secs(1);

/// The connection for a new call (`Ok`), or `Err` to dial another, with
/// the connection that may take the call if that fails ([`pick`]); for a
/// while after a failed dial, that one takes it at once.
fn choose(
    pool: &super::BackendConns,
    own: bool,
    refused: Option<&Arc<SharedH2>>,
) -> Result<Arc<SharedH2>, Option<Arc<SharedH2>>> {
    match pick(&pool.h2.load(), own, refused) {
        Pick::Use(c) => Ok(c),
        Pick::Dial(Some(c)) if pool.h2_redial_paused() => Ok(c),
        Pick::Dial(fallback) => Err(fallback),
    }
}

/// Connections kept to one backend at most. The first carries every call
/// while no response on it turns out long; a long server stream or a
/// download (a bulk stream: see `h2client`) sends the calls that follow to
/// a connection without one, dialled if need be. Long streams thus get
/// connections of their own, as with nginx's one upstream connection per
/// stream: a call's answer does not queue behind another stream's megabytes
/// in one TCP connection, and each read from the backend is for one client
/// (2 MiB streams of 1 KiB messages: 38% fewer writes to clients). Past
/// this many, calls share the connection with the fewest bulk streams.
/// Of the connections without a bulk stream one is kept; the others are
/// let go by the sweep (`BackendConns::trim_h2`).
const MAX_CONNS: usize = 8;

fn usable(c: &SharedH2, own: bool) -> bool {
    !c.is_closed() && c.is_own() == own
}

/// Where a new call goes.
enum Pick {
    Use(Arc<SharedH2>),
    /// Dial another; if that fails, this one (with the fewest long
    /// streams, or the one that refused the call) may take the call.
    Dial(Option<Arc<SharedH2>>),
}

/// The connection for a new call among `set`: of those without a bulk
/// stream (and other than `refused`, which just refused this call's
/// stream), the one with the fewest calls under way (with spares, two calls
/// that start together, and may both turn long, do not share one).
/// Without one, another is dialled, or past `MAX_CONNS` the one with the
/// fewest bulk streams takes it.
fn pick(set: &[Arc<SharedH2>], own: bool, refused: Option<&Arc<SharedH2>>) -> Pick {
    if let [only] = set
        // One connection: no counting of calls.
        && usable(only, own)
        && only.bulk_streams() == 0
        && refused.is_none()
    {
        return Pick::Use(Arc::clone(only));
    }
    let mut free: Option<(&Arc<SharedH2>, usize)> = None;
    let mut least: Option<(&Arc<SharedH2>, usize)> = None;
    let mut open = 0;
    for c in set.iter().filter(|c| usable(c, own)) {
        open += 1;
        let bulk = c.bulk_streams();
        if bulk == 0 && !refused.is_some_and(|r| Arc::ptr_eq(r, c)) {
            let calls = c.calls();
            if free.is_none_or(|(_, fewest)| calls < fewest) {
                free = Some((c, calls));
            }
        } else if least.is_none_or(|(_, fewest)| bulk < fewest) {
            least = Some((c, bulk));
        }
    }
    if let Some((c, _)) = free {
        return Pick::Use(Arc::clone(c));
    }
    match least.map(|(c, _)| Arc::clone(c)) {
        Some(c) if open >= MAX_CONNS => Pick::Use(c),
        least => Pick::Dial(least),
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

#[cfg(test)]
#[path = "h2_spread_tests.rs"]
mod spread_tests;
