//! Writing a connection's queued bytes, shared by the server's connection
//! and the client's connection task.

use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::AsyncWrite;

/// Writes `buf` from `*wpos` on as far as the socket takes it, then
/// flushes (TLS keeps written bytes until flushed); whether anything was
/// written, `None` once the socket fails.
pub(crate) fn write_out<IO: AsyncWrite + Unpin>(
    io: &mut IO,
    cx: &mut Context<'_>,
    buf: &[u8],
    wpos: &mut usize,
    unflushed: &mut bool,
) -> Option<bool> {
    let mut wrote = false;
    while *wpos < buf.len() {
        match Pin::new(&mut *io).poll_write(cx, buf.get(*wpos..).unwrap_or_default()) {
            Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => return None,
            Poll::Ready(Ok(n)) => {
                *wpos += n;
                *unflushed = true;
                wrote = true;
            }
            Poll::Pending => break,
        }
    }
    if *unflushed {
        match Pin::new(&mut *io).poll_flush(cx) {
            Poll::Ready(Ok(())) => *unflushed = false,
            Poll::Ready(Err(_)) => return None,
            Poll::Pending => {}
        }
    }
    Some(wrote)
}
