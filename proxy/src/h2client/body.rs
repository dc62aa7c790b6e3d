//! The response side of a stream: the exchange's hold on it (reset when
//! dropped before the response ended) and the response body read from it.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};

use super::error::H2Error;
use super::state::{BULK, Shared};
use crate::h2::frame::Reason;

/// The exchange's hold on its stream: dropped before the response has
/// ended, it resets the stream (CANCEL).
#[derive(Debug)]
pub(super) struct StreamRef {
    pub(super) shared: Arc<Shared>,
    pub(super) id: u32,
    /// Counted in the connection's bulk streams (until dropped).
    pub(super) bulk: bool,
}

/// A response head as the exchange takes it: status, fields, what is
/// left of the body's declared length, and whether the stream ended.
pub(super) type Head = (http::StatusCode, HeaderMap, Option<u64>, bool);

impl StreamRef {
    /// The hold on stream `id`, just opened: counted in the calls under way.
    pub(super) fn new(shared: &Arc<Shared>, id: u32) -> Self {
        shared.calls.fetch_add(1, Ordering::Relaxed);
        Self {
            shared: Arc::clone(shared),
            id,
            bulk: false,
        }
    }

    /// The response head, what is left of its body's declared length, and
    /// whether the stream ended with it.
    pub(super) fn poll_head(&mut self, cx: &mut Context<'_>) -> Poll<Result<Head, H2Error>> {
        let mut st = self.shared.lock();
        let Some(idx) = st.find(self.id) else {
            return Poll::Ready(Err(H2Error::Lost("stream gone")));
        };
        let Some(s) = st.streams.get_mut(idx) else {
            return Poll::Ready(Err(H2Error::Lost("stream gone")));
        };
        if let Some((status, headers)) = s.head.take() {
            let ended = s.remote_end && s.data.is_empty() && s.trailers.is_none();
            // DATA may have arrived with the head: it is still to pass on.
            let queued: u64 = s.data.iter().map(|d| d.len() as u64).sum();
            let length = if ended {
                Some(0)
            } else {
                s.length.map(|left| left + queued)
            };
            return Poll::Ready(Ok((status, headers, length, ended)));
        }
        if let Some(e) = s.error {
            return Poll::Ready(Err(e));
        }
        s.recv_waker = Some(cx.waker().clone());
        Poll::Pending
    }
}

impl Drop for StreamRef {
    fn drop(&mut self) {
        self.shared.calls.fetch_sub(1, Ordering::Relaxed);
        if self.bulk {
            self.shared.bulk.fetch_sub(1, Ordering::Relaxed);
        }
        let mut st = self.shared.lock();
        let Some(idx) = st.find(self.id) else { return };
        let was_empty = st.wbuf.is_empty();
        let Some(s) = st.streams.get_mut(idx) else { return };
        s.receiver_gone = true;
        if s.error.is_none() && !(s.remote_end && s.local_end) {
            let reason = if s.remote_end { Reason::NoError } else { Reason::Cancel };
            st.reset(idx, reason, H2Error::Cancelled);
        } else {
            st.settle(idx);
        }
        let wrote = was_empty && !st.wbuf.is_empty();
        drop(st);
        self.shared.kick(wrote);
    }
}

/// A backend's HTTP/2 response body: DATA as it comes (its window given
/// back as it is passed on), then the trailers.
#[derive(Debug)]
pub struct ResponseBody {
    pub(super) stream: StreamRef,
    pub(super) length: Option<u64>,
    pub(super) done: bool,
    /// Bytes passed on, until the stream counts as bulk.
    pub(super) passed: u64,
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = H2Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, H2Error>>> {
        let ResponseBody {
            stream,
            length,
            done,
            passed,
        } = self.get_mut();
        if *done {
            return Poll::Ready(None);
        }
        let shared = &stream.shared;
        let mut st = shared.lock();
        let Some(idx) = st.find(stream.id) else {
            *done = true;
            return Poll::Ready(Some(Err(H2Error::Lost("stream gone"))));
        };
        let Some(s) = st.streams.get_mut(idx) else {
            return Poll::Ready(None);
        };
        if let Some(e) = s.error {
            *done = true;
            return Poll::Ready(Some(Err(e)));
        }
        if let Some(data) = s.data.pop_front() {
            if let Some(left) = length {
                *left = left.saturating_sub(data.len() as u64);
            }
            if !stream.bulk {
                *passed += data.len() as u64;
                if *passed >= BULK {
                    stream.bulk = true;
                    shared.bulk.fetch_add(1, Ordering::Relaxed);
                }
            }
            let was_empty = st.wbuf.is_empty();
            st.release(idx, data.len());
            let wrote = was_empty && !st.wbuf.is_empty();
            drop(st);
            shared.kick(wrote);
            return Poll::Ready(Some(Ok(Frame::data(data))));
        }
        if s.remote_end {
            *done = true;
            return Poll::Ready(s.trailers.take().map(|t| Ok(Frame::trailers(t))));
        }
        s.recv_waker = Some(cx.waker().clone());
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }

    fn size_hint(&self) -> SizeHint {
        match self.length {
            Some(length) => SizeHint::with_exact(length),
            None => SizeHint::default(),
        }
    }
}
