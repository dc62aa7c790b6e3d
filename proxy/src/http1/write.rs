//! A response written to a client of sluice's own HTTP/1.1 loop: the
//! head (the backend's lines as they came, or encoded from a header map)
//! gathered with the body's first bytes.

use std::future::poll_fn;
use std::io::Write as _;
use std::pin::{Pin, pin};
use std::task::{Context, Poll};

use bytes::{Buf, BytesMut};
use http::{HeaderMap, StatusCode, header};
use http_body::Body;

use crate::request_id::IdHeader;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::head::content_length;
use super::response::HeaderLines;
use crate::forward::Answer;

/// Response bytes gathered before a write.
pub(super) const WRITE_AT: usize = 64 * 1024;
/// Body frames this large go out from their own buffer (one vectored write
/// with what is gathered) instead of being copied.
pub(super) const COPY_BELOW: usize = 4096;

/// How the response body is framed on the wire.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Framing {
    /// No body bytes (HEAD, 1xx, 204, 304).
    None,
    Length(u64),
    Chunked,
}

/// What a response is written with: the socket, the gathered output, and
/// the read buffer with its limit (a client is watched while its response
/// waits on the backend).
pub(super) struct Conn<'a, I> {
    pub(super) io: &'a mut I,
    pub(super) out: &'a mut Vec<u8>,
    pub(super) buf: &'a mut BytesMut,
    pub(super) limit: usize,
}

/// Writes `res` (head and body). An error means the connection cannot be
/// reused (the client went away, or the body failed midway).
pub(super) async fn write_response<I>(
    conn: Conn<'_, I>,
    answer: Answer,
    id_line: Option<(&IdHeader, &[u8])>,
    head_only: bool,
    close: bool,
) -> std::io::Result<()>
where
    I: AsyncRead + AsyncWrite + Unpin,
{
    let Conn { io, out, buf, limit } = conn;
    let Answer { response, lines } = answer;
    let (parts, body) = response.into_parts();
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
    encode_head(status, lines.as_ref(), id_line, &parts.headers, framing, close, out);
    // A map built for this response (an HTTP/2 backend's) serves the next.
    crate::spare_maps::give(parts.headers);
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
pub(super) fn declared_length(headers: &HeaderMap) -> Option<u64> {
    content_length(headers.get(header::CONTENT_LENGTH)?.as_bytes())
}

/// Status line and headers: the backend's `lines` when it gave them so
/// (ready to write) and the request id's line after them, then `headers`;
/// the framing headers are sluice's own.
pub(super) fn encode_head(
    status: StatusCode,
    lines: Option<&HeaderLines>,
    id_line: Option<(&IdHeader, &[u8])>,
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
    if let Some((header, id)) = id_line {
        header.write_line(id, out);
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

/// Drives `handled` while watching the client: bytes it sends meanwhile
/// (a pipelined request) are kept in `buf`; if it closes, the request is
/// dropped (`None`), which cancels the upstream exchange as hyper would.
pub(super) async fn until_client_leaves<I, F>(
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
