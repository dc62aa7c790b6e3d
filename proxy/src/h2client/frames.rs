//! The frames a backend sends, handled against the connection's state
//! (RFC 9113 §6): responses and their bodies, resets, windows, settings,
//! pings and GOAWAY. An `Err` is a connection error.

use bytes::{Bytes, BytesMut};

use super::MAX_HEADER_LIST;
use super::error::H2Error;
use super::head::{Block, response_head, trailers};
use super::state::State;
use crate::h2::frame::{self, Head, Reason};
use crate::h2::hpack::{Decoder, Field};

/// A header block larger than this closes the connection (far above the
/// header list limit), as do more CONTINUATION frames than this.
const MAX_BLOCK: usize = 4 * MAX_HEADER_LIST;
const MAX_CONTINUATIONS: usize = 64;

/// A header block arriving in CONTINUATION frames.
struct Partial {
    stream: u32,
    end_stream: bool,
    block: BytesMut,
    frames: usize,
}

/// What the connection's task keeps between frames.
pub(super) struct Reader {
    decoder: Decoder,
    partial: Option<Partial>,
    settings_seen: bool,
    /// sluice's SETTINGS not yet acknowledged (the one at the start).
    unacked: u32,
    /// A block's decoded fields, kept between blocks (no allocation per
    /// response head).
    fields: Vec<Field>,
}

impl Default for Reader {
    fn default() -> Self {
        Self {
            decoder: Decoder::default(),
            partial: None,
            settings_seen: false,
            unacked: 1,
            fields: Vec::new(),
        }
    }
}

/// A connection error: the GOAWAY's code and what the streams are told.
pub(super) type ConnError = (Reason, &'static str);

impl Reader {
    /// One whole frame (the driver has checked its size).
    pub(super) fn on_frame(&mut self, st: &mut State, head: Head, payload: Bytes) -> Result<(), ConnError> {
        if !self.settings_seen && (head.kind != frame::SETTINGS || head.has(frame::ACK)) {
            return Err((Reason::Protocol, "first frame not SETTINGS"));
        }
        if let Some(p) = &mut self.partial {
            if head.kind != frame::CONTINUATION || head.stream != p.stream {
                return Err((Reason::Protocol, "header block interrupted"));
            }
            p.frames += 1;
            p.block.extend_from_slice(&payload);
            if p.frames > MAX_CONTINUATIONS || p.block.len() > MAX_BLOCK {
                return Err((Reason::EnhanceYourCalm, "header block too large"));
            }
            if head.has(frame::END_HEADERS) {
                let Some(p) = self.partial.take() else { return Ok(()) };
                return self.on_block(st, p.stream, p.end_stream, &p.block.freeze());
            }
            return Ok(());
        }
        match head.kind {
            frame::DATA => on_data(st, head, payload),
            frame::HEADERS => self.on_headers(st, head, payload),
            frame::RST_STREAM => on_reset(st, head, &payload),
            frame::SETTINGS if head.has(frame::ACK) && head.stream == 0 => {
                // An ACK of SETTINGS sluice never sent is as the h2 crate
                // and sluice's server take it: a protocol error.
                if self.unacked == 0 {
                    return Err((Reason::Protocol, "SETTINGS ACK never asked for"));
                }
                self.unacked -= 1;
                on_settings(st, head, &payload)
            }
            frame::SETTINGS => {
                self.settings_seen = true;
                on_settings(st, head, &payload)
            }
            frame::PING => {
                if head.stream != 0 {
                    return Err((Reason::Protocol, "PING on a stream"));
                }
                if head.len != 8 {
                    return Err((Reason::FrameSize, "PING not 8 bytes"));
                }
                // An ACK (of the keep-alive ping) needs nothing: any read
                // proves the backend is there.
                if !head.has(frame::ACK) {
                    frame::write_ping_ack(&mut st.wbuf, &payload);
                }
                Ok(())
            }
            frame::GOAWAY => on_goaway(st, head, &payload),
            frame::WINDOW_UPDATE => on_window_update(st, head, &payload),
            frame::PUSH_PROMISE => Err((Reason::Protocol, "PUSH_PROMISE with push disabled")),
            frame::CONTINUATION => Err((Reason::Protocol, "CONTINUATION without HEADERS")),
            frame::PRIORITY => on_priority(st, head),
            // Unknown frame types are ignored (§5.5).
            _ => Ok(()),
        }
    }

    fn on_headers(&mut self, st: &mut State, head: Head, payload: Bytes) -> Result<(), ConnError> {
        if head.stream == 0 {
            return Err((Reason::Protocol, "HEADERS on stream 0"));
        }
        let mut block = frame::unpad(&head, payload).ok_or((Reason::Protocol, "bad padding"))?;
        if head.has(frame::PRIORITY_FLAG) {
            if block.len() < 5 {
                return Err((Reason::FrameSize, "HEADERS priority cut short"));
            }
            let _ = block.split_to(5);
        }
        let end_stream = head.has(frame::END_STREAM);
        if !head.has(frame::END_HEADERS) {
            self.partial = Some(Partial {
                stream: head.stream,
                end_stream,
                block: BytesMut::from(&block[..]),
                frames: 1,
            });
            return Ok(());
        }
        self.on_block(st, head.stream, end_stream, &block)
    }

    /// A whole header block: a response head, an informational head, or
    /// trailers. Decoded in any case: the table must stay in step.
    fn on_block(&mut self, st: &mut State, id: u32, end_stream: bool, block: &Bytes) -> Result<(), ConnError> {
        let fields = &mut self.fields;
        fields.clear();
        if fields.capacity() > 64 {
            // A head of unusual size does not pin its room to the connection.
            *fields = Vec::new();
        }
        self.decoder
            .decode(block, |f| fields.push(f))
            .map_err(|_| (Reason::Compression, "header block does not decode"))?;
        if !st.opened(id) {
            return Err((Reason::Protocol, "HEADERS on a stream sluice did not open"));
        }
        let Some(idx) = st.find(id) else { return Ok(()) };
        let Some(s) = st.streams.get_mut(idx) else {
            return Ok(());
        };
        if s.error.is_some() {
            return Ok(());
        }
        if s.remote_end {
            st.reset(
                idx,
                Reason::StreamClosed,
                H2Error::Malformed("HEADERS after the end of the stream"),
            );
            return Ok(());
        }
        let parsed = if s.head_seen {
            trailers(fields, end_stream, s.length)
        } else {
            response_head(fields, end_stream)
        };
        match parsed {
            Err(why) => st.reset(idx, Reason::Protocol, H2Error::Malformed(why)),
            Ok(Block::Informational) => {}
            Ok(Block::Head(status, headers, length)) => {
                s.head = Some((status, headers));
                s.head_seen = true;
                s.length = length;
                s.remote_end = end_stream;
                s.wake_recv();
                st.settle(idx);
            }
            Ok(Block::Trailers(headers)) => {
                s.trailers = Some(headers);
                s.remote_end = true;
                s.wake_recv();
                st.settle(idx);
            }
        }
        Ok(())
    }
}

fn on_data(st: &mut State, head: Head, payload: Bytes) -> Result<(), ConnError> {
    if head.stream == 0 {
        return Err((Reason::Protocol, "DATA on stream 0"));
    }
    let len = head.len;
    if len as i64 > st.recv_window {
        return Err((Reason::FlowControl, "DATA beyond the connection's window"));
    }
    st.recv_window -= len as i64;
    let data = frame::unpad(&head, payload).ok_or((Reason::Protocol, "bad padding"))?;
    if !st.opened(head.stream) {
        return Err((Reason::Protocol, "DATA on a stream sluice did not open"));
    }
    let Some(idx) = st.find(head.stream) else {
        st.give_back(len);
        return Ok(());
    };
    let Some(s) = st.streams.get_mut(idx) else {
        return Ok(());
    };
    if s.error.is_some() {
        st.give_back(len);
        return Ok(());
    }
    let why = if s.remote_end {
        Some((Reason::StreamClosed, "DATA after the end of the stream"))
    } else if !s.head_seen {
        Some((Reason::Protocol, "DATA before the response head"))
    } else if len as i64 > s.recv_window {
        Some((Reason::FlowControl, "DATA beyond the stream's window"))
    } else if s.length.is_some_and(|left| (data.len() as u64) > left)
        || (head.has(frame::END_STREAM) && s.length.is_some_and(|left| left != data.len() as u64))
    {
        Some((Reason::Protocol, "content-length does not match the body"))
    } else {
        None
    };
    if let Some((reason, why)) = why {
        st.give_back(len);
        st.reset(idx, reason, H2Error::Malformed(why));
        return Ok(());
    }
    s.recv_window -= len as i64;
    if let Some(left) = &mut s.length {
        *left -= data.len() as u64;
    }
    // Padding is given back at once; the data as it is passed on.
    let pad = len - data.len();
    if !data.is_empty() {
        s.data.push_back(data);
    }
    s.remote_end = head.has(frame::END_STREAM);
    s.wake_recv();
    if pad > 0 {
        st.release(idx, pad);
    }
    st.settle(idx);
    Ok(())
}

/// PRIORITY is advisory and ignored, but must be 5 bytes (§6.3): a stream
/// error on a stream of sluice's, a connection error otherwise (§5.4.1).
fn on_priority(st: &mut State, head: Head) -> Result<(), ConnError> {
    if head.stream == 0 {
        return Err((Reason::Protocol, "PRIORITY on stream 0"));
    }
    if head.len == 5 {
        return Ok(());
    }
    match st.find(head.stream) {
        Some(idx) => {
            st.reset(idx, Reason::FrameSize, H2Error::Malformed("PRIORITY not 5 bytes"));
            Ok(())
        }
        None => Err((Reason::FrameSize, "PRIORITY not 5 bytes")),
    }
}

fn on_reset(st: &mut State, head: Head, payload: &[u8]) -> Result<(), ConnError> {
    if head.stream == 0 {
        return Err((Reason::Protocol, "RST_STREAM on stream 0"));
    }
    let code = match payload {
        &[a, b, c, d] => u32::from_be_bytes([a, b, c, d]),
        _ => return Err((Reason::FrameSize, "RST_STREAM not 4 bytes")),
    };
    if !st.opened(head.stream) {
        return Err((Reason::Protocol, "RST_STREAM on an idle stream"));
    }
    let Some(idx) = st.find(head.stream) else { return Ok(()) };
    let Some(s) = st.streams.get_mut(idx) else {
        return Ok(());
    };
    if s.remote_end {
        // The response is whole; the backend wants no more of the request
        // (§8.1): it stays readable, the rest of the body is not sent.
        s.local_end = true;
        s.pending.clear();
        s.pending_bytes = 0;
        s.wake();
        st.settle(idx);
        return Ok(());
    }
    let why = if code == Reason::RefusedStream as u32 {
        H2Error::Refused
    } else {
        H2Error::Reset(code)
    };
    st.fail(idx, why);
    Ok(())
}

fn on_settings(st: &mut State, head: Head, payload: &[u8]) -> Result<(), ConnError> {
    if head.stream != 0 {
        return Err((Reason::Protocol, "SETTINGS on a stream"));
    }
    if head.has(frame::ACK) {
        return if payload.is_empty() {
            Ok(())
        } else {
            Err((Reason::FrameSize, "SETTINGS ACK with a payload"))
        };
    }
    if !payload.len().is_multiple_of(6) {
        return Err((Reason::FrameSize, "SETTINGS not a multiple of 6 bytes"));
    }
    for setting in payload.chunks_exact(6) {
        let &[a, b, c, d, e, f] = setting else { continue };
        let (id, value) = (u16::from_be_bytes([a, b]), u32::from_be_bytes([c, d, e, f]));
        match id {
            frame::SETTINGS_ENABLE_PUSH if value != 0 => {
                return Err((Reason::Protocol, "a server may not enable push"));
            }
            frame::SETTINGS_MAX_CONCURRENT_STREAMS => {
                st.max_streams = value as usize;
                for w in st.waiting.drain(..) {
                    w.wake();
                }
            }
            frame::SETTINGS_INITIAL_WINDOW_SIZE => {
                if i64::from(value) > frame::MAX_WINDOW {
                    return Err((Reason::FlowControl, "initial window too large"));
                }
                let delta = i64::from(value) - st.initial_window;
                st.initial_window = i64::from(value);
                for s in &mut st.streams {
                    s.send_window += delta;
                    if s.send_window > frame::MAX_WINDOW {
                        return Err((Reason::FlowControl, "stream window too large"));
                    }
                }
                if delta > 0 {
                    st.send_all_pending();
                }
            }
            frame::SETTINGS_MAX_FRAME_SIZE => {
                if !(frame::MAX_FRAME as u32..=frame::MAX_FRAME_LIMIT).contains(&value) {
                    return Err((Reason::Protocol, "invalid max frame size"));
                }
                st.max_frame = value as usize;
            }
            // The table size: sluice's encoder uses none. The header list
            // size is advisory. Unknown settings are ignored (§6.5.2).
            _ => {}
        }
    }
    frame::write_settings_ack(&mut st.wbuf);
    Ok(())
}

fn on_window_update(st: &mut State, head: Head, payload: &[u8]) -> Result<(), ConnError> {
    let increment = match payload {
        &[a, b, c, d] => i64::from(u32::from_be_bytes([a, b, c, d]) & 0x7fff_ffff),
        _ => return Err((Reason::FrameSize, "WINDOW_UPDATE not 4 bytes")),
    };
    if head.stream == 0 {
        if increment == 0 {
            return Err((Reason::Protocol, "WINDOW_UPDATE of 0"));
        }
        st.send_window += increment;
        if st.send_window > frame::MAX_WINDOW {
            return Err((Reason::FlowControl, "connection window too large"));
        }
        st.send_all_pending();
        return Ok(());
    }
    if !st.opened(head.stream) {
        return Err((Reason::Protocol, "WINDOW_UPDATE on an idle stream"));
    }
    let Some(idx) = st.find(head.stream) else { return Ok(()) };
    let Some(s) = st.streams.get_mut(idx) else {
        return Ok(());
    };
    if increment == 0 {
        st.reset(idx, Reason::Protocol, H2Error::Malformed("WINDOW_UPDATE of 0"));
        return Ok(());
    }
    s.send_window += increment;
    if s.send_window > frame::MAX_WINDOW {
        st.reset(idx, Reason::FlowControl, H2Error::Malformed("stream window too large"));
        return Ok(());
    }
    st.send_pending(idx);
    Ok(())
}

fn on_goaway(st: &mut State, head: Head, payload: &[u8]) -> Result<(), ConnError> {
    if head.stream != 0 {
        return Err((Reason::Protocol, "GOAWAY on a stream"));
    }
    let Some(&[a, b, c, d]) = payload.get(..4) else {
        return Err((Reason::FrameSize, "GOAWAY cut short"));
    };
    if payload.len() < 8 {
        return Err((Reason::FrameSize, "GOAWAY cut short"));
    }
    let last = u32::from_be_bytes([a, b, c, d]) & 0x7fff_ffff;
    // A backend may lower the last stream it will process, never raise it
    // (§6.8): streams already failed as unprocessed may have gone elsewhere.
    if st.goaway.is_some_and(|before| last > before) {
        return Err((Reason::Protocol, "GOAWAY raised its last stream id"));
    }
    st.goaway = Some(last);
    // Streams above `last` were not processed: they fail as such, and may
    // go again on another connection; the rest finish.
    let mut idx = st.streams.len();
    while idx > 0 {
        idx -= 1;
        if st.streams.get(idx).is_some_and(|s| s.id > last) {
            st.fail(idx, H2Error::GoAway);
        }
    }
    Ok(())
}
