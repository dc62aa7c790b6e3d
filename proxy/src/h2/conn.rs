//! One HTTP/2 client connection, driven by one task: frames are read and
//! answered here, each request's handler is polled here (no task per
//! stream, no lock), and responses go out in the order they are ready,
//! within the client's flow-control windows.

use std::future::{Future, poll_fn};
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::BytesMut;
use futures_util::task::AtomicWaker;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;
use tokio::time::{Instant, Sleep};
use tracing::debug;

use super::frame::{self, Head, Reason};
use super::hpack::Decoder;
use super::stream::{Slot, Stream};
use crate::client::{ClientConn, Scratch};
use crate::forward::Proxy;
use crate::options::{IDLE_RELEASE_AFTER, ListenerOptions};

/// Streams a client may have open at once (SETTINGS_MAX_CONCURRENT_STREAMS).
pub(super) const MAX_STREAMS: usize = 256;
/// The window sluice gives each request body, and the whole connection.
pub(super) const STREAM_WINDOW: i64 = 1 << 20;
pub(super) const CONNECTION_WINDOW: i64 = 1 << 20;
/// Bytes of responses waiting to be written past which sluice stops
/// reading new frames and taking more from response bodies.
pub(super) const MAX_BACKLOG: usize = 256 * 1024;
/// A header block's bytes, past which the connection is closed instead
/// of decoded: far above any head the limit lets through.
pub(super) const MAX_BLOCK: usize = 256 * 1024;
pub(super) const MAX_CONTINUATIONS: usize = 64;
/// Streams the client may reset, or sluice refuse, beyond those answered
/// in full (the rapid-reset defence, CVE-2023-44487).
pub(super) const RESET_ALLOWANCE: u64 = 100;
/// Empty DATA frames that end nothing, per connection.
pub(super) const MAX_EMPTY_DATA: u32 = 1000;
/// Quiet time with streams open after which sluice checks the client is
/// still there, and how long it waits for an answer (as hyper's server did).
const PING_INTERVAL: Duration = Duration::from_secs(30);
const PING_TIMEOUT: Duration = Duration::from_secs(10);
/// Read size (and the least the read buffer grows by).
const READ_SIZE: usize = 4096;
/// How long the GOAWAY of a closing connection may take to be written.
const CLOSE_WRITE_TIMEOUT: Duration = Duration::from_secs(1);

/// Buffers kept for the connection's next requests.
pub(super) const SPARE_SCRATCH: usize = 4;

/// Serves an HTTP/2 connection whose preface has not been read yet.
/// `close_idle` fires when the listener drains: sluice then sends GOAWAY,
/// finishes the streams already open and closes.
pub async fn serve<I>(
    io: I,
    client: &ClientConn,
    proxy: &Proxy,
    opts: &ListenerOptions,
    mut close_idle: watch::Receiver<()>,
) where
    I: AsyncRead + AsyncWrite + Unpin,
{
    let mut conn = Connection::new(io, client, proxy, opts);
    {
        let mut drained = pin!(close_idle.changed());
        let mut timer = pin!(tokio::time::sleep(opts.header_read_timeout));
        poll_fn(|cx| conn.poll(cx, drained.as_mut(), timer.as_mut())).await;
    }
    // What is left is a GOAWAY (and perhaps an answer or two): worth a
    // moment, not a wait on a client that does not read.
    conn.streams.clear();
    let (io, rest) = (&mut conn.io, conn.wbuf.get(conn.wpos..).unwrap_or_default());
    let _ = tokio::time::timeout(CLOSE_WRITE_TIMEOUT, async move {
        io.write_all(rest).await?;
        io.shutdown().await
    })
    .await;
}

/// What the HEADERS frame that began a header block said of it.
#[derive(Clone, Copy)]
pub(super) struct BlockStart {
    pub(super) stream: u32,
    pub(super) end_stream: bool,
    /// Its priority named the stream itself (a stream error, §5.3.1).
    pub(super) self_dependent: bool,
}

/// A header block arriving in CONTINUATION frames.
pub(super) struct Partial {
    pub(super) start: BlockStart,
    pub(super) block: BytesMut,
    pub(super) frames: usize,
}

/// A protocol error: of one stream (reset) or of the connection (GOAWAY).
pub(super) enum Failure {
    Stream(u32, Reason),
    Connection(Reason),
}

pub(super) struct Connection<'a, I> {
    pub(super) io: I,
    pub(super) client: &'a ClientConn,
    pub(super) proxy: &'a Proxy,
    pub(super) rbuf: BytesMut,
    pub(super) wbuf: Vec<u8>,
    pub(super) wpos: usize,
    pub(super) unflushed: bool,
    pub(super) decoder: Decoder,
    pub(super) block: Vec<u8>,
    pub(super) streams: Vec<Stream<'a>>,
    pub(super) spare: Vec<Slot>,
    pub(super) scratch: Vec<Scratch>,
    pub(super) waker: Arc<AtomicWaker>,
    /// The waker socket reads register: it notes that the socket woke the
    /// task (and not a handler), so a pass reads only when there may be
    /// something to read.
    socket: Slot,
    /// The last read came back Pending: the socket's waker is registered
    /// and will say when to read again.
    read_armed: bool,
    pub(super) header_limit: usize,
    pub(super) idle_timeout: Duration,
    /// Until the preface and the client's first SETTINGS have arrived.
    pub(super) preface: bool,
    pub(super) settings_seen: bool,
    pub(super) last_stream: u32,
    pub(super) partial: Option<Partial>,
    pub(super) peer_initial_window: i64,
    pub(super) peer_max_frame: usize,
    pub(super) send_window: i64,
    pub(super) recv_window: i64,
    /// Connection window to give back.
    pub(super) credit: usize,
    /// GOAWAY sent (draining, idle, or an error).
    pub(super) going_away: bool,
    /// The listener's drain signal has been polled (and will wake the task).
    pub(super) drain_armed: bool,
    /// The first GOAWAY of a drain is out.
    pub(super) announced: bool,
    /// A connection error: stop everything once the GOAWAY is out.
    pub(super) failed: bool,
    /// The client closed its side (or the socket failed).
    pub(super) peer_done: bool,
    /// The client sent GOAWAY: it opens no more streams.
    pub(super) peer_goaway: bool,
    /// When the last stream closed (or the connection opened).
    pub(super) idle_since: Instant,
    /// The buffers were freed in this idle spell.
    pub(super) released: bool,
    /// When bytes last arrived.
    pub(super) last_read: Instant,
    /// A PING sent and not yet followed by any frame.
    pub(super) ping_sent: Option<Instant>,
    /// The timer is registered with its current deadline, so it wakes the
    /// task by itself: no need to poll it on every pass.
    timer_armed: bool,
    pub(super) answered: u64,
    pub(super) resets: u64,
    pub(super) empty_data: u32,
    /// The largest dynamic table the client's decoder may assume sluice's
    /// encoder uses; a client setting below it owes the client a size
    /// update at the start of the next header block.
    pub(super) encoder_table: u32,
    pub(super) table_update: bool,
    /// Streams sluice reset most recently (a ring, allocated at the first
    /// reset): frames the client sent before it saw the reset are ignored
    /// (RFC 9113 §5.1, closed), not taken as a protocol error.
    pub(super) reset_ids: Vec<u32>,
    pub(super) reset_next: usize,
    /// Stream ids the client skipped when it opened a higher one (ranges,
    /// at most [`MAX_SKIPPED`]): they were never opened, so a frame on one
    /// is a PROTOCOL_ERROR (§5.1.1), not a frame on a closed stream.
    pub(super) skipped: Vec<(u32, u32)>,
}

impl<'a, I: AsyncRead + AsyncWrite + Unpin> Connection<'a, I> {
    fn new(io: I, client: &'a ClientConn, proxy: &'a Proxy, opts: &ListenerOptions) -> Self {
        let header_limit = opts.max_header_bytes;
        let mut wbuf = Vec::with_capacity(64);
        frame::write_settings(
            &mut wbuf,
            &[
                (frame::SETTINGS_ENABLE_PUSH, 0),
                (frame::SETTINGS_MAX_CONCURRENT_STREAMS, MAX_STREAMS as u32),
                (frame::SETTINGS_INITIAL_WINDOW_SIZE, STREAM_WINDOW as u32),
                (
                    frame::SETTINGS_MAX_HEADER_LIST_SIZE,
                    u32::try_from(header_limit).unwrap_or(u32::MAX),
                ),
            ],
        );
        frame::write_window_update(&mut wbuf, 0, (CONNECTION_WINDOW - frame::DEFAULT_WINDOW) as u32);
        let waker = Arc::new(AtomicWaker::new());
        Self {
            io,
            client,
            proxy,
            rbuf: BytesMut::new(),
            wbuf,
            wpos: 0,
            unflushed: false,
            decoder: Decoder::default(),
            block: Vec::new(),
            streams: Vec::new(),
            spare: Vec::new(),
            scratch: Vec::new(),
            socket: Slot::new(&waker),
            read_armed: false,
            waker,
            header_limit,
            idle_timeout: opts.header_read_timeout,
            preface: true,
            settings_seen: false,
            last_stream: 0,
            partial: None,
            peer_initial_window: frame::DEFAULT_WINDOW,
            peer_max_frame: frame::MAX_FRAME,
            send_window: frame::DEFAULT_WINDOW,
            recv_window: CONNECTION_WINDOW,
            credit: 0,
            going_away: false,
            drain_armed: false,
            announced: false,
            failed: false,
            peer_done: false,
            peer_goaway: false,
            idle_since: Instant::now(),
            released: false,
            last_read: Instant::now(),
            ping_sent: None,
            timer_armed: false,
            answered: 0,
            resets: 0,
            empty_data: 0,
            encoder_table: frame::DEFAULT_TABLE_SIZE,
            table_update: false,
            reset_ids: Vec::new(),
            reset_next: 0,
            skipped: Vec::new(),
        }
    }

    /// Drives the connection until it should close.
    fn poll(
        &mut self,
        cx: &mut Context<'_>,
        mut drained: Pin<&mut impl Future>,
        mut timer: Pin<&mut Sleep>,
    ) -> Poll<()> {
        self.waker.register(cx.waker());
        loop {
            let mut busy = false;
            if !self.going_away {
                // The drain in two steps (RFC 9113 §6.8): once the proxy
                // drains, a GOAWAY naming the highest possible stream, so
                // requests already on their way are still served; then, at the
                // listener's signal a second later, the real last stream. The
                // drain flag is an atomic load; the signal is polled once to
                // arm it (it wakes the task when it comes), then while the
                // first step is out.
                if !self.announced && self.proxy.is_draining() {
                    frame::write_goaway(&mut self.wbuf, frame::MAX_STREAM_ID, Reason::NoError);
                    self.announced = true;
                }
                let signalled = (!self.drain_armed || self.announced) && drained.as_mut().poll(cx).is_ready();
                self.drain_armed = true;
                if signalled {
                    self.go_away(Reason::NoError);
                }
            }
            if !self.failed && !self.peer_done && self.backlog() < MAX_BACKLOG {
                busy |= self.read();
            }
            if !self.failed {
                busy |= self.poll_handlers();
                busy |= self.give_back_window();
                busy |= self.send_bodies(cx);
            }
            self.sweep();
            match self.flush(cx) {
                Some(wrote) => busy |= wrote,
                // The client is gone.
                None => return Poll::Ready(()),
            }
            // What is still unwritten (a GOAWAY) gets a bounded try in `serve`.
            if self.failed || (self.streams.is_empty() && (self.going_away || self.peer_done || self.peer_goaway)) {
                return Poll::Ready(());
            }
            busy |= self.check_timer(timer.as_mut(), cx);
            if !busy {
                return Poll::Pending;
            }
        }
    }

    /// The connection's one timer: the keep-alive limit while no stream is
    /// open; otherwise a PING after a quiet interval, and the close when it
    /// goes unanswered (a client that vanished without a FIN). It is reset
    /// only when it fires early or a nearer deadline is needed, not on
    /// every request.
    fn check_timer(&mut self, mut timer: Pin<&mut Sleep>, cx: &mut Context<'_>) -> bool {
        let deadline = if self.streams.is_empty() && !self.released {
            self.idle_since + IDLE_RELEASE_AFTER.min(self.idle_timeout)
        } else if self.streams.is_empty() {
            self.idle_since + self.idle_timeout
        } else if let Some(sent) = self.ping_sent {
            sent + PING_TIMEOUT
        } else {
            self.last_read + PING_INTERVAL
        };
        if deadline < timer.deadline() {
            timer.as_mut().reset(deadline);
            self.timer_armed = false;
        }
        // Polled to register it after a reset, or once it has fired; a
        // poll costs more than the rest of a pass with nothing to do.
        if self.timer_armed && !timer.is_elapsed() {
            return false;
        }
        if timer.as_mut().poll(cx).is_pending() {
            self.timer_armed = true;
            return false;
        }
        self.timer_armed = false;
        if Instant::now() < deadline {
            timer.as_mut().reset(deadline);
        } else if self.streams.is_empty() && !self.released {
            self.release_buffers();
        } else if self.streams.is_empty() {
            self.go_away(Reason::NoError);
        } else if self.ping_sent.is_some() {
            debug!(peer = %self.client.peer, "no answer to PING; closing");
            self.peer_done = true;
            self.streams.clear();
        } else {
            frame::write_ping(&mut self.wbuf, *b"sluice:)");
            self.ping_sent = Some(Instant::now());
        }
        true
    }

    /// An idle connection keeps no buffers: the read and write buffers and
    /// the spare request buffers are freed, and allocated again by the
    /// next request (10,000 idle connections cost their sockets and
    /// tasks, not 10,000 sets of buffers).
    fn release_buffers(&mut self) {
        self.released = true;
        if self.rbuf.is_empty() {
            self.rbuf = BytesMut::new();
        }
        if self.backlog() == 0 {
            self.wbuf = Vec::new();
            self.wpos = 0;
        }
        self.block = Vec::new();
        self.scratch.clear();
    }

    pub(super) fn backlog(&self) -> usize {
        self.wbuf.len() - self.wpos
    }

    /// Reads what the socket has and handles every whole frame; whether
    /// anything happened.
    fn read(&mut self) -> bool {
        let mut busy = self.handle_frames();
        if self.failed || self.peer_done || self.backlog() >= MAX_BACKLOG {
            return busy;
        }
        // A read that would only register the waker again is skipped (each
        // costs about as much as a frame's handling), and takes no buffer.
        if self.read_armed && !self.socket.wake.ready.swap(false, Ordering::AcqRel) {
            return busy;
        }
        // Room for at least the frame being read, whole.
        let want = Head::parse(&self.rbuf).map_or(READ_SIZE, |h| (frame::HEAD_LEN + h.len).max(READ_SIZE));
        if self.rbuf.capacity() - self.rbuf.len() < want / 4 || self.rbuf.capacity() < want {
            self.rbuf.reserve(want);
        }
        let mut socket_cx = Context::from_waker(&self.socket.waker);
        self.read_armed = false;
        match tokio_util::io::poll_read_buf(Pin::new(&mut self.io), &mut socket_cx, &mut self.rbuf) {
            Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => {
                // The client closed: what it asked for can no longer reach it.
                self.peer_done = true;
                self.streams.clear();
                busy = true;
            }
            Poll::Ready(Ok(_)) => {
                self.last_read = Instant::now();
                self.ping_sent = None;
                self.handle_frames();
                busy = true;
            }
            Poll::Pending => self.read_armed = true,
        }
        busy
    }

    fn handle_frames(&mut self) -> bool {
        let mut busy = false;
        if self.preface {
            let n = self.rbuf.len().min(frame::PREFACE.len());
            if self.rbuf.get(..n) != frame::PREFACE.get(..n) {
                self.fail(Reason::Protocol);
                return true;
            }
            if n < frame::PREFACE.len() {
                return false;
            }
            let _ = self.rbuf.split_to(n);
            self.preface = false;
        }
        while !self.failed && self.backlog() < MAX_BACKLOG {
            let Some(head) = Head::parse(&self.rbuf) else { break };
            if head.len > frame::MAX_FRAME {
                self.fail(Reason::FrameSize);
                break;
            }
            if self.rbuf.len() < frame::HEAD_LEN + head.len {
                break;
            }
            let mut bytes = self.rbuf.split_to(frame::HEAD_LEN + head.len);
            let payload = bytes.split_off(frame::HEAD_LEN).freeze();
            busy = true;
            match self.on_frame(head, payload) {
                Ok(()) => {}
                Err(Failure::Stream(id, reason)) => self.reset(id, reason),
                Err(Failure::Connection(reason)) => self.fail(reason),
            }
        }
        busy
    }

    /// Writes what is waiting; `None` once the socket fails.
    fn flush(&mut self, cx: &mut Context<'_>) -> Option<bool> {
        let wrote = super::io::write_out(&mut self.io, cx, &self.wbuf, &mut self.wpos, &mut self.unflushed)?;
        if self.wpos == self.wbuf.len() {
            self.wbuf.clear();
            self.wpos = 0;
            if self.wbuf.capacity() > 4 * MAX_BACKLOG {
                self.wbuf.shrink_to(64 * 1024);
            }
        }
        Some(wrote)
    }
}
