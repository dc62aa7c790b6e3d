//! Listeners: accept connections, serve HTTP/1.1 (sluice's own loop, then
//! hyper for what it hands over) and HTTP/2 (sluice's own server; h2c by
//! prior knowledge, h2 after ALPN) with sluice's limits, and drain
//! gracefully on shutdown.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use sluice_config::Engine;
use std::net::SocketAddr;

use futures_util::FutureExt as _;
use std::panic::AssertUnwindSafe;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio_rustls::TlsAcceptor;
use tracing::{debug, error, info, warn};

use crate::client::{ClientConn, PROTOCOL_HTTP1_HYPER, PROTOCOL_HTTP2, PROTOCOL_HYPER, Scratch};
use crate::forward::Proxy;
use crate::http1::HeadersAs;
use crate::options::ListenerOptions;
use crate::request_body::ClientBody;
use crate::{h2, http1};
use sluice_routing::stats::{CONNECTION_PANICS, OPEN_CONNECTIONS, REFUSED_CONNECTIONS};

/// hyper serves the HTTP/1 connections sluice's own loop hands over (HTTP/2
/// goes to `h2`); it leaves header limits and the header timeout unset, and
/// sluice sets them.
fn http_builder(opts: &ListenerOptions) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new()).http1_only();
    http1_limits(&mut builder, opts);
    builder
}

fn http1_limits(builder: &mut auto::Builder<TokioExecutor>, opts: &ListenerOptions) {
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(opts.header_read_timeout)
        .max_buf_size(opts.max_header_bytes)
        .max_headers(opts.max_headers)
        .keep_alive(true);
}

/// hyper serving whole connections, HTTP/1.1 and HTTP/2 (by preface, or
/// after ALPN), for `proxy.engine = "hyper"`: the same limits as sluice's
/// own servers where hyper has them.
fn hyper_engine_builder(opts: &ListenerOptions) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    http1_limits(&mut builder, opts);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(256)
        .max_header_list_size(u32::try_from(opts.max_header_bytes).unwrap_or(u32::MAX))
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .keep_alive_timeout(Duration::from_secs(10));
    builder
}

/// The next listener to move to; never, without a channel or once it closed.
async fn next_listener(moves: &mut Option<mpsc::UnboundedReceiver<TcpListener>>) -> TcpListener {
    if let Some(rx) = moves
        && let Some(listener) = rx.recv().await
    {
        return listener;
    }
    *moves = None;
    std::future::pending().await
}

/// Serves `listener` (plain HTTP/1.1 and h2c) until `shutdown` resolves;
/// see [`serve_with`].
pub async fn serve(
    listener: TcpListener,
    proxy: Arc<Proxy>,
    opts: ListenerOptions,
    shutdown: impl Future<Output = ()>,
) -> bool {
    serve_with(listener, None, proxy, opts, shutdown).await
}

/// Serves `listener` until `shutdown` resolves, over TLS when `tls` is
/// given, then stops accepting (new connections are refused), asks open
/// connections to finish (`Connection: close` after the current response
/// on HTTP/1, GOAWAY on HTTP/2) and waits up to the drain timeout for
/// in-flight requests. Returns whether every connection finished in time.
pub async fn serve_with(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    proxy: Arc<Proxy>,
    opts: ListenerOptions,
    shutdown: impl Future<Output = ()>,
) -> bool {
    serve_moving(listener, tls, proxy, opts, shutdown, None).await
}

/// [`serve_with`], moving to each listener received on `moves` (a changed
/// listen address): the new socket is already bound and accepting when the
/// old one closes, connections queued on the old one are still served, and
/// connections opened on it run to their end.
pub async fn serve_moving(
    mut listener: TcpListener,
    tls: Option<TlsAcceptor>,
    proxy: Arc<Proxy>,
    opts: ListenerOptions,
    shutdown: impl Future<Output = ()>,
    mut moves: Option<mpsc::UnboundedReceiver<TcpListener>>,
) -> bool {
    let builders = Builders {
        own: http_builder(&opts),
        hyper: hyper_engine_builder(&opts),
    };
    let graceful = GracefulShutdown::new();
    // Tells connections on sluice's own HTTP/1.1 loop to close when idle;
    // hyper's learn it from `graceful`.
    let (close_idle, idle_signal) = watch::channel(());
    let serve = |stream: TcpStream, peer: SocketAddr| {
        if let Err(e) = stream.set_nodelay(true) {
            debug!(error = %e, "set_nodelay failed");
        }
        let conn = Arc::new(ClientConn::new(peer, tls.is_some()));
        // A reload's engine applies to the connections accepted after it.
        let engine = proxy.engine();
        let builder = match engine {
            Engine::Sluice => builders.own.clone(),
            Engine::Hyper => builders.hyper.clone(),
        };
        let (proxy, watcher) = (Arc::clone(&proxy), graceful.watcher());
        let (tls, handshake_timeout, idle_signal) = (tls.clone(), opts.header_read_timeout, idle_signal.clone());
        OPEN_CONNECTIONS.fetch_add(1, Ordering::Relaxed);
        tokio::spawn(async move {
            let served = Arc::clone(&conn);
            let serving = async move {
                match tls {
                    None => serve_connection(engine, stream, &builder, conn, proxy, watcher, &opts, idle_signal).await,
                    // Boxed: a task is as large as its largest state. Inline,
                    // the TLS branch (with hyper's, boxed below) made every
                    // plain connection's task 11 KB instead of 5 KB.
                    Some(acceptor) => {
                        Box::pin(async {
                            match tokio::time::timeout(handshake_timeout, acceptor.accept(stream)).await {
                                Ok(Ok(tls_stream)) => {
                                    serve_connection(
                                        engine,
                                        tls_stream,
                                        &builder,
                                        conn,
                                        proxy,
                                        watcher,
                                        &opts,
                                        idle_signal,
                                    )
                                    .await;
                                }
                                Ok(Err(e)) => debug!(%peer, error = %e, "TLS handshake failed"),
                                Err(_) => debug!(%peer, "TLS handshake timed out"),
                            }
                        })
                        .await
                    }
                }
            };
            // The second line of defence behind panic-free protocol code: a
            // panic ends this connection only (its state is dropped with
            // it), is logged and counted, and the worker goes on.
            if let Err(panic) = AssertUnwindSafe(serving).catch_unwind().await {
                CONNECTION_PANICS.fetch_add(1, Ordering::Relaxed);
                error!(
                    %peer,
                    protocol = served.protocol_name(),
                    panic = panic_message(panic.as_ref()),
                    "a connection's task panicked; that connection was closed (please report this bug)"
                );
            }
            OPEN_CONNECTIONS.fetch_sub(1, Ordering::Relaxed);
        });
    };
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            biased;
            () = &mut shutdown => break,
            moved = next_listener(&mut moves) => {
                // What already waits in the old socket's queue is served
                // before that socket closes.
                while let Some(Ok((stream, peer))) =
                    std::future::poll_fn(|cx| std::task::Poll::Ready(match listener.poll_accept(cx) {
                        std::task::Poll::Ready(r) => Some(r),
                        std::task::Poll::Pending => None,
                    }))
                    .await
                {
                    serve(stream, peer);
                }
                info!(
                    from = ?listener.local_addr().ok(),
                    to = ?moved.local_addr().ok(),
                    "listener moved"
                );
                listener = moved;
            }
            accepted = listener.accept() => {
                match accepted {
                    Ok((stream, peer)) if OPEN_CONNECTIONS.load(Ordering::Relaxed) >= opts.max_connections as u64 => {
                        // Over the cap: closed at once, so memory stays
                        // bounded and the client can try another replica.
                        REFUSED_CONNECTIONS.fetch_add(1, Ordering::Relaxed);
                        debug!(%peer, "connection refused: at max_connections");
                        drop(stream);
                    }
                    Ok((stream, peer)) => serve(stream, peer),
                    Err(e) => {
                        // Usually out of file descriptors: back off briefly
                        // instead of spinning.
                        warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
            }
        }
    }
    drop(listener);
    info!(connections = graceful.count(), "draining");
    // First let busy keep-alive clients learn of the close in-band (their
    // next response says `Connection: close`), then close what is idle.
    proxy.begin_drain();
    tokio::time::sleep(opts.drain_timeout.min(Duration::from_secs(1))).await;
    // Errs only without receivers: no connection on the own loop is open.
    let _ = close_idle.send(());
    let deadline = tokio::time::Instant::now() + opts.drain_timeout;
    if tokio::time::timeout_at(deadline, graceful.shutdown()).await.is_err() {
        warn!("drain timeout passed with requests still in flight");
        return false;
    }
    // Upgraded connections (WebSockets) have no in-band way to be told:
    // they get the rest of the drain timeout to finish on their own.
    let tunnels = proxy.open_tunnels();
    if tunnels > 0 {
        info!(tunnels, "waiting for upgraded connections (WebSocket) to close");
        if !proxy.wait_for_tunnels(deadline).await {
            warn!(
                tunnels = proxy.open_tunnels(),
                "drain timeout passed with upgraded connections still open"
            );
            return false;
        }
    }
    info!("drained");
    true
}

/// A panic's message, when it has one.
fn panic_message(panic: &(dyn std::any::Any + Send)) -> &str {
    panic
        .downcast_ref::<&'static str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)")
}

/// The hyper builders a listener serves with: HTTP/1.1 only, for what
/// sluice's own loop hands over; HTTP/1.1 and HTTP/2, for the hyper engine.
struct Builders {
    own: auto::Builder<TokioExecutor>,
    hyper: auto::Builder<TokioExecutor>,
}

/// Serves one accepted connection (plain or TLS): with the sluice engine
/// on sluice's own HTTP/1.1 loop, then, if it needs hyper (see
/// `h1server`), on hyper; with the hyper engine on hyper alone. `watcher`
/// is held throughout, so the drain waits for the connection.
#[allow(clippy::too_many_arguments)]
async fn serve_connection<I>(
    engine: Engine,
    io: I,
    builder: &auto::Builder<TokioExecutor>,
    conn: Arc<ClientConn>,
    proxy: Arc<Proxy>,
    watcher: hyper_util::server::graceful::Watcher,
    opts: &ListenerOptions,
    idle_signal: watch::Receiver<()>,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    if engine == Engine::Hyper {
        conn.set_protocol(PROTOCOL_HYPER);
        // Boxed as the hand-over is: the task's size is its largest state.
        Box::pin(serve_io(builder, TokioIo::new(io), conn, proxy, watcher)).await;
        return;
    }
    match http1::serve(io, &conn, &proxy, opts, idle_signal.clone()).await {
        http1::Outcome::Closed => {}
        http1::Outcome::HandOff(io) if h2::is_preface(io.prefix()) => {
            conn.set_protocol(PROTOCOL_HTTP2);
            // Boxed: the task of every connection is as large as its
            // largest state, and HTTP/1.1 connections should not carry the
            // HTTP/2 server's.
            Box::pin(h2::serve(io, &conn, &proxy, opts, idle_signal)).await;
        }
        // Boxed for the same reason: few connections are handed to hyper.
        http1::Outcome::HandOff(io) => {
            conn.set_protocol(PROTOCOL_HTTP1_HYPER);
            Box::pin(serve_io(builder, TokioIo::new(io), conn, proxy, watcher)).await;
        }
    }
}

/// Serves one accepted connection (plain or TLS) until it ends.
async fn serve_io<I>(
    builder: &auto::Builder<TokioExecutor>,
    io: I,
    conn: Arc<ClientConn>,
    proxy: Arc<Proxy>,
    watcher: hyper_util::server::graceful::Watcher,
) where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let peer = conn.peer;
    let service = service_fn(move |req| {
        let proxy = Arc::clone(&proxy);
        let conn = Arc::clone(&conn);
        async move {
            let answer = proxy
                .handle(
                    req.map(ClientBody::Hyper),
                    &conn,
                    &mut Scratch::default(),
                    HeadersAs::Map,
                )
                .await;
            Ok::<_, std::convert::Infallible>(answer.response)
        }
    });
    let connection = builder.serve_connection_with_upgrades(io, service);
    if let Err(e) = watcher.watch(connection.into_owned()).await {
        debug!(%peer, error = %e, "connection ended with an error");
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
pub(crate) mod tests {
    use std::sync::Arc;
    use std::sync::atomic::Ordering;
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    use super::{ListenerOptions, serve};
    use sluice_routing::stats::CONNECTION_PANICS;

    use crate::options::PANIC_PATH;

    async fn exchange(s: &mut TcpStream, path: &str) -> std::io::Result<String> {
        s.write_all(format!("GET {path} HTTP/1.1\r\nhost: x\r\n\r\n").as_bytes())
            .await?;
        let mut buf = vec![0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await??;
        Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_panicking_connection_is_counted_and_harms_no_other() {
        // Its backend does not listen: every request is answered 502.
        let proxy = Arc::new(crate::forward::tests::test_proxy().0);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let opts = ListenerOptions {
            header_read_timeout: Duration::from_secs(10),
            max_header_bytes: 65536,
            max_headers: 100,
            drain_timeout: Duration::from_secs(1),
            max_connections: 100,
        };
        tokio::spawn(serve(listener, proxy, opts, std::future::pending()));

        let mut bystander = TcpStream::connect(addr).await.unwrap();
        assert!(exchange(&mut bystander, "/").await.unwrap().starts_with("HTTP/1.1 502"));
        let before = CONNECTION_PANICS.load(Ordering::Relaxed);

        let mut victim = TcpStream::connect(addr).await.unwrap();
        // The connection closes without an answer.
        let answer = exchange(&mut victim, PANIC_PATH).await;
        assert!(answer.as_deref().map_or(true, str::is_empty), "{answer:?}");
        assert_eq!(CONNECTION_PANICS.load(Ordering::Relaxed), before + 1);

        // The connection open beside it, and new ones, are served as before.
        assert!(exchange(&mut bystander, "/").await.unwrap().starts_with("HTTP/1.1 502"));
        let mut fresh = TcpStream::connect(addr).await.unwrap();
        assert!(exchange(&mut fresh, "/").await.unwrap().starts_with("HTTP/1.1 502"));
    }
}
