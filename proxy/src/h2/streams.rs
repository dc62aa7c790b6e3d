//! The connection's stream bookkeeping: which streams are open, reset,
//! skipped or idle, resets and their limits, and the way a connection
//! fails (GOAWAY, RFC 9113 §5.4.1).

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;
use tracing::debug;

use super::conn::{Connection, Failure, MAX_STREAMS, RESET_ALLOWANCE};
use super::frame::{self, Reason};
use super::stream::Stream;

/// Locally reset streams remembered: as many as may be open at once.
const MAX_RESET_IDS: usize = MAX_STREAMS;
/// Ranges of skipped stream ids remembered; past this, ranges merge (a
/// frame on a closed stream inside one then gets PROTOCOL_ERROR instead of
/// STREAM_CLOSED: a connection error either way).
const MAX_SKIPPED: usize = 16;

impl<I: AsyncRead + AsyncWrite + Unpin> Connection<'_, I> {
    /// Drops streams that are done, keeping their wakers for new ones.
    pub(super) fn sweep(&mut self) {
        let was_busy = !self.streams.is_empty();
        let mut i = 0;
        while i < self.streams.len() {
            if self.streams.get(i).is_some_and(Stream::finished) {
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
    pub(super) fn reset(&mut self, id: u32, reason: Reason) {
        // Already reset by sluice: the stream is closed and what arrives on
        // it is ignored (RFC 9113 §5.1), not answered with a second reset
        // (a fuzzing finding).
        if self.reset_ids.contains(&id) {
            return;
        }
        // RST_STREAM is never sent for an idle stream (§6.4): a stream error
        // there (a PRIORITY frame's) fails the connection, as in nghttp2.
        if self.idle(id) {
            self.fail(reason);
            return;
        }
        if let Some(i) = self.find(id) {
            self.close_stream(i);
        }
        self.write_reset(id, reason);
        // Last: too many resets fail the connection, which drops every stream.
        if reason != Reason::NoError {
            self.count_reset();
        }
    }

    /// Writes RST_STREAM and remembers that sluice sent it.
    pub(super) fn write_reset(&mut self, id: u32, reason: Reason) {
        frame::write_rst(&mut self.wbuf, id, reason);
        if self.reset_ids.len() < MAX_RESET_IDS {
            self.reset_ids.push(id);
        } else if let Some(slot) = self.reset_ids.get_mut(self.reset_next) {
            *slot = id;
        }
        self.reset_next = (self.reset_next + 1) % MAX_RESET_IDS;
    }

    /// A new stream `id` opened past `last_stream`: the ids between were
    /// skipped.
    pub(super) fn note_opened(&mut self, id: u32) {
        let first = if self.last_stream == 0 {
            1
        } else {
            self.last_stream.saturating_add(2)
        };
        if id > first {
            let gap = (first, id - 2);
            let full = self.skipped.len() >= MAX_SKIPPED;
            match self.skipped.last_mut() {
                Some(last) if full => last.1 = gap.1,
                _ => self.skipped.push(gap),
            }
        }
        self.last_stream = id;
    }

    /// A frame that opens nothing on stream `id`, at most `last_stream`, that
    /// sluice holds no state for (RFC 9113 §5.1, §5.1.1): ignored when
    /// sluice reset the stream (the client may not have seen it yet); a
    /// connection error otherwise, PROTOCOL_ERROR for an id never opened,
    /// STREAM_CLOSED for a closed stream (a stream error would do for one
    /// the client reset; §5.4.1 lets an endpoint treat it as a connection
    /// error, and nothing is lost: the client itself ended the stream).
    pub(super) fn on_forgotten(&self, id: u32) -> Result<(), Failure> {
        if self.reset_ids.contains(&id) {
            Ok(())
        } else if self.idle(id) {
            Err(Failure::Connection(Reason::Protocol))
        } else {
            Err(Failure::Connection(Reason::StreamClosed))
        }
    }

    /// Whether stream `id` was never opened: past the last one, or skipped.
    pub(super) fn idle(&self, id: u32) -> bool {
        id > self.last_stream || self.skipped.iter().any(|&(a, b)| (a..=b).contains(&id))
    }

    /// Stops all work on a stream: its handler, body and request body are dropped.
    pub(super) fn close_stream(&mut self, i: usize) {
        let Some(stream) = self.streams.get_mut(i) else { return };
        stream.handler = None;
        stream.body = None;
        stream.sink = None;
        stream.unsent = Bytes::new();
        stream.done_sending = true;
    }

    pub(super) fn count_reset(&mut self) {
        self.resets += 1;
        if self.resets > RESET_ALLOWANCE + self.answered {
            debug!(peer = %self.client.peer, resets = self.resets, "too many reset streams; closing");
            self.fail(Reason::EnhanceYourCalm);
        }
    }

    pub(super) fn find(&self, id: u32) -> Option<usize> {
        self.streams.iter().position(|s| s.id == id)
    }

    /// [`Self::find`], but a stream already closed and waiting for the
    /// sweep counts as gone (the frame is then judged as on a closed stream).
    pub(super) fn find_open(&self, id: u32) -> Option<usize> {
        self.streams.iter().position(|s| s.id == id && !s.finished())
    }

    /// Sends GOAWAY: no stream after the last one seen will be served.
    pub(super) fn go_away(&mut self, reason: Reason) {
        if !self.going_away {
            frame::write_goaway(&mut self.wbuf, self.last_stream, reason);
            self.going_away = true;
        }
    }

    /// A connection error: GOAWAY, and every stream dropped.
    pub(super) fn fail(&mut self, reason: Reason) {
        if self.failed {
            return;
        }
        self.going_away = false;
        self.go_away(reason);
        self.failed = true;
        self.streams.clear();
    }
}
