//! Every failure mode maps to the status an operator expects, with a short
//! body and an `x-sluice-error` header; hostile framing never reaches the
//! backend.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use sluice_routing::{Actor, PoolChange};
use std::net::SocketAddr;
use std::time::Duration;

use crate::common::*;

const FAST_TIMEOUTS: &str = "[proxy.timeouts]\nupstream_response = \"500ms\"\nconnect = \"500ms\"\n";

async fn proxy_to(backend: SocketAddr) -> TestProxy {
    start_proxy(&format!("{FAST_TIMEOUTS}\n{}", pool_toml("blue", 100, &[backend]))).await
}

async fn expect_error(backend: SocketAddr, status: u16, code: &str) {
    let proxy = proxy_to(backend).await;
    let (got, headers, body) = tokio::time::timeout(Duration::from_secs(10), get(&client(), &proxy.url("/x"), &[]))
        .await
        .expect("the proxy hung instead of answering");
    assert_eq!(got, status, "{body}");
    assert_eq!(headers["x-sluice-error"], code);
    assert!(body.starts_with("sluice: ") && body.len() < 200, "{body:?}");
}

#[tokio::test]
async fn backend_refuses_connection_is_502() {
    expect_error(closed_port().await, 502, "upstream-connect-failed").await;
}

#[tokio::test]
async fn backend_resets_before_headers_is_502() {
    expect_error(fault_backend(Fault::ResetBeforeHeaders).await, 502, "upstream-reset").await;
}

#[tokio::test]
async fn backend_sends_malformed_http_is_502() {
    expect_error(fault_backend(Fault::Malformed).await, 502, "upstream-malformed").await;
}

#[tokio::test]
async fn backend_hangs_is_504_after_the_response_timeout() {
    let started = tokio::time::Instant::now();
    expect_error(fault_backend(Fault::Hang).await, 504, "upstream-timeout").await;
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn backend_resets_mid_body_aborts_the_client_response() {
    let proxy = proxy_to(fault_backend(Fault::ResetMidBody).await).await;
    let res = client()
        .request(http::Request::get(proxy.url("/")).body(Default::default()).unwrap())
        .await
        .unwrap();
    assert_eq!(res.status(), 200, "headers were already sent by the backend");
    use http_body_util::BodyExt;
    let body = tokio::time::timeout(Duration::from_secs(5), res.into_body().collect())
        .await
        .expect("the client response must end, not hang");
    assert!(
        body.is_err(),
        "a truncated body must surface as an error, not a short success"
    );
}

#[tokio::test]
async fn pool_without_backends_is_503() {
    let (proxy, _b, _g) = blue_green(100, "[proxy]\nallow_pool_override = true\n").await;
    proxy
        .routing
        .change_pool(
            "green",
            &PoolChange::Update {
                version: None,
                backends: Some(vec![]),
                matches: None,
                force: true,
            },
            &Actor::operator("test"),
        )
        .await
        .unwrap();
    let (status, headers, _) = get(&client(), &proxy.url("/"), &[("x-sluice-pool", "green")]).await;
    assert_eq!(status, 503);
    assert_eq!(headers["x-sluice-error"], "no-backend");
}

/// Raw request through the proxy to a recording backend.
async fn raw_via_recorder(request: &[u8], extra_config: &str) -> (String, Recorder) {
    let (addr, recorder) = Recorder::start().await;
    let proxy = start_proxy(&format!("{extra_config}\n{}", pool_toml("blue", 100, &[addr]))).await;
    let response = raw_exchange(proxy.addr, request, Duration::from_secs(3)).await;
    (response, recorder)
}

#[tokio::test]
async fn header_block_too_large_is_431() {
    let big = "a".repeat(70 * 1024);
    let req = format!("GET / HTTP/1.1\r\nhost: x\r\nx-big: {big}\r\n\r\n");
    let (res, rec) = raw_via_recorder(req.as_bytes(), "").await;
    assert_eq!(raw_status(&res), 431, "{res}");
    assert!(rec.heads().is_empty());
}

#[tokio::test]
async fn too_many_headers_is_431() {
    let mut req = String::from("GET / HTTP/1.1\r\nhost: x\r\n");
    for i in 0..120 {
        req.push_str(&format!("x-h{i}: v\r\n"));
    }
    req.push_str("\r\n");
    let (res, rec) = raw_via_recorder(req.as_bytes(), "").await;
    assert_eq!(raw_status(&res), 431, "{res}");
    assert!(rec.heads().is_empty());
}

#[tokio::test]
async fn configured_header_limits_are_honoured() {
    let mut req = String::from("GET / HTTP/1.1\r\nhost: x\r\n");
    for i in 0..15 {
        req.push_str(&format!("x-h{i}: v\r\n"));
    }
    req.push_str("\r\n");
    let (res, _) = raw_via_recorder(req.as_bytes(), "[proxy.limits]\nmax_headers = 10\n").await;
    assert_eq!(raw_status(&res), 431, "{res}");
}

#[tokio::test]
async fn duplicate_host_is_400() {
    let (res, rec) = raw_via_recorder(b"GET / HTTP/1.1\r\nhost: a\r\nhost: b\r\n\r\n", "").await;
    assert_eq!(raw_status(&res), 400, "{res}");
    assert!(res.contains("x-sluice-error: duplicate-host"), "{res}");
    assert!(rec.heads().is_empty());
}

#[tokio::test]
async fn missing_host_on_http11_is_400() {
    let (res, rec) = raw_via_recorder(b"GET / HTTP/1.1\r\nx: y\r\n\r\n", "").await;
    assert_eq!(raw_status(&res), 400, "{res}");
    assert!(rec.heads().is_empty());
}

#[tokio::test]
async fn conflicting_content_lengths_are_400() {
    let req = b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 5\r\ncontent-length: 6\r\n\r\nhello!";
    let (res, rec) = raw_via_recorder(req, "").await;
    assert_eq!(raw_status(&res), 400, "{res}");
    assert!(rec.heads().is_empty());
}

#[tokio::test]
async fn content_length_with_transfer_encoding_never_reaches_the_backend() {
    let req = b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 4\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nhost: x\r\n\r\n";
    let (res, rec) = raw_via_recorder(req, "").await;
    // Processed as chunked, then the connection is closed, so the bytes
    // after the chunked body are never read as a second request.
    assert_eq!(raw_status(&res), 200, "{res}");
    assert_eq!(res.matches("HTTP/1.1").count(), 1, "a second response came back: {res}");
    assert!(res.to_ascii_lowercase().contains("connection: close"), "{res}");
    let heads = rec.heads();
    assert_eq!(heads.len(), 1, "backend received {heads:?}");
    let h = rec.header_map(0);
    assert!(
        !(h.contains_key("content-length") && h.contains_key("transfer-encoding")),
        "backend got both framings: {}",
        heads[0]
    );
    assert!(!heads[0].contains("smuggled"));
}

#[tokio::test]
async fn declared_body_over_the_limit_is_413() {
    let req = b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 2000\r\n\r\n";
    let (res, rec) = raw_via_recorder(req, "[proxy.limits]\nmax_request_body_bytes = 1000\n").await;
    assert_eq!(raw_status(&res), 413, "{res}");
    assert!(rec.heads().is_empty());
}

#[tokio::test]
async fn chunked_body_over_the_limit_is_413() {
    let backend = spawn_backend("blue", "v1", any_addr()).await.unwrap();
    let proxy = start_proxy(&format!(
        "[proxy.limits]\nmax_request_body_bytes = 1000\n{}",
        pool_toml("blue", 100, &[backend.addr])
    ))
    .await;
    let chunk = format!("{:x}\r\n{}\r\n", 800, "a".repeat(800));
    let req = format!("POST / HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n{chunk}{chunk}0\r\n\r\n");
    let res = raw_exchange(proxy.addr, req.as_bytes(), Duration::from_secs(3)).await;
    assert_eq!(raw_status(&res), 413, "{res}");
}

#[tokio::test]
async fn hop_by_hop_headers_are_removed_and_forwarding_headers_set() {
    let req = b"GET /p?q=1 HTTP/1.1\r\nhost: shop.example\r\nconnection: keep-alive, x-private\r\nx-private: s\r\nkeep-alive: 5\r\nproxy-authorization: t\r\nte: trailers\r\nx-forwarded-for: 203.0.113.7\r\nupgrade: h2c\r\nhttp2-settings: AAMAAABkAAQAAP__\r\nx-app: kept\r\n\r\n";
    let (res, rec) = raw_via_recorder(req, "").await;
    assert_eq!(raw_status(&res), 200, "{res}");
    let heads = rec.heads();
    assert!(heads[0].starts_with("GET /p?q=1 HTTP/1.1\r\n"), "{}", heads[0]);
    let h = rec.header_map(0);
    for gone in [
        "x-private",
        "keep-alive",
        "proxy-authorization",
        "te",
        "upgrade",
        "http2-settings",
    ] {
        assert!(!h.contains_key(gone), "{gone} was forwarded: {}", heads[0]);
    }
    assert_eq!(h["host"], ["shop.example"]);
    assert_eq!(h["x-app"], ["kept"]);
    assert_eq!(h["x-forwarded-for"], ["203.0.113.7, 127.0.0.1"]);
    assert_eq!(h["x-forwarded-proto"], ["http"]);
    assert_eq!(h["x-forwarded-host"], ["shop.example"]);
    assert_eq!(h["forwarded"], ["for=127.0.0.1;proto=http"]);
}

/// A keep-alive backend that closes each connection 50 ms after answering,
/// without saying so: the proxy must notice, or retry the unsent request,
/// rather than fail it.
async fn closes_idle_connections() -> (SocketAddr, std::sync::Arc<std::sync::atomic::AtomicU64>) {
    use std::sync::atomic::{AtomicU64, Ordering};
    use tokio::io::AsyncWriteExt;
    let listener = tokio::net::TcpListener::bind(ANY).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let closed = std::sync::Arc::new(AtomicU64::new(0));
    let counter = closed.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            let counter = counter.clone();
            tokio::spawn(async move {
                while read_head(&mut s).await.is_some() {
                    let _ = s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok").await;
                    let next = tokio::time::timeout(Duration::from_millis(50), s.peek(&mut [0u8; 1])).await;
                    if next.is_err() {
                        break;
                    }
                }
                drop(s);
                counter.fetch_add(1, Ordering::SeqCst);
            });
        }
    });
    (addr, closed)
}

#[tokio::test]
async fn backend_closing_idle_keepalive_connections_fails_no_request() {
    use std::sync::atomic::Ordering;
    let (addr, closed) = closes_idle_connections().await;
    let proxy = proxy_to(addr).await;
    let c = client();
    for round in 0..5u64 {
        let (status, _, body) = get(&c, &proxy.url("/"), &[]).await;
        assert_eq!(status, 200, "round {round}: {body}");
        // Wait until the backend has dropped the pooled connection.
        wait_until(Duration::from_secs(5), "backend to close the idle connection", || {
            closed.load(Ordering::SeqCst) > round
        })
        .await;
    }
}

#[tokio::test]
async fn slow_request_head_is_cut_off_and_others_are_served() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let backend = spawn_backend("blue", "v1", any_addr()).await.unwrap();
    let proxy = start_proxy(&format!(
        "[proxy.timeouts]\nrequest_header = \"300ms\"\n{}",
        pool_toml("blue", 100, &[backend.addr])
    ))
    .await;
    let slow = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    let (mut reader, mut writer) = slow.into_split();
    let started = tokio::time::Instant::now();
    // Headers at 10 bytes/s, never finished.
    let drip = tokio::spawn(async move {
        for b in b"GET / HTTP/1.1\r\nhost: x\r\nx-slow: aaaaaaaaaaaaaaaaaaaa" {
            if writer.write_all(&[*b]).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    // Meanwhile an ordinary client is served at once.
    let (c, url) = (client(), proxy.url("/"));
    assert_eq!(get(&c, &url, &[]).await.0, 200);
    let mut buf = [0u8; 1024];
    let read = tokio::time::timeout(Duration::from_secs(5), reader.read(&mut buf))
        .await
        .expect("the slow connection was never closed");
    let closed_at = started.elapsed();
    let answer = String::from_utf8_lossy(&buf);
    assert!(
        matches!(read, Ok(0) | Err(_)) || answer.starts_with("HTTP/1.1 408"),
        "unexpected answer: {answer}"
    );
    assert!(
        closed_at < Duration::from_secs(2),
        "slow client held on for {closed_at:?}"
    );
    drip.abort();
    assert_eq!(
        backend.knobs.received(),
        1,
        "the slow request must never reach the backend"
    );
}
