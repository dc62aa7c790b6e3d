//! Frames from the client: SETTINGS, PING, WINDOW_UPDATE, RST_STREAM,
//! GOAWAY, request heads (HEADERS and CONTINUATION) and bodies (DATA),
//! each checked against RFC 9113 and turned into streams for the proxy.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::{Bytes, BytesMut};
use http::{Response, StatusCode};
use tokio::io::{AsyncRead, AsyncWrite};
use tracing::debug;

use super::conn::{
    BlockStart, Connection, Failure, MAX_BLOCK, MAX_CONTINUATIONS, MAX_EMPTY_DATA, MAX_STREAMS, Partial, STREAM_WINDOW,
};
use super::frame::{self, Head, Reason};
use super::recv::{Consumed, RecvBody};
use super::request::{Refusal, RequestHead};
use super::stream::{Handler, Slot, Stream};
use crate::body::ProxyBody;
use crate::forward::Answer;
use crate::http1::HeadersAs;
use crate::request_body::ClientBody;

impl<'a, I: AsyncRead + AsyncWrite + Unpin> Connection<'a, I> {
    pub(super) fn on_frame(&mut self, head: Head, payload: Bytes) -> Result<(), Failure> {
        use Failure::Connection as Conn;
        if let Some(partial) = &self.partial
            && (head.kind != frame::CONTINUATION || head.stream != partial.start.stream)
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
                // Priorities are not acted on (RFC 9113 §5.3.2 deprecates
                // them), but a stream cannot depend on itself (§5.3.1).
                let dependency = payload
                    .get(..4)
                    .and_then(|b| <[u8; 4]>::try_from(b).ok())
                    .map(u32::from_be_bytes);
                if dependency.map(|d| d & 0x7fff_ffff) == Some(head.stream) {
                    return Err(Failure::Stream(head.stream, Reason::Protocol));
                }
                Ok(())
            }
            frame::RST_STREAM => {
                if head.stream == 0 || self.idle(head.stream) {
                    return Err(Conn(Reason::Protocol));
                }
                if head.len != 4 {
                    return Err(Conn(Reason::FrameSize));
                }
                if let Some(i) = self.find(head.stream) {
                    self.close_stream(i);
                    // After the close: too many resets fail the connection,
                    // which drops every stream (and the index with them).
                    self.count_reset();
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
            let Ok([a, b, c, d, e, f]) = <[u8; 6]>::try_from(setting) else {
                continue;
            };
            let id = u16::from_be_bytes([a, b]);
            let value = u32::from_be_bytes([c, d, e, f]);
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
                frame::SETTINGS_HEADER_TABLE_SIZE if value < self.encoder_table => {
                    // Acknowledged with a size update of 0 at the start of
                    // the next response head (RFC 7541 §4.2).
                    self.encoder_table = 0;
                    self.table_update = true;
                }
                frame::SETTINGS_MAX_FRAME_SIZE => {
                    if !(frame::MAX_FRAME as u32..=frame::MAX_FRAME_LIMIT).contains(&value) {
                        return Err(Conn(Reason::Protocol));
                    }
                    self.peer_max_frame = value as usize;
                }
                // sluice pushes nothing; the rest are advisory.
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
        if self.idle(head.stream) {
            return Err(Failure::Connection(Reason::Protocol));
        }
        if increment == 0 {
            return Err(Failure::Stream(head.stream, Reason::Protocol));
        }
        if let Some(stream) = self.find(head.stream).and_then(|i| self.streams.get_mut(i)) {
            stream.send_window += increment;
            if stream.send_window > frame::MAX_WINDOW {
                return Err(Failure::Stream(head.stream, Reason::FlowControl));
            }
        }
        Ok(())
    }

    fn on_data(&mut self, head: Head, payload: Bytes) -> Result<(), Failure> {
        use Failure::Connection as Conn;
        if head.stream == 0 || self.idle(head.stream) {
            return Err(Conn(Reason::Protocol));
        }
        let len = head.len;
        self.recv_window -= len as i64;
        if self.recv_window < 0 {
            return Err(Conn(Reason::FlowControl));
        }
        let data = frame::unpad(&head, payload).ok_or(Conn(Reason::Protocol))?;
        let Some(i) = self
            .find_open(head.stream)
            .filter(|&i| self.streams.get(i).is_some_and(|s| s.sink.is_some()))
        else {
            // A stream already ended or reset: the bytes count against the
            // connection's window only, which they are given back to.
            self.credit += len;
            return match self.find_open(head.stream) {
                // Half-closed (remote): the client already ended the body.
                Some(_) => Err(Failure::Stream(head.stream, Reason::StreamClosed)),
                None => self.on_forgotten(head.stream),
            };
        };
        let end = head.has(frame::END_STREAM);
        if data.is_empty() && !end {
            self.empty_data += 1;
            if self.empty_data > MAX_EMPTY_DATA {
                return Err(Conn(Reason::EnhanceYourCalm));
            }
        }
        let Some(stream) = self.streams.get_mut(i) else {
            return Ok(());
        };
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
            let dependency = block
                .get(..4)
                .and_then(|b| <[u8; 4]>::try_from(b).ok())
                .map_or(0, u32::from_be_bytes)
                & 0x7fff_ffff;
            self_dependent = dependency == head.stream;
            block = block.slice(5..);
        }
        let start = BlockStart {
            stream: head.stream,
            end_stream: head.has(frame::END_STREAM),
            self_dependent,
        };
        if !head.has(frame::END_HEADERS) {
            self.partial = Some(Partial {
                start,
                block: BytesMut::from(&block[..]),
                frames: 0,
            });
            return Ok(());
        }
        self.on_header_block(start, &block)
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
        self.on_header_block(partial.start, &partial.block.freeze())
    }

    /// A whole header block: a new request, or a request's trailers.
    fn on_header_block(&mut self, start: BlockStart, block: &Bytes) -> Result<(), Failure> {
        let BlockStart {
            stream: id, end_stream, ..
        } = start;
        // A request's header map and backend-head buffer come from the
        // connection's spares, as on the HTTP/1.1 loop.
        let mut scratch = self.scratch.pop().unwrap_or_default();
        // A new map has room for a usual request's fields and what forward
        // adds (forwarding fields, request id): one allocation, no growth.
        let headers = scratch.take_headers().unwrap_or_else(|| crate::spare_maps::take(12));
        let mut head = RequestHead::new(self.header_limit, headers);
        // Decoded before anything else: the table must take every block.
        self.decoder
            .decode(block, |field| head.add(field))
            .map_err(|_| Failure::Connection(Reason::Compression))?;
        if id <= self.last_stream {
            if start.self_dependent && self.find_open(id).is_some() {
                return Err(Failure::Stream(id, Reason::Protocol));
            }
            return self.on_trailers(id, end_stream, head);
        }
        self.note_opened(id);
        if start.self_dependent {
            // Refused before it is opened: one RST_STREAM, no request.
            self.write_reset(id, Reason::Protocol);
            self.count_reset();
            return Ok(());
        }
        if self.going_away || self.peer_goaway {
            self.write_reset(id, Reason::RefusedStream);
            return Ok(());
        }
        if self.streams.len() >= MAX_STREAMS {
            self.write_reset(id, Reason::RefusedStream);
            self.count_reset();
            return Ok(());
        }
        let content_length = head.content_length();
        if end_stream && content_length.is_some_and(|n| n > 0) {
            self.write_reset(id, Reason::Protocol);
            self.count_reset();
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
                    let res = proxy.handle(req, client, &mut scratch, HeadersAs::Lines).await;
                    (res, scratch)
                }))
            }
            Err(Refusal::Malformed(why)) => {
                debug!(peer = %self.client.peer, stream = id, why, "malformed HTTP/2 request");
                self.write_reset(id, Reason::Protocol);
                self.count_reset();
                return Ok(());
            }
            Err(Refusal::TooLarge) => None,
        };
        let slot = self.spare.pop().unwrap_or_else(|| Slot::new(&self.waker));
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
            self.send_head(
                i,
                Answer {
                    response: res,
                    lines: None,
                },
                None,
            );
        }
        Ok(())
    }

    /// A header block on a stream already opened: the request's trailers
    /// while its body is open.
    fn on_trailers(&mut self, id: u32, end_stream: bool, head: RequestHead) -> Result<(), Failure> {
        let Some(i) = self.find_open(id) else {
            return self.on_forgotten(id);
        };
        if self.streams.get(i).is_none_or(|s| s.sink.is_none()) {
            // Half-closed (remote): the request already ended (§5.1).
            return Err(Failure::Stream(id, Reason::StreamClosed));
        }
        if !end_stream {
            return Err(Failure::Stream(id, Reason::Protocol));
        }
        let Some(stream) = self.streams.get_mut(i) else {
            return Ok(());
        };
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
}
