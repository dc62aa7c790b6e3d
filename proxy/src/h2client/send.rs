//! The request side of a stream whose body is still arriving: the task
//! that feeds it to the stream as the stream has room.

use std::future::poll_fn;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame};
use tokio::sync::oneshot;

use super::SEND_BUFFER;
use super::error::H2Error;
use super::state::Shared;
use crate::h2::frame::Reason;
use crate::h2::hpack;
use crate::request_body::{RequestBody, RequestBodyError};

/// The body task's hold on its stream.
pub(super) struct SendRef {
    pub(super) shared: Arc<Shared>,
    pub(super) id: u32,
}

impl SendRef {
    /// Ready once the stream has room for more of the body; `Err` once
    /// the stream is gone (reset, or the connection ended).
    fn poll_room(&self, cx: &mut Context<'_>) -> Poll<Result<(), ()>> {
        let mut st = self.shared.lock();
        let Some(idx) = st.find(self.id) else {
            return Poll::Ready(Err(()));
        };
        let Some(s) = st.streams.get_mut(idx).filter(|s| s.error.is_none()) else {
            return Poll::Ready(Err(()));
        };
        // Registered even when there is room: a reset while the body's
        // next frame is awaited must wake the task.
        if !s.send_waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            s.send_waker = Some(cx.waker().clone());
        }
        if s.pending_bytes < SEND_BUFFER {
            Poll::Ready(Ok(()))
        } else {
            Poll::Pending
        }
    }

    /// Queues a frame of the body (`last`: the body ends with it).
    fn push(&self, frame: Frame<Bytes>, last: bool) {
        let mut st = self.shared.lock();
        let Some(idx) = st.find(self.id) else { return };
        let was_empty = st.wbuf.is_empty();
        let Some(s) = st.streams.get_mut(idx) else { return };
        if s.error.is_some() || s.pending_end {
            return;
        }
        match frame.into_data() {
            Ok(data) => {
                s.pending_bytes += data.len();
                s.pending.push_back(data);
                s.pending_end = last;
            }
            Err(frame) => {
                let mut block = Vec::new();
                if let Ok(trailers) = frame.into_trailers() {
                    for (name, value) in &trailers {
                        hpack::encode_header(name, value, &mut block);
                    }
                }
                s.pending_trailers = Some(block);
                s.pending_end = true;
            }
        }
        st.send_pending(idx);
        let wrote = was_empty && !st.wbuf.is_empty();
        drop(st);
        self.shared.kick(wrote);
    }

    fn reset(&self) {
        let mut st = self.shared.lock();
        if let Some(idx) = st.find(self.id) {
            st.reset(idx, Reason::Cancel, H2Error::Cancelled);
        }
        drop(st);
        self.shared.kick(true);
    }
}

impl Drop for SendRef {
    fn drop(&mut self) {
        let mut st = self.shared.lock();
        let Some(idx) = st.find(self.id) else { return };
        let Some(s) = st.streams.get_mut(idx) else { return };
        s.sender_gone = true;
        let unfinished = s.error.is_none() && !s.pending_end;
        if unfinished {
            // The body stopped without its end: the backend must not take
            // what it got as the whole request.
            st.reset(idx, Reason::Cancel, H2Error::Cancelled);
        } else {
            st.settle(idx);
        }
        drop(st);
        self.shared.kick(unfinished);
    }
}

/// Feeds the rest of a request body to the stream, taking the client's
/// next frame only while the stream has room for it (a slow backend slows
/// the client instead of filling sluice's memory). A body that fails
/// resets the stream and tells the waiting exchange why.
pub(super) async fn pipe(
    mut body: RequestBody,
    ahead: Vec<Frame<Bytes>>,
    send: SendRef,
    failed: oneshot::Sender<RequestBodyError>,
) {
    for frame in ahead {
        send.push(frame, body.is_end_stream());
    }
    loop {
        let next = poll_fn(|cx| match send.poll_room(cx) {
            Poll::Ready(Ok(())) => Pin::new(&mut body).poll_frame(cx).map(Some),
            Poll::Ready(Err(())) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        })
        .await;
        let Some(next) = next else { return };
        match next {
            Some(Ok(frame)) => send.push(frame, body.is_end_stream()),
            None => {
                send.push(Frame::data(Bytes::new()), true);
                return;
            }
            Some(Err(e)) => {
                send.reset();
                let _ = failed.send(e);
                return;
            }
        }
    }
}
