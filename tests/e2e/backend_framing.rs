//! Every way a backend can frame its answer reaches the client intact over
//! sluice's own HTTP/1.1 exchange (bodyless requests): chunked in small
//! pieces with extensions and trailers, HEAD, 204, 1xx before the answer,
//! a body that runs to the close, `Connection: close`, a length beside
//! chunked. Keep-alive connections are reused exactly when the framing
//! allows it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

use crate::common::*;

/// Answers each request by its path, on keep-alive connections; counts the
/// connections it accepted and records each request head.
struct Scripted {
    addr: SocketAddr,
    connections: Arc<AtomicUsize>,
    heads: Arc<std::sync::Mutex<Vec<String>>>,
}

impl Scripted {
    async fn start() -> Scripted {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let connections = Arc::new(AtomicUsize::new(0));
        let heads = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (count, seen) = (Arc::clone(&connections), Arc::clone(&heads));
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(serve(stream, Arc::clone(&seen)));
            }
        });
        Scripted {
            addr,
            connections,
            heads,
        }
    }

    fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

async fn serve(mut stream: TcpStream, heads: Arc<std::sync::Mutex<Vec<String>>>) {
    use tokio::io::AsyncReadExt;
    while let Some(head) = read_head(&mut stream).await {
        let length = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length: "))
            .and_then(|v| v.trim().parse::<usize>().ok())
            .unwrap_or(0);
        let mut body = vec![0u8; length];
        if stream.read_exact(&mut body).await.is_err() {
            return;
        }
        heads.lock().unwrap().push(format!("{head}[{length} body bytes]"));
        let path = head.split_whitespace().nth(1).unwrap_or_default().to_owned();
        let pieces: Vec<&[u8]> = match path.as_str() {
            "/chunked" => vec![
                b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n",
                b"5;name=v",
                b"alue\r\nhel",
                b"lo\r\n6\r",
                b"\n world\r\n0\r\nx-checksum: 1\r\n",
                b"\r\n",
            ],
            "/head" => vec![b"HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\n"],
            "/empty" => vec![b"HTTP/1.1 204 No Content\r\n\r\n"],
            "/hints" => vec![
                b"HTTP/1.1 103 Early Hints\r\nlink: </a.css>; rel=preload\r\n\r\n",
                b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nafter",
            ],
            "/length-and-chunked" => vec![
                b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ntransfer-encoding: chunked\r\n\r\n",
                b"4\r\nwhee\r\n0\r\n\r\n",
            ],
            "/closing" => vec![b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\nconnection: close\r\n\r\nbye"],
            "/hop-by-hop" => vec![
                b"HTTP/1.1 200 OK\r\nConnection: keep-alive, X-Secret\r\nX-Secret: s\r\nKeep-Alive: timeout=5\r\n\
                  Proxy-Authenticate: Basic\r\nx-sluice-pool: green\r\nX-App: kept\r\nSet-Cookie: a=1\r\n\
                  x-app: again\r\nSet-Cookie: b=2\r\ncontent-length: 2\r\n\r\nok",
            ],
            "/to-the-close" => vec![b"HTTP/1.1 200 OK\r\n\r\n", b"until ", b"the end"],
            _ => vec![b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"],
        };
        for piece in pieces {
            if stream.write_all(piece).await.is_err() {
                return;
            }
            // Separate segments, so the proxy meets each boundary split.
            let _ = stream.flush().await;
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        if path == "/closing" || path == "/to-the-close" {
            return;
        }
    }
}

async fn send(client: &TestClient, method: http::Method, url: &str) -> (u16, http::HeaderMap, String) {
    send_body(client, method, url, bytes::Bytes::new()).await
}

async fn send_body(
    client: &TestClient,
    method: http::Method,
    url: &str,
    body: bytes::Bytes,
) -> (u16, http::HeaderMap, String) {
    use http_body_util::BodyExt;
    let req = http::Request::builder()
        .method(method)
        .uri(url)
        .body(http_body_util::Full::new(body))
        .unwrap();
    let res = tokio::time::timeout(Duration::from_secs(5), client.request(req))
        .await
        .expect("the proxy hung")
        .unwrap();
    let (parts, body) = res.into_parts();
    let body = tokio::time::timeout(Duration::from_secs(5), body.collect())
        .await
        .expect("the body never ended")
        .unwrap()
        .to_bytes();
    (
        parts.status.as_u16(),
        parts.headers,
        String::from_utf8_lossy(&body).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_response_framing_arrives_intact_and_connections_are_reused_when_they_can_be() {
    let backend = Scripted::start().await;
    let proxy = start_proxy(&pool_toml("blue", 100, &[backend.addr])).await;
    let c = client();
    let url = |path: &str| proxy.url(path);

    let (status, _, body) = send(&c, http::Method::GET, &url("/chunked")).await;
    assert_eq!((status, body.as_str()), (200, "hello world"));

    let (status, headers, body) = send(&c, http::Method::HEAD, &url("/head")).await;
    assert_eq!((status, body.as_str()), (200, ""));
    assert_eq!(headers["content-length"], "1000", "HEAD keeps the length of the GET");

    let (status, _, body) = send(&c, http::Method::GET, &url("/empty")).await;
    assert_eq!((status, body.as_str()), (204, ""));

    let (status, _, body) = send(&c, http::Method::GET, &url("/hints")).await;
    assert_eq!((status, body.as_str()), (200, "after"));

    let (status, _, body) = send(&c, http::Method::DELETE, &url("/plain")).await;
    assert_eq!((status, body.as_str()), (200, "ok"));
    assert_eq!(
        backend.connections(),
        1,
        "every answer so far left the connection reusable"
    );

    // A bodyless POST says it has no body; the connection is still reused.
    let (status, _, _) = send(&c, http::Method::POST, &url("/post")).await;
    assert_eq!(status, 200);
    let post = backend.heads.lock().unwrap().last().cloned().unwrap();
    assert!(post.contains("content-length: 0\r\n"), "{post}");
    assert_eq!(backend.connections(), 1);

    // A small body of known length goes out whole after the head.
    let upload = bytes::Bytes::from(vec![b'u'; 5000]);
    let (status, _, _) = send_body(&c, http::Method::PUT, &url("/put"), upload).await;
    assert_eq!(status, 200);
    let put = backend.heads.lock().unwrap().last().cloned().unwrap();
    assert!(
        put.contains("content-length: 5000\r\n") && put.ends_with("[5000 body bytes]"),
        "{put}"
    );
    assert_eq!(backend.connections(), 1);

    // A length beside chunked: decoded as chunked, the stray length never
    // reaches the client, and that connection is not trusted again.
    let (status, headers, body) = send(&c, http::Method::GET, &url("/length-and-chunked")).await;
    assert_eq!((status, body.as_str()), (200, "whee"));
    assert_ne!(headers.get("content-length").map(|v| v.as_bytes()), Some(&b"2"[..]));
    send(&c, http::Method::GET, &url("/plain")).await;
    assert_eq!(backend.connections(), 2);

    // Connection: close, and a body that runs to the close: both arrive
    // whole, and the next request opens a new connection.
    let (status, _, body) = send(&c, http::Method::GET, &url("/closing")).await;
    assert_eq!((status, body.as_str()), (200, "bye"));
    let (status, _, body) = send(&c, http::Method::GET, &url("/plain")).await;
    assert_eq!((status, body.as_str()), (200, "ok"));
    assert_eq!(backend.connections(), 3);
    let (status, _, body) = send(&c, http::Method::GET, &url("/to-the-close")).await;
    assert_eq!((status, body.as_str()), (200, "until the end"));
    let (status, _, body) = send(&c, http::Method::GET, &url("/plain")).await;
    assert_eq!((status, body.as_str()), (200, "ok"));
    assert_eq!(backend.connections(), 4);
}

/// The backend's hop-by-hop headers (the fixed list, those its
/// `Connection` names, `Proxy-*`, sluice's routing header) never reach the
/// client, and every other header does, values in order: over sluice's own
/// HTTP/1.1 loop, which writes the backend's header lines, and over h2c,
/// which goes through a header map.
#[tokio::test]
async fn hop_by_hop_response_headers_stop_at_the_proxy_on_either_client_path() {
    let backend = Scripted::start().await;
    let proxy = start_proxy(&pool_toml("blue", 100, &[backend.addr])).await;
    for (path, c) in [("own HTTP/1.1 loop", client()), ("h2c", h2_client())] {
        let (status, headers, body) = send(&c, http::Method::GET, &proxy.url("/hop-by-hop")).await;
        assert_eq!((status, body.as_str()), (200, "ok"), "{path}");
        for gone in ["x-secret", "keep-alive", "proxy-authenticate", "x-sluice-pool"] {
            assert!(
                !headers.contains_key(gone),
                "{path}: {gone} reached the client: {headers:?}"
            );
        }
        // sluice states the length on either path (the backend's header
        // lines leave it out; each client path writes its own).
        assert_eq!(headers.get("connection"), None, "{path}");
        assert_eq!(headers["content-length"], "2", "{path}");
        let values = |name: &str| -> Vec<&str> { headers.get_all(name).iter().map(|v| v.to_str().unwrap()).collect() };
        assert_eq!(values("x-app"), ["kept", "again"], "{path}");
        assert_eq!(values("set-cookie"), ["a=1", "b=2"], "{path}");
        assert!(headers.contains_key("date"), "{path}: every answer carries a Date");
    }
}

/// HTTP/2 clients get the backend's header lines encoded one by one, and
/// a length only where one is true: the body's, or a HEAD's (the GET's).
#[tokio::test]
async fn h2c_responses_state_a_length_only_where_one_is_true() {
    let backend = Scripted::start().await;
    let proxy = start_proxy(&pool_toml("blue", 100, &[backend.addr])).await;
    let c = h2_client();
    let (status, headers, body) = send(&c, http::Method::HEAD, &proxy.url("/head")).await;
    assert_eq!((status, body.as_str()), (200, ""));
    assert_eq!(headers["content-length"], "1000", "HEAD keeps the length of the GET");
    let (status, headers, body) = send(&c, http::Method::GET, &proxy.url("/empty")).await;
    assert_eq!((status, body.as_str()), (204, ""));
    assert_eq!(headers.get("content-length"), None, "no length on a 204");
    let (status, headers, body) = send(&c, http::Method::GET, &proxy.url("/chunked")).await;
    assert_eq!((status, body.as_str()), (200, "hello world"));
    assert_eq!(
        headers.get("content-length"),
        None,
        "a chunked body has no known length"
    );
    let (status, headers, body) = send(&c, http::Method::GET, &proxy.url("/plain")).await;
    assert_eq!((status, body.as_str()), (200, "ok"));
    assert_eq!(headers["content-length"], "2");
}

/// Requests on one client connection share its buffers (the backend
/// head, the header map): each request reaches the backend with its own
/// headers only, nothing left over from the one before.
#[tokio::test]
async fn each_request_on_a_connection_carries_only_its_own_headers() {
    let backend = Scripted::start().await;
    let proxy = start_proxy(&pool_toml("blue", 100, &[backend.addr])).await;
    let raw = raw_exchange(
        proxy.addr,
        b"GET /one HTTP/1.1\r\nhost: x\r\nx-first: 1\r\nx-many: a\r\nx-many: b\r\ncookie: c=1\r\n\r\n\
          POST /two HTTP/1.1\r\nhost: y\r\nx-second: 2\r\ncontent-length: 3\r\n\r\nabc\
          GET /three HTTP/1.1\r\nhost: z\r\nconnection: close\r\n\r\n",
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(raw.matches("HTTP/1.1 200 OK").count(), 3, "{raw}");
    let heads = backend.heads.lock().unwrap().clone();
    assert_eq!(heads.len(), 3, "{heads:?}");
    assert!(
        heads[0].contains("x-first: 1\r\n") && heads[0].contains("x-many: a\r\nx-many: b\r\n"),
        "{}",
        heads[0]
    );
    assert!(heads[0].ends_with("[0 body bytes]"), "{}", heads[0]);
    assert!(
        heads[1].contains("host: y\r\n") && heads[1].contains("x-second: 2\r\n"),
        "{}",
        heads[1]
    );
    assert!(heads[1].ends_with("[3 body bytes]"), "{}", heads[1]);
    assert!(heads[2].contains("host: z\r\n"), "{}", heads[2]);
    // Each request's own headers, and no other request's.
    let own: [&[&str]; 3] = [&["x-first", "x-many", "cookie"], &["x-second"], &[]];
    for (i, head) in heads.iter().enumerate() {
        for (j, names) in own.iter().enumerate() {
            for name in names.iter() {
                let line = format!("\r\n{name}: ");
                assert_eq!(head.contains(&line), i == j, "request {i}, header {name}: {head}");
            }
        }
        assert_eq!(head.matches("\r\nhost: ").count(), 1, "{head}");
    }
}

/// A backend that answers with fewer bytes than its length promised and
/// then closes cleanly: the client's body fails, it is not a short success.
#[tokio::test]
async fn a_body_shorter_than_its_length_fails_the_client_response() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let _ = read_head(&mut stream).await;
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nshort")
                .await;
        }
    });
    let proxy = start_proxy(&pool_toml("blue", 100, &[addr])).await;
    use http_body_util::BodyExt;
    let c = client();
    let exchange = async {
        let res = c
            .request(http::Request::get(proxy.url("/")).body(Default::default()).unwrap())
            .await
            .map_err(|e| e.to_string())?;
        res.into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .map_err(|e| e.to_string())
    };
    // sluice may not even have sent the head when the end comes: the
    // client sees a failed request then, or a failed body otherwise.
    let outcome = tokio::time::timeout(Duration::from_secs(5), exchange)
        .await
        .expect("the client response must end, not hang");
    assert!(outcome.is_err(), "a truncated body arrived as a success: {outcome:?}");
}

/// A backend that closes its side of an idle keep-alive connection: sluice
/// closes its own within seconds, with no request to notice it, rather than
/// leaving the socket half-closed (CLOSE_WAIT) until traffic returns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_the_backend_closed_while_idle_are_closed_without_traffic() {
    use crate::common::running::{Running, one_pool_config};
    use tokio::io::AsyncReadExt;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (closed_tx, mut closed_rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let closed_tx = closed_tx.clone();
            tokio::spawn(async move {
                let head = read_head(&mut stream).await.unwrap_or_default();
                let _ = stream
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                    .await;
                let _ = stream.shutdown().await;
                let shut = tokio::time::Instant::now();
                // Reads until sluice closes its side too.
                let mut rest = Vec::new();
                let _ = stream.read_to_end(&mut rest).await;
                // Health probes close their connections themselves.
                if head.starts_with("GET /proxied ") {
                    let _ = closed_tx.send(shut.elapsed());
                }
            });
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let sluice = Running::start(dir.path(), &one_pool_config(dir.path(), addr), &[]);
    let (status, _, body) = get(&client(), &format!("http://{}/proxied", sluice.addr), &[]).await;
    assert_eq!((status, body.as_str()), (200, "ok"));
    let after = tokio::time::timeout(Duration::from_secs(10), closed_rx.recv())
        .await
        .expect("sluice never closed the connection the backend had closed")
        .unwrap();
    assert!(after < Duration::from_secs(5), "closed only after {after:?}");
    eprintln!("sluice closed its side {after:?} after the backend");
}
