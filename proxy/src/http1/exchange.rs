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
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http::{Method, Response, StatusCode};
use http_body::{Frame, SizeHint};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::conn::{READ_CHUNK, READ_MAX, RawConn, RawIdle};
use super::decode::{Framing, Step, next_step};
use super::error::RawError;
use super::response::{HeaderLines, HeadersAs, MAX_HEAD_BYTES, parse_head};

/// Sends `head` on `conn` and reads the response head; the body streams
/// from the socket as the response's [`RawBody`] is polled. The headers
/// come as [`HeaderLines`] beside the response when `headers` says so,
/// else in the response's header map.
pub async fn exchange(
    mut conn: RawConn,
    head: &[u8],
    method: &Method,
    idle: &Arc<RawIdle>,
    headers: HeadersAs,
    id_name: Option<&[u8]>,
) -> Result<(Response<RawBody>, Option<HeaderLines>), RawError> {
    conn.io.write_all(head).await.map_err(|e| before_response(e, &conn))?;
    loop {
        if let Some((res, framing, keep_alive, lines)) = parse_head(&mut conn.buf, method, headers, id_name)? {
            // 1xx answers (100 Continue, 103 Early Hints) precede the real
            // one; a 101 answers no request sent here (upgrades go through
            // hyper), and what follows it may not be HTTP.
            if res.status() == StatusCode::SWITCHING_PROTOCOLS {
                return Err(RawError::Malformed("101 to a request that asked for no upgrade"));
            }
            if res.status().is_informational() {
                continue;
            }
            let body = RawBody::new(conn, framing, keep_alive, Arc::clone(idle));
            return Ok((res.map(|()| body), lines));
        }
        if conn.buf.len() >= MAX_HEAD_BYTES {
            return Err(RawError::Malformed("response head too large"));
        }
        conn.buf.reserve(conn.read_size());
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
pub(super) fn before_response(e: std::io::Error, conn: &RawConn) -> RawError {
    use std::io::ErrorKind::{BrokenPipe, ConnectionAborted, ConnectionReset};
    if conn.buf.is_empty() && matches!(e.kind(), ConnectionReset | BrokenPipe | ConnectionAborted) {
        RawError::ClosedBeforeResponse
    } else {
        RawError::Io(e)
    }
}

/// A response body read straight from the backend's socket. Once read to
/// its end the connection goes back to the backend's idle queue; dropped
/// earlier, the connection closes with it.
#[derive(Debug)]
pub struct RawBody {
    pub(super) conn: Option<RawConn>,
    pub(super) framing: Framing,
    /// Where the connection goes when the body has been read to its end.
    pub(super) idle: Arc<RawIdle>,
}

impl RawBody {
    fn new(mut conn: RawConn, framing: Framing, keep_alive: bool, idle: Arc<RawIdle>) -> Self {
        conn.keep_alive = keep_alive;
        Self {
            conn: Some(conn),
            framing,
            idle,
        }
    }

    fn finish(&mut self) {
        self.framing = Framing::Done;
        if let Some(mut conn) = self.conn.take()
            && conn.keep_alive
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
            let read_size = conn.read_size();
            match next_step(&mut self.framing, &mut conn.buf, read_size)? {
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
                            conn.keep_alive = false;
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
