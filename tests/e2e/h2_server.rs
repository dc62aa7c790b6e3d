//! sluice's own HTTP/2 server as clients see it: bodies larger than the
//! flow-control windows both ways, many streams on one connection, a
//! cancelled stream, malformed requests (reset, the connection goes on),
//! protocol violations (GOAWAY), the header limit (431), the drain (GOAWAY,
//! then what is in flight finishes) and the idle limit.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::common::*;

const MIB: usize = 1024 * 1024;

async fn h2_connect(proxy: &TestProxy) -> h2::client::SendRequest<Bytes> {
    let tcp = TcpStream::connect(proxy.addr).await.unwrap();
    let (send, conn) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(conn);
    send
}

async fn read_all(mut body: h2::RecvStream) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.unwrap();
        body.flow_control().release_capacity(chunk.len()).unwrap();
        out.extend_from_slice(&chunk);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_larger_than_the_windows_arrive_whole_both_ways() {
    let backend = bulk_backend(64 * 1024, 8 * 16).await;
    let proxy = start_proxy(&pool_toml("blue", 100, &[backend])).await;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .http2_only(true)
        .build_http();

    // 8 MiB up: eight times sluice's stream and connection windows, so
    // it only arrives if the windows are given back as the backend reads.
    let up = http::Request::post(proxy.url("/up"))
        .body(RepeatBody::new(64 * 1024, 8 * 16))
        .unwrap();
    let res = client.request(up).await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.version(), http::Version::HTTP_2);
    let got = res.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(got, (8 * MIB).to_string().as_bytes());

    let down = http::Request::get(proxy.url("/down"))
        .body(RepeatBody::new(0, 0))
        .unwrap();
    let res = client.request(down).await.unwrap();
    assert_eq!(res.status(), 200);
    let got = res.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(got.len(), 8 * MIB);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_with_a_small_window_still_gets_the_whole_body() {
    let backend = bulk_backend(16 * 1024, 64).await;
    let proxy = start_proxy(&pool_toml("blue", 100, &[backend])).await;
    let tcp = TcpStream::connect(proxy.addr).await.unwrap();
    let (mut send, conn) = h2::client::Builder::new()
        .initial_window_size(1000)
        .handshake::<_, Bytes>(tcp)
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = http::Request::get(proxy.url("/down")).body(()).unwrap();
    let (res, _) = send.send_request(req, true).unwrap();
    let res = tokio::time::timeout(Duration::from_secs(10), res)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(res.status(), 200);
    let mut body = res.into_body();
    let mut total = 0;
    let read = async {
        while let Some(chunk) = body.data().await {
            let chunk = chunk.unwrap();
            // Each frame fits the 1000-byte window the client gave.
            assert!(chunk.len() <= 1000, "a {}-byte frame", chunk.len());
            total += chunk.len();
            body.flow_control().release_capacity(chunk.len()).unwrap();
        }
    };
    tokio::time::timeout(Duration::from_secs(20), read)
        .await
        .expect("the body stalled");
    assert_eq!(total, MIB);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_streams_on_one_connection_are_served_at_once() {
    let (proxy, blue, _green) = blue_green(100, "").await;
    // Each answer takes 200 ms: 100 of them in well under 100 × 200 ms
    // means they ran side by side.
    blue.knobs.set_latency(Duration::from_millis(200));
    let send = h2_connect(&proxy).await;
    let started = tokio::time::Instant::now();
    let mut streams = tokio::task::JoinSet::new();
    for i in 0..100 {
        let mut send = send.clone();
        let url = proxy.url(&format!("/n/{i}"));
        streams.spawn(async move {
            send = send.ready().await.unwrap();
            let (res, _) = send
                .send_request(http::Request::get(url).body(()).unwrap(), true)
                .unwrap();
            let res = res.await.unwrap();
            let status = res.status();
            let body = read_all(res.into_body()).await;
            (status, body)
        });
    }
    let mut ok = 0;
    while let Some(done) = streams.join_next().await {
        let (status, body) = done.unwrap();
        assert_eq!(status, 200);
        assert!(String::from_utf8_lossy(&body).contains("\"pool\":\"blue\""), "{body:?}");
        ok += 1;
    }
    assert_eq!(ok, 100);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_stream_is_dropped_and_the_connection_goes_on() {
    let (proxy, blue, _green) = blue_green(100, "").await;
    blue.knobs.set_latency(Duration::from_secs(30));
    let mut send = h2_connect(&proxy).await;
    let (slow, _) = send
        .send_request(http::Request::get(proxy.url("/slow")).body(()).unwrap(), true)
        .unwrap();
    // The request reaches the backend (the pool counts it in flight), then
    // the client gives up on it.
    let pool = proxy
        .routing
        .load()
        .pool("blue")
        .map(|p| std::sync::Arc::clone(&p.backends[0]));
    let backend = pool.unwrap();
    wait_until(Duration::from_secs(5), "the request in flight", || {
        backend.in_flight() == 1
    })
    .await;
    drop(slow);
    wait_until(Duration::from_secs(5), "the cancelled request released", || {
        backend.in_flight() == 0
    })
    .await;
    blue.knobs.set_latency(Duration::ZERO);
    send = send.ready().await.unwrap();
    let (res, _) = send
        .send_request(http::Request::get(proxy.url("/next")).body(()).unwrap(), true)
        .unwrap();
    assert_eq!(res.await.unwrap().status(), 200);
}

/// A raw HTTP/2 client: frames written and read as bytes.
struct Raw {
    tcp: TcpStream,
    buf: Vec<u8>,
}

struct Frame {
    kind: u8,
    stream: u32,
    payload: Vec<u8>,
}

impl Raw {
    async fn connect(proxy: &TestProxy) -> Self {
        let mut tcp = TcpStream::connect(proxy.addr).await.unwrap();
        tcp.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await.unwrap();
        let mut raw = Self { tcp, buf: Vec::new() };
        raw.send(0x4, 0, 0, &[]).await;
        raw
    }

    async fn send(&mut self, kind: u8, flags: u8, stream: u32, payload: &[u8]) {
        let len = payload.len().to_be_bytes();
        let mut frame = vec![len[5], len[6], len[7], kind, flags];
        frame.extend_from_slice(&stream.to_be_bytes());
        frame.extend_from_slice(payload);
        self.tcp.write_all(&frame).await.unwrap();
    }

    /// The next frame, or `None` once the connection closed.
    async fn next(&mut self) -> Option<Frame> {
        loop {
            if self.buf.len() >= 9 {
                let len = (usize::from(self.buf[0]) << 16) | (usize::from(self.buf[1]) << 8) | usize::from(self.buf[2]);
                if self.buf.len() >= 9 + len {
                    let frame: Vec<u8> = self.buf.drain(..9 + len).collect();
                    return Some(Frame {
                        kind: frame[3],
                        stream: u32::from_be_bytes([frame[5], frame[6], frame[7], frame[8]]),
                        payload: frame[9..].to_vec(),
                    });
                }
            }
            let mut chunk = [0u8; 16 * 1024];
            let n = tokio::time::timeout(Duration::from_secs(5), self.tcp.read(&mut chunk))
                .await
                .expect("no frame within 5 s")
                .unwrap_or(0);
            if n == 0 {
                return None;
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// The next frame on `stream` of one of `kinds`, skipping the rest.
    async fn next_on(&mut self, stream: u32, kinds: &[u8]) -> Option<Frame> {
        while let Some(frame) = self.next().await {
            if frame.stream == stream && kinds.contains(&frame.kind) {
                return Some(frame);
            }
        }
        None
    }

    /// Reads until GOAWAY; its error code. The connection then closes.
    async fn goaway(&mut self) -> u32 {
        while let Some(frame) = self.next().await {
            if frame.kind == 0x7 {
                let code = u32::from_be_bytes([frame.payload[4], frame.payload[5], frame.payload[6], frame.payload[7]]);
                while self.next().await.is_some() {}
                return code;
            }
        }
        panic!("closed without GOAWAY");
    }
}

/// kind, flags, stream, payload.
type RawFrame = (u8, u8, u32, Vec<u8>);

const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
/// `:method GET`, `:scheme http`, `:path /`, `:authority x` (HPACK).
const GET_BLOCK: &[u8] = b"\x82\x86\x84\x01\x01x";

fn literal(name: &str, value: &[u8]) -> Vec<u8> {
    let mut out = vec![0x00, name.len() as u8];
    out.extend_from_slice(name.as_bytes());
    // A 7-bit-prefix length.
    let mut len = value.len();
    if len < 127 {
        out.push(len as u8);
    } else {
        out.push(127);
        len -= 127;
        while len >= 128 {
            out.push((len % 128) as u8 | 0x80);
            len /= 128;
        }
        out.push(len as u8);
    }
    out.extend_from_slice(value);
    out
}

fn rst_code(frame: &Frame) -> u32 {
    u32::from_be_bytes(frame.payload[..4].try_into().unwrap())
}

#[tokio::test]
async fn malformed_requests_are_reset_and_the_connection_goes_on() {
    let (proxy, _blue, _green) = blue_green(100, "").await;
    let mut raw = Raw::connect(&proxy).await;
    let cases: [Vec<u8>; 4] = [
        [GET_BLOCK, &literal("connection", b"close")].concat(),
        [GET_BLOCK, &literal("X-Upper", b"1")].concat(),
        [&literal("x-first", b"1"), GET_BLOCK].concat(),
        b"\x82\x84\x01\x01x".to_vec(),
    ];
    let mut stream = 1;
    for block in &cases {
        raw.send(HEADERS, END_STREAM | END_HEADERS, stream, block).await;
        let reset = raw.next_on(stream, &[HEADERS, RST_STREAM]).await.unwrap();
        assert_eq!(
            (reset.kind, rst_code(&reset)),
            (RST_STREAM, 1),
            "stream {stream}: {block:?}"
        );
        stream += 2;
    }
    // The connection still serves a well-formed request.
    raw.send(HEADERS, END_STREAM | END_HEADERS, stream, GET_BLOCK).await;
    let head = raw.next_on(stream, &[HEADERS, RST_STREAM]).await.unwrap();
    assert_eq!((head.kind, head.payload[0]), (HEADERS, 0x88), "expected :status 200");
}

#[tokio::test]
async fn a_head_past_the_header_limit_is_answered_431() {
    let (proxy, _blue, _green) = blue_green(100, "").await;
    let mut raw = Raw::connect(&proxy).await;
    // 70 KiB of header: past the 64 KiB limit, in HEADERS and CONTINUATION frames.
    let block = [GET_BLOCK, &literal("x-big", &vec![b'a'; 70 * 1024])].concat();
    let mut chunks = block.chunks(16 * 1024).peekable();
    raw.send(HEADERS, END_STREAM, 1, chunks.next().unwrap()).await;
    while let Some(chunk) = chunks.next() {
        let flags = if chunks.peek().is_none() { END_HEADERS } else { 0 };
        raw.send(0x9, flags, 1, chunk).await;
    }
    let head = raw.next_on(1, &[HEADERS, RST_STREAM]).await.unwrap();
    assert_eq!(head.kind, HEADERS);
    // :status as a literal with the indexed name (8): "431".
    assert_eq!(&head.payload[..5], b"\x08\x03431");
    // And the next request is served.
    raw.send(HEADERS, END_STREAM | END_HEADERS, 3, GET_BLOCK).await;
    let head = raw.next_on(3, &[HEADERS, RST_STREAM]).await.unwrap();
    assert_eq!((head.kind, head.payload[0]), (HEADERS, 0x88));
}

#[tokio::test]
async fn protocol_violations_end_the_connection_with_goaway() {
    let (proxy, _blue, _green) = blue_green(100, "").await;
    // (frames after the preface and SETTINGS, expected GOAWAY code)
    let cases: [(Vec<RawFrame>, u32); 6] = [
        // A frame larger than the 16 KiB sluice allows: FRAME_SIZE_ERROR.
        (vec![(0x0, 0, 1, vec![0; 20_000])], 0x6),
        // DATA on stream 0: PROTOCOL_ERROR.
        (vec![(0x0, 0, 0, b"x".to_vec())], 0x1),
        // A connection window past 2^31-1: FLOW_CONTROL_ERROR.
        (vec![(0x8, 0, 0, 0x7fff_ffffu32.to_be_bytes().to_vec())], 0x3),
        // A header block that does not decode: COMPRESSION_ERROR.
        (vec![(HEADERS, END_STREAM | END_HEADERS, 1, b"\x80".to_vec())], 0x9),
        // CONTINUATION without HEADERS: PROTOCOL_ERROR.
        (vec![(0x9, END_HEADERS, 1, GET_BLOCK.to_vec())], 0x1),
        // A stream id going backwards: PROTOCOL_ERROR.
        (
            vec![
                (HEADERS, END_STREAM | END_HEADERS, 5, GET_BLOCK.to_vec()),
                (HEADERS, END_STREAM | END_HEADERS, 2, GET_BLOCK.to_vec()),
            ],
            0x1,
        ),
    ];
    for (frames, code) in cases {
        let mut raw = Raw::connect(&proxy).await;
        for (kind, flags, stream, payload) in &frames {
            raw.send(*kind, *flags, *stream, payload).await;
        }
        assert_eq!(
            raw.goaway().await,
            code,
            "{:?}",
            frames.iter().map(|f| f.0).collect::<Vec<_>>()
        );
    }
    // A connection that does not start with SETTINGS: PROTOCOL_ERROR.
    let mut tcp = TcpStream::connect(proxy.addr).await.unwrap();
    tcp.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x08\x06\x00\x00\x00\x00\x00abcdefgh")
        .await
        .unwrap();
    let mut raw = Raw { tcp, buf: Vec::new() };
    assert_eq!(raw.goaway().await, 0x1);
}

#[tokio::test]
async fn floods_end_the_connection_with_enhance_your_calm() {
    let (proxy, blue, _green) = blue_green(100, "").await;
    // The backend holds each request, so streams stay open.
    blue.knobs.set_latency(Duration::from_secs(5));
    // A header block that never ends: 65 empty CONTINUATION frames.
    let mut raw = Raw::connect(&proxy).await;
    raw.send(HEADERS, END_STREAM, 1, GET_BLOCK).await;
    for _ in 0..65 {
        raw.send(0x9, 0, 1, &[]).await;
    }
    assert_eq!(raw.goaway().await, 0xb);
    // Empty DATA frames that end nothing, on an open request body.
    let mut raw = Raw::connect(&proxy).await;
    raw.send(HEADERS, END_HEADERS, 1, b"\x83\x86\x84\x01\x01x").await;
    for _ in 0..1001 {
        raw.send(0x0, 0, 1, &[]).await;
    }
    assert_eq!(raw.goaway().await, 0xb);
}

#[tokio::test]
async fn streams_past_the_limit_are_refused() {
    let (proxy, blue, _green) = blue_green(100, "").await;
    blue.knobs.set_latency(Duration::from_secs(5));
    let mut raw = Raw::connect(&proxy).await;
    // 256 requests held by the backend, then one more.
    for i in 0..257 {
        raw.send(HEADERS, END_STREAM | END_HEADERS, 1 + 2 * i, GET_BLOCK).await;
    }
    let refused = raw.next_on(513, &[HEADERS, RST_STREAM]).await.unwrap();
    assert_eq!((refused.kind, rst_code(&refused)), (RST_STREAM, 0x7));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_drain_sends_goaway_and_finishes_what_is_in_flight() {
    let (proxy, blue, _green) = blue_green(100, "[proxy]\ndrain_timeout = \"10s\"\n").await;
    blue.knobs.set_latency(Duration::from_millis(1500));
    let mut send = h2_connect(&proxy).await;
    let (res, _) = send
        .send_request(http::Request::get(proxy.url("/in-flight")).body(()).unwrap(), true)
        .unwrap();
    let drained = tokio::spawn(proxy.shutdown());
    let res = tokio::time::timeout(Duration::from_secs(10), res)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(res.status(), 200);
    let body = read_all(res.into_body()).await;
    assert!(String::from_utf8_lossy(&body).contains("/in-flight"), "{body:?}");
    assert!(drained.await.unwrap(), "the drain did not finish in time");
}

#[tokio::test]
async fn an_idle_connection_is_closed_with_goaway() {
    let (proxy, _blue, _green) = blue_green(100, "[proxy.timeouts]\nrequest_header = \"300ms\"\n").await;
    let mut raw = Raw::connect(&proxy).await;
    raw.send(HEADERS, END_STREAM | END_HEADERS, 1, GET_BLOCK).await;
    let head = raw.next_on(1, &[HEADERS]).await.unwrap();
    assert_eq!(head.payload[0], 0x88);
    // Nothing more is sent: after the keep-alive limit, GOAWAY(NO_ERROR)
    // naming stream 1 as the last one served, then the close.
    let started = tokio::time::Instant::now();
    assert_eq!(raw.goaway().await, 0);
    assert!(started.elapsed() < Duration::from_secs(3));
}

/// A response body that ends with trailers, as gRPC's do.
struct WithTrailers(u8);

impl hyper::body::Body for WithTrailers {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
        self.0 += 1;
        let frame = match self.0 {
            1 => hyper::body::Frame::data(Bytes::from_static(b"ok")),
            2 => {
                let mut trailers = http::HeaderMap::new();
                trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
                hyper::body::Frame::trailers(trailers)
            }
            _ => return std::task::Poll::Ready(None),
        };
        std::task::Poll::Ready(Some(Ok(frame)))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn response_trailers_from_an_h2_backend_reach_the_client() {
    let listener = tokio::net::TcpListener::bind(ANY).await.unwrap();
    let backend = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let service = hyper::service::service_fn(|_req| async {
                Ok::<_, std::convert::Infallible>(http::Response::new(WithTrailers(0)))
            });
            tokio::spawn(
                hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                    .serve_connection(hyper_util::rt::TokioIo::new(tcp), service),
            );
        }
    });
    let toml = format!("{}protocol = \"http2\"\n", pool_toml("blue", 100, &[backend]));
    let proxy = start_proxy(&toml).await;
    let mut send = h2_connect(&proxy).await;
    let req = http::Request::post(proxy.url("/grpc.Service/Call"))
        .header("te", "trailers")
        .body(())
        .unwrap();
    let (res, _) = send.send_request(req, true).unwrap();
    let res = res.await.unwrap();
    assert_eq!(res.status(), 200);
    let mut body = res.into_body();
    let mut data = Vec::new();
    while let Some(chunk) = body.data().await {
        data.extend_from_slice(&chunk.unwrap());
    }
    assert_eq!(data, b"ok");
    let trailers = body.trailers().await.unwrap().expect("no trailers");
    assert_eq!(trailers["grpc-status"], "0");
}
