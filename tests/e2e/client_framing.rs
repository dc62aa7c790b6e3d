//! Clients on sluice's own HTTP/1.1 server loop (`h1server`): pipelined
//! requests answered in order, `Connection: close` and HEAD honoured, small
//! bodies read with their head, a connection handed to hyper midway (a
//! chunked body) keeps working, unusual heads get hyper's answers, a client
//! that leaves mid-request or mid-stream cancels the exchange with the
//! backend, and the drain closes idle connections.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::common::*;

async fn proxy_to(backend: SocketAddr) -> TestProxy {
    start_proxy(&pool_toml("blue", 100, &[backend])).await
}

/// Waits up to `within` for sluice to close `conn`; panics with `what` if
/// it stays open.
async fn wait_for_close(conn: &mut TcpStream, within: Duration, what: &str) {
    let mut left = Vec::new();
    let closed = tokio::time::timeout(within, conn.read_to_end(&mut left)).await;
    assert!(closed.is_ok(), "{what}");
}

/// A demo backend behind a proxy whose header timeout (the keep-alive
/// idle limit) is `timeout`.
async fn proxy_with_header_timeout(timeout: &str) -> (DemoBackend, TestProxy) {
    let backend = spawn_backend("blue", "v1", any_addr()).await.unwrap();
    let proxy = start_proxy(&format!(
        "[proxy.timeouts]\nrequest_header = \"{timeout}\"\n{}",
        pool_toml("blue", 100, &[backend.addr])
    ))
    .await;
    (backend, proxy)
}

fn count_responses(raw: &str) -> usize {
    raw.matches("HTTP/1.1 ").count()
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order_on_one_connection() {
    let backend = spawn_backend("blue", "v1", any_addr()).await.unwrap();
    let proxy = proxy_to(backend.addr).await;
    let raw = raw_exchange(
        proxy.addr,
        b"GET /a HTTP/1.1\r\nhost: x\r\n\r\nGET /b HTTP/1.1\r\nhost: x\r\n\r\n\
          GET /c HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(count_responses(&raw), 3, "{raw}");
    assert_eq!(raw.matches("HTTP/1.1 200 OK").count(), 3, "{raw}");
    // The last one says the connection closes, and it did (raw_exchange
    // returned before its 5 s).
    let last = raw.rsplit("HTTP/1.1 ").next().unwrap();
    assert!(last.contains("connection: close"), "{last}");
    assert_eq!(backend.knobs.received(), 3);
}

#[tokio::test]
async fn bodies_small_or_chunked_reach_the_backend_and_the_connection_keeps_working() {
    let backend = bulk_backend(10, 3).await;
    let proxy = proxy_to(backend).await;
    // A small body with its head (the own loop), then a chunked one (the
    // connection moves to hyper there), then an ordinary request.
    let raw = raw_exchange(
        proxy.addr,
        b"GET /first HTTP/1.1\r\nhost: x\r\n\r\n\
          POST /count HTTP/1.1\r\nhost: x\r\ncontent-length: 5\r\n\r\nhello\
          POST /count HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n7\r\nchunked\r\n0\r\n\r\n\
          GET /last HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(raw.matches("HTTP/1.1 200 OK").count(), 4, "{raw}");
    // The POSTs' answers are the byte counts the backend received.
    assert!(raw.contains("\r\n\r\n5HTTP/1.1"), "{raw}");
    assert!(raw.contains("\r\n\r\n7HTTP/1.1"), "{raw}");
}

#[tokio::test]
async fn head_keeps_the_backends_length_and_sends_no_body() {
    let backend = spawn_backend("blue", "v1", any_addr()).await.unwrap();
    let proxy = proxy_to(backend.addr).await;
    let raw = raw_exchange(
        proxy.addr,
        b"HEAD / HTTP/1.1\r\nhost: x\r\n\r\nGET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
        Duration::from_secs(5),
    )
    .await;
    let (head_answer, get_answer) = raw.split_at(raw.rfind("HTTP/1.1 ").unwrap());
    assert!(head_answer.starts_with("HTTP/1.1 200"), "{raw}");
    assert!(head_answer.contains("content-length: "), "{raw}");
    // Nothing follows the HEAD answer's head: the GET's answer starts at once.
    assert!(head_answer.ends_with("\r\n\r\n"), "{raw}");
    assert!(get_answer.starts_with("HTTP/1.1 200"), "{raw}");
    assert!(get_answer.contains("date: "), "{get_answer}");
}

#[tokio::test]
async fn unusual_heads_get_hyper_answers_after_ordinary_requests() {
    let backend = spawn_backend("blue", "v1", any_addr()).await.unwrap();
    let proxy = proxy_to(backend.addr).await;
    // An ordinary request first (own loop), then a malformed header line.
    let raw = raw_exchange(
        proxy.addr,
        b"GET / HTTP/1.1\r\nhost: x\r\n\r\nGET / HTTP/1.1\r\nhost: x\r\nbad header line\r\n\r\n",
        Duration::from_secs(5),
    )
    .await;
    assert!(raw.starts_with("HTTP/1.1 200"), "{raw}");
    let second = raw.rsplit("HTTP/1.1 ").next().unwrap();
    assert!(second.starts_with("400"), "{raw}");
    // HTTP/1.0 and an h2c upgrade request are hyper's too, and are served.
    let raw = raw_exchange(proxy.addr, b"GET / HTTP/1.0\r\nhost: x\r\n\r\n", Duration::from_secs(5)).await;
    assert!(
        raw.starts_with("HTTP/1.0 200") || raw.starts_with("HTTP/1.1 200"),
        "{raw}"
    );
    let raw = raw_exchange(
        proxy.addr,
        b"GET / HTTP/1.1\r\nhost: x\r\nconnection: upgrade, http2-settings\r\nupgrade: h2c\r\n\
          http2-settings: AAMAAABkAAQAAP__\r\n\r\n",
        Duration::from_secs(2),
    )
    .await;
    assert!(raw.starts_with("HTTP/1.1 200"), "{raw}");
    // The malformed request never reached the backend.
    assert_eq!(backend.knobs.received(), 3);
}

/// A backend that answers `GET /watched` with `answer` and then neither
/// finishes nor closes, noting when it got the request and when the proxy
/// closed its side; other requests (health probes) get a short 200.
struct Watched {
    addr: SocketAddr,
    got_request: Arc<AtomicBool>,
    saw_close: Arc<AtomicBool>,
}

impl Watched {
    async fn start(answer: &'static [u8]) -> Watched {
        let listener = TcpListener::bind(ANY).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (got_request, saw_close) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicBool::new(false)));
        let (got, closed) = (Arc::clone(&got_request), Arc::clone(&saw_close));
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let (got, closed) = (Arc::clone(&got), Arc::clone(&closed));
                tokio::spawn(async move {
                    let head = read_head(&mut stream).await.unwrap_or_default();
                    if !head.starts_with("GET /watched ") {
                        let _ = stream
                            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                            .await;
                        return;
                    }
                    let _ = stream.write_all(answer).await;
                    got.store(true, Ordering::SeqCst);
                    let mut byte = [0u8; 1];
                    if matches!(stream.read(&mut byte).await, Ok(0) | Err(_)) {
                        closed.store(true, Ordering::SeqCst);
                    }
                });
            }
        });
        Watched {
            addr,
            got_request,
            saw_close,
        }
    }

    /// Sends the request through `proxy`, waits until the backend has it
    /// and `seen` has reached the client, then leaves; the proxy must close
    /// its backend connection soon after.
    async fn client_leaves_after(&self, proxy: &TestProxy, seen: &str) {
        let mut client = TcpStream::connect(proxy.addr).await.unwrap();
        client
            .write_all(b"GET /watched HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        wait_until(Duration::from_secs(5), "the backend to get the request", || {
            self.got_request.load(Ordering::SeqCst)
        })
        .await;
        let mut got = Vec::new();
        while !String::from_utf8_lossy(&got).contains(seen) {
            let mut chunk = [0u8; 1024];
            let n = tokio::time::timeout(Duration::from_secs(5), client.read(&mut chunk))
                .await
                .expect("the expected bytes never came")
                .unwrap();
            assert!(n > 0, "closed early: {}", String::from_utf8_lossy(&got));
            got.extend_from_slice(&chunk[..n]);
        }
        drop(client);
        wait_until(
            Duration::from_secs(5),
            "the proxy to close the backend connection",
            || self.saw_close.load(Ordering::SeqCst),
        )
        .await;
    }
}

async fn proxy_with_patience(backend: SocketAddr) -> TestProxy {
    start_proxy(&format!(
        "[proxy.timeouts]\nupstream_response = \"30s\"\n{}",
        pool_toml("blue", 100, &[backend])
    ))
    .await
}

#[tokio::test]
async fn a_client_that_leaves_mid_request_cancels_the_backend_exchange() {
    // The backend never answers; the client gives up waiting.
    let backend = Watched::start(b"").await;
    let proxy = proxy_with_patience(backend.addr).await;
    backend.client_leaves_after(&proxy, "").await;
}

#[tokio::test]
async fn a_client_that_leaves_a_stalled_stream_frees_the_backend() {
    // A long poll: the head and a first chunk, then nothing.
    let backend = Watched::start(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n").await;
    let proxy = proxy_with_patience(backend.addr).await;
    backend.client_leaves_after(&proxy, "hello").await;
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_by_the_drain() {
    let backend = spawn_backend("blue", "v1", any_addr()).await.unwrap();
    let proxy = start_proxy(&format!(
        "[proxy]\ndrain_timeout = \"10s\"\n{}",
        pool_toml("blue", 100, &[backend.addr])
    ))
    .await;
    let mut idle = TcpStream::connect(proxy.addr).await.unwrap();
    idle.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n").await.unwrap();
    let head = read_head(&mut idle).await.unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let started = tokio::time::Instant::now();
    assert!(proxy.shutdown().await, "the drain did not finish");
    // Well inside the drain timeout: the idle connection did not hold it.
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(2), idle.read_to_end(&mut rest)).await;
    assert!(closed.is_ok(), "the idle connection was left open");
}

/// A keep-alive connection quiet for over a second frees its buffers
/// between requests; what the client sends next is read whole all the
/// same (a 3 KB head in two writes over a second, then two pipelined
/// requests after another quiet second), and the idle limit still closes
/// it on time.
#[tokio::test]
async fn a_connection_that_freed_its_buffers_while_idle_reads_the_next_requests_whole() {
    let (_backend, proxy) = proxy_with_header_timeout("3500ms").await;
    let mut conn = TcpStream::connect(proxy.addr).await.unwrap();
    conn.write_all(b"GET /first HTTP/1.1\r\nhost: x\r\n\r\n").await.unwrap();
    let (head, _) = read_response(&mut conn).await.expect("the first response");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let quiet = Duration::from_millis(1300);

    // The client's pace: quiet past the second after which buffers go.
    tokio::time::sleep(quiet).await;
    let pad = "p".repeat(3000);
    let big = format!("GET /big HTTP/1.1\r\nhost: x\r\nx-pad: {pad}\r\n\r\n");
    let (first, rest) = big.as_bytes().split_at(40);
    conn.write_all(first).await.unwrap();
    // A head begun is kept whole across the next second's timer.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    conn.write_all(rest).await.unwrap();
    expect_served(&mut conn, "/big").await;

    tokio::time::sleep(quiet).await;
    conn.write_all(b"GET /a HTTP/1.1\r\nhost: x\r\n\r\nGET /b HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    expect_served(&mut conn, "/a").await;
    expect_served(&mut conn, "/b").await;

    let idle_since = tokio::time::Instant::now();
    wait_for_close(&mut conn, Duration::from_secs(6), "the idle connection was left open").await;
    assert!(
        idle_since.elapsed() >= Duration::from_millis(3000),
        "closed {:?} into a 3.5 s idle limit",
        idle_since.elapsed()
    );
}

/// A head begun after the buffers were freed still has to end by the
/// header timeout counted from the previous response, not a moment later.
#[tokio::test]
async fn a_head_begun_after_the_release_still_ends_at_the_header_timeout() {
    let (_backend, proxy) = proxy_with_header_timeout("1500ms").await;
    let mut conn = TcpStream::connect(proxy.addr).await.unwrap();
    conn.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n").await.unwrap();
    read_response(&mut conn).await.expect("the first response");
    let answered = tokio::time::Instant::now();
    // The client's pace: quiet past the release (1 s), then a head it
    // never finishes.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    conn.write_all(b"GET /slow HTTP/1.1\r\nhost: x\r\n").await.unwrap();
    wait_for_close(&mut conn, Duration::from_secs(5), "the unfinished head was left open").await;
    let after = answered.elapsed();
    assert!(
        after >= Duration::from_millis(1400) && after < Duration::from_millis(2000),
        "closed {after:?} after the response, with a 1.5 s header timeout"
    );
}

/// The header timeout is also the keep-alive idle limit, counted from each
/// response: a connection kept busy for four times the limit stays open,
/// and one left idle is closed once the limit has passed, not before.
#[tokio::test]
async fn a_busy_keep_alive_connection_outlives_the_header_timeout_and_an_idle_one_does_not() {
    let (_backend, proxy) = proxy_with_header_timeout("300ms").await;
    let mut conn = TcpStream::connect(proxy.addr).await.unwrap();
    let busy_since = tokio::time::Instant::now();
    let mut served = 0;
    while busy_since.elapsed() < Duration::from_millis(1200) {
        conn.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n").await.unwrap();
        let (head, _) = read_response(&mut conn)
            .await
            .expect("the connection closed while in use");
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        served += 1;
        // The client's pace: well inside the limit between requests.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(served >= 5, "{served}");
    let idle_since = tokio::time::Instant::now();
    wait_for_close(&mut conn, Duration::from_secs(3), "the idle connection was left open").await;
    assert!(
        idle_since.elapsed() >= Duration::from_millis(150),
        "closed {:?} into a 300 ms idle limit",
        idle_since.elapsed()
    );
}
