//! The client against an independent HTTP/2 server (the `h2` crate's) over
//! an in-memory pipe, and against hand-written frames for what no correct
//! server sends.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::BodyExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::oneshot;

use super::driver::{KEEP_ALIVE, KEEP_ALIVE_TIMEOUT};
use super::{ExchangeError, H2Client, H2Error};
use crate::h2::RecvBody;
use crate::h2::frame;
use crate::h2::recv::Consumed;
use crate::request_body::{ClientBody, RequestBody, RequestBodyError};
use crate::test_peers::{Recorded, body_end_reporter, defaults, echo, h2_backend, post};

/// sluice's client to an `h2` server answering with `answer`.
fn backend<F, Fut>(settings: fn(&mut h2::server::Builder), answer: F) -> H2Client
where
    F: Fn(Request<h2::RecvStream>, h2::server::SendResponse<Bytes>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    H2Client::start(h2_backend(settings, answer))
}

#[tokio::test]
async fn a_call_goes_out_whole_and_its_head_body_and_trailers_come_back() {
    let conn = backend(defaults, echo);
    let req = post(ClientBody::Read(Some(Bytes::from_static(b"hello"))), 100);
    let res = conn.exchange(req).await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.version(), http::Version::HTTP_2);
    let h = res.headers().clone();
    assert_eq!(h["x-method"], "POST");
    assert_eq!(h["x-uri"], "http://backend.test/pkg.Service/Call");
    assert_eq!(h["x-got-te"], "trailers");
    assert_eq!(h["x-got-content-type"], "application/grpc");
    assert_eq!(h["x-got-content-length"], "5");
    let whole = res.into_body().collect().await.unwrap();
    assert_eq!(whole.trailers().unwrap()["grpc-status"], "0");
    assert_eq!(&whole.to_bytes()[..], b"hello");
}

#[tokio::test]
async fn many_calls_share_the_connection_and_big_bodies_pass_both_ways() {
    let conn = Arc::new(backend(defaults, echo));
    // 3 MiB each way: past every initial window, so WINDOW_UPDATEs must flow.
    let big = Bytes::from((0..3 * 1024 * 1024).map(|i| (i % 251) as u8).collect::<Vec<u8>>());
    let mut calls = Vec::new();
    for i in 0..20 {
        let conn = Arc::clone(&conn);
        let body = if i % 5 == 0 {
            big.clone()
        } else {
            Bytes::from(format!("call {i}"))
        };
        calls.push(tokio::spawn(async move {
            let res = conn
                .exchange(post(ClientBody::Read(Some(body.clone())), u64::MAX))
                .await
                .unwrap();
            let got = res.into_body().collect().await.unwrap().to_bytes();
            assert!(got == body, "call {i}: {} bytes back of {}", got.len(), body.len());
        }));
    }
    for call in calls {
        call.await.unwrap();
    }
    assert!(!conn.is_closed());
}

#[tokio::test]
async fn a_streamed_body_reaches_the_backend_frame_by_frame() {
    let conn = backend(defaults, echo);
    let consumed = Arc::new(Consumed::new(Arc::default()));
    let (sink, body) = RecvBody::channel(consumed, None);
    assert!(sink.data(Bytes::from_static(b"part one, ")));
    let exchange = tokio::spawn(async move { conn.exchange(post(ClientBody::Stream(body), 100)).await });
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
    let conn = backend(defaults, answer);
    let consumed = Arc::new(Consumed::new(Arc::default()));
    let (sink, body) = RecvBody::channel(consumed, None);
    let exchange = tokio::spawn(async move { conn.exchange(post(ClientBody::Stream(body), 10)).await });
    tokio::task::yield_now().await;
    assert!(sink.data(Bytes::from_static(b"0123456789")));
    assert!(sink.data(Bytes::from_static(b"one too many")));
    let err = exchange.await.unwrap().unwrap_err();
    assert!(
        matches!(err, ExchangeError::RequestBody(RequestBodyError::TooLarge)),
        "{err:?}"
    );
    assert_eq!(reset_rx.await.unwrap(), Some(h2::Reason::CANCEL));
}

#[tokio::test]
async fn a_refused_stream_counts_as_unprocessed() {
    let conn = backend(defaults, |_req, mut respond| async move {
        respond.send_reset(h2::Reason::REFUSED_STREAM);
    });
    let err = conn.exchange(post(ClientBody::Read(None), 100)).await.unwrap_err();
    assert!(matches!(err, ExchangeError::H2(H2Error::Refused)), "{err:?}");
    assert_eq!(H2Error::Refused.unprocessed(), Some(false));
}

#[tokio::test]
async fn calls_beyond_the_backends_stream_limit_wait_for_a_free_stream() {
    fn one_at_a_time(b: &mut h2::server::Builder) {
        b.max_concurrent_streams(1);
    }
    let conn = Arc::new(backend(one_at_a_time, |req, respond| async move {
        tokio::time::sleep(Duration::from_millis(20)).await;
        echo(req, respond).await;
    }));
    // The backend's SETTINGS first, so the limit is known.
    let first = conn.exchange(post(ClientBody::Read(None), 100)).await.unwrap();
    drop(first.into_body().collect().await.unwrap());
    let calls: Vec<_> = (0..6)
        .map(|i| {
            let conn = Arc::clone(&conn);
            tokio::spawn(async move {
                let body = Bytes::from(format!("call {i}"));
                let res = conn
                    .exchange(post(ClientBody::Read(Some(body.clone())), 100))
                    .await
                    .unwrap();
                assert_eq!(res.into_body().collect().await.unwrap().to_bytes(), body);
            })
        })
        .collect();
    for call in calls {
        call.await.unwrap();
    }
}

#[tokio::test]
async fn a_response_dropped_midway_resets_the_stream() {
    let (reset_tx, reset_rx) = oneshot::channel();
    let reset_tx = Arc::new(std::sync::Mutex::new(Some(reset_tx)));
    let conn = backend(defaults, move |_req, mut respond| {
        let reset_tx = Arc::clone(&reset_tx);
        async move {
            let mut send = respond.send_response(Response::new(()), false).unwrap();
            send.send_data(Bytes::from_static(b"first"), false).unwrap();
            let reason = std::future::poll_fn(|cx| send.poll_reset(cx)).await.ok();
            if let Some(tx) = reset_tx.lock().unwrap().take() {
                let _ = tx.send(reason);
            }
        }
    });
    let res = conn.exchange(post(ClientBody::Read(None), 100)).await.unwrap();
    let mut body = res.into_body();
    let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
    assert_eq!(&first[..], b"first");
    drop(body);
    assert_eq!(reset_rx.await.unwrap(), Some(h2::Reason::CANCEL));
}

#[tokio::test]
async fn a_graceful_goaway_lets_open_streams_finish_and_takes_no_new_ones() {
    let (client, server) = tokio::io::duplex(64 * 1024);
    tokio::spawn(async move {
        let mut conn = h2::server::handshake(server).await.unwrap();
        let (_req1, mut respond1) = conn.accept().await.unwrap().unwrap();
        let (_req3, _respond3) = conn.accept().await.unwrap().unwrap();
        // A graceful shutdown names the last stream it will process: 3
        // here, as both were accepted; then stream 1 is answered.
        conn.graceful_shutdown();
        let mut send = respond1.send_response(Response::new(()), false).unwrap();
        send.send_data(Bytes::from_static(b"done"), true).unwrap();
        while conn.accept().await.is_some() {}
    });
    let conn = Arc::new(H2Client::start(client));
    let (a, b) = (Arc::clone(&conn), Arc::clone(&conn));
    let one = tokio::spawn(async move { a.exchange(post(ClientBody::Read(None), 100)).await });
    tokio::task::yield_now().await;
    let three = tokio::spawn(async move { b.exchange(post(ClientBody::Read(None), 100)).await });
    let res = one.await.unwrap().unwrap();
    assert_eq!(&res.into_body().collect().await.unwrap().to_bytes()[..], b"done");
    assert!(conn.is_closed(), "a connection going away takes no new streams");
    drop(three);
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
    let conn = H2Client::start(client);
    let started = tokio::time::Instant::now();
    let err = conn.exchange(post(ClientBody::Read(None), 100)).await.unwrap_err();
    assert_eq!(started.elapsed(), KEEP_ALIVE + KEEP_ALIVE_TIMEOUT, "{err:?}");
    assert!(matches!(err, ExchangeError::H2(H2Error::Lost(_))), "{err:?}");
    assert!(conn.is_closed());
}

#[tokio::test(start_paused = true)]
async fn an_idle_connection_is_not_pinged() {
    let (client, server) = tokio::io::duplex(64 * 1024);
    tokio::spawn(async move {
        let conn = h2::server::handshake(server).await.unwrap();
        std::future::pending::<()>().await;
        drop(conn);
    });
    let conn = H2Client::start(client);
    tokio::time::sleep(3 * (KEEP_ALIVE + KEEP_ALIVE_TIMEOUT)).await;
    assert!(!conn.is_closed(), "pinged with no call open");
}

/// A backend written frame by frame: reads the client's preface, sends
/// SETTINGS and then `frames` once the first request's HEADERS is in.
async fn raw_backend(frames: Vec<u8>) -> (H2Client, tokio::task::JoinHandle<Vec<u8>>) {
    let (client, mut server) = tokio::io::duplex(64 * 1024);
    let task = tokio::spawn(async move {
        let mut seen = Vec::new();
        let mut buf = [0u8; 4096];
        let mut out = Vec::new();
        frame::write_settings(&mut out, &[]);
        server.write_all(&out).await.unwrap();
        // Until the client's HEADERS (type 1) on stream 1 has arrived.
        while !seen.windows(5).any(|w| w == [frame::HEADERS, 0x5, 0, 0, 0]) {
            let n = server.read(&mut buf).await.unwrap();
            assert!(n > 0);
            seen.extend_from_slice(&buf[..n]);
        }
        server.write_all(&frames).await.unwrap();
        // What the client sends after, until it closes.
        while let Ok(n) = server.read(&mut buf).await {
            if n == 0 {
                break;
            }
            seen.extend_from_slice(&buf[..n]);
        }
        seen
    });
    (H2Client::start(client), task)
}

fn get() -> Request<RequestBody> {
    Request::get("http://backend.test/")
        .body(RequestBody::new(ClientBody::Read(None), 0))
        .unwrap()
}

#[tokio::test]
async fn an_informational_head_is_skipped_and_a_field_http2_forbids_is_refused() {
    let mut frames = Vec::new();
    // 103 (static :status literal), then 200 with `connection: close`.
    frame::write_headers(&mut frames, 1, b"\x08\x03103", false, frame::MAX_FRAME);
    frame::write_headers(
        &mut frames,
        1,
        b"\x88\x00\x0aconnection\x05close",
        true,
        frame::MAX_FRAME,
    );
    let (conn, _task) = raw_backend(frames).await;
    let err = conn.exchange(get()).await.unwrap_err();
    assert!(
        matches!(err, ExchangeError::H2(H2Error::Malformed("connection-specific field"))),
        "{err:?}"
    );
    assert!(!conn.is_closed(), "a stream error leaves the connection");
}

#[tokio::test]
async fn a_body_longer_than_its_content_length_is_refused() {
    let mut frames = Vec::new();
    // 200, content-length: 3 (static name 28), then 5 bytes.
    frame::write_headers(&mut frames, 1, b"\x88\x0f\x0d\x013", false, frame::MAX_FRAME);
    frame::write_data(&mut frames, 1, b"12345", true);
    let (conn, _task) = raw_backend(frames).await;
    let res = conn.exchange(get()).await.unwrap();
    let err = res.into_body().collect().await.unwrap_err();
    assert_eq!(err, H2Error::Malformed("content-length does not match the body"));
}

#[tokio::test]
async fn a_push_promise_closes_the_connection_with_a_protocol_error() {
    let mut frames = Vec::new();
    frame::write_head(&mut frames, 4, frame::PUSH_PROMISE, frame::END_HEADERS, 1);
    frames.extend_from_slice(&2u32.to_be_bytes());
    let (conn, task) = raw_backend(frames).await;
    let err = conn.exchange(get()).await.unwrap_err();
    assert!(matches!(err, ExchangeError::H2(H2Error::Protocol(_))), "{err:?}");
    assert!(conn.is_closed());
    drop(conn);
    let seen = task.await.unwrap();
    // GOAWAY (type 7) with PROTOCOL_ERROR (1) at the end.
    let goaway = seen.len() - 17;
    assert_eq!(seen[goaway + 3], frame::GOAWAY);
    assert_eq!(&seen[goaway + 13..], &[0, 0, 0, 1]);
}

#[tokio::test]
async fn a_stream_above_the_goaways_last_fails_as_unprocessed() {
    let mut frames = Vec::new();
    frame::write_goaway(&mut frames, 0, frame::Reason::NoError);
    let (conn, _task) = raw_backend(frames).await;
    let err = conn.exchange(get()).await.unwrap_err();
    assert!(matches!(err, ExchangeError::H2(H2Error::GoAway)), "{err:?}");
    assert_eq!(H2Error::GoAway.unprocessed(), Some(true));
    assert!(conn.is_closed());
}

#[tokio::test]
async fn a_trailers_only_answer_is_a_head_that_ends_the_body() {
    let conn = backend(defaults, |_req, mut respond| async move {
        let res = Response::builder().header("grpc-status", "5").body(()).unwrap();
        respond.send_response(res, true).unwrap();
    });
    let res = conn.exchange(post(ClientBody::Read(None), 100)).await.unwrap();
    assert_eq!(res.headers()["grpc-status"], "5");
    let body = res.into_body();
    assert!(http_body::Body::is_end_stream(&body), "the head ended the stream");
    assert_eq!(http_body::Body::size_hint(&body).exact(), Some(0));
}

/// How many HEADERS frames each write carried (writes without one left out).
fn heads_per_write(writes: &[Vec<u8>]) -> Vec<usize> {
    let mut counts = Vec::new();
    for write in writes {
        // The connection preface (24 bytes) comes before the first frames.
        let mut at = if write.starts_with(b"PRI * HTTP/2.0") { 24 } else { 0 };
        let mut heads = 0;
        while let Some(head) = write.get(at..).and_then(frame::Head::parse) {
            heads += usize::from(head.kind == frame::HEADERS);
            at += frame::HEAD_LEN + head.len;
        }
        if heads > 0 {
            counts.push(heads);
        }
    }
    counts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn calls_opened_in_the_same_turn_go_out_in_one_write() {
    let writes = Arc::new(std::sync::Mutex::new(Vec::new()));
    let io = Recorded {
        io: h2_backend(defaults, echo),
        writes: Arc::clone(&writes),
    };
    let conn = Arc::new(H2Client::start(io));
    // The handshake and a first call, alone.
    let first = conn.exchange(post(ClientBody::Read(None), 100)).await.unwrap();
    drop(first.into_body().collect().await.unwrap());
    assert_eq!(heads_per_write(&writes.lock().unwrap()), [1]);
    writes.lock().unwrap().clear();
    // Four calls made ready together on the worker, as the connections a
    // poll of the sockets found readable are.
    let conn2 = Arc::clone(&conn);
    let calls = tokio::spawn(async move {
        let calls: Vec<_> = (0..4)
            .map(|_| {
                let conn = Arc::clone(&conn2);
                tokio::spawn(async move {
                    let res = conn.exchange(post(ClientBody::Read(None), 100)).await.unwrap();
                    res.into_body().collect().await.unwrap();
                })
            })
            .collect();
        for call in calls {
            call.await.unwrap();
        }
    });
    calls.await.unwrap();
    assert_eq!(
        heads_per_write(&writes.lock().unwrap()),
        [4],
        "one write for the four heads"
    );
}
