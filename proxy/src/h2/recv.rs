//! A request body arriving in DATA frames: the connection pushes frames
//! into a channel, the proxy reads them, and what the proxy has read goes
//! back to the client as window (so a slow backend holds the client back
//! instead of sluice's memory).

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use futures_util::task::AtomicWaker;
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};

/// What the reading side shares with the connection: the frames not read
/// yet and the bytes read, in one allocation per request body (a tokio
/// channel took two, one of them a 2.5 KiB block).
#[derive(Debug)]
pub struct Consumed {
    bytes: AtomicUsize,
    /// The connection's task, woken to give the window back.
    connection: Arc<AtomicWaker>,
    queue: Mutex<Queue>,
}

/// The frames between the connection and the reader. A unary call's one
/// DATA frame sits in `first`: no queue to allocate.
#[derive(Debug, Default)]
struct Queue {
    first: Option<Frame<Bytes>>,
    rest: VecDeque<Frame<Bytes>>,
    /// The connection passes no more frames (its `Sink` is gone).
    ended: bool,
    /// The reader is gone: frames would only pile up.
    abandoned: bool,
    reader: Option<Waker>,
}

impl Queue {
    fn push(&mut self, frame: Frame<Bytes>) -> bool {
        if self.abandoned {
            return false;
        }
        if self.first.is_none() && self.rest.is_empty() {
            self.first = Some(frame);
        } else {
            self.rest.push_back(frame);
        }
        if let Some(reader) = self.reader.take() {
            reader.wake();
        }
        true
    }

    fn pop(&mut self) -> Option<Frame<Bytes>> {
        self.first.take().or_else(|| self.rest.pop_front())
    }
}

impl Consumed {
    pub fn new(connection: Arc<AtomicWaker>) -> Self {
        Self {
            bytes: AtomicUsize::new(0),
            connection,
            queue: Mutex::new(Queue::default()),
        }
    }

    /// Bytes read since the last call.
    pub fn take(&self) -> usize {
        self.bytes.swap(0, Ordering::AcqRel)
    }

    fn queue(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The connection's end of a request body; dropping it ends the body.
#[derive(Debug)]
pub struct Sink {
    shared: Arc<Consumed>,
}

impl Sink {
    /// Passes `data` on; false when the proxy no longer reads the body.
    pub fn data(&self, data: Bytes) -> bool {
        self.shared.queue().push(Frame::data(data))
    }

    pub fn trailers(&self, trailers: HeaderMap) {
        // Nobody reading: nothing to deliver them to.
        let _ = self.shared.queue().push(Frame::trailers(trailers));
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        let mut queue = self.shared.queue();
        queue.ended = true;
        if let Some(reader) = queue.reader.take() {
            reader.wake();
        }
    }
}

/// The proxy's end: an HTTP body. Dropping the `Sink` ends it; a stream
/// reset drops the request's handler, and this with it.
#[derive(Debug)]
pub struct RecvBody {
    shared: Option<Arc<Consumed>>,
    length: Option<u64>,
}

impl RecvBody {
    /// The body of a request whose HEADERS ended the stream.
    pub fn empty() -> Self {
        Self {
            shared: None,
            length: Some(0),
        }
    }

    /// A body still to come, `length` long when the client said so.
    pub fn channel(consumed: Arc<Consumed>, length: Option<u64>) -> (Sink, Self) {
        let body = Self {
            shared: Some(Arc::clone(&consumed)),
            length,
        };
        (Sink { shared: consumed }, body)
    }
}

impl Drop for RecvBody {
    fn drop(&mut self) {
        if let Some(shared) = &self.shared {
            let mut queue = shared.queue();
            queue.abandoned = true;
            queue.first = None;
            queue.rest = VecDeque::new();
            queue.reader = None;
        }
    }
}

impl Body for RecvBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        let Some(shared) = &this.shared else {
            return Poll::Ready(None);
        };
        let mut queue = shared.queue();
        if let Some(frame) = queue.pop() {
            drop(queue);
            if let Some(data) = frame.data_ref() {
                shared.bytes.fetch_add(data.len(), Ordering::AcqRel);
                shared.connection.wake();
            }
            return Poll::Ready(Some(Ok(frame)));
        }
        if queue.ended {
            drop(queue);
            this.shared = None;
            return Poll::Ready(None);
        }
        match &mut queue.reader {
            Some(waker) if waker.will_wake(cx.waker()) => {}
            slot => *slot = Some(cx.waker().clone()),
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.shared.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        match self.length {
            Some(length) => SizeHint::with_exact(length),
            None => SizeHint::default(),
        }
    }
}
