//! Shared pieces of the end-to-end tests: an in-process proxy on an
//! ephemeral port, demo and fault backends, raw-socket helpers and a pooled
//! client. Everything binds 127.0.0.1 port 0; waits poll with deadlines.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Frame};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use sluice_config::Config;
use sluice_proxy::ListenerOptions;
use sluice_routing::RoutingHandle;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::Instant;

pub use sluice::demo::{DemoBackend, spawn_backend};

pub mod load;
pub mod running;

pub const ANY: &str = "127.0.0.1:0";

pub fn any_addr() -> SocketAddr {
    ANY.parse().unwrap()
}

/// A proxy running in this process.
pub struct TestProxy {
    pub addr: SocketAddr,
    pub routing: Arc<RoutingHandle>,
    shutdown: Option<oneshot::Sender<()>>,
    pub done: Option<JoinHandle<bool>>,
}

impl TestProxy {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Triggers the graceful drain and returns whether it completed in time.
    pub async fn shutdown(mut self) -> bool {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        self.done.take().unwrap().await.unwrap()
    }
}

impl Drop for TestProxy {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// Starts a proxy from TOML text (its `proxy.listen` is ignored).
pub async fn start_proxy(toml: &str) -> TestProxy {
    let config = Config::from_toml(toml).unwrap_or_else(|e| panic!("test config invalid: {e}\n{toml}"));
    let (routing, proxy) = sluice_proxy::build(&config).unwrap();
    let listener = TcpListener::bind(ANY).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = oneshot::channel();
    let opts = ListenerOptions::from(&config.proxy);
    let done = tokio::spawn(sluice_proxy::serve(listener, proxy, opts, async {
        let _ = rx.await;
    }));
    TestProxy {
        addr,
        routing,
        shutdown: Some(tx),
        done: Some(done),
    }
}

/// `[pools.NAME]` TOML for a pool.
pub fn pool_toml(name: &str, weight: u32, backends: &[SocketAddr]) -> String {
    let list: Vec<String> = backends.iter().map(|b| format!("\"{b}\"")).collect();
    format!(
        "[pools.{name}]\nversion = \"{name}-v\"\nweight = {weight}\nbackends = [{}]\n",
        list.join(", ")
    )
}

/// Blue and green demo backends behind a proxy at the given weights.
pub async fn blue_green(blue_weight: u32, extra: &str) -> (TestProxy, DemoBackend, DemoBackend) {
    let blue = spawn_backend("blue", "v1", any_addr()).await.unwrap();
    let green = spawn_backend("green", "v2", any_addr()).await.unwrap();
    let toml = format!(
        "{extra}\n{}{}",
        pool_toml("blue", blue_weight, &[blue.addr]),
        pool_toml("green", 100 - blue_weight, &[green.addr])
    );
    (start_proxy(&toml).await, blue, green)
}

pub type TestClient = Client<HttpConnector, Full<Bytes>>;

pub fn client() -> TestClient {
    Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(256)
        .build_http()
}

pub fn h2_client() -> TestClient {
    Client::builder(TokioExecutor::new()).http2_only(true).build_http()
}

/// A GET; returns status, headers and body text.
pub async fn get(client: &TestClient, url: &str, headers: &[(&str, &str)]) -> (u16, http::HeaderMap, String) {
    let mut req = http::Request::get(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let res = client
        .request(req.body(Full::new(Bytes::new())).unwrap())
        .await
        .unwrap();
    let status = res.status().as_u16();
    let (parts, body) = res.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    (status, parts.headers, String::from_utf8_lossy(&body).into_owned())
}

/// The `pool` field of a demo backend's JSON answer.
pub fn pool_of(body: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"));
    v["pool"].as_str().unwrap_or_default().to_owned()
}

/// Polls `check` every 10 ms until it is true or `deadline` passes.
pub async fn wait_until(deadline: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let end = Instant::now() + deadline;
    while !check() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Sends raw bytes and reads until the peer closes or `timeout` passes.
pub async fn raw_exchange(addr: SocketAddr, request: &[u8], timeout: Duration) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(request).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(timeout, async {
        let mut buf = [0u8; 16384];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    String::from_utf8_lossy(&out).into_owned()
}

/// The status code on the first line of a raw HTTP/1 response.
pub fn raw_status(response: &str) -> u16 {
    response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {response:?}"))
}

/// How a fault backend misbehaves.
#[derive(Debug, Clone, Copy)]
pub enum Fault {
    /// Reads the request, then resets the connection without answering.
    ResetBeforeHeaders,
    /// Sends headers promising 100000 bytes, 1000 of them, then resets.
    ResetMidBody,
    /// Reads the request and never answers.
    Hang,
    /// Answers with bytes that are not HTTP.
    Malformed,
}

/// A raw-TCP backend that misbehaves as told on every connection.
pub async fn fault_backend(fault: Fault) -> SocketAddr {
    let listener = TcpListener::bind(ANY).await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let _ = read_head(&mut stream).await;
                match fault {
                    Fault::ResetBeforeHeaders => {
                        let _ = stream.set_zero_linger();
                    }
                    Fault::ResetMidBody => {
                        let _ = stream
                            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 100000\r\n\r\n")
                            .await;
                        let _ = stream.write_all(&[b'x'; 1000]).await;
                        let _ = stream.flush().await;
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        let _ = stream.set_zero_linger();
                    }
                    Fault::Hang => {
                        tokio::time::sleep(Duration::from_secs(60)).await;
                    }
                    Fault::Malformed => {
                        let _ = stream
                            .write_all(b"HTTP/1.1 twohundred OK\r\n\x00\x01garbage\r\n\r\n")
                            .await;
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            });
        }
    });
    addr
}

/// A backend that answers a POST with the number of bytes it received and
/// a GET with `chunks` × `size_per_chunk` bytes, streamed.
pub async fn bulk_backend(size_per_chunk: usize, chunks: usize) -> std::net::SocketAddr {
    use hyper::service::service_fn;
    use hyper_util::rt::{TokioExecutor, TokioIo};
    let listener = TcpListener::bind(ANY).await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = listener.accept().await else { return };
            tokio::spawn(async move {
                let svc = service_fn(move |req: http::Request<hyper::body::Incoming>| async move {
                    if req.method() == http::Method::POST {
                        let mut body = req.into_body();
                        let mut n = 0usize;
                        // A body cut short (the proxy gave up) just ends the count.
                        while let Some(Ok(frame)) = body.frame().await {
                            if let Ok(d) = frame.into_data() {
                                n += d.len();
                            }
                        }
                        let b: http_body_util::Either<RepeatBody, http_body_util::Full<Bytes>> =
                            http_body_util::Either::Right(http_body_util::Full::new(Bytes::from(n.to_string())));
                        Ok::<_, std::convert::Infallible>(http::Response::new(b))
                    } else {
                        Ok(http::Response::new(http_body_util::Either::Left(RepeatBody::new(
                            size_per_chunk,
                            chunks,
                        ))))
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    addr
}

/// An address where nothing listens (bound, then released).
pub async fn closed_port() -> SocketAddr {
    let listener = TcpListener::bind(ANY).await.unwrap();
    listener.local_addr().unwrap()
}

/// Reads up to the end of an HTTP/1 head.
pub async fn read_head(stream: &mut (impl AsyncRead + Unpin)) -> Option<String> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte).await {
            Ok(1) => head.push(byte[0]),
            _ => return None,
        }
    }
    Some(String::from_utf8_lossy(&head).into_owned())
}

/// Reads one HTTP/1 response with a `Content-Length`: its head and body.
pub async fn read_response(stream: &mut (impl AsyncRead + Unpin)) -> Option<(String, Vec<u8>)> {
    let head = read_head(stream).await?;
    let length: usize = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length: ")
                .map(str::to_owned)
        })
        .and_then(|n| n.trim().parse().ok())?;
    let mut body = vec![0; length];
    stream.read_exact(&mut body).await.ok()?;
    Some((head, body))
}

/// Reads one response and checks it is the demo backend's 200 for `path`.
pub async fn expect_served(stream: &mut (impl AsyncRead + Unpin), path: &str) {
    let (head, body) = read_response(stream)
        .await
        .unwrap_or_else(|| panic!("no response for {path}"));
    assert!(head.starts_with("HTTP/1.1 200"), "{path}: {head}");
    let body = String::from_utf8_lossy(&body);
    assert!(body.contains(&format!(r#""path":"{path}""#)), "{path}: {body}");
}

/// A backend that records each request head it receives and answers
/// `200 ok` (closing the connection, so each head is one request).
#[derive(Clone, Default)]
pub struct Recorder {
    pub heads: Arc<Mutex<Vec<String>>>,
}

impl Recorder {
    pub async fn start() -> (SocketAddr, Recorder) {
        let listener = TcpListener::bind(ANY).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let recorder = Recorder::default();
        let heads = Arc::clone(&recorder.heads);
        tokio::spawn(async move {
            loop {
                let Ok((mut stream, _)) = listener.accept().await else {
                    return;
                };
                let heads = Arc::clone(&heads);
                tokio::spawn(async move {
                    if let Some(head) = read_head(&mut stream).await {
                        heads.lock().unwrap().push(head);
                        let _ = stream
                            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok")
                            .await;
                    }
                });
            }
        });
        (addr, recorder)
    }

    pub fn heads(&self) -> Vec<String> {
        self.heads.lock().unwrap().clone()
    }

    /// Header names (lower-cased) of the `i`th recorded request.
    pub fn header_map(&self, i: usize) -> HashMap<String, Vec<String>> {
        let heads = self.heads();
        let mut map: HashMap<String, Vec<String>> = HashMap::new();
        for line in heads[i].lines().skip(1) {
            if let Some((k, v)) = line.split_once(':') {
                map.entry(k.trim().to_ascii_lowercase())
                    .or_default()
                    .push(v.trim().to_owned());
            }
        }
        map
    }
}

/// A body of `chunks` × `chunk` bytes produced on the fly, never held whole.
pub struct RepeatBody {
    chunk: Bytes,
    left: usize,
}

impl RepeatBody {
    pub fn new(chunk_size: usize, chunks: usize) -> Self {
        Self {
            chunk: Bytes::from(vec![b'z'; chunk_size]),
            left: chunks,
        }
    }
}

impl Body for RepeatBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if self.left == 0 {
            return Poll::Ready(None);
        }
        self.left -= 1;
        Poll::Ready(Some(Ok(Frame::data(self.chunk.clone()))))
    }
}

/// Answers plain requests (health checks) with 200 and WebSocket upgrades
/// with 101, then echoes the upgraded connection's bytes.
pub async fn websocket_backend() -> SocketAddr {
    let listener = TcpListener::bind(ANY).await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let Some(head) = read_head(&mut s).await else { return };
                if head.to_ascii_lowercase().contains("upgrade: websocket") {
                    let _ = s
                        .write_all(
                            b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: Upgrade\r\n\r\n",
                        )
                        .await;
                    let (mut r, mut w) = s.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                } else {
                    let _ = s
                        .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok")
                        .await;
                }
            });
        }
    });
    addr
}

/// Opens a WebSocket through `proxy`; the answer's head and the stream.
pub async fn open_websocket(proxy: SocketAddr) -> (String, TcpStream) {
    let mut s = TcpStream::connect(proxy).await.unwrap();
    s.write_all(
        b"GET /ws HTTP/1.1\r\nhost: x\r\nconnection: Upgrade\r\nupgrade: websocket\r\nsec-websocket-version: 13\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
    )
    .await
    .unwrap();
    let head = read_head(&mut s).await.unwrap();
    (head, s)
}

/// Sends `msg` on an upgraded connection and expects it echoed.
pub async fn echo(s: &mut TcpStream, msg: &[u8]) {
    s.write_all(msg).await.unwrap();
    let mut back = vec![0u8; msg.len()];
    tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut back))
        .await
        .expect("no echo through the tunnel")
        .unwrap();
    assert_eq!(back, msg);
}

/// A throwaway certificate authority for TLS tests.
pub fn test_ca() -> rcgen::CertifiedIssuer<'static, rcgen::KeyPair> {
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    // Not rcgen's default name, which its leaves carry too: OpenSSL-based
    // clients (grpc-core) take a leaf whose issuer is its own subject for
    // self-signed.
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "sluice test CA");
    rcgen::CertifiedIssuer::self_signed(params, rcgen::KeyPair::generate().unwrap()).unwrap()
}

/// A certificate for `names` signed by `ca`: DER certificate and key (for
/// rustls) and the same as PEM (for config files).
pub struct Leaf {
    pub cert: rustls::pki_types::CertificateDer<'static>,
    pub key: rustls::pki_types::PrivateKeyDer<'static>,
    pub cert_pem: String,
    pub key_pem: String,
}

pub fn leaf(ca: &rcgen::CertifiedIssuer<'static, rcgen::KeyPair>, names: &[&str]) -> Leaf {
    let key = rcgen::KeyPair::generate().unwrap();
    let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
    let cert = rcgen::CertificateParams::new(names)
        .unwrap()
        .signed_by(&key, ca)
        .unwrap();
    Leaf {
        cert: cert.der().clone(),
        key: rustls::pki_types::PrivateKeyDer::Pkcs8(rustls::pki_types::PrivatePkcs8KeyDer::from(key.serialize_der())),
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    }
}

/// Whether an external checker is here. A missing one fails the test with
/// what to install; only a developer's explicit `SLUICE_SKIP_MISSING_TOOLS=1`
/// (never set by `scripts/test` nor CI) turns it into a skip, said loudly.
pub fn tool_present(present: bool, what: &str) -> bool {
    if !present {
        assert!(
            std::env::var_os("SLUICE_SKIP_MISSING_TOOLS").is_some_and(|v| v == "1"),
            "{what} is missing: install it (scripts/test does), or set SLUICE_SKIP_MISSING_TOOLS=1 to skip this check locally"
        );
        eprintln!("{what} is missing; SKIPPED because SLUICE_SKIP_MISSING_TOOLS=1");
    }
    present
}

/// promtool's path (Debian's `prometheus` package), or `None` when a
/// developer skips missing tools.
pub fn promtool() -> Option<&'static str> {
    let found = ["/usr/bin/promtool", "/usr/local/bin/promtool"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists());
    tool_present(found.is_some(), "promtool (apt install prometheus)")
        .then_some(found)
        .flatten()
}

/// Whether `program ARG` runs at all.
pub fn runs(program: &str, arg: &str) -> bool {
    std::process::Command::new(program).arg(arg).output().is_ok()
}

/// A backend (or webhook receiver) that keeps each request's
/// `METHOD /path` and body, answering `200 ok`.
pub async fn body_recorder() -> (SocketAddr, Arc<Mutex<Vec<(String, Bytes)>>>) {
    use hyper::service::service_fn;
    use hyper_util::rt::TokioIo;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let store = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = listener.accept().await else { return };
            let store = store.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let store = store.clone();
                    async move {
                        let line = format!("{} {}", req.method(), req.uri().path());
                        let body = req.into_body().collect().await.unwrap().to_bytes();
                        store.lock().unwrap().push((line, body));
                        Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(Bytes::from_static(b"ok"))))
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    (addr, seen)
}
