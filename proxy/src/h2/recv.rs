//! A request body arriving in DATA frames: the connection pushes frames
//! into a channel, the proxy reads them, and what the proxy has read goes
//! back to the client as window (so a slow backend holds the client back
//! instead of sluice's memory).

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::task::AtomicWaker;
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use tokio::sync::mpsc;

/// What the reading side shares with the connection.
#[derive(Debug)]
pub struct Consumed {
    bytes: AtomicUsize,
    /// The connection's task, woken to give the window back.
    connection: Arc<AtomicWaker>,
}

impl Consumed {
    pub fn new(connection: Arc<AtomicWaker>) -> Self {
        Self {
            bytes: AtomicUsize::new(0),
            connection,
        }
    }

    /// Bytes read since the last call.
    pub fn take(&self) -> usize {
        self.bytes.swap(0, Ordering::AcqRel)
    }
}

/// The connection's end of a request body.
#[derive(Debug)]
pub struct Sink {
    tx: mpsc::UnboundedSender<Frame<Bytes>>,
}

impl Sink {
    /// Passes `data` on; false when the proxy no longer reads the body.
    pub fn data(&self, data: Bytes) -> bool {
        self.tx.send(Frame::data(data)).is_ok()
    }

    pub fn trailers(&self, trailers: HeaderMap) {
        // Nobody reading: nothing to deliver them to.
        let _ = self.tx.send(Frame::trailers(trailers));
    }
}

/// The proxy's end: an HTTP body. Dropping the `Sink` ends it; a stream
/// reset drops the request's handler, and this with it.
#[derive(Debug)]
pub struct RecvBody {
    rx: Option<mpsc::UnboundedReceiver<Frame<Bytes>>>,
    consumed: Option<Arc<Consumed>>,
    length: Option<u64>,
}

impl RecvBody {
    /// The body of a request whose HEADERS ended the stream.
    pub fn empty() -> Self {
        Self {
            rx: None,
            consumed: None,
            length: Some(0),
        }
    }

    /// A body still to come, `length` long when the client said so.
    pub fn channel(consumed: Arc<Consumed>, length: Option<u64>) -> (Sink, Self) {
        let (tx, rx) = mpsc::unbounded_channel();
        let body = Self {
            rx: Some(rx),
            consumed: Some(consumed),
            length,
        };
        (Sink { tx }, body)
    }
}

impl Body for RecvBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        let Some(rx) = this.rx.as_mut() else {
            return Poll::Ready(None);
        };
        match rx.poll_recv(cx) {
            Poll::Ready(Some(frame)) => {
                if let (Some(data), Some(consumed)) = (frame.data_ref(), &this.consumed) {
                    consumed.bytes.fetch_add(data.len(), Ordering::AcqRel);
                    consumed.connection.wake();
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(None) => {
                this.rx = None;
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.rx.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        match self.length {
            Some(length) => SizeHint::with_exact(length),
            None => SizeHint::default(),
        }
    }
}
