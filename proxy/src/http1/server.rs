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

use std::pin::pin;

use bytes::BytesMut;
use http::{Method, header};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::client::{ClientConn, Scratch};
use crate::forward::Proxy;
use crate::options::{IDLE_RELEASE_AFTER, ListenerOptions};

use super::prefixed::Prefixed;
use super::request::{MAX_HEADERS, Parsed, parse_request};
use super::response::HeadersAs;
use super::write::{Conn, WRITE_AT, until_client_leaves, write_response};

/// Read size for request heads; most fit many times over.
pub(super) const READ_SIZE: usize = 4096;

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
                let handled = pin!(proxy.handle(req, conn, &mut scratch, HeadersAs::Lines));
                until_client_leaves(handled, &mut io, &mut buf, limit).await
            };
            out = std::mem::take(&mut scratch.head);
            match res {
                Some(res) => res,
                // An unanswered request's log entry is written as the
                // scratch goes (see `Scratch`'s drop).
                None => return Outcome::Closed,
            }
        };
        let close = !keep_alive || res.response.headers().contains_key(header::CONNECTION);
        out.clear();
        let conn = Conn {
            io: &mut io,
            out: &mut out,
            buf: &mut buf,
            limit,
        };
        let id_line = proxy.id_line(&scratch, res.lines.as_ref());
        if write_response(conn, res, id_line, head_only, close).await.is_err() || close {
            let _ = io.shutdown().await;
            return Outcome::Closed;
        }
        if out.capacity() > 4 * WRITE_AT {
            out = Vec::with_capacity(1024);
        }
    }
}
