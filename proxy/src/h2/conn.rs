//! One HTTP/2 client connection, driven by one task: frames are read and
//! answered here, each request's handler is polled here (no task per
//! stream, no lock), and responses go out in the order they are ready,
//! within the client's flow-control windows.

use std::future::{Future, poll_fn};
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::task::AtomicWaker;
use http::{Response, StatusCode, header};
use http_body::Body;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;
use tokio::time::{Instant, Sleep};
use tracing::debug;

use super::frame::{self, Head, Reason};
use super::hpack::{self, Decoder};
use super::recv::{Consumed, RecvBody, Sink};
use super::request::{Refusal, RequestHead, is_connection_specific};
use crate::body::{ClientBody, ProxyBody};
use crate::forward::{ClientConn, Proxy, Scratch};
use crate::server::ListenerOptions;

/// Streams a client may have open at once (SETTINGS_MAX_CONCURRENT_STREAMS).
const MAX_STREAMS: usize = 256;
/// The window sluice gives each request body, and the whole connection.
const STREAM_WINDOW: i64 = 1 << 20;
const CONNECTION_WINDOW: i64 = 1 << 20;
/// Bytes of responses waiting to be written past which sluice stops
/// reading new frames and taking more from response bodies.
const MAX_BACKLOG: usize = 256 * 1024;
/// A header block's bytes, past which the connection is closed instead
/// of decoded: far above any head the limit lets through.
const MAX_BLOCK: usize = 256 * 1024;
const MAX_CONTINUATIONS: usize = 64;
/// Streams the client may reset, or sluice refuse, beyond those answered
/// in full (the rapid-reset defence, CVE-2023-44487).
const RESET_ALLOWANCE: u64 = 100;
/// Empty DATA frames that end nothing, per connection.
const MAX_EMPTY_DATA: u32 = 1000;
/// Quiet time with streams open after which sluice checks the client is
/// still there, and how long it waits for an answer (as hyper's server did).
const PING_INTERVAL: Duration = Duration::from_secs(30);
const PING_TIMEOUT: Duration = Duration::from_secs(10);
/// Read size (and the least the read buffer grows by).
const READ_SIZE: usize = 4096;
/// Idle time after which a connection frees its buffers.
const RELEASE_AFTER: Duration = Duration::from_secs(1);
/// How long the GOAWAY of a closing connection may take to be written.
const CLOSE_WRITE_TIMEOUT: Duration = Duration::from_secs(1);

/// A request's work: the response head, and the buffers it lent back.
type Handler<'a> = Pin<Box<dyn Future<Output = (Response<ProxyBody>, Scratch)> + Send + 'a>>;
/// Buffers kept for the connection's next requests.
const SPARE_SCRATCH: usize = 4;

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

/// Wakes the connection for one stream's handler and notes which one.
#[derive(Debug)]
struct StreamWake {
    ready: AtomicBool,
    connection: Arc<AtomicWaker>,
}

impl Wake for StreamWake {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.ready.store(true, Ordering::Release);
        self.connection.wake();
    }
}

/// A waker and its flag, kept for the next stream once one closes.
struct Slot {
    wake: Arc<StreamWake>,
    waker: Waker,
}

struct Stream<'a> {
    id: u32,
    slot: Slot,
    /// The proxy's work on the request, until it gives the response head.
    handler: Option<Handler<'a>>,
    /// Where request DATA goes until the client ends the body.
    sink: Option<Sink>,
    consumed: Option<Arc<Consumed>>,
    /// Request bytes passed on but not yet read by the proxy.
    unread: usize,
    /// Read request bytes not yet given back as window.
    credit: usize,
    recv_window: i64,
    content_length: Option<u64>,
    received: u64,
    /// The response body, once the head is sent, until its end is taken.
    body: Option<ProxyBody>,
    /// Response data the windows have not let out yet.
    unsent: Bytes,
    /// Whether `unsent` is the body's last data.
    unsent_ends: bool,
    send_window: i64,
    /// END_STREAM sent, or the stream reset: nothing more goes out.
    done_sending: bool,
}

impl Stream<'_> {
    fn finished(&self) -> bool {
        self.done_sending && self.sink.is_none() && self.handler.is_none()
    }
}

/// A header block arriving in CONTINUATION frames.
struct Partial {
    stream: u32,
    end_stream: bool,
    block: BytesMut,
    frames: usize,
}

/// A protocol error: of one stream (reset) or of the connection (GOAWAY).
enum Failure {
    Stream(u32, Reason),
    Connection(Reason),
}

struct Connection<'a, I> {
    io: I,
    client: &'a ClientConn,
    proxy: &'a Proxy,
    rbuf: BytesMut,
    wbuf: Vec<u8>,
    wpos: usize,
    unflushed: bool,
    decoder: Decoder,
    block: Vec<u8>,
    streams: Vec<Stream<'a>>,
    spare: Vec<Slot>,
    scratch: Vec<Scratch>,
    waker: Arc<AtomicWaker>,
    header_limit: usize,
    idle_timeout: Duration,
    /// Until the preface and the client's first SETTINGS have arrived.
    preface: bool,
    settings_seen: bool,
    last_stream: u32,
    partial: Option<Partial>,
    peer_initial_window: i64,
    peer_max_frame: usize,
    send_window: i64,
    recv_window: i64,
    /// Connection window to give back.
    credit: usize,
    /// GOAWAY sent (draining, idle, or an error).
    going_away: bool,
    /// The listener's drain signal has been polled (and will wake the task).
    drain_armed: bool,
    /// The first GOAWAY of a drain is out.
    announced: bool,
    /// A connection error: stop everything once the GOAWAY is out.
    failed: bool,
    /// The client closed its side (or the socket failed).
    peer_done: bool,
    /// The client sent GOAWAY: it opens no more streams.
    peer_goaway: bool,
    /// When the last stream closed (or the connection opened).
    idle_since: Instant,
    /// The buffers were freed in this idle spell.
    released: bool,
    /// When bytes last arrived.
    last_read: Instant,
    /// A PING sent and not yet followed by any frame.
    ping_sent: Option<Instant>,
    answered: u64,
    resets: u64,
    empty_data: u32,
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
            waker: Arc::new(AtomicWaker::new()),
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
            answered: 0,
            resets: 0,
            empty_data: 0,
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
                busy |= self.read(cx);
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
            self.idle_since + RELEASE_AFTER.min(self.idle_timeout)
        } else if self.streams.is_empty() {
            self.idle_since + self.idle_timeout
        } else if let Some(sent) = self.ping_sent {
            sent + PING_TIMEOUT
        } else {
            self.last_read + PING_INTERVAL
        };
        if deadline < timer.deadline() {
            timer.as_mut().reset(deadline);
        }
        if timer.as_mut().poll(cx).is_pending() {
            return false;
        }
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

    fn backlog(&self) -> usize {
        self.wbuf.len() - self.wpos
    }

    /// Reads what the socket has and handles every whole frame; whether
    /// anything happened.
    fn read(&mut self, cx: &mut Context<'_>) -> bool {
        let mut busy = self.handle_frames();
        if self.failed || self.peer_done || self.backlog() >= MAX_BACKLOG {
            return busy;
        }
        // Room for at least the frame being read, whole.
        let want = Head::parse(&self.rbuf).map_or(READ_SIZE, |h| (frame::HEAD_LEN + h.len).max(READ_SIZE));
        if self.rbuf.capacity() - self.rbuf.len() < want / 4 || self.rbuf.capacity() < want {
            self.rbuf.reserve(want);
        }
        match tokio_util::io::poll_read_buf(Pin::new(&mut self.io), cx, &mut self.rbuf) {
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
            Poll::Pending => {}
        }
        busy
    }

    fn handle_frames(&mut self) -> bool {
        let mut busy = false;
        if self.preface {
            let n = self.rbuf.len().min(frame::PREFACE.len());
            if self.rbuf[..n] != frame::PREFACE[..n] {
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

    fn on_frame(&mut self, head: Head, payload: Bytes) -> Result<(), Failure> {
        use Failure::Connection as Conn;
        if let Some(partial) = &self.partial
            && (head.kind != frame::CONTINUATION || head.stream != partial.stream)
        {
            return Err(Conn(Reason::Protocol));
        }
        if !self.settings_seen {
            if head.kind != frame::SETTINGS || head.has(frame::ACK) {
                return Err(Conn(Reason::Protocol));
            }
            self.settings_seen = true;
        }
        match head.kind {
            frame::DATA => self.on_data(head, payload),
            frame::HEADERS => self.on_headers(head, payload),
            frame::CONTINUATION => self.on_continuation(head, payload),
            frame::PRIORITY => {
                if head.stream == 0 {
                    return Err(Conn(Reason::Protocol));
                }
                if head.len != 5 {
                    return Err(Failure::Stream(head.stream, Reason::FrameSize));
                }
                Ok(())
            }
            frame::RST_STREAM => {
                if head.stream == 0 || head.stream > self.last_stream {
                    return Err(Conn(Reason::Protocol));
                }
                if head.len != 4 {
                    return Err(Conn(Reason::FrameSize));
                }
                if let Some(i) = self.find(head.stream) {
                    self.count_reset();
                    self.close_stream(i);
                }
                Ok(())
            }
            frame::SETTINGS => self.on_settings(head, &payload),
            frame::PING => {
                if head.stream != 0 {
                    return Err(Conn(Reason::Protocol));
                }
                if head.len != 8 {
                    return Err(Conn(Reason::FrameSize));
                }
                if !head.has(frame::ACK) {
                    frame::write_ping_ack(&mut self.wbuf, &payload);
                }
                Ok(())
            }
            frame::GOAWAY => {
                if head.stream != 0 {
                    return Err(Conn(Reason::Protocol));
                }
                if head.len < 8 {
                    return Err(Conn(Reason::FrameSize));
                }
                self.peer_goaway = true;
                Ok(())
            }
            frame::WINDOW_UPDATE => self.on_window_update(head, &payload),
            frame::PUSH_PROMISE => Err(Conn(Reason::Protocol)),
            // Unknown frame types are ignored (RFC 9113 §4.1).
            _ => Ok(()),
        }
    }

    fn on_settings(&mut self, head: Head, payload: &[u8]) -> Result<(), Failure> {
        use Failure::Connection as Conn;
        if head.stream != 0 {
            return Err(Conn(Reason::Protocol));
        }
        if head.has(frame::ACK) {
            return if head.len == 0 {
                Ok(())
            } else {
                Err(Conn(Reason::FrameSize))
            };
        }
        if !head.len.is_multiple_of(6) {
            return Err(Conn(Reason::FrameSize));
        }
        for setting in payload.chunks_exact(6) {
            let id = u16::from_be_bytes([setting[0], setting[1]]);
            let value = u32::from_be_bytes([setting[2], setting[3], setting[4], setting[5]]);
            match id {
                frame::SETTINGS_ENABLE_PUSH if value > 1 => return Err(Conn(Reason::Protocol)),
                frame::SETTINGS_INITIAL_WINDOW_SIZE => {
                    let value = i64::from(value);
                    if value > frame::MAX_WINDOW {
                        return Err(Conn(Reason::FlowControl));
                    }
                    let delta = value - self.peer_initial_window;
                    self.peer_initial_window = value;
                    for stream in &mut self.streams {
                        stream.send_window += delta;
                        if stream.send_window > frame::MAX_WINDOW {
                            return Err(Conn(Reason::FlowControl));
                        }
                    }
                }
                frame::SETTINGS_MAX_FRAME_SIZE => {
                    if !(frame::MAX_FRAME as u32..=frame::MAX_FRAME_LIMIT).contains(&value) {
                        return Err(Conn(Reason::Protocol));
                    }
                    self.peer_max_frame = value as usize;
                }
                // sluice's encoder uses no dynamic table and pushes nothing;
                // the rest are advisory.
                _ => {}
            }
        }
        frame::write_settings_ack(&mut self.wbuf);
        Ok(())
    }

    fn on_window_update(&mut self, head: Head, payload: &[u8]) -> Result<(), Failure> {
        let Ok(bytes) = <[u8; 4]>::try_from(payload) else {
            return Err(Failure::Connection(Reason::FrameSize));
        };
        let increment = i64::from(u32::from_be_bytes(bytes) & 0x7fff_ffff);
        if head.stream == 0 {
            if increment == 0 {
                return Err(Failure::Connection(Reason::Protocol));
            }
            self.send_window += increment;
            if self.send_window > frame::MAX_WINDOW {
                return Err(Failure::Connection(Reason::FlowControl));
            }
            return Ok(());
        }
        if head.stream > self.last_stream {
            return Err(Failure::Connection(Reason::Protocol));
        }
        if increment == 0 {
            return Err(Failure::Stream(head.stream, Reason::Protocol));
        }
        if let Some(i) = self.find(head.stream) {
            let stream = &mut self.streams[i];
            stream.send_window += increment;
            if stream.send_window > frame::MAX_WINDOW {
                return Err(Failure::Stream(head.stream, Reason::FlowControl));
            }
        }
        Ok(())
    }

    fn on_data(&mut self, head: Head, payload: Bytes) -> Result<(), Failure> {
        use Failure::Connection as Conn;
        if head.stream == 0 || head.stream > self.last_stream {
            return Err(Conn(Reason::Protocol));
        }
        let len = head.len;
        self.recv_window -= len as i64;
        if self.recv_window < 0 {
            return Err(Conn(Reason::FlowControl));
        }
        let data = frame::unpad(&head, payload).ok_or(Conn(Reason::Protocol))?;
        let Some(i) = self.find(head.stream).filter(|&i| self.streams[i].sink.is_some()) else {
            // A stream already ended or reset: the bytes count against the
            // connection's window only, which they are given back to.
            self.credit += len;
            return match self.find(head.stream) {
                Some(_) => Err(Failure::Stream(head.stream, Reason::StreamClosed)),
                None => Ok(()),
            };
        };
        let end = head.has(frame::END_STREAM);
        if data.is_empty() && !end {
            self.empty_data += 1;
            if self.empty_data > MAX_EMPTY_DATA {
                return Err(Conn(Reason::EnhanceYourCalm));
            }
        }
        let stream = &mut self.streams[i];
        stream.recv_window -= len as i64;
        if stream.recv_window < 0 {
            self.credit += len;
            return Err(Failure::Stream(head.stream, Reason::FlowControl));
        }
        // Padding is never read: given back at once.
        let padding = len - data.len();
        stream.credit += padding;
        self.credit += padding;
        stream.received += data.len() as u64;
        if stream.content_length.is_some_and(|n| stream.received > n)
            || (end && stream.content_length.is_some_and(|n| stream.received != n))
        {
            return Err(Failure::Stream(head.stream, Reason::Protocol));
        }
        if !data.is_empty() {
            let n = data.len();
            let passed = stream.sink.as_ref().is_some_and(|sink| sink.data(data));
            if passed {
                stream.unread += n;
            } else {
                // The proxy stopped reading: nothing holds the bytes.
                stream.credit += n;
                self.credit += n;
            }
        }
        if end {
            stream.sink = None;
        }
        Ok(())
    }

    fn on_headers(&mut self, head: Head, payload: Bytes) -> Result<(), Failure> {
        if head.stream == 0 || head.stream.is_multiple_of(2) {
            return Err(Failure::Connection(Reason::Protocol));
        }
        let mut block = frame::unpad(&head, payload).ok_or(Failure::Connection(Reason::Protocol))?;
        let mut self_dependent = false;
        if head.has(frame::PRIORITY_FLAG) {
            if block.len() < 5 {
                return Err(Failure::Connection(Reason::FrameSize));
            }
            let dependency = u32::from_be_bytes([block[0], block[1], block[2], block[3]]) & 0x7fff_ffff;
            self_dependent = dependency == head.stream;
            block = block.slice(5..);
        }
        let end_stream = head.has(frame::END_STREAM);
        if !head.has(frame::END_HEADERS) {
            self.partial = Some(Partial {
                stream: head.stream,
                end_stream,
                block: BytesMut::from(&block[..]),
                frames: 0,
            });
            return Ok(());
        }
        self.on_header_block(head.stream, end_stream, &block)?;
        if self_dependent {
            return Err(Failure::Stream(head.stream, Reason::Protocol));
        }
        Ok(())
    }

    fn on_continuation(&mut self, head: Head, payload: Bytes) -> Result<(), Failure> {
        let Some(partial) = self.partial.as_mut() else {
            return Err(Failure::Connection(Reason::Protocol));
        };
        partial.frames += 1;
        if partial.block.len() + payload.len() > MAX_BLOCK || partial.frames > MAX_CONTINUATIONS {
            return Err(Failure::Connection(Reason::EnhanceYourCalm));
        }
        partial.block.extend_from_slice(&payload);
        if !head.has(frame::END_HEADERS) {
            return Ok(());
        }
        let Some(partial) = self.partial.take() else {
            return Ok(());
        };
        self.on_header_block(partial.stream, partial.end_stream, &partial.block.freeze())
    }

    /// A whole header block: a new request, or a request's trailers.
    fn on_header_block(&mut self, id: u32, end_stream: bool, block: &Bytes) -> Result<(), Failure> {
        // A request's header map and backend-head buffer come from the
        // connection's spares, as on the HTTP/1.1 loop.
        let mut scratch = self.scratch.pop().unwrap_or_default();
        let mut head = RequestHead::new(self.header_limit, scratch.take_headers().unwrap_or_default());
        // Decoded before anything else: the table must take every block.
        self.decoder
            .decode(block, |field| head.add(field))
            .map_err(|_| Failure::Connection(Reason::Compression))?;
        if id <= self.last_stream {
            return self.on_trailers(id, end_stream, head);
        }
        self.last_stream = id;
        if self.going_away || self.peer_goaway {
            frame::write_rst(&mut self.wbuf, id, Reason::RefusedStream);
            return Ok(());
        }
        if self.streams.len() >= MAX_STREAMS {
            self.count_reset();
            frame::write_rst(&mut self.wbuf, id, Reason::RefusedStream);
            return Ok(());
        }
        let content_length = head.content_length();
        if end_stream && content_length.is_some_and(|n| n > 0) {
            self.count_reset();
            frame::write_rst(&mut self.wbuf, id, Reason::Protocol);
            return Ok(());
        }
        let consumed = (!end_stream).then(|| Arc::new(Consumed::new(Arc::clone(&self.waker))));
        let (sink, body) = match &consumed {
            Some(consumed) => {
                let (sink, body) = RecvBody::channel(Arc::clone(consumed), content_length);
                (Some(sink), body)
            }
            None => (None, RecvBody::empty()),
        };
        let handler: Option<Handler<'a>> = match head.into_request(ClientBody::Stream(body)) {
            Ok(req) => {
                let (proxy, client) = (self.proxy, self.client);
                Some(Box::pin(async move {
                    let res = proxy.handle(req, client, &mut scratch).await;
                    (res, scratch)
                }))
            }
            Err(Refusal::Malformed(why)) => {
                debug!(peer = %self.client.peer, stream = id, why, "malformed HTTP/2 request");
                self.count_reset();
                frame::write_rst(&mut self.wbuf, id, Reason::Protocol);
                return Ok(());
            }
            Err(Refusal::TooLarge) => None,
        };
        let slot = self.spare.pop().unwrap_or_else(|| {
            let wake = Arc::new(StreamWake {
                ready: AtomicBool::new(false),
                connection: Arc::clone(&self.waker),
            });
            Slot {
                waker: Waker::from(Arc::clone(&wake)),
                wake,
            }
        });
        // Polled on this pass.
        slot.wake.ready.store(true, Ordering::Release);
        let refused = handler.is_none();
        self.streams.push(Stream {
            id,
            slot,
            handler,
            sink,
            consumed,
            unread: 0,
            credit: 0,
            recv_window: STREAM_WINDOW,
            content_length,
            received: 0,
            body: None,
            unsent: Bytes::new(),
            unsent_ends: false,
            send_window: self.peer_initial_window,
            done_sending: false,
        });
        if refused {
            let i = self.streams.len() - 1;
            let res = Response::builder()
                .status(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE)
                .body(ProxyBody::full("request header fields too large\n"))
                .unwrap_or_else(|_| Response::new(ProxyBody::empty()));
            self.send_head(i, res);
        }
        Ok(())
    }

    fn on_trailers(&mut self, id: u32, end_stream: bool, head: RequestHead) -> Result<(), Failure> {
        let Some(i) = self.find(id).filter(|&i| self.streams[i].sink.is_some()) else {
            // Trailers for a stream already closed (perhaps reset by sluice
            // while they were on their way): nothing to do with them.
            return Ok(());
        };
        if !end_stream {
            return Err(Failure::Stream(id, Reason::Protocol));
        }
        let stream = &mut self.streams[i];
        if stream.content_length.is_some_and(|n| stream.received != n) {
            return Err(Failure::Stream(id, Reason::Protocol));
        }
        match head.into_trailers() {
            Some(trailers) => {
                if let Some(sink) = stream.sink.take() {
                    sink.trailers(trailers);
                }
                Ok(())
            }
            None => Err(Failure::Stream(id, Reason::Protocol)),
        }
    }

    /// Polls the handlers woken since they were last polled.
    fn poll_handlers(&mut self) -> bool {
        let mut busy = false;
        for i in 0..self.streams.len() {
            let stream = &mut self.streams[i];
            let Some(handler) = stream.handler.as_mut() else {
                continue;
            };
            if !stream.slot.wake.ready.swap(false, Ordering::AcqRel) {
                continue;
            }
            if let Poll::Ready((res, scratch)) = handler.as_mut().poll(&mut Context::from_waker(&stream.slot.waker)) {
                stream.handler = None;
                if self.scratch.len() < SPARE_SCRATCH {
                    self.scratch.push(scratch);
                }
                self.send_head(i, res);
                busy = true;
            }
        }
        busy
    }

    /// Writes a response's head; its body, if any, follows in `send_bodies`.
    fn send_head(&mut self, i: usize, res: Response<ProxyBody>) {
        let (parts, body) = res.into_parts();
        let block = &mut self.block;
        block.clear();
        hpack::encode_status(parts.status, block);
        let mut has_date = false;
        for (name, value) in &parts.headers {
            if is_connection_specific(name) {
                continue;
            }
            has_date |= name == header::DATE;
            hpack::encode_header(name, value, block);
        }
        if !has_date {
            hpack::encode_date(block);
        }
        let stream = &mut self.streams[i];
        let end = body.is_end_stream();
        frame::write_headers(&mut self.wbuf, stream.id, block, end, self.peer_max_frame);
        if end {
            self.finish_sending(i);
        } else {
            stream.body = Some(body);
        }
    }

    /// Gives back window for request bytes the proxy has read.
    fn give_back_window(&mut self) -> bool {
        let mut busy = false;
        for stream in &mut self.streams {
            let Some(consumed) = &stream.consumed else { continue };
            let n = consumed.take();
            stream.unread = stream.unread.saturating_sub(n);
            stream.credit += n;
            self.credit += n;
            // Half the window read: the client may send the next half.
            if stream.sink.is_some() && stream.credit as i64 >= STREAM_WINDOW / 2 {
                frame::write_window_update(&mut self.wbuf, stream.id, stream.credit as u32);
                stream.recv_window += stream.credit as i64;
                stream.credit = 0;
                busy = true;
            }
        }
        if self.credit as i64 >= CONNECTION_WINDOW / 2 {
            frame::write_window_update(&mut self.wbuf, 0, self.credit as u32);
            self.recv_window += self.credit as i64;
            self.credit = 0;
            busy = true;
        }
        busy
    }

    /// Moves response bodies out as far as the windows allow.
    fn send_bodies(&mut self, cx: &mut Context<'_>) -> bool {
        let mut busy = false;
        for i in 0..self.streams.len() {
            while self.backlog() < MAX_BACKLOG {
                let stream = &mut self.streams[i];
                if stream.done_sending || stream.handler.is_some() {
                    break;
                }
                if !stream.unsent.is_empty() {
                    let room = stream.send_window.min(self.send_window).min(self.peer_max_frame as i64);
                    if room <= 0 {
                        break;
                    }
                    let n = stream.unsent.len().min(room as usize);
                    let chunk = stream.unsent.split_to(n);
                    let end = stream.unsent.is_empty() && stream.unsent_ends;
                    frame::write_data(&mut self.wbuf, stream.id, &chunk, end);
                    stream.send_window -= n as i64;
                    self.send_window -= n as i64;
                    busy = true;
                    if end {
                        self.finish_sending(i);
                    }
                    continue;
                }
                let Some(body) = stream.body.as_mut() else {
                    // The last data went out without END_STREAM: end it now.
                    frame::write_data(&mut self.wbuf, stream.id, &[], true);
                    self.finish_sending(i);
                    busy = true;
                    break;
                };
                match Pin::new(&mut *body).poll_frame(cx) {
                    Poll::Pending => break,
                    Poll::Ready(Some(Ok(f))) => {
                        busy = true;
                        let ends = body.is_end_stream();
                        match f.into_data() {
                            Ok(data) => {
                                if ends {
                                    stream.body = None;
                                }
                                if data.is_empty() && !ends {
                                    continue;
                                }
                                stream.unsent = data;
                                stream.unsent_ends = ends;
                                if stream.unsent.is_empty() {
                                    frame::write_data(&mut self.wbuf, stream.id, &[], true);
                                    self.finish_sending(i);
                                }
                            }
                            Err(f) => {
                                stream.body = None;
                                self.block.clear();
                                if let Ok(trailers) = f.into_trailers() {
                                    for (name, value) in &trailers {
                                        hpack::encode_header(name, value, &mut self.block);
                                    }
                                }
                                frame::write_headers(&mut self.wbuf, stream.id, &self.block, true, self.peer_max_frame);
                                self.finish_sending(i);
                            }
                        }
                    }
                    Poll::Ready(None) => {
                        busy = true;
                        stream.body = None;
                        frame::write_data(&mut self.wbuf, stream.id, &[], true);
                        self.finish_sending(i);
                    }
                    Poll::Ready(Some(Err(e))) => {
                        busy = true;
                        debug!(peer = %self.client.peer, stream = stream.id, error = %e, "response body failed");
                        let id = stream.id;
                        self.reset(id, Reason::Internal);
                    }
                }
            }
        }
        busy
    }

    /// The response is out. A request body still arriving is no longer
    /// wanted: RST_STREAM(NO_ERROR) tells the client to stop (RFC 9113 §8.1).
    fn finish_sending(&mut self, i: usize) {
        let stream = &mut self.streams[i];
        stream.done_sending = true;
        stream.body = None;
        self.answered += 1;
        if stream.sink.is_some() {
            frame::write_rst(&mut self.wbuf, stream.id, Reason::NoError);
            stream.sink = None;
        }
    }

    /// Drops streams that are done, keeping their wakers for new ones.
    fn sweep(&mut self) {
        let was_busy = !self.streams.is_empty();
        let mut i = 0;
        while i < self.streams.len() {
            if self.streams[i].finished() {
                let stream = self.streams.swap_remove(i);
                self.credit += stream.unread;
                self.spare.push(stream.slot);
            } else {
                i += 1;
            }
        }
        if was_busy && self.streams.is_empty() {
            self.idle_since = Instant::now();
            self.released = false;
        }
    }

    /// Resets a stream (a stream error, or the response body failed).
    fn reset(&mut self, id: u32, reason: Reason) {
        frame::write_rst(&mut self.wbuf, id, reason);
        if reason != Reason::NoError {
            self.count_reset();
        }
        if let Some(i) = self.find(id) {
            self.close_stream(i);
        }
    }

    /// Stops all work on a stream: its handler, body and request body are dropped.
    fn close_stream(&mut self, i: usize) {
        let stream = &mut self.streams[i];
        stream.handler = None;
        stream.body = None;
        stream.sink = None;
        stream.unsent = Bytes::new();
        stream.done_sending = true;
    }

    fn count_reset(&mut self) {
        self.resets += 1;
        if self.resets > RESET_ALLOWANCE + self.answered {
            debug!(peer = %self.client.peer, resets = self.resets, "too many reset streams; closing");
            self.fail(Reason::EnhanceYourCalm);
        }
    }

    fn find(&self, id: u32) -> Option<usize> {
        self.streams.iter().position(|s| s.id == id)
    }

    /// Sends GOAWAY: no stream after the last one seen will be served.
    fn go_away(&mut self, reason: Reason) {
        if !self.going_away {
            frame::write_goaway(&mut self.wbuf, self.last_stream, reason);
            self.going_away = true;
        }
    }

    /// A connection error: GOAWAY, and every stream dropped.
    fn fail(&mut self, reason: Reason) {
        if self.failed {
            return;
        }
        self.going_away = false;
        self.go_away(reason);
        self.failed = true;
        self.streams.clear();
    }

    /// Writes what is waiting; `None` once the socket fails.
    fn flush(&mut self, cx: &mut Context<'_>) -> Option<bool> {
        let mut wrote = false;
        while self.wpos < self.wbuf.len() {
            match Pin::new(&mut self.io).poll_write(cx, &self.wbuf[self.wpos..]) {
                Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => return None,
                Poll::Ready(Ok(n)) => {
                    self.wpos += n;
                    self.unflushed = true;
                    wrote = true;
                }
                Poll::Pending => break,
            }
        }
        if self.wpos == self.wbuf.len() {
            self.wbuf.clear();
            self.wpos = 0;
            if self.wbuf.capacity() > 4 * MAX_BACKLOG {
                self.wbuf.shrink_to(64 * 1024);
            }
        }
        // TLS keeps written bytes until flushed.
        if self.unflushed {
            match Pin::new(&mut self.io).poll_flush(cx) {
                Poll::Ready(Ok(())) => self.unflushed = false,
                Poll::Ready(Err(_)) => return None,
                Poll::Pending => {}
            }
        }
        Some(wrote)
    }
}
