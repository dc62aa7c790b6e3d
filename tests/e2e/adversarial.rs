//! Hostile HTTP/1 input, as raw bytes, against the proxy with a recording
//! backend: each case checks what the client got and that the backend
//! received nothing for a rejected request.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common::*;

/// Sends `request`; returns the status sluice answered (0: closed without
/// an answer) and how many requests reached the backend.
async fn send(request: &[u8]) -> (u16, usize, String) {
    let (addr, rec) = Recorder::start().await;
    let proxy = start_proxy(&pool_toml("blue", 100, &[addr])).await;
    let res = raw_exchange(proxy.addr, request, Duration::from_secs(3)).await;
    let status = if res.is_empty() { 0 } else { raw_status(&res) };
    (status, rec.heads().len(), res)
}

#[tokio::test]
async fn malformed_requests_are_refused_and_never_forwarded() {
    let long_uri = format!("GET /{} HTTP/1.1\r\nhost: x\r\n\r\n", "a".repeat(70 * 1024));
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "content-length +5",
            b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: +5\r\n\r\nhello".to_vec(),
        ),
        (
            "content-length -1",
            b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: -1\r\n\r\n".to_vec(),
        ),
        (
            "content-length list",
            b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 5, 6\r\n\r\nhello!".to_vec(),
        ),
        (
            "transfer-encoding not chunked",
            b"POST / HTTP/1.1\r\nhost: x\r\ntransfer-encoding: gzip\r\n\r\n".to_vec(),
        ),
        (
            "chunked not last",
            b"POST / HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked, gzip\r\n\r\n0\r\n\r\n".to_vec(),
        ),
        (
            "transfer-encoding in HTTP/1.0",
            b"POST / HTTP/1.0\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n".to_vec(),
        ),
        (
            "obs-fold",
            b"GET / HTTP/1.1\r\nhost: x\r\nx-a: 1\r\n folded\r\n\r\n".to_vec(),
        ),
        ("bare CR", b"GET / HTTP/1.1\r\nhost: x\r\nx-a: 1\r2\r\n\r\n".to_vec()),
        (
            "NUL in a header",
            b"GET / HTTP/1.1\r\nhost: x\r\nx-a: 1\x002\r\n\r\n".to_vec(),
        ),
        (
            "space before colon",
            b"GET / HTTP/1.1\r\nhost: x\r\nx-a : 1\r\n\r\n".to_vec(),
        ),
        ("bad target", b"GET no-slash HTTP/1.1\r\nhost: x\r\n\r\n".to_vec()),
        ("bad method", b"G(T / HTTP/1.1\r\nhost: x\r\n\r\n".to_vec()),
        ("bad version", b"GET / HTTP/7.3\r\nhost: x\r\n\r\n".to_vec()),
        ("URI too long", long_uri.into_bytes()),
    ];
    let mut report = Vec::new();
    for (name, request) in cases {
        let (status, forwarded, res) = send(&request).await;
        report.push(format!("{name}: {status}"));
        assert_eq!(forwarded, 0, "{name}: the backend received it; sluice answered {res:?}");
        assert!(
            (400..500).contains(&status) || status == 0,
            "{name}: expected a 4xx or a closed connection, got {status}: {res:?}"
        );
    }
    eprintln!("{}", report.join("\n"));
}

#[tokio::test]
async fn bad_chunk_sizes_never_reach_the_backend_as_a_valid_request() {
    for body in [
        &b"zz\r\nhello\r\n0\r\n\r\n"[..],
        b"ffffffffffffffffff\r\nx\r\n0\r\n\r\n",
    ] {
        let mut req = b"POST / HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n".to_vec();
        req.extend_from_slice(body);
        let (status, _, res) = send(&req).await;
        // The head may reach the backend before the body proves bad; what
        // matters is that the client gets no success for a broken body.
        assert_ne!(status, 200, "{res:?}");
    }
}

/// CVE-2023-44487 ("rapid reset"): a client opening streams and resetting
/// them at once. sluice must end such a connection (GOAWAY) instead of
/// working through an unbounded queue, and keep serving everyone else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_h2_rapid_reset_flood_gets_goaway_and_others_are_served() {
    let (proxy, _blue, _green) = blue_green(100, "").await;
    let tcp = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    let (mut h2, conn) = h2::client::handshake(tcp).await.unwrap();
    let driver = tokio::spawn(conn);
    let mut sent = 0;
    let flood = async {
        for _ in 0..100_000 {
            let req = http::Request::get(format!("http://{}/", proxy.addr)).body(()).unwrap();
            h2 = match h2.ready().await {
                Ok(h2) => h2,
                Err(_) => break,
            };
            let Ok((_, mut stream)) = h2.send_request(req, true) else {
                break;
            };
            stream.send_reset(h2::Reason::CANCEL);
            sent += 1;
        }
    };
    tokio::time::timeout(Duration::from_secs(30), flood)
        .await
        .expect("the flood was neither served nor cut off");
    let ended = tokio::time::timeout(Duration::from_secs(10), driver)
        .await
        .expect("the connection was never closed")
        .unwrap();
    let err = ended.expect_err("the connection ended cleanly");
    assert!(
        err.is_go_away() || err.is_io() || err.reason().is_some(),
        "unexpected end: {err:?}"
    );
    assert!(sent < 100_000, "all {sent} resets were accepted");
    eprintln!("rapid reset: connection closed after {sent} reset streams ({err})");
    // Everyone else is still served.
    assert_eq!(get(&client(), &proxy.url("/"), &[]).await.0, 200);
}

/// Malformed HTTP/2: a HEADERS frame on stream 0 (a connection error) ends
/// the connection with GOAWAY(PROTOCOL_ERROR); nothing reaches a backend.
#[tokio::test]
async fn a_malformed_h2_frame_ends_the_connection() {
    let (backend, rec) = Recorder::start().await;
    let proxy = start_proxy(&pool_toml("blue", 100, &[backend])).await;
    let mut s = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    s.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await.unwrap();
    // SETTINGS (empty), then HEADERS on stream 0 with END_HEADERS.
    s.write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0]).await.unwrap();
    s.write_all(&[0, 0, 1, 1, 4, 0, 0, 0, 0, 0x82]).await.unwrap();
    let mut got = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut got)).await;
    // Somewhere in what came back: a GOAWAY frame (type 7) with
    // PROTOCOL_ERROR (1).
    let goaway = got
        .windows(9)
        .enumerate()
        .any(|(i, w)| w[3] == 7 && got.len() >= i + 17 && got[i + 13..i + 17] == [0, 0, 0, 1]);
    assert!(goaway, "no GOAWAY(PROTOCOL_ERROR) in {got:?}");
    assert_eq!(rec.heads().len(), 0);
}
