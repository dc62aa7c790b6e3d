//! One exchange against an `h2` server over an in-memory pipe: what the
//! backend receives and what comes back, for the three ways a request body
//! goes out (none, arrived whole, streamed) and the two ways it fails.

use super::*;
use crate::h2::RecvBody;
use crate::h2::recv::Consumed;
use crate::request_body::ClientBody;
use crate::test_peers::{body_end_reporter, defaults, echo, h2_backend, post};
use http_body_util::BodyExt;
use sluice_routing::ProxyError;

/// The `h2` crate's client to an `h2` server answering with `answer`.
async fn backend<F, Fut>(answer: F) -> H2Conn
where
    F: Fn(Request<h2::RecvStream>, h2::server::SendResponse<Bytes>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    H2Conn::handshake(h2_backend(defaults, answer)).await.unwrap()
}

#[tokio::test]
async fn a_body_that_has_arrived_goes_with_the_head_and_trailers_come_back() {
    let conn = backend(echo).await;
    let req = post(ClientBody::Read(Some(Bytes::from_static(b"hello"))), 100);
    let res = conn.exchange(req).await.unwrap();
    assert_eq!(res.status(), 200);
    let whole = res.into_body().collect().await.unwrap();
    assert_eq!(whole.trailers().unwrap()["grpc-status"], "0");
    assert_eq!(&whole.to_bytes()[..], b"hello");
}

#[tokio::test]
async fn a_streamed_body_reaches_the_backend_frame_by_frame() {
    let conn = backend(echo).await;
    let consumed = Arc::new(Consumed::new(Arc::default()));
    let (sink, body) = RecvBody::channel(consumed, None);
    assert!(sink.data(Bytes::from_static(b"part one, ")));
    let exchange = tokio::spawn(async move { conn.exchange(post(ClientBody::Stream(body), 100)).await });
    // The rest arrives after the head went out.
    tokio::task::yield_now().await;
    assert!(sink.data(Bytes::from_static(b"part two")));
    drop(sink);
    let res = exchange.await.unwrap().unwrap();
    let whole = res.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&whole[..], b"part one, part two");
}

#[tokio::test]
async fn a_streamed_body_past_the_limit_resets_the_stream_and_says_why() {
    let (answer, reset_rx) = body_end_reporter();
    let conn = backend(answer).await;
    let consumed = Arc::new(Consumed::new(Arc::default()));
    let (sink, body) = RecvBody::channel(consumed, None);
    let exchange = tokio::spawn(async move { conn.exchange(post(ClientBody::Stream(body), 10)).await });
    tokio::task::yield_now().await;
    assert!(sink.data(Bytes::from_static(b"0123456789")));
    assert!(sink.data(Bytes::from_static(b"one too many")));
    let err = exchange.await.unwrap().unwrap_err();
    assert_eq!(err.cause(), ProxyError::BodyTooLarge, "{err}");
    assert_eq!(reset_rx.await.unwrap(), Some(h2::Reason::CANCEL));
}

#[tokio::test]
async fn a_refused_stream_counts_as_unprocessed() {
    let conn = backend(|_req, mut respond| async move {
        respond.send_reset(h2::Reason::REFUSED_STREAM);
    })
    .await;
    let err = conn.exchange(post(ClientBody::Read(None), 100)).await.unwrap_err();
    assert_eq!(err.unprocessed(), Some(false), "{err}");
    assert_eq!(err.cause(), ProxyError::UpstreamReset);
}

#[tokio::test(start_paused = true)]
async fn a_backend_that_stops_answering_pings_is_given_up_with_its_calls() {
    let (client, server) = tokio::io::duplex(64 * 1024);
    tokio::spawn(async move {
        let mut conn = h2::server::handshake(server).await.unwrap();
        let _call = conn.accept().await;
        // Alive on the wire but no longer reading: no pong comes.
        std::future::pending::<()>().await;
        drop(conn);
    });
    let conn = H2Conn::handshake(client).await.unwrap();
    let started = tokio::time::Instant::now();
    let err = conn.exchange(post(ClientBody::Read(None), 100)).await.unwrap_err();
    // Pinged after KEEP_ALIVE with the call open, given up KEEP_ALIVE_TIMEOUT later.
    assert_eq!(started.elapsed(), KEEP_ALIVE + KEEP_ALIVE_TIMEOUT, "{err}");
    assert_eq!(err.cause(), ProxyError::UpstreamReset);
    assert!(conn.is_closed());
}

#[tokio::test(start_paused = true)]
async fn an_idle_connection_is_not_pinged() {
    let (client, server) = tokio::io::duplex(64 * 1024);
    tokio::spawn(async move {
        let conn = h2::server::handshake(server).await.unwrap();
        // Never read again: a ping would go unanswered and close the
        // connection, as in the test above.
        std::future::pending::<()>().await;
        drop(conn);
    });
    let conn = H2Conn::handshake(client).await.unwrap();
    tokio::time::sleep(3 * (KEEP_ALIVE + KEEP_ALIVE_TIMEOUT)).await;
    assert!(!conn.is_closed(), "pinged with no call open");
}
