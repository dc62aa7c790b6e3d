//! How a backend's HTTP/2 connections are shared: calls on one connection
//! while no response runs long, a connection of its own for what follows a
//! long stream, and spares let go once no long stream needs them. Against
//! an `h2` server on a TCP port that counts the connections it accepts
//! and those that ended.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::Response;
use http_body_util::BodyExt;
use sluice_config::{Engine, UpstreamProtocol};
use tokio::sync::Notify;

use super::*;
use crate::request_body::ClientBody;
use crate::test_peers::post;

#[derive(Default)]
struct Counts {
    accepted: AtomicUsize,
    ended: AtomicUsize,
    /// Ends the long stream (`/pkg.Service/Long`) once notified.
    finish: Notify,
}

/// A backend on 127.0.0.1: `/pkg.Service/Long` answers 256 KiB in 1 KiB
/// frames and ends when told; `/pkg.Service/Refused` is refused
/// (REFUSED_STREAM) on the first connection; anything else answers at once.
/// After `connections` connections it stops listening.
async fn backend(connections: usize) -> (Arc<Backend>, Arc<Counts>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let counts = Arc::new(Counts::default());
    let c = Arc::clone(&counts);
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let n = c.accepted.fetch_add(1, Ordering::SeqCst) + 1;
            if n == connections {
                drop(listener);
                serve(tcp, c, n == 1).await;
                return;
            }
            tokio::spawn(serve(tcp, Arc::clone(&c), n == 1));
        }
    });
    (Arc::new(Backend::new(&addr).unwrap()), counts)
}

/// One connection's `h2` server; counted as ended when it closes.
async fn serve(tcp: tokio::net::TcpStream, c: Arc<Counts>, first: bool) {
    let mut conn = h2::server::handshake(tcp).await.unwrap();
    while let Some(Ok((req, mut respond))) = conn.accept().await {
        if first && req.uri().path() == "/pkg.Service/Refused" {
            respond.send_reset(h2::Reason::REFUSED_STREAM);
            continue;
        }
        let c = Arc::clone(&c);
        tokio::spawn(async move {
            let long = req.uri().path() == "/pkg.Service/Long";
            let mut send = respond.send_response(Response::new(()), false).unwrap();
            if long {
                for _ in 0..256 {
                    send.send_data(Bytes::from_static(&[b'x'; 1024]), false).unwrap();
                }
                c.finish.notified().await;
            }
            send.send_data(Bytes::from_static(b"done"), true).unwrap();
        });
    }
    c.ended.fetch_add(1, Ordering::SeqCst);
}

async fn call(upstreams: &Upstreams, backend: &Arc<Backend>, path: &str) -> UpstreamBody {
    let mut req = post(ClientBody::Read(Some(Bytes::from_static(b"call"))), 100);
    *req.uri_mut() = format!("http://backend.test{path}").parse().unwrap();
    let sent = upstreams.send(backend, (UpstreamProtocol::Http2, Engine::Sluice), None, req);
    let (res, _lease) = sent.await.unwrap();
    res.into_body()
}

/// A long stream's body, read until it counts as one (128 KiB passed on).
async fn long_stream(upstreams: &Upstreams, backend: &Arc<Backend>) -> (UpstreamBody, usize) {
    let mut long = call(upstreams, backend, "/pkg.Service/Long").await;
    let mut passed = 0;
    while passed < 128 * 1024 {
        let frame = long.frame().await.unwrap().unwrap();
        passed += frame.into_data().map_or(0, |d| d.len());
    }
    (long, passed)
}

async fn until(what: &str, f: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !f() {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn calls_after_a_long_stream_get_a_connection_of_their_own_let_go_when_done() {
    let (backend, counts) = backend(usize::MAX).await;
    let upstreams = Upstreams::new(&sluice_config::Timeouts::default());
    let accepted = || counts.accepted.load(Ordering::SeqCst);

    // Short calls share one connection.
    for _ in 0..3 {
        let body = call(&upstreams, &backend, "/pkg.Service/Short").await;
        assert_eq!(&body.collect().await.unwrap().to_bytes()[..], b"done");
    }
    assert_eq!(accepted(), 1);

    // A stream that has passed on 128 KiB is a long one...
    let (long, passed) = long_stream(&upstreams, &backend).await;
    assert_eq!(accepted(), 1, "the stream went on the shared connection");
    // ...and the calls after it go on another connection, one for them all.
    for _ in 0..3 {
        let body = call(&upstreams, &backend, "/pkg.Service/Short").await;
        assert_eq!(&body.collect().await.unwrap().to_bytes()[..], b"done");
    }
    assert_eq!(accepted(), 2);
    // However long the stream lasts, that connection stays for the calls.
    let live = BTreeSet::from([backend.id()]);
    for _ in 0..4 {
        upstreams.sweep(&live);
    }
    let body = call(&upstreams, &backend, "/pkg.Service/Short").await;
    assert_eq!(&body.collect().await.unwrap().to_bytes()[..], b"done");
    assert_eq!(accepted(), 2, "no connection was dialled anew");
    assert_eq!(counts.ended.load(Ordering::SeqCst), 0);

    // The stream ends; the spare carries no long stream for two sweeps and
    // is let go: it closes, and calls go on the first connection again.
    counts.finish.notify_one();
    let rest = long.collect().await.unwrap().to_bytes();
    assert_eq!(passed + rest.len(), 256 * 1024 + 4);
    upstreams.sweep(&live);
    upstreams.sweep(&live);
    until("the spare connection to close", || {
        counts.ended.load(Ordering::SeqCst) == 1
    })
    .await;
    let body = call(&upstreams, &backend, "/pkg.Service/Short").await;
    assert_eq!(&body.collect().await.unwrap().to_bytes()[..], b"done");
    assert_eq!(accepted(), 2, "no connection was dialled");
    assert_eq!(counts.ended.load(Ordering::SeqCst), 1, "the first connection stays");
}

#[tokio::test]
async fn a_call_that_cannot_dial_a_connection_of_its_own_shares_the_long_streams() {
    // The backend takes one connection and no more.
    let (backend, counts) = backend(1).await;
    let upstreams = Upstreams::new(&sluice_config::Timeouts::default());
    let (_long, _) = long_stream(&upstreams, &backend).await;
    let body = call(&upstreams, &backend, "/pkg.Service/Short").await;
    assert_eq!(&body.collect().await.unwrap().to_bytes()[..], b"done");
    // For a while, the calls that follow do not try again (a dial may take
    // the connect timeout).
    assert!(upstreams.conns.of(backend.id()).h2_redial_paused());
    let body = call(&upstreams, &backend, "/pkg.Service/Short").await;
    assert_eq!(&body.collect().await.unwrap().to_bytes()[..], b"done");
    assert_eq!(counts.accepted.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_refused_call_goes_again_on_another_connection_or_after_a_pause_on_the_same() {
    let upstreams = Upstreams::new(&sluice_config::Timeouts::default());
    // Another connection is dialled for it at once.
    let (roomy, counts) = backend(usize::MAX).await;
    let body = call(&upstreams, &roomy, "/pkg.Service/Refused").await;
    assert_eq!(&body.collect().await.unwrap().to_bytes()[..], b"done");
    assert_eq!(counts.accepted.load(Ordering::SeqCst), 2);

    // A backend that takes one connection: the call goes again on it, after
    // a pause, until its retries are spent (every stream is refused there).
    let (single, counts) = backend(1).await;
    let body = call(&upstreams, &single, "/pkg.Service/Short").await;
    assert_eq!(&body.collect().await.unwrap().to_bytes()[..], b"done");
    let started = tokio::time::Instant::now();
    let mut req = post(ClientBody::Read(Some(Bytes::from_static(b"call"))), 100);
    *req.uri_mut() = "http://backend.test/pkg.Service/Refused".parse().unwrap();
    let sent = upstreams.send(&single, (UpstreamProtocol::Http2, Engine::Sluice), None, req);
    let err = sent.await.map(|_| ()).unwrap_err();
    assert!(
        matches!(err, UpstreamError::H2Client(crate::h2client::H2Error::Refused)),
        "{err:?}"
    );
    // The pauses between its six attempts: 25 + 50 + 100 + 200 + 400 ms.
    assert!(
        started.elapsed() >= Duration::from_millis(750),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(counts.accepted.load(Ordering::SeqCst), 1);
}
