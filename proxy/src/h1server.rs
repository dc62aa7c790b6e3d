//! sluice's own HTTP/1.1 server loop for client connections.
//!
//! It reads and parses request heads itself and serves the request most
//! traffic consists of (a complete HTTP/1.1 head, no body or a small one of
//! known length that arrived with it, no upgrade, no `Expect`) without
//! hyper's connection dispatcher: one buffer per connection, header values
//! shared with it, and the response head written together with the body's
//! first bytes. At the first request it does not take (a chunked, large or
//! late body, an upgrade, HTTP/1.0, `CONNECT`, a head it cannot parse or
//! one past the limits) it hands the connection, with the bytes already
//! read, to hyper, which serves it from then on and gives the answers (400,
//! 431...) hyper gives; a connection that starts with the HTTP/2 preface is
//! handed the same way to sluice's HTTP/2 server (`crate::h2`).

use std::future::poll_fn;
use std::io::{IoSlice, Write as _};
use std::mem::MaybeUninit;
use std::pin::{Pin, pin};
use std::task::{Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode, Uri, header};
use http_body::Body;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::body::ProxyBody;
use crate::forward::{ClientConn, Proxy, Scratch};
use crate::h1head::{HeaderSpan, content_length, record_spans, span_in};
use crate::h1raw::HeaderLines;
use crate::options::{IDLE_RELEASE_AFTER, ListenerOptions};
use crate::request_body::ClientBody;

/// Headers parsed on the fast path; a request with more goes to hyper,
/// which applies the configured limit.
const MAX_HEADERS: usize = 100;
/// Bodies up to this size that arrive with their head are served here
/// (sent upstream in the head's write, see `forward`); larger ones stream
/// through hyper.
const MAX_READ_BODY: usize = crate::h1raw::MAX_BUFFERED_BODY as usize;
/// Read size for request heads; most fit many times over.
const READ_SIZE: usize = 4096;
/// Response bytes gathered before a write.
const WRITE_AT: usize = 64 * 1024;
/// Body frames this large go out from their own buffer (one vectored write
/// with what is gathered) instead of being copied.
const COPY_BELOW: usize = 4096;

/// How a connection left the fast path.
pub enum Outcome<I> {
    /// Closed (by either side, a timeout or the drain).
    Closed,
    /// A request the fast path does not take: hyper serves the connection
    /// from here, starting with the bytes already read.
    HandOff(Prefixed<I>),
}

/// Serves `io` until it closes or needs hyper. `close_idle` fires when the
/// listener drains: a connection between requests then closes.
pub async fn serve<I>(
    mut io: I,
    conn: &ClientConn,
    proxy: &Proxy,
    opts: &ListenerOptions,
    mut close_idle: watch::Receiver<()>,
) -> Outcome<I>
where
    I: AsyncRead + AsyncWrite + Unpin,
{
    let mut buf = BytesMut::with_capacity(READ_SIZE);
    let mut out: Vec<u8> = Vec::with_capacity(1024);
    let mut scratch = Scratch::default();
    let limit = opts.max_header_bytes.max(1024);
    let max_headers = opts.max_headers.clamp(1, MAX_HEADERS);
    // Registered once per connection, not once per request.
    let mut drained = pin!(close_idle.changed());
    let release_after = IDLE_RELEASE_AFTER.min(opts.header_read_timeout);
    let mut head_timer = pin!(tokio::time::sleep(release_after));
    // The buffers were freed in this spell between requests.
    let mut released = false;
    loop {
        // As in hyper, the header timeout runs from the end of the previous
        // response: it is the keep-alive idle limit too. The timer is not
        // moved for every request (a move and the poll that registers it
        // again cost ~260 instructions): set for an earlier request, it
        // fires early and only then moves on, to the point where this
        // request's wait frees the buffers, then to its deadline. A busy
        // connection's timer so fires about once a second.
        let idle_since = Instant::now();
        let head_deadline = idle_since + opts.header_read_timeout;
        let release_at = idle_since + release_after;
        let (req, keep_alive) = loop {
            match parse_request(&mut buf, max_headers, &mut scratch) {
                Parsed::Request(req, keep_alive) => break (req, keep_alive),
                Parsed::Partial if buf.len() < limit => {}
                Parsed::Partial | Parsed::Unusual => return Outcome::HandOff(Prefixed::new(buf.freeze(), io)),
            }
            // Once freed, the buffer stays small until the client sends:
            // its first bytes come in a 64-byte read.
            if !released && buf.capacity() - buf.len() < READ_SIZE / 4 {
                buf.reserve(READ_SIZE);
            }
            tokio::select! {
                biased;
                read = io.read_buf(&mut buf) => match read {
                    Ok(0) | Err(_) => return Outcome::Closed,
                    Ok(_) => {
                        if released {
                            // The timer was moved on to this wait's
                            // deadline; the next wait should still free
                            // the buffers after a second (and this one's
                            // deadline must not move later).
                            released = false;
                            out.reserve(1024);
                            head_timer.as_mut().reset((Instant::now() + release_after).min(head_deadline));
                        }
                    }
                },
                () = &mut head_timer => {
                    let waiting = buf.is_empty() && release_at < head_deadline;
                    if waiting && !released && Instant::now() >= release_at {
                        buf = BytesMut::new();
                        out = Vec::new();
                        scratch.release();
                        released = true;
                    }
                    let next = if waiting && !released { release_at } else { head_deadline };
                    if !crate::deadline::moved_on(head_timer.as_mut(), next) {
                        return Outcome::Closed;
                    }
                }
                _ = &mut drained, if buf.is_empty() => return Outcome::Closed,
            }
        };
        // The unit tests' way to prove a panicking connection harms no other
        // (`server::tests`); not compiled into the product.
        #[cfg(test)]
        #[allow(clippy::panic)]
        if req.uri().path() == crate::options::PANIC_PATH {
            panic!("test-only trigger");
        }
        let head_only = req.method() == Method::HEAD;
        let res = {
            // `out` is free until the response: it carries the backend
            // request's head meanwhile.
            scratch.head = std::mem::take(&mut out);
            let res = {
                let handled = pin!(proxy.handle(req, conn, &mut scratch));
                until_client_leaves(handled, &mut io, &mut buf, limit).await
            };
            out = std::mem::take(&mut scratch.head);
            match res {
                Some(res) => res,
                None => return Outcome::Closed,
            }
        };
        let close = !keep_alive || res.headers().contains_key(header::CONNECTION);
        out.clear();
        let conn = Conn {
            io: &mut io,
            out: &mut out,
            buf: &mut buf,
            limit,
        };
        if write_response(conn, res, head_only, close).await.is_err() || close {
            let _ = io.shutdown().await;
            return Outcome::Closed;
        }
        if out.capacity() > 4 * WRITE_AT {
            out = Vec::with_capacity(1024);
        }
    }
}

/// Drives `handled` while watching the client: bytes it sends meanwhile
/// (a pipelined request) are kept in `buf`; if it closes, the request is
/// dropped (`None`), which cancels the upstream exchange as hyper would.
async fn until_client_leaves<I, F>(
    mut handled: Pin<&mut F>,
    io: &mut I,
    buf: &mut BytesMut,
    limit: usize,
) -> Option<F::Output>
where
    I: AsyncRead + Unpin,
    F: Future,
{
    loop {
        tokio::select! {
            biased;
            res = &mut handled => return Some(res),
            read = io.read_buf(buf), if buf.len() < limit => match read {
                Ok(0) | Err(_) => return None,
                Ok(_) => {}
            },
        }
    }
}

// Returned once per request and taken apart at once: boxing the request
// would cost an allocation each time.
#[allow(clippy::large_enum_variant)]
enum Parsed {
    Request(Request<ClientBody>, bool),
    Partial,
    Unusual,
}

/// Parses a complete HTTP/1.1 request off the front of `buf`: its head
/// and its body, if it has a small one that is in `buf` already. Anything
/// else is `Partial` or `Unusual`, and `buf` is untouched.
fn parse_request(buf: &mut BytesMut, max_headers: usize, scratch: &mut Scratch) -> Parsed {
    if buf.is_empty() {
        return Parsed::Partial;
    }
    // Offsets of each header's name and value, so the values can share the
    // head's bytes once the parser's borrow ends.
    let mut spans: [HeaderSpan; MAX_HEADERS] = [(0, 0, 0, 0); MAX_HEADERS];
    let (len, method, target, count) = {
        let mut headers = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
        let mut req = httparse::Request::new(&mut []);
        let parsed = httparse::ParserConfig::default().parse_request_with_uninit_headers(
            &mut req,
            buf,
            headers.get_mut(..max_headers).unwrap_or_default(),
        );
        let len = match parsed {
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) => return Parsed::Partial,
            Err(_) => return Parsed::Unusual,
        };
        if req.version != Some(1) {
            return Parsed::Unusual;
        }
        let count = record_spans(buf, req.headers, &mut spans);
        let (Some(method), Some(path)) = (req.method, req.path) else {
            return Parsed::Unusual;
        };
        let Ok(method) = Method::from_bytes(method.as_bytes()) else {
            return Parsed::Unusual;
        };
        (len, method, span_in(buf, path.as_bytes()), count)
    };
    if method == Method::CONNECT {
        return Parsed::Unusual;
    }
    let head = buf.as_ref();
    let in_head = |(s, e): (u32, u32)| head.get(s as usize..e as usize);
    let mut keep_alive = true;
    let mut body_len: Option<usize> = None;
    let spans = spans.get(..count).unwrap_or_default();
    for &(ns, ne, vs, ve) in spans {
        let (Some(name), Some(value)) = (in_head((ns, ne)), in_head((vs, ve))) else {
            return Parsed::Unusual;
        };
        // Checked on the raw bytes first, so the common request builds its
        // map in one pass and anything unusual leaves `buf` as it was.
        if name.eq_ignore_ascii_case(b"content-length") {
            // Two values must agree.
            let n = content_length(value).and_then(|n| usize::try_from(n).ok());
            // One length; a second, equal or not, is answered by hyper
            // and refused (`headers::check_request`).
            match (n, body_len) {
                (Some(n), None) if n <= MAX_READ_BODY => body_len = Some(n),
                _ => return Parsed::Unusual,
            }
        } else if name.eq_ignore_ascii_case(b"transfer-encoding")
            || name.eq_ignore_ascii_case(b"upgrade")
            || name.eq_ignore_ascii_case(b"expect")
        {
            return Parsed::Unusual;
        } else if name.eq_ignore_ascii_case(b"connection") {
            for token in value.split(|&b| b == b',') {
                let token = token.trim_ascii();
                if token.eq_ignore_ascii_case(b"close") {
                    keep_alive = false;
                } else if token.eq_ignore_ascii_case(b"upgrade") {
                    return Parsed::Unusual;
                }
            }
        }
    }
    let body_len = body_len.unwrap_or(0);
    if buf.len() - len < body_len {
        // The body did not come with the head: hyper streams it.
        return Parsed::Unusual;
    }
    // The connection's last map, emptied, when it has one.
    let mut headers = scratch.take_headers().unwrap_or_default();
    headers.reserve(count);
    let head = buf.split_to(len).freeze();
    let Ok(uri) = Uri::from_maybe_shared(head.slice(target.0 as usize..target.1 as usize)) else {
        // A target httparse takes and `http` does not: hyper answers it.
        unsplit(buf, &head);
        return Parsed::Unusual;
    };
    for &(ns, ne, vs, ve) in spans {
        // httparse allows the bytes `http` allows in names and values;
        // checked anyway, and hyper answers the head if they disagree. The
        // spans lie within the head httparse parsed (and were checked
        // against the buffer above), so the slice is in range; an empty
        // name is refused by `from_bytes`.
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(head.get(ns as usize..ne as usize).unwrap_or_default()),
            HeaderValue::from_maybe_shared(head.slice(vs as usize..ve as usize)),
        ) else {
            unsplit(buf, &head);
            return Parsed::Unusual;
        };
        headers.append(name, value);
    }
    let body = (body_len > 0).then(|| buf.split_to(body_len).freeze());
    let mut req = Request::new(ClientBody::Read(body));
    *req.method_mut() = method;
    *req.uri_mut() = uri;
    *req.headers_mut() = headers;
    Parsed::Request(req, keep_alive)
}

/// How [`parse_request`] reads `bytes` held in memory: the request it
/// takes (with its body, if any) and the bytes it consumed, or `None` when
/// the bytes stay whole for hyper or need more. For the fuzz target
/// (`fuzz/checks.rs`, replayed by the tests), which checks that the
/// bytes hyper gets are exactly the bytes that came.
#[doc(hidden)]
// The fuzz target's harness: its asserts are the checks.
#[allow(clippy::indexing_slicing)]
pub fn parse_whole(bytes: &[u8], max_headers: usize) -> Option<(Request<Option<Bytes>>, usize)> {
    let mut buf = BytesMut::from(bytes);
    match parse_request(&mut buf, max_headers.clamp(1, MAX_HEADERS), &mut Scratch::default()) {
        Parsed::Request(req, _) => {
            let consumed = bytes.len() - buf.len();
            assert_eq!(&buf[..], &bytes[consumed..], "the rest must stay as it came");
            Some((
                req.map(|body| match body {
                    ClientBody::Read(bytes) => bytes,
                    ClientBody::Hyper(_) | ClientBody::Stream(_) | ClientBody::Ahead(_) => None,
                }),
                consumed,
            ))
        }
        Parsed::Partial | Parsed::Unusual => {
            assert_eq!(&buf[..], bytes, "what hyper gets must be what came");
            None
        }
    }
}

/// Puts a head split off `buf` back in front of it (rare: a head only
/// hyper can answer).
fn unsplit(buf: &mut BytesMut, head: &[u8]) {
    let mut whole = BytesMut::with_capacity(head.len() + buf.len());
    whole.extend_from_slice(head);
    whole.extend_from_slice(buf);
    *buf = whole;
}

/// How the response body is framed on the wire.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// No body bytes (HEAD, 1xx, 204, 304).
    None,
    Length(u64),
    Chunked,
}

/// What a response is written with: the socket, the gathered output, and
/// the read buffer with its limit (a client is watched while its response
/// waits on the backend).
struct Conn<'a, I> {
    io: &'a mut I,
    out: &'a mut Vec<u8>,
    buf: &'a mut BytesMut,
    limit: usize,
}

/// Writes `res` (head and body). An error means the connection cannot be
/// reused (the client went away, or the body failed midway).
async fn write_response<I>(
    conn: Conn<'_, I>,
    res: Response<ProxyBody>,
    head_only: bool,
    close: bool,
) -> std::io::Result<()>
where
    I: AsyncRead + AsyncWrite + Unpin,
{
    let Conn { io, out, buf, limit } = conn;
    let (parts, mut body) = res.into_parts();
    let lines = body.take_header_lines();
    let status = parts.status;
    let framing = if head_only
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        Framing::None
    } else if let Some(len) = declared_length(&parts.headers).or_else(|| body.size_hint().exact()) {
        Framing::Length(len)
    } else {
        Framing::Chunked
    };
    encode_head(status, lines.as_ref(), &parts.headers, framing, close, out);
    let mut body = pin!(body);
    let mut left = match framing {
        Framing::Length(n) => n,
        _ => u64::MAX,
    };
    if framing != Framing::None {
        loop {
            // Gathers what the body has ready; writes only when it would
            // wait, so a small response is one write with its head.
            let next = if out.is_empty() {
                // Nothing to write: wait for the body, watching the client,
                // so a long poll whose client left does not hold its backend
                // until the next write.
                let frame = pin!(poll_fn(|cx: &mut Context<'_>| body.as_mut().poll_frame(cx).map(Some)));
                match until_client_leaves(frame, io, buf, limit).await {
                    Some(frame) => frame,
                    None => return Err(std::io::ErrorKind::ConnectionAborted.into()),
                }
            } else {
                poll_fn(|cx: &mut Context<'_>| {
                    Poll::Ready(match body.as_mut().poll_frame(cx) {
                        Poll::Pending => None,
                        Poll::Ready(frame) => Some(frame),
                    })
                })
                .await
            };
            let data = match next {
                None => {
                    io.write_all(out).await?;
                    out.clear();
                    continue;
                }
                Some(None) => break,
                Some(Some(Err(_))) => return Err(std::io::Error::other("response body failed")),
                Some(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) => data,
                    Err(_) => continue, // trailers: not sent over HTTP/1.1
                },
            };
            if data.is_empty() {
                continue;
            }
            let data = if framing == Framing::Chunked {
                let _ = write!(out, "{:x}\r\n", data.len());
                data
            } else {
                // Never more than the declared length.
                let take = usize::try_from(left.min(data.len() as u64)).unwrap_or(data.len());
                left -= take as u64;
                data.slice(..take)
            };
            if data.len() < COPY_BELOW {
                out.extend_from_slice(&data);
            } else {
                // One vectored write when the socket takes it.
                io.write_all_buf(&mut Buf::chain(out.as_slice(), &data[..])).await?;
                out.clear();
            }
            if framing == Framing::Chunked {
                out.extend_from_slice(b"\r\n");
            }
            if out.len() >= WRITE_AT {
                io.write_all(out).await?;
                out.clear();
            }
            if framing != Framing::Chunked && left == 0 {
                break;
            }
        }
    }
    match framing {
        Framing::Chunked => out.extend_from_slice(b"0\r\n\r\n"),
        Framing::Length(_) if left > 0 => {
            // The body ended short of its length: the client must not take
            // the next response for the rest of this one.
            io.write_all(out).await?;
            return Err(std::io::Error::other("response body ended early"));
        }
        _ => {}
    }
    if !out.is_empty() {
        io.write_all(out).await?;
    }
    io.flush().await
}

/// The response's `Content-Length`, when it states one.
fn declared_length(headers: &HeaderMap) -> Option<u64> {
    content_length(headers.get(header::CONTENT_LENGTH)?.as_bytes())
}

/// Status line and headers: the backend's `lines` when it gave them so
/// (ready to write), then `headers`; the framing headers are sluice's own.
fn encode_head(
    status: StatusCode,
    lines: Option<&HeaderLines>,
    headers: &HeaderMap,
    framing: Framing,
    close: bool,
    out: &mut Vec<u8>,
) {
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    let mut has_date = false;
    if let Some(lines) = lines {
        out.extend_from_slice(&lines.bytes);
        has_date = lines.has_date;
    }
    let mut has_connection = false;
    for (name, value) in headers {
        // A length is sluice's to state, except where no body follows and
        // the backend's describes the representation (HEAD, 304).
        if *name == header::CONTENT_LENGTH && framing != Framing::None || *name == header::TRANSFER_ENCODING {
            continue;
        }
        has_date |= *name == header::DATE;
        has_connection |= *name == header::CONNECTION;
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    match framing {
        Framing::Length(n) => {
            out.extend_from_slice(b"content-length: ");
            out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        Framing::Chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
        Framing::None => {}
    }
    if close && !has_connection {
        out.extend_from_slice(b"connection: close\r\n");
    }
    if !has_date {
        out.extend_from_slice(b"date: ");
        crate::date::append(out);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// A connection handed over (to hyper, or to the HTTP/2 server): the bytes
/// the fast path already read come first, then the socket's.
pub struct Prefixed<I> {
    prefix: Bytes,
    io: I,
}

impl<I> Prefixed<I> {
    fn new(prefix: Bytes, io: I) -> Self {
        Self { prefix, io }
    }

    /// The bytes read before the hand-off.
    pub fn prefix(&self) -> &[u8] {
        &self.prefix
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Prefixed<I> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, out: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        if !this.prefix.is_empty() {
            let n = this.prefix.len().min(out.remaining());
            out.put_slice(this.prefix.get(..n).unwrap_or_default());
            this.prefix.advance(n);
            if this.prefix.is_empty() {
                // Lets go of the read buffer the prefix was part of.
                this.prefix = Bytes::new();
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.io).poll_read(cx, out)
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Prefixed<I> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(bytes: &[u8]) -> (Parsed, BytesMut) {
        let mut buf = BytesMut::from(bytes);
        (parse_request(&mut buf, MAX_HEADERS, &mut Scratch::default()), buf)
    }

    #[test]
    fn a_plain_request_is_taken_and_split_off() {
        let (parsed, rest) = parse(b"GET /a?b HTTP/1.1\r\nHost: x\r\nX-Many: 1\r\nx-many: 2\r\n\r\nGET /next");
        let Parsed::Request(req, keep_alive) = parsed else {
            panic!("not taken")
        };
        assert!(keep_alive);
        assert_eq!(req.uri(), "/a?b");
        assert_eq!(req.headers()["host"], "x");
        assert_eq!(req.headers().get_all("x-many").iter().count(), 2);
        assert_eq!(&rest[..], b"GET /next");
    }

    #[test]
    fn connection_close_ends_keep_alive() {
        let (parsed, _) = parse(b"GET / HTTP/1.1\r\nhost: x\r\nconnection: keep-alive, Close\r\n\r\n");
        assert!(matches!(parsed, Parsed::Request(_, false)));
    }

    #[test]
    fn what_hyper_should_answer_is_left_whole() {
        for head in [
            &b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 5\r\n\r\nhell"[..],
            b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 5\r\ncontent-length: 6\r\n\r\nhello!",
            b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: +5\r\n\r\nhello",
            b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 99999999\r\n\r\n",
            b"POST / HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n",
            b"GET / HTTP/1.1\r\nhost: x\r\nupgrade: websocket\r\nconnection: upgrade\r\n\r\n",
            b"PUT / HTTP/1.1\r\nhost: x\r\nexpect: 100-continue\r\ncontent-length: 0\r\n\r\n",
            b"GET / HTTP/1.0\r\n\r\n",
            b"CONNECT x:443 HTTP/1.1\r\nhost: x:443\r\n\r\n",
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            b"GET / HTTP/1.1\r\nbad header\r\n\r\n",
            b"GET /\xff HTTP/1.1\r\nhost: x\r\n\r\n",
        ] {
            let (parsed, rest) = parse(head);
            assert!(matches!(parsed, Parsed::Unusual), "{}", String::from_utf8_lossy(head));
            assert_eq!(&rest[..], head, "bytes must reach hyper as they came");
        }
        let (parsed, _) = parse(b"GET / HTTP/1.1\r\nhost: x\r\ncontent-length: 0\r\n\r\n");
        assert!(matches!(parsed, Parsed::Request(..)));
    }

    #[test]
    fn a_small_body_that_came_with_its_head_is_read_here() {
        let (parsed, rest) = parse(b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 5\r\n\r\nhelloGET");
        let Parsed::Request(req, _) = parsed else {
            panic!("not taken")
        };
        let ClientBody::Read(Some(body)) = req.into_body() else {
            panic!("no body")
        };
        assert_eq!(&body[..], b"hello");
        assert_eq!(&rest[..], b"GET");
    }

    #[test]
    fn a_map_given_back_starts_the_next_request_empty() {
        let mut scratch = Scratch::default();
        let mut buf = BytesMut::from(&b"GET /a HTTP/1.1\r\nhost: x\r\nx-first: 1\r\nx-first: 2\r\n\r\n"[..]);
        let Parsed::Request(first, _) = parse_request(&mut buf, MAX_HEADERS, &mut scratch) else {
            panic!("the first request is taken");
        };
        assert_eq!(first.headers().len(), 3);
        scratch.give_back(first.into_parts().0.headers);
        let mut buf = BytesMut::from(&b"GET /b HTTP/1.1\r\nhost: y\r\n\r\n"[..]);
        let Parsed::Request(second, _) = parse_request(&mut buf, MAX_HEADERS, &mut scratch) else {
            panic!("the second request is taken");
        };
        assert_eq!(second.headers().len(), 1);
        assert_eq!(second.headers()["host"], "y");
        assert!(scratch.take_headers().is_none(), "the map went to the request");
    }

    #[test]
    fn too_many_headers_go_to_hyper() {
        let mut head = b"GET / HTTP/1.1\r\n".to_vec();
        for i in 0..11 {
            head.extend_from_slice(format!("x-h{i}: v\r\n").as_bytes());
        }
        head.extend_from_slice(b"\r\n");
        let mut buf = BytesMut::from(&head[..]);
        assert!(matches!(
            parse_request(&mut buf, 10, &mut Scratch::default()),
            Parsed::Unusual
        ));
        assert!(matches!(parse(b"GET / HTTP/1.1\r\nhost: x\r\n"), (Parsed::Partial, _)));
    }

    #[test]
    fn response_heads_state_their_framing() {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from_static("999"));
        headers.insert("x-app", HeaderValue::from_static("1"));
        let mut out = Vec::new();
        encode_head(StatusCode::OK, None, &headers, Framing::Length(5), true, &mut out);
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.starts_with("HTTP/1.1 200 OK\r\nx-app: 1\r\ncontent-length: 5\r\n"),
            "{text}"
        );
        assert!(
            text.contains("connection: close\r\n") && text.contains("date: "),
            "{text}"
        );
        let mut out = Vec::new();
        encode_head(
            StatusCode::OK,
            None,
            &HeaderMap::new(),
            Framing::Chunked,
            false,
            &mut out,
        );
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.contains("transfer-encoding: chunked\r\n") && !text.contains("connection"),
            "{text}"
        );
        // HEAD: the backend's length describes the representation.
        let mut out = Vec::new();
        encode_head(StatusCode::OK, None, &headers, Framing::None, false, &mut out);
        assert!(String::from_utf8(out).unwrap().contains("content-length: 999\r\n"));
    }
}
