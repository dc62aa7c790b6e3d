//! What goes to the client: response heads as handlers finish, bodies
//! within the client's windows, and window given back as request bodies
//! are read.

use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};

use http::header;
use http_body::Body;
use tokio::io::{AsyncRead, AsyncWrite};
use tracing::debug;

use super::conn::{CONNECTION_WINDOW, Connection, MAX_BACKLOG, SPARE_SCRATCH, STREAM_WINDOW};
use super::frame::{self, Reason};
use super::hpack;
use super::request::is_connection_specific;
use crate::forward::Answer;
use crate::request_id::IdHeader;

impl<I: AsyncRead + AsyncWrite + Unpin> Connection<'_, I> {
    /// Polls the handlers woken since they were last polled.
    pub(super) fn poll_handlers(&mut self) -> bool {
        let mut busy = false;
        for i in 0..self.streams.len() {
            let Some(stream) = self.streams.get_mut(i) else { break };
            let Some(handler) = stream.handler.as_mut() else {
                continue;
            };
            if !stream.slot.wake.ready.swap(false, Ordering::AcqRel) {
                continue;
            }
            if let Poll::Ready((res, scratch)) = handler.as_mut().poll(&mut Context::from_waker(&stream.slot.waker)) {
                stream.handler = None;
                let proxy = self.proxy;
                let id_line = proxy.id_line(&scratch, res.lines.as_ref());
                self.send_head(i, res, id_line);
                if self.scratch.len() < SPARE_SCRATCH {
                    self.scratch.push(scratch);
                }
                busy = true;
            }
        }
        busy
    }

    /// Writes a response's head; its body, if any, follows in `send_bodies`.
    /// `id_line`: the request id, after the backend's lines.
    pub(super) fn send_head(&mut self, i: usize, answer: Answer, id_line: Option<(&IdHeader, &[u8])>) {
        let Answer { response, lines } = answer;
        let (parts, body) = response.into_parts();
        let block = &mut self.block;
        block.clear();
        if std::mem::take(&mut self.table_update) {
            hpack::encode_table_size_zero(block);
        }
        hpack::encode_status(parts.status, block);
        let mut has_date = false;
        if let Some(lines) = lines {
            // The backend's lines have no hop-by-hop (so no
            // connection-specific) fields, and a length only where no body
            // follows; where one does and its length is known, say it.
            let mut has_length = false;
            for (name, value) in lines.fields() {
                has_length |= name == b"content-length";
                hpack::encode_line(name, value, block);
            }
            if !has_length && let Some(n) = body.size_hint().exact().filter(|&n| n > 0) {
                hpack::encode_length(n, block);
            }
            has_date = lines.has_date;
        }
        if let Some((header, id)) = id_line {
            hpack::encode_line(header.name.as_str().as_bytes(), id, block);
        }
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
        crate::spare_maps::give(parts.headers);
        let Some(stream) = self.streams.get_mut(i) else { return };
        let end = body.is_end_stream();
        frame::write_headers(&mut self.wbuf, stream.id, block, end, self.peer_max_frame);
        if end {
            self.finish_sending(i);
        } else {
            stream.body = Some(body);
        }
    }

    /// Gives back window for request bytes the proxy has read.
    pub(super) fn give_back_window(&mut self) -> bool {
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
    pub(super) fn send_bodies(&mut self, cx: &mut Context<'_>) -> bool {
        let mut busy = false;
        for i in 0..self.streams.len() {
            while self.backlog() < MAX_BACKLOG {
                let Some(stream) = self.streams.get_mut(i) else { break };
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
                                if std::mem::take(&mut self.table_update) {
                                    hpack::encode_table_size_zero(&mut self.block);
                                }
                                if let Ok(trailers) = f.into_trailers() {
                                    for (name, value) in &trailers {
                                        hpack::encode_header(name, value, &mut self.block);
                                    }
                                    crate::spare_maps::give(trailers);
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
        let Some(stream) = self.streams.get_mut(i) else { return };
        stream.done_sending = true;
        stream.body = None;
        let (id, body_open) = (stream.id, stream.sink.take().is_some());
        self.answered += 1;
        if body_open {
            self.write_reset(id, Reason::NoError);
        }
    }
}
