//! The connection's task: reads the backend's frames and handles them,
//! writes what the requests queued, pings a quiet connection with streams
//! open, and closes the connection once it has ended or the pool let go
//! of it and its last stream is done.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::time::{Instant, Sleep};
use tracing::debug;

use super::error::H2Error;
use super::frames::Reader;
use super::state::Shared;
use crate::h2::frame::{self, Head, Reason};

/// How long a connection with streams open may be quiet before it is
/// pinged, and how long the pong may take before the connection is given
/// up: as rarely as gRPC servers allow by default (one ping in 5 minutes
/// without data).
pub(super) const KEEP_ALIVE: Duration = Duration::from_secs(300);
pub(super) const KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(20);
const READ_SIZE: usize = 16 * 1024;
/// Bytes waiting to be written past which no more frames are read (a
/// backend that does not read while it floods pings).
const MAX_BACKLOG: usize = 1 << 20;
/// Passes of the loop before the task yields to others.
const MAX_PASSES: usize = 32;
/// How long the last GOAWAY may take to be written.
const CLOSE_WRITE_TIMEOUT: Duration = Duration::from_secs(1);

struct Driver<IO> {
    io: IO,
    shared: Arc<Shared>,
    reader: Reader,
    rbuf: BytesMut,
    out: Vec<u8>,
    wpos: usize,
    unflushed: bool,
    eof: bool,
    last_read: Instant,
    ping_sent: Option<Instant>,
    defer: Defer,
}

/// Where the driver is in holding back a write so that streams opened in
/// the same turn of the scheduler share it (see [`Driver::write`]).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Defer {
    /// New frames are written after one yield.
    No,
    /// Yielded; nothing is written until the task is polled again.
    Waiting,
    /// Polled again: write.
    Done,
}

/// Runs the connection over `io` until it ends.
pub(super) async fn drive<IO>(io: IO, shared: Arc<Shared>)
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let mut d = Driver {
        io,
        shared,
        reader: Reader::default(),
        rbuf: BytesMut::new(),
        out: Vec::new(),
        wpos: 0,
        unflushed: false,
        eof: false,
        last_read: Instant::now(),
        ping_sent: None,
        defer: Defer::No,
    };
    let mut timer = std::pin::pin!(tokio::time::sleep(KEEP_ALIVE));
    std::future::poll_fn(|cx| d.poll(cx, timer.as_mut())).await;
    d.shared.closed.store(true, Ordering::Relaxed);
    // A last GOAWAY (and anything queued with it): worth a moment only.
    let rest = {
        let mut st = d.shared.lock();
        let mut rest = d.out.split_off(d.wpos.min(d.out.len()));
        rest.append(&mut st.wbuf);
        rest
    };
    let io = &mut d.io;
    let _ = tokio::time::timeout(CLOSE_WRITE_TIMEOUT, async move {
        io.write_all(&rest).await?;
        io.shutdown().await
    })
    .await;
}

impl<IO: AsyncRead + AsyncWrite + Unpin> Driver<IO> {
    fn poll(&mut self, cx: &mut Context<'_>, mut timer: Pin<&mut Sleep>) -> Poll<()> {
        self.shared.driver.register(cx.waker());
        if self.defer == Defer::Waiting {
            self.defer = Defer::Done;
        }
        for _ in 0..MAX_PASSES {
            let mut busy = false;
            let backlog = self.out.len() - self.wpos;
            if !self.eof && backlog < MAX_BACKLOG {
                busy |= self.read(cx);
            }
            match self.write(cx) {
                Some(wrote) => busy |= wrote,
                None => {
                    self.shared.lock().end(H2Error::Lost("write failed"));
                    return Poll::Ready(());
                }
            }
            {
                let st = self.shared.lock();
                let flushed = st.wbuf.is_empty() && self.wpos == self.out.len();
                if st.ended.is_some() && (flushed || self.eof) {
                    return Poll::Ready(());
                }
                if st.handle_gone && st.streams.is_empty() && flushed {
                    drop(st);
                    frame::write_goaway(&mut self.shared.lock().wbuf, 0, Reason::NoError);
                    return Poll::Ready(());
                }
            }
            busy |= self.check_timer(cx, timer.as_mut());
            if !busy {
                return Poll::Pending;
            }
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    }

    /// Reads what the backend sent and handles every whole frame.
    fn read(&mut self, cx: &mut Context<'_>) -> bool {
        if self.rbuf.capacity() - self.rbuf.len() < READ_SIZE / 4 {
            let want = Head::parse(&self.rbuf).map_or(READ_SIZE, |h| (frame::HEAD_LEN + h.len).max(READ_SIZE));
            self.rbuf.reserve(want);
        }
        match tokio_util::io::poll_read_buf(Pin::new(&mut self.io), cx, &mut self.rbuf) {
            Poll::Pending => false,
            Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => {
                self.eof = true;
                self.shared.lock().end(H2Error::Lost("closed by the backend"));
                self.shared.closed.store(true, Ordering::Relaxed);
                true
            }
            Poll::Ready(Ok(_)) => {
                self.last_read = Instant::now();
                self.ping_sent = None;
                self.handle_frames();
                true
            }
        }
    }

    fn handle_frames(&mut self) {
        let mut st = self.shared.lock();
        while let Some(head) = Head::parse(&self.rbuf) {
            let result = if head.len > frame::MAX_FRAME {
                Err((Reason::FrameSize, "frame larger than allowed"))
            } else if self.rbuf.len() < frame::HEAD_LEN + head.len {
                break;
            } else {
                let mut bytes = self.rbuf.split_to(frame::HEAD_LEN + head.len);
                let payload = bytes.split_off(frame::HEAD_LEN).freeze();
                self.reader.on_frame(&mut st, head, payload)
            };
            if let Err((reason, why)) = result {
                debug!(why, "HTTP/2 backend broke the protocol; closing the connection");
                frame::write_goaway(&mut st.wbuf, 0, reason);
                st.end(H2Error::Protocol(why));
                self.eof = true;
                break;
            }
        }
        // Marks the connection closed to new streams after a GOAWAY.
        st.usable(&self.shared);
    }

    /// Writes what is queued; `None` once the socket fails.
    ///
    /// New frames wait for one yield first: the task goes to the back of
    /// the scheduler's queue, so the other connections made ready by the
    /// same poll of the sockets queue their requests behind these and one
    /// `sendto` carries them all (as an event loop that flushes at the end
    /// of its turn does). Each write to loopback costs the backend's TCP
    /// receive and wake-up too, the largest part of a unary call's CPU;
    /// the yield costs one more poll of this task.
    fn write(&mut self, cx: &mut Context<'_>) -> Option<bool> {
        if self.wpos == self.out.len() {
            self.out.clear();
            self.wpos = 0;
            let mut st = self.shared.lock();
            if st.wbuf.is_empty() && !self.unflushed {
                return Some(false);
            }
            if !st.wbuf.is_empty() {
                match self.defer {
                    Defer::No => {
                        self.defer = Defer::Waiting;
                        cx.waker().wake_by_ref();
                        return Some(false);
                    }
                    Defer::Waiting => return Some(false),
                    Defer::Done => self.defer = Defer::No,
                }
            }
            std::mem::swap(&mut self.out, &mut st.wbuf);
        }
        crate::h2::io::write_out(&mut self.io, cx, &self.out, &mut self.wpos, &mut self.unflushed)
    }

    /// Pings a connection quiet for [`KEEP_ALIVE`] while streams are open
    /// (gRPC servers count pings on an idle connection against it), and
    /// gives it up when the answer takes over [`KEEP_ALIVE_TIMEOUT`].
    fn check_timer(&mut self, cx: &mut Context<'_>, mut timer: Pin<&mut Sleep>) -> bool {
        let deadline = match self.ping_sent {
            Some(sent) => sent + KEEP_ALIVE_TIMEOUT,
            None => self.last_read + KEEP_ALIVE,
        };
        if timer.deadline() != deadline && (timer.is_elapsed() || deadline < timer.deadline()) {
            timer.as_mut().reset(deadline);
        }
        if timer.as_mut().poll(cx).is_pending() {
            return false;
        }
        if Instant::now() < deadline {
            timer.as_mut().reset(deadline);
            return false;
        }
        let mut st = self.shared.lock();
        if self.ping_sent.is_some() {
            debug!("HTTP/2 backend did not answer a keep-alive ping; closing");
            st.end(H2Error::Lost("no answer to a keep-alive ping"));
            self.eof = true;
        } else if st.open > 0 {
            frame::write_ping(&mut st.wbuf, *b"sluice:)");
            self.ping_sent = Some(Instant::now());
        } else {
            self.last_read = Instant::now();
        }
        true
    }
}
