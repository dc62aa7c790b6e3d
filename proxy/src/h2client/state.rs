//! A client connection's shared state: its streams, both directions' flow
//! control, and the bytes waiting for the connection's task to write.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::task::Waker;

use bytes::Bytes;
use futures_util::task::AtomicWaker;
use http::{HeaderMap, StatusCode};

use super::error::H2Error;
use super::{CONN_WINDOW, SEND_BUFFER, STREAM_WINDOW};
use crate::h2::frame::{self, Reason};

/// What the requests and the connection's task share.
#[derive(Debug)]
pub(super) struct Shared {
    state: Mutex<State>,
    /// The connection's task: woken when bytes are queued to write.
    pub(super) driver: AtomicWaker,
    /// No new stream may open (GOAWAY, an error, ids used up): the next
    /// request dials anew. Read without the lock.
    pub(super) closed: AtomicBool,
    /// Streams whose responses have passed on [`BULK`] bytes and go on:
    /// the pool sends new calls to a connection without any. Read
    /// without the lock.
    pub(super) bulk: AtomicUsize,
    /// Exchanges under way (from their stream's opening to the end of its
    /// response or its reset). Read without the lock.
    pub(super) calls: AtomicUsize,
    /// No bulk stream was open at the pool's last look
    /// ([`super::H2Client::bulk_free_twice`]).
    pub(super) bulk_free_seen: AtomicBool,
}

/// Response bytes after which a stream counts as bulk (a long server
/// stream, a download) rather than a call's answer.
pub(super) const BULK: u64 = 64 * 1024;

impl Shared {
    pub(super) fn new(state: State) -> Self {
        Self {
            state: Mutex::new(state),
            driver: AtomicWaker::new(),
            closed: AtomicBool::new(false),
            bulk: AtomicUsize::new(0),
            calls: AtomicUsize::new(0),
            bulk_free_seen: AtomicBool::new(false),
        }
    }

    /// The state; a panic while it was held leaves nothing half-done that
    /// matters more than failing the connection's streams, so a poisoned
    /// lock is taken as it is.
    pub(super) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Wakes the connection's task when `wrote` (bytes were queued).
    pub(super) fn kick(&self, wrote: bool) {
        if wrote {
            self.driver.wake();
        }
    }
}

/// One stream's state.
#[derive(Debug)]
pub(super) struct Stream {
    pub(super) id: u32,
    /// The final response head, until the exchange takes it.
    pub(super) head: Option<(StatusCode, HeaderMap)>,
    pub(super) head_seen: bool,
    pub(super) data: VecDeque<Bytes>,
    pub(super) trailers: Option<HeaderMap>,
    /// END_STREAM received.
    pub(super) remote_end: bool,
    /// The stream ended without a whole response.
    pub(super) error: Option<H2Error>,
    /// What is left of the response's Content-Length.
    pub(super) length: Option<u64>,
    pub(super) recv_window: i64,
    /// Bytes passed on and not yet given back to the stream's window.
    pub(super) unreleased: usize,
    pub(super) recv_waker: Option<Waker>,
    pub(super) send_window: i64,
    /// Request body bytes waiting for window, then END_STREAM (with the
    /// trailers' block, if any) once `pending_end`.
    pub(super) pending: VecDeque<Bytes>,
    pub(super) pending_bytes: usize,
    pub(super) pending_end: bool,
    pub(super) pending_trailers: Option<Vec<u8>>,
    /// END_STREAM written.
    pub(super) local_end: bool,
    pub(super) send_waker: Option<Waker>,
    /// The response's reader (the exchange, then the body) is gone.
    pub(super) receiver_gone: bool,
    /// No body task feeds the stream (there never was one, or it ended).
    pub(super) sender_gone: bool,
    /// Counted against the backend's SETTINGS_MAX_CONCURRENT_STREAMS.
    pub(super) counted: bool,
}

impl Stream {
    /// A new stream; its two queues are `spare` ones (empty, with room)
    /// when a finished stream left some.
    fn new(id: u32, send_window: i64, sender: bool, spare: Option<Queues>) -> Self {
        let (data, pending) = spare.unwrap_or_default();
        Self {
            id,
            head: None,
            head_seen: false,
            data,
            trailers: None,
            remote_end: false,
            error: None,
            length: None,
            recv_window: STREAM_WINDOW,
            unreleased: 0,
            recv_waker: None,
            send_window,
            pending,
            pending_bytes: 0,
            pending_end: false,
            pending_trailers: None,
            local_end: false,
            send_waker: None,
            receiver_gone: false,
            sender_gone: !sender,
            counted: true,
        }
    }

    fn closed(&self) -> bool {
        self.error.is_some() || (self.remote_end && self.local_end)
    }

    /// Wakes the response's reader and the body task (the stream ended).
    pub(super) fn wake(&mut self) {
        self.wake_recv();
        if let Some(w) = self.send_waker.take() {
            w.wake();
        }
    }

    /// Wakes the response's reader (something arrived).
    pub(super) fn wake_recv(&mut self) {
        if let Some(w) = self.recv_waker.take() {
            w.wake();
        }
    }
}

/// The connection's state.
#[derive(Debug)]
pub(super) struct State {
    pub(super) wbuf: Vec<u8>,
    /// Open streams, by id (ids only grow, so pushed in order).
    pub(super) streams: Vec<Stream>,
    pub(super) next_id: u32,
    /// Streams counted against the backend's limit, and the limit.
    pub(super) open: usize,
    pub(super) max_streams: usize,
    /// Requests waiting for a stream under the backend's limit.
    pub(super) waiting: Vec<Waker>,
    /// The backend's SETTINGS_INITIAL_WINDOW_SIZE and SETTINGS_MAX_FRAME_SIZE.
    pub(super) initial_window: i64,
    pub(super) max_frame: usize,
    pub(super) send_window: i64,
    pub(super) recv_window: i64,
    /// Connection window to give back.
    pub(super) credit: usize,
    /// The last stream id of the backend's GOAWAY.
    pub(super) goaway: Option<u32>,
    /// Why the connection ended, once it has.
    pub(super) ended: Option<H2Error>,
    /// The pool let go of the connection: close once its streams are done.
    pub(super) handle_gone: bool,
    /// Emptied queues of finished streams, for the next ones.
    spare: Vec<Queues>,
}

/// A stream's received DATA and its request body waiting for window.
type Queues = (VecDeque<Bytes>, VecDeque<Bytes>);

/// How many finished streams' queues a connection keeps.
const SPARE_QUEUES: usize = 8;

impl State {
    /// A new connection's state, its preface and SETTINGS queued.
    pub(super) fn new() -> Self {
        let mut wbuf = Vec::with_capacity(128);
        wbuf.extend_from_slice(frame::PREFACE);
        frame::write_settings(
            &mut wbuf,
            &[
                (frame::SETTINGS_ENABLE_PUSH, 0),
                (frame::SETTINGS_INITIAL_WINDOW_SIZE, STREAM_WINDOW as u32),
                (frame::SETTINGS_MAX_HEADER_LIST_SIZE, super::MAX_HEADER_LIST as u32),
            ],
        );
        frame::write_window_update(&mut wbuf, 0, (CONN_WINDOW - frame::DEFAULT_WINDOW) as u32);
        Self {
            wbuf,
            streams: Vec::new(),
            next_id: 1,
            open: 0,
            max_streams: usize::MAX,
            waiting: Vec::new(),
            initial_window: frame::DEFAULT_WINDOW,
            max_frame: frame::MAX_FRAME,
            send_window: frame::DEFAULT_WINDOW,
            recv_window: CONN_WINDOW,
            credit: 0,
            goaway: None,
            ended: None,
            handle_gone: false,
            spare: Vec::new(),
        }
    }

    /// Whether sluice opened stream `id` (client streams are odd; the
    /// backend opens none, push being off).
    pub(super) fn opened(&self, id: u32) -> bool {
        !id.is_multiple_of(2) && id < self.next_id
    }

    pub(super) fn find(&self, id: u32) -> Option<usize> {
        self.streams.binary_search_by_key(&id, |s| s.id).ok()
    }

    /// Opens the next stream; `None` when ids are used up.
    pub(super) fn open_stream(&mut self, sender: bool) -> Option<u32> {
        let id = self.next_id;
        if id > frame::MAX_STREAM_ID {
            return None;
        }
        self.next_id = id.saturating_add(2);
        let spare = self.spare.pop();
        self.streams.push(Stream::new(id, self.initial_window, sender, spare));
        self.open += 1;
        Some(id)
    }

    /// Resets the stream at `idx` from this side.
    pub(super) fn reset(&mut self, idx: usize, reason: Reason, why: H2Error) {
        let Some(s) = self.streams.get_mut(idx) else { return };
        if s.error.is_none() {
            frame::write_rst(&mut self.wbuf, s.id, reason);
            s.error = Some(why);
        }
        s.wake();
        self.settle(idx);
    }

    /// Ends the stream at `idx` with `why`, as the backend or the
    /// connection's end decided (nothing to send).
    pub(super) fn fail(&mut self, idx: usize, why: H2Error) {
        if let Some(s) = self.streams.get_mut(idx)
            && s.error.is_none()
        {
            s.error = Some(why);
            s.wake();
        }
        self.settle(idx);
    }

    /// After a change to the stream at `idx`: uncounts it once closed, and
    /// drops it once nobody reads or feeds it.
    pub(super) fn settle(&mut self, idx: usize) {
        let Some(s) = self.streams.get_mut(idx) else { return };
        let closed = s.closed();
        if closed {
            s.pending.clear();
            s.pending_bytes = 0;
        }
        let remove = s.receiver_gone && (s.sender_gone || closed);
        if (closed || remove) && s.counted {
            s.counted = false;
            self.open -= 1;
            for w in self.waiting.drain(..) {
                w.wake();
            }
        }
        if remove {
            // Received data nobody will read still counts against the
            // connection's window: it is given back.
            let unread: usize = s.data.iter().map(Bytes::len).sum();
            let mut gone = self.streams.remove(idx);
            self.give_back(unread);
            // Its queues serve the next stream: two allocations fewer a
            // call. Only small ones are kept, and only a few.
            gone.data.clear();
            gone.pending.clear();
            if self.spare.len() < SPARE_QUEUES && gone.data.capacity() <= 16 && gone.pending.capacity() <= 16 {
                self.spare.push((gone.data, gone.pending));
            }
        }
    }

    /// Gives `n` bytes back to the connection's window, in one
    /// WINDOW_UPDATE once half of it is owed.
    pub(super) fn give_back(&mut self, n: usize) {
        self.credit += n;
        if self.credit as i64 >= CONN_WINDOW / 2 && self.ended.is_none() {
            frame::write_window_update(&mut self.wbuf, 0, self.credit as u32);
            self.recv_window += self.credit as i64;
            self.credit = 0;
        }
    }

    /// `n` bytes of the stream at `idx` were passed on: its window and the
    /// connection's are given back once half of either is owed.
    pub(super) fn release(&mut self, idx: usize, n: usize) {
        if let Some(s) = self.streams.get_mut(idx) {
            s.unreleased += n;
            if s.unreleased as i64 >= STREAM_WINDOW / 2 && !s.remote_end && s.error.is_none() {
                frame::write_window_update(&mut self.wbuf, s.id, s.unreleased as u32);
                s.recv_window += s.unreleased as i64;
                s.unreleased = 0;
            }
        }
        self.give_back(n);
    }

    /// Writes what the stream at `idx` has pending, within its window, the
    /// connection's and the frame size; then END_STREAM once all is out.
    pub(super) fn send_pending(&mut self, idx: usize) {
        let max_frame = self.max_frame;
        let Some(s) = self.streams.get_mut(idx) else { return };
        if s.error.is_some() || s.local_end {
            return;
        }
        while let Some(front) = s.pending.front_mut() {
            let allowed = s.send_window.min(self.send_window).min(max_frame as i64).max(0) as usize;
            if allowed == 0 && !front.is_empty() {
                break;
            }
            let chunk = front.split_to(allowed.min(front.len()));
            if front.is_empty() {
                s.pending.pop_front();
            }
            let last = s.pending.is_empty() && s.pending_end && s.pending_trailers.is_none();
            if chunk.is_empty() && !last {
                continue;
            }
            frame::write_data(&mut self.wbuf, s.id, &chunk, last);
            s.send_window -= chunk.len() as i64;
            self.send_window -= chunk.len() as i64;
            s.pending_bytes -= chunk.len();
            s.local_end = last;
        }
        if s.pending.is_empty() && s.pending_end && !s.local_end {
            match s.pending_trailers.take() {
                Some(block) => frame::write_headers(&mut self.wbuf, s.id, &block, true, max_frame),
                None => frame::write_data(&mut self.wbuf, s.id, &[], true),
            }
            s.local_end = true;
        }
        if s.pending_bytes < SEND_BUFFER
            && let Some(w) = s.send_waker.take()
        {
            w.wake();
        }
        if s.local_end {
            self.settle(idx);
        }
    }

    /// Writes what every stream has pending (the connection's window grew).
    pub(super) fn send_all_pending(&mut self) {
        let mut idx = 0;
        while idx < self.streams.len() && self.send_window > 0 {
            let id = self.streams.get(idx).map(|s| s.id);
            if self
                .streams
                .get(idx)
                .is_some_and(|s| !s.pending.is_empty() || s.pending_end)
            {
                self.send_pending(idx);
            }
            // `send_pending` may have dropped the stream.
            if self.streams.get(idx).map(|s| s.id) == id {
                idx += 1;
            }
        }
    }

    /// The connection ended: every stream without its whole response fails
    /// with `why` (or as unprocessed, above a GOAWAY's last stream).
    pub(super) fn end(&mut self, why: H2Error) {
        if self.ended.is_none() {
            self.ended = Some(why);
        }
        let last = self.goaway.unwrap_or(u32::MAX);
        let mut idx = self.streams.len();
        while idx > 0 {
            idx -= 1;
            let Some(s) = self.streams.get_mut(idx) else { continue };
            if s.remote_end && s.error.is_none() {
                // The response is whole: it stays readable.
                s.local_end = true;
                s.pending.clear();
                s.wake();
                self.settle(idx);
                continue;
            }
            let why = if s.id > last { H2Error::GoAway } else { why };
            self.fail(idx, why);
        }
        for w in self.waiting.drain(..) {
            w.wake();
        }
    }

    /// Whether new streams may still open on the connection.
    pub(super) fn usable(&self, shared: &Shared) -> bool {
        let usable = self.ended.is_none() && self.goaway.is_none() && self.next_id <= frame::MAX_STREAM_ID;
        if !usable {
            shared.closed.store(true, Ordering::Relaxed);
        }
        usable
    }
}
