//! One stream's state on the connection: its handler, the request body on
//! its way in, the response on its way out, and the waker that tells the
//! connection which stream's handler to poll.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Wake, Waker};

use bytes::Bytes;
use futures_util::task::AtomicWaker;

use super::recv::{Consumed, Sink};
use crate::body::ProxyBody;
use crate::client::Scratch;
use crate::forward::Answer;

/// A request's work: the response head, and the buffers it lent back.
pub(super) type Handler<'a> = Pin<Box<dyn Future<Output = (Answer, Scratch)> + Send + 'a>>;

/// Wakes the connection for one stream's handler and notes which one.
#[derive(Debug)]
pub(super) struct StreamWake {
    pub(super) ready: AtomicBool,
    pub(super) connection: Arc<AtomicWaker>,
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
pub(super) struct Slot {
    pub(super) wake: Arc<StreamWake>,
    pub(super) waker: Waker,
}

pub(super) struct Stream<'a> {
    pub(super) id: u32,
    pub(super) slot: Slot,
    /// The proxy's work on the request, until it gives the response head.
    pub(super) handler: Option<Handler<'a>>,
    /// Where request DATA goes until the client ends the body.
    pub(super) sink: Option<Sink>,
    pub(super) consumed: Option<Arc<Consumed>>,
    /// Request bytes passed on but not yet read by the proxy.
    pub(super) unread: usize,
    /// Read request bytes not yet given back as window.
    pub(super) credit: usize,
    pub(super) recv_window: i64,
    pub(super) content_length: Option<u64>,
    pub(super) received: u64,
    /// The response body, once the head is sent, until its end is taken.
    pub(super) body: Option<ProxyBody>,
    /// Response data the windows have not let out yet.
    pub(super) unsent: Bytes,
    /// Whether `unsent` is the body's last data.
    pub(super) unsent_ends: bool,
    pub(super) send_window: i64,
    /// END_STREAM sent, or the stream reset: nothing more goes out.
    pub(super) done_sending: bool,
}

impl Stream<'_> {
    pub(super) fn finished(&self) -> bool {
        self.done_sending && self.sink.is_none() && self.handler.is_none()
    }
}

impl Slot {
    /// A new waker for the connection whose task `connection` wakes.
    pub(super) fn new(connection: &Arc<AtomicWaker>) -> Self {
        let wake = Arc::new(StreamWake {
            ready: AtomicBool::new(false),
            connection: Arc::clone(connection),
        });
        Self {
            waker: Waker::from(Arc::clone(&wake)),
            wake,
        }
    }
}
