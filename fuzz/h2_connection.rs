//! The `h2_connection` fuzz target's check, shared by the libFuzzer target
//! and the corpus replay (`tests/e2e/fuzz_replay.rs`): sluice's HTTP/2
//! connection (`sluice_proxy::h2::serve`) in process, over an in-memory
//! duplex, fed the input as the frames a client sends after the preface.
//! A peer in the check then behaves as a client would (it gives back the
//! flow-control window the responses use) and closes once every stream it
//! opened is answered. What the server writes must be well-formed HTTP/2
//! and keep the RFC 9113 rules a client relies on; the connection must end
//! once the client has gone; no panic (libFuzzer's RSS limit bounds memory).
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, watch};

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const PRIORITY: u8 = 0x2;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const PUSH_PROMISE: u8 = 0x5;
const PING: u8 = 0x6;
const GOAWAY: u8 = 0x7;
const WINDOW_UPDATE: u8 = 0x8;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const ACK: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
/// The peer stops waiting when the server has written nothing this long
/// (a stream the input left waiting, or a window it never opened).
const QUIET: Duration = Duration::from_millis(100);
/// How long the server may take to end once the client has closed.
const CLOSE_DEADLINE: Duration = Duration::from_secs(3);
/// A whole run's bound: past it the connection hung.
const RUN_DEADLINE: Duration = Duration::from_secs(20);
/// The body the backend answers `/big` with: more than the default window.
const BIG_BODY: usize = 100_000;

/// The proxy in front of an in-process backend, on a current-thread
/// runtime that each run drives; one per fuzzing thread.
struct Rig {
    runtime: tokio::runtime::Runtime,
    proxy: Arc<sluice_proxy::Proxy>,
    opts: sluice_proxy::ListenerOptions,
    drain: watch::Sender<()>,
}

thread_local! {
    static RIG: Rig = Rig::new();
}

impl Rig {
    fn new() -> Self {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let backend = runtime.block_on(backend());
        let toml = format!(
            "[proxy.timeouts]\nrequest_header = \"2s\"\nupstream_response = \"2s\"\n\
             [pools.blue]\nversion = \"v1\"\nweight = 100\nbackends = [\"{backend}\"]\n"
        );
        let config = sluice_config::Config::from_toml(&toml).unwrap();
        let (_, proxy) = sluice_proxy::build(&config).unwrap();
        let opts = sluice_proxy::ListenerOptions::from(&config.proxy);
        let (drain, _) = watch::channel(());
        Self {
            runtime,
            proxy,
            opts,
            drain,
        }
    }
}

/// A backend that answers at once, without reading the request's body:
/// `/big` with `BIG_BODY` bytes, `/empty` with 204, anything else with a
/// short body.
async fn backend() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let service = hyper::service::service_fn(|req: http::Request<hyper::body::Incoming>| async move {
                let (status, body) = match req.uri().path() {
                    "/big" => (200, vec![b'x'; BIG_BODY]),
                    "/empty" => (204, Vec::new()),
                    _ => (200, b"ok\n".to_vec()),
                };
                let mut res = http::Response::new(http_body_util::Full::new(bytes::Bytes::from(body)));
                *res.status_mut() = http::StatusCode::from_u16(status).unwrap();
                Ok::<_, std::convert::Infallible>(res)
            });
            tokio::spawn(
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service),
            );
        }
    });
    addr
}

/// Runs the input through one connection and checks what came back.
pub fn h2_connection(data: &[u8]) {
    RIG.with(|rig| {
        rig.runtime.block_on(async {
            let run = async {
                let (client, server) = tokio::io::duplex(64 * 1024);
                let conn = sluice_proxy::client::ClientConn::new("127.0.0.1:40000".parse().unwrap(), false);
                let served = sluice_proxy::h2::serve(server, &conn, &rig.proxy, &rig.opts, rig.drain.subscribe());
                tokio::join!(served, peer(client, data))
            };
            if tokio::time::timeout(RUN_DEADLINE, run).await.is_err() {
                panic!("the connection hung");
            }
        });
    });
}

/// What the client's bytes said, read as the server reads them: the frames
/// up to the first one that does not fit.
#[derive(Default)]
struct Script {
    /// Streams whose request head was sent whole.
    opened: HashSet<u32>,
    /// Every stream a HEADERS frame named.
    named: HashSet<u32>,
    /// Every stream any frame named (a stream error may answer any).
    mentioned: HashSet<u32>,
    /// Streams the client reset: they need no answer.
    reset: HashSet<u32>,
    stream_credit: HashMap<u32, u64>,
    connection_credit: u64,
    max_initial_window: u64,
    max_frame_size: usize,
    max_table_size: usize,
    settings: usize,
    pings: usize,
    /// The input ends with a whole frame: what the peer sends after it
    /// would otherwise complete a frame the input began.
    whole: bool,
}

impl Script {
    fn read(mut bytes: &[u8]) -> Self {
        let mut s = Script {
            connection_credit: 65_535,
            max_initial_window: 65_535,
            max_frame_size: 16_384,
            max_table_size: 4096,
            ..Script::default()
        };
        let mut open_block: Option<u32> = None;
        while let Some(frame) = Frame::parse(bytes) {
            bytes = &bytes[9 + frame.payload.len()..];
            s.mentioned.insert(frame.stream);
            match frame.kind {
                HEADERS => {
                    s.named.insert(frame.stream);
                    open_block = Some(frame.stream);
                }
                CONTINUATION => {}
                _ => open_block = None,
            }
            if matches!(frame.kind, HEADERS | CONTINUATION)
                && frame.flags & END_HEADERS != 0
                && let Some(id) = open_block.take()
            {
                s.opened.insert(id);
            }
            match frame.kind {
                SETTINGS if frame.flags & ACK == 0 && frame.stream == 0 => {
                    s.settings += 1;
                    for setting in frame.payload.chunks_exact(6) {
                        let value = u32::from_be_bytes(setting[2..6].try_into().unwrap());
                        match u16::from_be_bytes([setting[0], setting[1]]) {
                            0x1 => s.max_table_size = s.max_table_size.max(value as usize),
                            0x4 => s.max_initial_window = s.max_initial_window.max(u64::from(value)),
                            0x5 if (16_384..=16_777_215).contains(&value) => {
                                s.max_frame_size = s.max_frame_size.max(value as usize)
                            }
                            _ => {}
                        }
                    }
                }
                PING if frame.flags & ACK == 0 => s.pings += 1,
                RST_STREAM => {
                    s.reset.insert(frame.stream);
                }
                WINDOW_UPDATE if frame.payload.len() == 4 => {
                    let increment = u64::from(u32::from_be_bytes(frame.payload.try_into().unwrap()) & 0x7fff_ffff);
                    s.credit(frame.stream, increment);
                }
                _ => {}
            }
        }
        s.whole = bytes.is_empty();
        s
    }

    fn credit(&mut self, stream: u32, increment: u64) {
        if stream == 0 {
            self.connection_credit += increment;
        } else {
            *self.stream_credit.entry(stream).or_default() += increment;
        }
    }
}

struct Frame<'a> {
    kind: u8,
    flags: u8,
    stream: u32,
    payload: &'a [u8],
}

impl<'a> Frame<'a> {
    fn parse(bytes: &'a [u8]) -> Option<Self> {
        let head = bytes.get(..9)?;
        let len = (usize::from(head[0]) << 16) | (usize::from(head[1]) << 8) | usize::from(head[2]);
        Some(Frame {
            kind: head[3],
            flags: head[4],
            stream: u32::from_be_bytes(head[5..9].try_into().unwrap()) & 0x7fff_ffff,
            payload: bytes.get(9..9 + len)?,
        })
    }

    fn window_update(stream: u32, increment: u32) -> Vec<u8> {
        let mut f = vec![0, 0, 4, WINDOW_UPDATE, 0];
        f.extend_from_slice(&stream.to_be_bytes());
        f.extend_from_slice(&increment.to_be_bytes());
        f
    }
}

/// The client: writes the input, gives back the window the responses use,
/// reads and checks every frame, and closes when it has its answers.
async fn peer(io: tokio::io::DuplexStream, data: &[u8]) {
    let (mut rd, mut wr) = tokio::io::split(io);
    let mut input = PREFACE.to_vec();
    input.extend_from_slice(&[0, 0, 0, SETTINGS, 0, 0, 0, 0, 0]);
    input.extend_from_slice(data);
    let mut script = Script::read(&input[PREFACE.len()..]);
    let (more, mut queued) = mpsc::unbounded_channel::<Vec<u8>>();
    let writer = async move {
        let _ = wr.write_all(&input).await;
        while let Some(frame) = queued.recv().await {
            let _ = wr.write_all(&frame).await;
        }
        let _ = wr.shutdown().await;
    };
    let reader = async move {
        let mut check = Checker::new(&script);
        let mut buf = Vec::new();
        let mut more = script.whole.then_some(more);
        let mut closed_at = None;
        loop {
            // Whole frames first; then more bytes.
            while let Some(frame) = Frame::parse(&buf) {
                let len = 9 + frame.payload.len();
                for (stream, increment) in check.frame(&frame, &script) {
                    // What a client does: the window it used, given back.
                    script.credit(stream, u64::from(increment));
                    if let Some(tx) = &more {
                        let _ = tx.send(Frame::window_update(stream, increment));
                    }
                }
                buf.drain(..len);
            }
            if closed_at.is_none() && (more.is_none() || check.answered(&script)) {
                more = None;
                closed_at = Some(tokio::time::Instant::now());
            }
            let wait = match closed_at {
                Some(at) => CLOSE_DEADLINE.saturating_sub(at.elapsed()),
                None => QUIET,
            };
            let mut chunk = [0u8; 16 * 1024];
            match tokio::time::timeout(wait, rd.read(&mut chunk)).await {
                Ok(Ok(0)) | Ok(Err(_)) => break,
                Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
                Err(_) if closed_at.is_some() => panic!("the connection did not end after the client closed"),
                Err(_) => {
                    // Quiet: what the input left waiting stays so; close.
                    more = None;
                    closed_at = Some(tokio::time::Instant::now());
                }
            }
        }
        assert!(buf.is_empty(), "a partial frame at the end: {buf:02x?}");
        assert!(check.seen_settings, "no SETTINGS from the server");
    };
    tokio::join!(writer, reader);
}

/// Where one stream's response is, as the client sees it.
#[derive(Default)]
struct StreamSeen {
    final_head: bool,
    no_content: bool,
    ended: bool,
    reset: bool,
    data: u64,
}

/// The rules the server's frames must keep, frame by frame.
struct Checker {
    decoder: loona_hpack::Decoder<'static>,
    seen_settings: bool,
    block: Option<(u32, bool, Vec<u8>)>,
    streams: HashMap<u32, StreamSeen>,
    connection_data: u64,
    /// The lowest last-stream-id of the GOAWAYs so far, and whether one
    /// of them reported an error.
    goaway: Option<(u32, bool)>,
    settings_acks: usize,
    ping_acks: usize,
}

impl Checker {
    fn new(script: &Script) -> Self {
        let mut decoder = loona_hpack::Decoder::new();
        decoder.set_max_allowed_table_size(script.max_table_size);
        Self {
            decoder,
            seen_settings: false,
            block: None,
            streams: HashMap::new(),
            connection_data: 0,
            goaway: None,
            settings_acks: 0,
            ping_acks: 0,
        }
    }

    /// Whether every stream the client opened has its answer (or can have
    /// none: reset, or beyond a GOAWAY).
    fn answered(&self, script: &Script) -> bool {
        script.opened.difference(&script.reset).all(|id| {
            let done = self.streams.get(id).is_some_and(|s| s.ended || s.reset);
            done || self.goaway.is_some_and(|(last, error)| error || *id > last)
        })
    }

    /// Checks one frame; the window a client would give back for it.
    fn frame(&mut self, f: &Frame<'_>, script: &Script) -> Vec<(u32, u32)> {
        let what = format!(
            "type {:#x} flags {:#x} stream {} len {}",
            f.kind,
            f.flags,
            f.stream,
            f.payload.len()
        );
        if std::env::var_os("H2_CONNECTION_TRACE").is_some() {
            eprintln!("server: {what}");
        }
        assert!(f.payload.len() <= script.max_frame_size, "{what}: over the frame size");
        if !self.seen_settings {
            assert!(
                f.kind == SETTINGS && f.flags & ACK == 0,
                "{what}: the first frame is not SETTINGS"
            );
            self.seen_settings = true;
        }
        if let Some((stream, _, _)) = &self.block {
            assert!(
                f.kind == CONTINUATION && f.stream == *stream,
                "{what}: a header block on stream {stream} interrupted"
            );
        }
        if matches!(f.kind, HEADERS | DATA) {
            assert!(
                !self.goaway.is_some_and(|(last, error)| error || f.stream > last),
                "{what}: after a GOAWAY that excludes it"
            );
        }
        match f.kind {
            DATA => return self.data(f, script, &what),
            HEADERS => {
                self.stream_frame(f, script, &what);
                let payload = unpad(f, &what);
                let priority = if f.flags & 0x20 != 0 { 5 } else { 0 };
                assert!(payload.len() >= priority, "{what}: short priority");
                self.block = Some((f.stream, f.flags & END_STREAM != 0, payload[priority..].to_vec()));
                if f.flags & END_HEADERS != 0 {
                    self.end_block(&what);
                }
            }
            CONTINUATION => {
                let Some((_, _, block)) = &mut self.block else {
                    panic!("{what}: CONTINUATION without a header block");
                };
                block.extend_from_slice(f.payload);
                if f.flags & END_HEADERS != 0 {
                    self.end_block(&what);
                }
            }
            PRIORITY => assert!(f.stream != 0 && f.payload.len() == 5, "{what}: bad PRIORITY"),
            RST_STREAM => {
                assert!(f.payload.len() == 4, "{what}: bad RST_STREAM");
                assert!(
                    f.stream != 0 && script.mentioned.contains(&f.stream),
                    "{what}: reset of a stream the client never named"
                );
                let s = self.streams.entry(f.stream).or_default();
                assert!(!s.reset, "{what}: a second RST_STREAM");
                s.reset = true;
            }
            SETTINGS => {
                assert!(f.stream == 0, "{what}: SETTINGS on a stream");
                if f.flags & ACK != 0 {
                    assert!(f.payload.is_empty(), "{what}: SETTINGS ACK with a payload");
                    self.settings_acks += 1;
                    assert!(self.settings_acks <= script.settings, "{what}: more ACKs than SETTINGS");
                } else {
                    assert!(f.payload.len().is_multiple_of(6), "{what}: SETTINGS length");
                }
            }
            PING => {
                assert!(f.stream == 0 && f.payload.len() == 8, "{what}: bad PING");
                if f.flags & ACK != 0 {
                    self.ping_acks += 1;
                    assert!(self.ping_acks <= script.pings, "{what}: more PING ACKs than PINGs");
                }
            }
            GOAWAY => {
                assert!(f.stream == 0 && f.payload.len() >= 8, "{what}: bad GOAWAY");
                let last = u32::from_be_bytes(f.payload[..4].try_into().unwrap()) & 0x7fff_ffff;
                let error = f.payload[4..8] != [0, 0, 0, 0];
                if let Some((before, _)) = self.goaway {
                    assert!(last <= before, "{what}: last-stream-id went up from {before} to {last}");
                }
                let was_error = self.goaway.is_some_and(|(_, e)| e);
                self.goaway = Some((last, error || was_error));
            }
            WINDOW_UPDATE => {
                assert!(f.payload.len() == 4, "{what}: bad WINDOW_UPDATE");
                let increment = u32::from_be_bytes(f.payload.try_into().unwrap()) & 0x7fff_ffff;
                assert!(increment > 0, "{what}: WINDOW_UPDATE of 0");
                assert!(
                    f.stream == 0 || script.mentioned.contains(&f.stream),
                    "{what}: window of an idle stream"
                );
            }
            PUSH_PROMISE => panic!("{what}: PUSH_PROMISE from a proxy"),
            _ => panic!("{what}: a frame type sluice does not send"),
        }
        Vec::new()
    }

    fn stream_frame(&mut self, f: &Frame<'_>, script: &Script, what: &str) {
        assert!(f.stream % 2 == 1, "{what}: not a client's stream");
        assert!(
            script.named.contains(&f.stream),
            "{what}: a stream the client never opened"
        );
        let s = self.streams.entry(f.stream).or_default();
        assert!(!s.reset, "{what}: after RST_STREAM");
        assert!(!s.ended, "{what}: after END_STREAM");
    }

    fn data(&mut self, f: &Frame<'_>, script: &Script, what: &str) -> Vec<(u32, u32)> {
        self.stream_frame(f, script, what);
        unpad(f, what);
        let len = f.payload.len() as u64;
        let s = self.streams.entry(f.stream).or_default();
        assert!(s.final_head, "{what}: DATA before the response head");
        assert!(!s.no_content || len == 0, "{what}: content in a 204 or 304");
        s.data += len;
        let stream_limit = script.max_initial_window + script.stream_credit.get(&f.stream).copied().unwrap_or(0);
        assert!(
            s.data <= stream_limit,
            "{what}: {} bytes on the stream, window {stream_limit}",
            s.data
        );
        self.connection_data += len;
        assert!(
            self.connection_data <= script.connection_credit,
            "{what}: {} bytes on the connection, window {}",
            self.connection_data,
            script.connection_credit
        );
        s.ended = f.flags & END_STREAM != 0;
        let Ok(len) = u32::try_from(len) else {
            return Vec::new();
        };
        match (len, s.ended) {
            (0, _) => Vec::new(),
            (_, true) => vec![(0, len)],
            (_, false) => vec![(0, len), (f.stream, len)],
        }
    }

    /// A whole header block: it decodes, and is a response head or trailers.
    fn end_block(&mut self, what: &str) {
        let Some((stream, end_stream, block)) = self.block.take() else {
            return;
        };
        let fields = self
            .decoder
            .decode(&block)
            .unwrap_or_else(|e| panic!("{what}: the header block does not decode: {e:?} {block:02x?}"));
        let s = self.streams.entry(stream).or_default();
        for (name, _) in &fields {
            assert!(
                !name.iter().any(u8::is_ascii_uppercase),
                "{what}: an upper-case field name"
            );
            assert!(
                !matches!(
                    &name[..],
                    b"connection" | b"keep-alive" | b"proxy-connection" | b"transfer-encoding" | b"upgrade"
                ),
                "{what}: connection-specific field {:?}",
                String::from_utf8_lossy(name)
            );
        }
        let pseudo = fields.iter().take_while(|(n, _)| n.starts_with(b":")).count();
        assert!(
            fields[pseudo..].iter().all(|(n, _)| !n.starts_with(b":")),
            "{what}: a pseudo-header after a field"
        );
        if s.final_head {
            assert!(pseudo == 0 && end_stream, "{what}: a second head that is not trailers");
        } else {
            assert!(
                pseudo == 1 && fields[0].0 == b":status",
                "{what}: a response head without exactly :status"
            );
            let status = std::str::from_utf8(&fields[0].1)
                .ok()
                .filter(|v| v.len() == 3)
                .and_then(|v| v.parse::<u16>().ok())
                .filter(|v| (100..600).contains(v))
                .unwrap_or_else(|| panic!("{what}: :status {:?}", fields[0].1));
            if status < 200 {
                assert!(!end_stream, "{what}: an interim response ends the stream");
            } else {
                s.final_head = true;
                s.no_content = status == 204 || status == 304;
            }
        }
        s.ended = end_stream;
    }
}

/// A padded frame's payload without its padding, which must fit.
fn unpad<'a>(f: &Frame<'a>, what: &str) -> &'a [u8] {
    if f.flags & 0x8 == 0 {
        return f.payload;
    }
    let Some((&pad, rest)) = f.payload.split_first() else {
        panic!("{what}: PADDED without a pad length");
    };
    assert!(usize::from(pad) <= rest.len(), "{what}: more padding than payload");
    &rest[..rest.len() - usize::from(pad)]
}
