//! sluice's own HTTP/1.1 exchange with a backend, for the common request:
//! no request body or a small one of known length (read whole first, as
//! nginx buffers bodies), no upgrade, plain TCP. Everything else goes
//! through hyper's client (see [`crate::upstream`]).
//!
//! Why: with hyper's client every exchange crosses tasks (the request is
//! handed to the connection's task over a channel, the response head comes
//! back over a oneshot, the body over another channel) and the connection's
//! task is woken for each. Here the request's own task writes the head,
//! reads the answer and streams the body straight from the socket; the
//! connection goes back to its backend's idle queue when the body ends.
//! Parsing is httparse's (the parser hyper uses); header values share the
//! head's buffer rather than being copied.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use bytes::{Buf, Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Response, StatusCode, Version, header, request};
use http_body::{Frame, SizeHint};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crossbeam_queue::ArrayQueue;
use tokio::time::Instant;

use crate::h1head::{HeaderSpan, content_length, record_spans};
use crate::headers::{self, ForwardedFor};

/// Request bodies of known length up to this size take the own exchange,
/// read whole and sent with the head; larger ones stream through hyper.
pub const MAX_BUFFERED_BODY: u64 = 64 * 1024;
/// Response heads larger than this are refused (hyper's client default).
const MAX_HEAD_BYTES: usize = 8192 + 4096 * 100;
/// Response header lines beyond this are refused (hyper's limit too).
const MAX_HEADERS: usize = 100;
/// The least free space offered to each read.
const READ_CHUNK: usize = 8 * 1024;
/// The most space offered to one read.
const READ_MAX: usize = 64 * 1024;
/// A chunk-size line or the trailer section longer than this is malformed.
const MAX_CHUNK_LINE: usize = 1024;
const MAX_TRAILERS: usize = 16 * 1024;

/// Why an exchange on a raw connection failed.
#[derive(Debug, thiserror::Error)]
pub enum RawError {
    /// Nothing came back: on a reused connection, the backend closed it
    /// while idle and an idempotent request can be sent again elsewhere.
    #[error("the backend closed the connection before answering")]
    ClosedBeforeResponse,
    #[error("i/o with the backend failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("malformed response from the backend: {0}")]
    Malformed(&'static str),
    #[error("the backend's response body ended early")]
    Incomplete,
}

/// A plain-TCP connection to a backend and the bytes read past the last
/// message (none when idle).
#[derive(Debug)]
pub struct RawConn {
    io: TcpStream,
    buf: BytesMut,
    /// Space offered to the next response's first read: it grows while
    /// reads fill it, so that a whole response usually takes one read (as
    /// hyper's adaptive buffer does), and shrinks when they stay small.
    read_size: usize,
}

impl RawConn {
    pub fn new(io: TcpStream) -> Self {
        Self {
            io,
            buf: BytesMut::new(),
            read_size: READ_CHUNK,
        }
    }

    /// Adapts [`RawConn::read_size`] to a read of `n` bytes into `offered`.
    fn adapt(&mut self, n: usize, offered: usize) {
        if n >= offered {
            self.read_size = (self.read_size * 2).min(READ_MAX);
        } else if n < self.read_size / 4 {
            self.read_size = (self.read_size / 2).max(READ_CHUNK);
        }
    }

    /// Whether an idle connection is still usable: the backend has neither
    /// closed it nor sent anything. Costs no system call unless the socket
    /// was signalled readable meanwhile.
    pub fn alive(&mut self) -> bool {
        if !self.buf.is_empty() {
            return false;
        }
        let mut cx = Context::from_waker(Waker::noop());
        match self.io.poll_read_ready(&mut cx) {
            Poll::Pending => true,
            Poll::Ready(Err(_)) => false,
            Poll::Ready(Ok(())) => {
                let mut probe = [0u8; 1];
                matches!(self.io.try_read(&mut probe), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
            }
        }
    }
}

/// A backend's idle connections of the own exchange, each with the time
/// it went idle. Shared by the backend's connection pool
/// (`crate::upstream`) and the bodies that give connections back to it.
#[derive(Debug)]
pub struct RawIdle(ArrayQueue<(RawConn, Instant)>);

impl RawIdle {
    pub fn new(capacity: usize) -> Self {
        Self(ArrayQueue::new(capacity))
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// A connection whose last exchange ended cleanly; a full queue drops
    /// (closes) it.
    pub fn put(&self, conn: RawConn) {
        let _ = self.0.push((conn, Instant::now()));
    }

    /// The next idle connection that may carry a request: idle no longer
    /// than `idle_timeout` and not closed by the backend meanwhile (the
    /// others are closed on the way).
    pub fn take(&self, idle_timeout: std::time::Duration) -> Option<RawConn> {
        while let Some((mut conn, since)) = self.0.pop() {
            if since.elapsed() <= idle_timeout && conn.alive() {
                return Some(conn);
            }
        }
        None
    }

    /// Closes the idle connections that the backend has closed or that
    /// sat idle past `idle_timeout`. They are otherwise only noticed when
    /// next taken, and a backend that closes its side would leave them
    /// half-closed until traffic returns. One at a time, so requests
    /// meanwhile still find the others.
    pub fn close_stale(&self, idle_timeout: std::time::Duration) {
        for _ in 0..self.0.len() {
            let Some((mut conn, since)) = self.0.pop() else {
                return;
            };
            if since.elapsed() <= idle_timeout && conn.alive() {
                let _ = self.0.push((conn, since));
            }
        }
    }
}

/// How the response body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    Length(u64),
    Chunked(Chunk),
    UntilClose,
    Done,
}

/// Where a chunked body's decoder stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    Size,
    Data(u64),
    DataEnd,
    Trailers(usize),
}

/// Writes the request head for a body of `body_len` bytes (sent after
/// it), with the forwarding headers for `fwd` and `host` (see
/// [`headers::write_forwarding`]). Header names are lower-case already
/// (`http` stores them so).
pub fn encode_head(parts: &request::Parts, fwd: &ForwardedFor, host: &HeaderValue, body_len: u64, out: &mut Vec<u8>) {
    out.extend_from_slice(parts.method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(parts.uri.path_and_query().map_or("/", |p| p.as_str()).as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in &parts.headers {
        if headers::replaced_by_forwarding(name) {
            continue;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    headers::write_forwarding(&parts.headers, fwd, host, out);
    // The body's length, when the client did not state it: always for a
    // body, and as 0 for a method that normally carries one (as hyper
    // does); GET and friends without a body send no length at all.
    let bodied = !matches!(
        parts.method,
        Method::GET | Method::HEAD | Method::DELETE | Method::OPTIONS | Method::TRACE | Method::CONNECT
    );
    if (bodied || body_len > 0) && !parts.headers.contains_key(header::CONTENT_LENGTH) {
        out.extend_from_slice(b"content-length: ");
        out.extend_from_slice(itoa::Buffer::new().format(body_len).as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// Sends `head` on `conn` and reads the response head; the body streams
/// from the socket as the response's [`RawBody`] is polled. The headers
/// come as [`HeaderLines`] on the body when `headers` says so, else in the
/// response's header map.
pub async fn exchange(
    mut conn: RawConn,
    head: &[u8],
    method: &Method,
    idle: &Arc<RawIdle>,
    headers: HeadersAs,
) -> Result<Response<RawBody>, RawError> {
    conn.io.write_all(head).await.map_err(|e| before_response(e, &conn))?;
    loop {
        if let Some((res, framing, keep_alive, lines)) = parse_head(&mut conn.buf, method, headers)? {
            // 1xx answers (100 Continue, 103 Early Hints) precede the real
            // one; a 101 answers no request sent here (upgrades go through
            // hyper), and what follows it may not be HTTP.
            if res.status() == StatusCode::SWITCHING_PROTOCOLS {
                return Err(RawError::Malformed("101 to a request that asked for no upgrade"));
            }
            if res.status().is_informational() {
                continue;
            }
            let body = RawBody::new(conn, framing, keep_alive, Arc::clone(idle), lines);
            return Ok(res.map(|()| body));
        }
        if conn.buf.len() >= MAX_HEAD_BYTES {
            return Err(RawError::Malformed("response head too large"));
        }
        conn.buf.reserve(conn.read_size);
        let offered = conn.buf.capacity() - conn.buf.len();
        let n = conn
            .io
            .read_buf(&mut conn.buf)
            .await
            .map_err(|e| before_response(e, &conn))?;
        conn.adapt(n, offered);
        if n == 0 {
            return Err(if conn.buf.is_empty() {
                RawError::ClosedBeforeResponse
            } else {
                RawError::Malformed("connection closed inside the response head")
            });
        }
    }
}

/// A reset or broken pipe before any byte of the answer means the same as
/// a clean close then: the backend never took the request.
fn before_response(e: std::io::Error, conn: &RawConn) -> RawError {
    use std::io::ErrorKind::{BrokenPipe, ConnectionAborted, ConnectionReset};
    if conn.buf.is_empty() && matches!(e.kind(), ConnectionReset | BrokenPipe | ConnectionAborted) {
        RawError::ClosedBeforeResponse
    } else {
        RawError::Io(e)
    }
}

/// Where a response's headers go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadersAs {
    /// Into the response's header map (for hyper's connections).
    Map,
    /// Into [`HeaderLines`], written as they are by sluice's own
    /// HTTP/1.1 loop and encoded line by line by its HTTP/2 server: no
    /// header map built and read back per response.
    Lines,
}

/// A backend's response header lines as a client on sluice's own HTTP/1.1
/// loop gets them (and its HTTP/2 server encodes them): names lower-cased,
/// in the backend's order, without the hop-by-hop headers (RFC 9110
/// §7.6.1, as [`headers::strip_hop_by_hop`]) and without the framing
/// ones, which the client side states itself (a length stays where no
/// body follows: HEAD, 204, 304).
#[derive(Debug)]
pub struct HeaderLines {
    /// `name: value\r\n` lines. A `Vec`, not `Bytes`: written once and
    /// dropped, it needs no shared count (`Bytes` from a `Vec` with spare
    /// capacity allocates one).
    pub bytes: Vec<u8>,
    pub has_date: bool,
}

impl HeaderLines {
    /// Each line's name and value, for a client that does not take them
    /// as they are (the HTTP/2 server).
    pub fn fields(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.bytes.split(|&b| b == b'\n').filter_map(|line| {
            // Names are tokens: the first colon ends them, and ": " was
            // written after them.
            let colon = line.iter().position(|&b| b == b':')?;
            let value = line.get(colon + 2..)?;
            Some((line.get(..colon)?, value.strip_suffix(b"\r").unwrap_or(value)))
        })
    }
}

type Parsed = (Response<()>, Framing, bool, Option<HeaderLines>);

/// Parses a complete response head off the front of `buf`, or `None` when
/// more bytes are needed.
fn parse_head(buf: &mut BytesMut, method: &Method, headers_as: HeadersAs) -> Result<Option<Parsed>, RawError> {
    if buf.is_empty() {
        return Ok(None);
    }
    // Where each header's name and value sit in the head, so the values
    // can share the head's bytes once the parser's borrow ends.
    let mut spans: [HeaderSpan; MAX_HEADERS] = [(0, 0, 0, 0); MAX_HEADERS];
    let (len, code, minor, count) = {
        // Not zeroed: httparse writes each header before it reads it.
        let mut headers = [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
        let mut res = httparse::Response::new(&mut []);
        let parsed = httparse::ParserConfig::default().parse_response_with_uninit_headers(&mut res, buf, &mut headers);
        let len = match parsed {
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(httparse::Error::TooManyHeaders) => return Err(RawError::Malformed("too many headers")),
            Err(_) => return Err(RawError::Malformed("unparsable response head")),
        };
        let count = record_spans(buf, res.headers, &mut spans);
        (len, res.code.unwrap_or(0), res.version.unwrap_or(1), count)
    };
    let head = buf.split_to(len).freeze();
    let status = StatusCode::from_u16(code).map_err(|_| RawError::Malformed("invalid status code"))?;
    let spans = spans.get(..count).unwrap_or_default();
    let (mut chunked, mut length, mut close, mut keep_alive_token, mut other_coding, mut listed) =
        (false, None, false, false, false, false);
    for &(ns, ne, vs, ve) in spans {
        let (name, value) = name_value(&head, (ns, ne, vs, ve))?;
        if name.eq_ignore_ascii_case(b"transfer-encoding") {
            // On HTTP/1.0 the framing is faulty (RFC 9112 §6.1), as hyper's
            // client also reads it.
            if minor == 0 {
                return Err(RawError::Malformed("transfer-encoding on an HTTP/1.0 response"));
            }
            // Codings are tokens; anything else leaves the framing unclear
            // (hyper's client reads such a value as not chunked).
            let tokens = value.split(|&b| b == b',').map(<[u8]>::trim_ascii);
            if tokens.clone().any(|t| {
                t.is_empty()
                    || !t
                        .iter()
                        .all(|&b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
            }) {
                return Err(RawError::Malformed("invalid transfer-encoding"));
            }
            // The last coding decides: chunked, or read until close.
            let last = value.rsplit(|&b| b == b',').next().unwrap_or_default();
            chunked = last.trim_ascii().eq_ignore_ascii_case(b"chunked");
            other_coding = !chunked;
        } else if name.eq_ignore_ascii_case(b"content-length") {
            let n = content_length(value).ok_or(RawError::Malformed("invalid content-length"))?;
            if length.is_some_and(|l| l != n) {
                return Err(RawError::Malformed("conflicting content-length values"));
            }
            length = Some(n);
        } else if name.eq_ignore_ascii_case(b"connection") {
            for token in headers::connection_tokens(value) {
                let (is_close, is_keep_alive) = (
                    token.eq_ignore_ascii_case(b"close"),
                    token.eq_ignore_ascii_case(b"keep-alive"),
                );
                close |= is_close;
                keep_alive_token |= is_keep_alive;
                listed |= !(is_close || is_keep_alive);
            }
        }
    }
    let no_body = *method == Method::HEAD
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    let framing = if no_body {
        Framing::Length(0)
    } else if chunked {
        Framing::Chunked(Chunk::Size)
    } else if other_coding {
        Framing::UntilClose
    } else {
        length.map_or(Framing::UntilClose, Framing::Length)
    };
    let keep_alive = match minor {
        1 => !close,
        _ => keep_alive_token && !close,
    } && framing != Framing::UntilClose
        && !(length.is_some() && (chunked || other_coding));
    // A length beside a transfer coding is ignored (RFC 9112 §6.3), and
    // must not reach the client next to a body it does not describe.
    let drop_length = chunked || other_coding;
    let mut res = Response::new(());
    *res.status_mut() = status;
    *res.version_mut() = Version::HTTP_11;
    let lines = match headers_as {
        HeadersAs::Map => {
            *res.headers_mut() = header_map(&head, spans, drop_length)?;
            None
        }
        HeadersAs::Lines => {
            let keep_length = no_body && !drop_length;
            Some(header_lines(&head, spans, keep_length, listed))
        }
    };
    Ok(Some((res, framing, keep_alive, lines)))
}

/// A header's name and value in `head`. httparse has checked both: names
/// are tokens, values only HTAB, SP, visible characters and obs-text (what
/// `http`'s `HeaderValue` admits).
fn name_value(head: &[u8], (ns, ne, vs, ve): HeaderSpan) -> Result<(&[u8], &[u8]), RawError> {
    match (head.get(ns as usize..ne as usize), head.get(vs as usize..ve as usize)) {
        (Some(name), Some(value)) => Ok((name, value)),
        _ => Err(RawError::Malformed("header outside the head")),
    }
}

fn header_map(head: &Bytes, spans: &[HeaderSpan], drop_length: bool) -> Result<HeaderMap, RawError> {
    let mut headers = HeaderMap::with_capacity(spans.len());
    for &(ns, ne, vs, ve) in spans {
        let name = HeaderName::from_bytes(head.get(ns as usize..ne as usize).unwrap_or_default())
            .map_err(|_| RawError::Malformed("invalid header name"))?;
        let value = HeaderValue::from_maybe_shared(head.slice(vs as usize..ve as usize))
            .map_err(|_| RawError::Malformed("invalid header value"))?;
        headers.append(name, value);
    }
    if drop_length {
        headers.remove(header::CONTENT_LENGTH);
    }
    Ok(headers)
}

/// See [`HeaderLines`]. `listed`: a `Connection` header names other
/// headers, which go too. Names are tokens already (httparse checks).
fn header_lines(head: &[u8], spans: &[HeaderSpan], keep_length: bool, listed: bool) -> HeaderLines {
    let mut out = Vec::with_capacity(head.len());
    let mut has_date = false;
    for &(ns, ne, vs, ve) in spans {
        let name = head.get(ns as usize..ne as usize).unwrap_or_default();
        let start = out.len();
        out.extend(name.iter().map(u8::to_ascii_lowercase));
        let lower = out.get(start..).unwrap_or_default();
        let dropped = headers::is_hop_by_hop_name(lower)
            || (lower == b"content-length" && !keep_length)
            || (listed && named_by_connection(head, spans, lower));
        if dropped {
            out.truncate(start);
            continue;
        }
        has_date |= lower == b"date";
        out.extend_from_slice(b": ");
        out.extend_from_slice(head.get(vs as usize..ve as usize).unwrap_or_default());
        out.extend_from_slice(b"\r\n");
    }
    HeaderLines { bytes: out, has_date }
}

/// Whether a `Connection` header in `head` lists `lower`.
fn named_by_connection(head: &[u8], spans: &[HeaderSpan], lower: &[u8]) -> bool {
    spans.iter().any(|&(ns, ne, vs, ve)| {
        let name = head.get(ns as usize..ne as usize).unwrap_or_default();
        name.eq_ignore_ascii_case(b"connection")
            && headers::connection_tokens(head.get(vs as usize..ve as usize).unwrap_or_default())
                .any(|t| t.eq_ignore_ascii_case(lower))
    })
}

/// A response body read straight from the backend's socket. Once read to
/// its end the connection goes back to the backend's idle queue; dropped
/// earlier, the connection closes with it.
#[derive(Debug)]
pub struct RawBody {
    conn: Option<RawConn>,
    framing: Framing,
    keep_alive: bool,
    /// Where the connection goes when the body has been read to its end.
    idle: Arc<RawIdle>,
    /// The response's headers, when asked for as lines.
    lines: Option<HeaderLines>,
}

impl RawBody {
    fn new(conn: RawConn, framing: Framing, keep_alive: bool, idle: Arc<RawIdle>, lines: Option<HeaderLines>) -> Self {
        Self {
            conn: Some(conn),
            framing,
            keep_alive,
            idle,
            lines,
        }
    }

    /// The response's headers, when the exchange was asked for them as
    /// lines ([`HeadersAs::Lines`]); once.
    pub fn take_lines(&mut self) -> Option<HeaderLines> {
        self.lines.take()
    }

    fn finish(&mut self) {
        self.framing = Framing::Done;
        if let Some(mut conn) = self.conn.take()
            && self.keep_alive
            && conn.buf.is_empty()
        {
            // The empty buffer keeps the last response's allocation: once
            // that response is gone, the next read reuses it instead of
            // allocating. Only a large one is let go while idle.
            if conn.buf.capacity() > READ_MAX {
                conn.buf = BytesMut::new();
            }
            self.idle.put(conn);
        }
    }

    pub fn is_end_stream(&self) -> bool {
        matches!(self.framing, Framing::Done | Framing::Length(0))
    }

    pub fn size_hint(&self) -> SizeHint {
        match self.framing {
            Framing::Length(n) => SizeHint::with_exact(n),
            Framing::Done => SizeHint::with_exact(0),
            _ => SizeHint::default(),
        }
    }

    pub fn poll_frame(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, RawError>>> {
        loop {
            let Some(conn) = self.conn.as_mut() else {
                return Poll::Ready(None);
            };
            match next_step(&mut self.framing, &mut conn.buf, conn.read_size)? {
                Step::End => {
                    self.finish();
                    return Poll::Ready(None);
                }
                Step::Data(data) => {
                    if self.is_end_stream() {
                        // The last bytes: hand the connection back now, as
                        // hyper polls no further once the end is known.
                        self.finish();
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Step::Continue => {}
                Step::Read(want) => {
                    // One byte more than the rest of the body: a read that
                    // gets it all is then a short read, after which tokio
                    // knows the socket is drained (no extra read to learn it).
                    conn.buf.reserve(want.max(READ_CHUNK) + 1);
                    match tokio_util::io::poll_read_buf(Pin::new(&mut conn.io), cx, &mut conn.buf) {
                        Poll::Pending => return Poll::Pending,
                        Poll::Ready(Err(e)) => {
                            self.conn = None;
                            return Poll::Ready(Some(Err(RawError::Io(e))));
                        }
                        Poll::Ready(Ok(0)) if self.framing == Framing::UntilClose => {
                            self.keep_alive = false;
                            self.finish();
                            return Poll::Ready(None);
                        }
                        Poll::Ready(Ok(0)) => {
                            self.conn = None;
                            return Poll::Ready(Some(Err(RawError::Incomplete)));
                        }
                        Poll::Ready(Ok(_)) => {}
                    }
                }
            }
        }
    }
}

impl Drop for RawBody {
    fn drop(&mut self) {
        // hyper stops polling once `is_end_stream` says so.
        if self.is_end_stream() {
            self.finish();
        }
    }
}

/// The body decoder's next step over the buffered bytes: the live body
/// ([`RawBody::poll_frame`]) and [`decode_whole`] both go through it.
fn next_step(framing: &mut Framing, buf: &mut BytesMut, read_size: usize) -> Result<Step, RawError> {
    Ok(match framing {
        Framing::Done | Framing::Length(0) => Step::End,
        Framing::Length(left) => match take(buf, left) {
            Some(data) => Step::Data(data),
            None => Step::Read(usize::try_from(*left).unwrap_or(READ_MAX).min(READ_MAX)),
        },
        Framing::Chunked(state) => decode_chunk(buf, state)?,
        Framing::UntilClose if buf.is_empty() => Step::Read(read_size),
        Framing::UntilClose => Step::Data(buf.split().freeze()),
    })
}

/// What the body decoder does next.
enum Step {
    Data(Bytes),
    Read(usize),
    Continue,
    End,
}

/// Up to `left` buffered bytes of a body of known length.
fn take(buf: &mut BytesMut, left: &mut u64) -> Option<Bytes> {
    if buf.is_empty() {
        return None;
    }
    let n = usize::try_from(*left).unwrap_or(usize::MAX).min(buf.len());
    *left -= n as u64;
    Some(buf.split_to(n).freeze())
}

/// One step of chunked decoding over the buffered bytes.
/// A chunk size: hex digits only, as hyper reads it (`u64::from_str_radix`
/// would also take a leading `+`, which a backend could use to make
/// `+0` end a body for sluice and not for the next hop).
fn chunk_size(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || digits.len() > 16 {
        return None;
    }
    digits
        .iter()
        .try_fold(0u64, |n, &b| Some((n << 4) | u64::from(char::from(b).to_digit(16)?)))
}

fn decode_chunk(buf: &mut BytesMut, state: &mut Chunk) -> Result<Step, RawError> {
    let need_more = |limit: usize, buf: &BytesMut, what: &'static str| {
        if buf.len() > limit {
            Err(RawError::Malformed(what))
        } else {
            Ok(Step::Read(READ_CHUNK))
        }
    };
    match state {
        Chunk::Size => {
            let Some(end) = find_crlf(buf) else {
                return need_more(MAX_CHUNK_LINE, buf, "chunk-size line too long");
            };
            let line = buf.get(..end).unwrap_or_default();
            // As hyper's client reads it (never looser): hex digits from the
            // start of the line, then spaces or tabs, an extension, or the
            // end; no bare LF anywhere in the line.
            if line.iter().any(|&b| b == b'\n' || b == b'\r') {
                return Err(RawError::Malformed("bare CR or LF in a chunk-size line"));
            }
            let size = line.split(|&b| b == b';').next().unwrap_or_default();
            let blanks = size.iter().rev().take_while(|&&b| b == b' ' || b == b'\t').count();
            let digits = size.get(..size.len() - blanks).unwrap_or_default();
            let size = chunk_size(digits).ok_or(RawError::Malformed("invalid chunk size"))?;
            buf.advance(end + 2);
            *state = if size == 0 {
                Chunk::Trailers(0)
            } else {
                Chunk::Data(size)
            };
            Ok(Step::Continue)
        }
        Chunk::Data(left) => match take(buf, left) {
            Some(data) => {
                if *left == 0 {
                    *state = Chunk::DataEnd;
                }
                Ok(Step::Data(data))
            }
            None => Ok(Step::Read(READ_CHUNK)),
        },
        Chunk::DataEnd => {
            let Some(crlf) = buf.get(..2) else {
                return Ok(Step::Read(READ_CHUNK));
            };
            if crlf != b"\r\n" {
                return Err(RawError::Malformed("chunk data not followed by CRLF"));
            }
            buf.advance(2);
            *state = Chunk::Size;
            Ok(Step::Continue)
        }
        Chunk::Trailers(seen) => {
            // Trailer fields are read past and dropped: hyper's HTTP/1
            // server would not send them on either.
            let Some(end) = find_crlf(buf) else {
                return need_more(MAX_TRAILERS.saturating_sub(*seen), buf, "trailers too long");
            };
            // Dropped, but read as field lines, as hyper's client reads them:
            // a token name, a colon, a value without control bytes.
            if end > 0 && !is_field_line(buf.get(..end).unwrap_or_default()) {
                return Err(RawError::Malformed("invalid trailer field"));
            }
            buf.advance(end + 2);
            if end == 0 {
                return Ok(Step::End);
            }
            *seen += end + 2;
            if *seen > MAX_TRAILERS {
                return Err(RawError::Malformed("trailers too long"));
            }
            Ok(Step::Continue)
        }
    }
}

/// `name: value` with a token name and a value without control bytes but
/// HTAB (obs-text allowed), as httparse reads a field line.
fn is_field_line(line: &[u8]) -> bool {
    let Some(colon) = line.iter().position(|&b| b == b':') else {
        return false;
    };
    let (name, value) = line.split_at(colon);
    !name.is_empty()
        && name
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
        && value.iter().all(|&b| b == b'\t' || (b >= 0x20 && b != 0x7f))
}

/// Reads a whole backend response held in memory the way an exchange
/// would: the response with its decoded body, and whether the connection
/// could be reused. For the fuzz target (`fuzz/checks.rs`, replayed by the
/// tests).
#[doc(hidden)]
pub fn decode_whole(bytes: &[u8], method: &Method) -> Result<(Response<Vec<u8>>, bool), RawError> {
    let mut buf = BytesMut::from(bytes);
    let (res, mut framing, keep_alive, _) = loop {
        match parse_head(&mut buf, method, HeadersAs::Map)? {
            None => return Err(RawError::Incomplete),
            Some((res, ..)) if res.status() == StatusCode::SWITCHING_PROTOCOLS => {
                return Err(RawError::Malformed("101 to a request that asked for no upgrade"));
            }
            Some((res, ..)) if res.status().is_informational() => {}
            Some(parsed) => break parsed,
        }
    };
    let mut body = Vec::new();
    loop {
        match next_step(&mut framing, &mut buf, READ_CHUNK)? {
            Step::Data(data) => body.extend_from_slice(&data),
            Step::Continue => {}
            Step::End => return Ok((res.map(|()| body), keep_alive)),
            // Past the held bytes the connection has closed: the end of a
            // body that runs to the close, a truncated one otherwise.
            Step::Read(_) if framing == Framing::UntilClose => return Ok((res.map(|()| body), keep_alive)),
            Step::Read(_) => return Err(RawError::Incomplete),
        }
    }
}

/// A response head read both ways: the header map as a hyper connection's
/// client gets it (hop-by-hop headers stripped), and the [`HeaderLines`]
/// sluice's own loop writes. For the fuzz target (`fuzz/checks.rs`) and
/// the tests, which check that the two say the same.
#[doc(hidden)]
pub fn head_both_ways(bytes: &[u8], method: &Method) -> Result<Option<(HeaderMap, HeaderLines)>, RawError> {
    let as_map = parse_head(&mut BytesMut::from(bytes), method, HeadersAs::Map)?;
    let as_lines = parse_head(&mut BytesMut::from(bytes), method, HeadersAs::Lines)?;
    Ok(match (as_map, as_lines) {
        (Some((mut res, ..)), Some((.., Some(lines)))) => {
            headers::strip_hop_by_hop(res.headers_mut());
            Some((std::mem::take(res.headers_mut()), lines))
        }
        _ => None,
    })
}

fn find_crlf(buf: &[u8]) -> Option<usize> {
    buf.windows(2).position(|w| w == b"\r\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &[u8], method: &Method) -> Result<Option<Parsed>, RawError> {
        parse_head(&mut BytesMut::from(text), method, HeadersAs::Map)
    }

    fn framing_of(text: &[u8]) -> (Framing, bool) {
        let (_, framing, keep_alive, _) = parse(text, &Method::GET).unwrap().unwrap();
        (framing, keep_alive)
    }

    #[test]
    fn a_partial_head_asks_for_more() {
        assert!(
            parse(b"HTTP/1.1 200 OK\r\ncontent-len", &Method::GET)
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn framing_follows_rfc_9112() {
        assert_eq!(
            framing_of(b"HTTP/1.1 200 OK\r\ncontent-length: 12\r\n\r\n"),
            (Framing::Length(12), true)
        );
        assert_eq!(
            framing_of(b"HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, chunked\r\n\r\n"),
            (Framing::Chunked(Chunk::Size), true)
        );
        // No length: the body runs to the close, and the connection ends.
        assert_eq!(framing_of(b"HTTP/1.1 200 OK\r\n\r\n"), (Framing::UntilClose, false));
        assert_eq!(
            framing_of(b"HTTP/1.1 200 OK\r\ntransfer-encoding: gzip\r\n\r\n"),
            (Framing::UntilClose, false)
        );
        assert_eq!(
            framing_of(b"HTTP/1.1 204 No Content\r\n\r\n"),
            (Framing::Length(0), true)
        );
        assert_eq!(
            framing_of(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\nconnection: close\r\n\r\n"),
            (Framing::Length(5), false)
        );
        // HTTP/1.0 keeps the connection only when asked to.
        assert_eq!(
            framing_of(b"HTTP/1.0 200 OK\r\ncontent-length: 5\r\n\r\n"),
            (Framing::Length(5), false)
        );
        assert_eq!(
            framing_of(b"HTTP/1.0 200 OK\r\ncontent-length: 5\r\nconnection: keep-alive\r\n\r\n"),
            (Framing::Length(5), true)
        );
    }

    #[test]
    fn a_head_response_has_no_body_whatever_its_length_says() {
        let (res, framing, keep_alive, _) = parse(b"HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\n", &Method::HEAD)
            .unwrap()
            .unwrap();
        assert_eq!((framing, keep_alive), (Framing::Length(0), true));
        assert_eq!(res.headers()[header::CONTENT_LENGTH], "1000");
    }

    #[test]
    fn a_length_beside_chunked_is_dropped_and_the_connection_not_reused() {
        let (res, framing, keep_alive, _) = parse(
            b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\ntransfer-encoding: chunked\r\n\r\n",
            &Method::GET,
        )
        .unwrap()
        .unwrap();
        assert_eq!((framing, keep_alive), (Framing::Chunked(Chunk::Size), false));
        assert!(!res.headers().contains_key(header::CONTENT_LENGTH));
    }

    #[test]
    fn headers_and_status_arrive_intact_and_the_head_is_consumed() {
        let mut buf =
            BytesMut::from(&b"HTTP/1.1 404 Not Found\r\nX-Tag: a\r\nx-tag: b\r\ncontent-length: 2\r\n\r\nhiNEXT"[..]);
        let (res, ..) = parse_head(&mut buf, &Method::GET, HeadersAs::Map).unwrap().unwrap();
        assert_eq!(res.status(), 404);
        let tags: Vec<_> = res.headers().get_all("x-tag").iter().collect();
        assert_eq!(tags, ["a", "b"]);
        assert_eq!(&buf[..], b"hiNEXT");
    }

    fn lines_of(text: &[u8], method: &Method) -> (String, bool) {
        let (map, lines) = head_both_ways(text, method).unwrap().unwrap();
        // The map the hyper path writes says the same, framing aside.
        let mut from_map = String::new();
        let mut pairs = Vec::new();
        for (name, value) in &map {
            if *name != header::CONTENT_LENGTH || *method == Method::HEAD {
                from_map.push_str(&format!("{name}: {}\r\n", value.to_str().unwrap()));
                pairs.push((name.as_str().as_bytes(), value.as_bytes()));
            }
        }
        // And the lines, field by field, as the HTTP/2 server reads them.
        assert_eq!(lines.fields().collect::<Vec<_>>(), pairs);
        let text = String::from_utf8(lines.bytes).unwrap();
        assert_eq!(text, from_map);
        (text, lines.has_date)
    }

    #[test]
    fn header_lines_leave_out_hop_by_hop_and_framing_headers() {
        let head = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: keep-alive, X-Drop\r\n\
            x-drop: 1\r\nKeep-Alive: timeout=5\r\nProxy-Authenticate: Basic\r\nx-sluice-pool: blue\r\n\
            Content-Length: 2\r\nDate: Thu, 26 Nov 2026 10:00:00 GMT\r\nX-App: a\r\nLocation: http://x:80/\r\n\r\nhi";
        let (text, has_date) = lines_of(head, &Method::GET);
        assert_eq!(
            text,
            "content-type: text/plain\r\ndate: Thu, 26 Nov 2026 10:00:00 GMT\r\nx-app: a\r\nlocation: http://x:80/\r\n"
        );
        assert!(has_date);
        // No body follows a HEAD response: its length describes the
        // representation and stays.
        let (text, has_date) = lines_of(b"HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\n", &Method::HEAD);
        assert_eq!(text, "content-length: 1000\r\n");
        assert!(!has_date);
        // Beside a transfer coding a length never stays, HEAD or not.
        let (text, _) = lines_of(
            b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\ntransfer-encoding: chunked\r\nx-a: 1\r\n\r\n",
            &Method::HEAD,
        );
        assert_eq!(text, "x-a: 1\r\n");
    }

    #[test]
    fn broken_heads_are_malformed() {
        for bad in [
            &b"HTTP/1.1 2000 OK\r\n\r\n"[..],
            b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\ncontent-length: 4\r\n\r\n",
            b"HTTP/1.1 200 OK\r\ncontent-length: -1\r\n\r\n",
            b"HTTP/1.1 200 OK\r\ncontent-length: +5\r\n\r\nhello",
            b"SSH-2.0-OpenSSH\r\n\r\n",
        ] {
            assert!(
                matches!(parse(bad, &Method::GET), Err(RawError::Malformed(_))),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    /// Feeds `wire` to the chunked decoder `step` bytes at a time.
    fn decode_all(wire: &[u8], step: usize) -> Result<Vec<u8>, RawError> {
        let (mut buf, mut state, mut out) = (BytesMut::new(), Chunk::Size, Vec::new());
        let mut fed = 0;
        loop {
            match decode_chunk(&mut buf, &mut state)? {
                Step::Data(d) => out.extend_from_slice(&d),
                Step::Continue => {}
                Step::End => return Ok(out),
                Step::Read(_) => {
                    let next = (fed + step).min(wire.len());
                    if fed == next {
                        return Err(RawError::Incomplete);
                    }
                    buf.extend_from_slice(&wire[fed..next]);
                    fed = next;
                }
            }
        }
    }

    #[test]
    fn chunked_bodies_decode_whatever_the_segmentation() {
        let wire = b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nx-trailer: t\r\n\r\n";
        for step in [1, 2, 3, 7, wire.len()] {
            assert_eq!(decode_all(wire, step).unwrap(), b"hello world", "step {step}");
        }
    }

    #[test]
    fn broken_chunked_bodies_are_errors() {
        assert!(matches!(
            decode_all(b"zz\r\nhello\r\n0\r\n\r\n", 4),
            Err(RawError::Malformed(_))
        ));
        assert!(matches!(
            decode_all(b"5\r\nhelloXX0\r\n\r\n", 4),
            Err(RawError::Malformed(_))
        ));
        // A sign is no hex digit (a differential fuzzing finding).
        for signed in [&b"+5\r\nhello\r\n0\r\n\r\n"[..], b"5\r\nhello\r\n+0\r\n\r\n"] {
            assert!(matches!(decode_all(signed, 4), Err(RawError::Malformed(_))));
        }
        assert!(matches!(decode_all(b"5\r\nhel", 4), Err(RawError::Incomplete)));
        let endless = vec![b'1'; 2 * MAX_CHUNK_LINE];
        assert!(matches!(decode_all(&endless, 64), Err(RawError::Malformed(_))));
    }

    #[test]
    fn bodyless_requests_say_so_only_where_a_body_is_expected() {
        let encode = |method: Method| {
            let (mut parts, ()) = http::Request::builder()
                .method(method)
                .uri("/a?b=c")
                .header("host", "example")
                .body(())
                .unwrap()
                .into_parts();
            parts.headers.append("x-multi", HeaderValue::from_static("1"));
            parts.headers.append("x-multi", HeaderValue::from_static("2"));
            let mut out = Vec::new();
            let fwd = ForwardedFor::new("10.0.0.1".parse().unwrap(), false);
            encode_head(&parts, &fwd, &HeaderValue::from_static("example"), 0, &mut out);
            String::from_utf8(out).unwrap()
        };
        assert_eq!(
            encode(Method::GET),
            "GET /a?b=c HTTP/1.1\r\nhost: example\r\nx-multi: 1\r\nx-multi: 2\r\n\
             x-forwarded-for: 10.0.0.1\r\nx-forwarded-proto: http\r\nx-forwarded-host: example\r\n\
             forwarded: for=10.0.0.1;proto=http\r\n\r\n"
        );
        assert!(encode(Method::POST).ends_with("content-length: 0\r\n\r\n"));
    }
}
