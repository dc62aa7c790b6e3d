//! One request's access-log entry: gathered on the request path when the
//! log is on, finished when the response body ends or is dropped (per
//! stream on HTTP/2; for an upgrade, when the 101 is sent), and its way to
//! the writer: the [`Sink`] the request path holds and the queues it
//! shares with the writer thread ([`Shared`]).

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::header::HeaderValue;
use http::{Method, Uri, Version};
use http_body::Frame;
use tokio::time::Instant;

use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering, fence};
use std::thread::Thread;

use crossbeam_queue::ArrayQueue;
use sluice_routing::grpc;
use sluice_routing::table::Backend;

use crate::request_id::RequestId;
use crate::trace::context::Trace;

/// What one line says, and a recorded span's data. Header values are
/// shared with the request, not copied; formatting happens on the writer
/// thread.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    pub(crate) at: SystemTime,
    pub(crate) started: Instant,
    pub(crate) client: IpAddr,
    pub(crate) method: Method,
    pub(crate) uri: Uri,
    pub(crate) version: Version,
    pub(crate) referer: Option<HeaderValue>,
    pub(crate) user_agent: Option<HeaderValue>,
    pub(crate) request_id: RequestId,
    /// The request's trace context (its trace id is logged).
    pub(crate) trace: Trace,
    /// The request's Host or :authority (a recorded span's `server.address`).
    pub(crate) host: Option<HeaderValue>,
    pub(crate) status: u16,
    pub(crate) grpc_status: Option<u8>,
    pub(crate) pool: Option<Arc<str>>,
    pub(crate) pool_version: Option<Arc<str>>,
    pub(crate) backend: Option<Arc<Backend>>,
    /// From the request's start to the backend's response head.
    pub(crate) upstream: Option<Duration>,
    /// From the request's start to the body's end; set when finished.
    pub(crate) duration: Duration,
    /// The request body's declared length (unknown for a streamed body
    /// without one).
    pub(crate) bytes_in: Option<u64>,
    pub(crate) bytes_out: u64,
    /// sluice's own error code (`x-sluice-error`), or why the response
    /// body broke off.
    pub(crate) error: Option<&'static str>,
    /// Tries made again on another backend (`[retry]`).
    pub(crate) retries: u8,
    /// Where the entry goes when finished; `None` once it is on its way
    /// or back on the free list.
    pub(crate) sink: Option<Arc<Sink>>,
    /// Where the span goes when the request's span is recorded.
    pub(crate) spans: Option<Arc<Sink>>,
}

impl Entry {
    /// An entry holding nothing: what the free list keeps.
    pub(crate) fn blank() -> Self {
        Self {
            at: SystemTime::UNIX_EPOCH,
            started: Instant::now(),
            client: IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
            method: Method::GET,
            uri: Uri::from_static("/"),
            version: Version::HTTP_11,
            referer: None,
            user_agent: None,
            request_id: RequestId::default(),
            trace: Trace::default(),
            host: None,
            status: 0,
            grpc_status: None,
            pool: None,
            pool_version: None,
            backend: None,
            upstream: None,
            duration: Duration::ZERO,
            bytes_in: None,
            bytes_out: 0,
            error: None,
            retries: 0,
            sink: None,
            spans: None,
        }
    }

    /// Back to blank: lets go of what the entry shares with its request
    /// (the client's buffer behind the path and header values, the pool's
    /// names), so a recycled entry pins no memory.
    pub(crate) fn clear(&mut self) {
        self.status = 0;
        self.grpc_status = None;
        self.upstream = None;
        self.duration = Duration::ZERO;
        self.bytes_out = 0;
        self.error = None;
        self.retries = 0;
        self.method = Method::GET;
        self.uri = Uri::from_static("/");
        self.referer = None;
        self.user_agent = None;
        self.request_id.clear();
        self.trace.clear();
        self.host = None;
        self.pool = None;
        self.pool_version = None;
        self.backend = None;
        self.sink = None;
        self.spans = None;
    }

    /// Counts a response frame on its way to the client.
    pub(crate) fn saw(&mut self, frame: &Frame<Bytes>) {
        if let Some(data) = frame.data_ref() {
            self.bytes_out += data.len() as u64;
        } else if let Some(trailers) = frame.trailers_ref()
            && let Some(code) = grpc::status_of(trailers)
        {
            self.grpc_status = Some(code);
        }
    }

    /// The client went away before its answer: 499, as nginx logs it.
    pub(crate) fn abandoned(mut self: Box<Self>) {
        self.status = 499;
        self.error = Some("client-closed");
        self.finish();
    }

    /// The response ended: the line goes to the writer, unless sampled
    /// out or the writer is behind (then it is counted as dropped). Never
    /// waits.
    pub(crate) fn finish(mut self: Box<Self>) {
        self.duration = self.started.elapsed();
        if let Some(spans) = self.spans.take() {
            if self.sink.is_none() {
                spans.send(self);
                return;
            }
            // Logged and recorded (a sampled share): a copy for the span.
            let mut copy = Box::new((*self).clone());
            copy.sink = None;
            spans.send(copy);
        }
        let Some(sink) = self.sink.take() else { return };
        let always = self.status >= 400 || self.error.is_some();
        if !always && sink.sample < 1.0 && rand::random::<f64>() >= sink.sample {
            self.clear();
            sink.recycle(self);
            return;
        }
        sink.send(self);
    }
}

/// What the request path hands finished entries to. When the last one
/// is gone (the log was moved or turned off, and every entry begun before
/// is finished) its writer drains and ends.
#[derive(Debug)]
pub(crate) struct Sink {
    pub(crate) shared: Arc<Shared>,
    pub(crate) sample: f64,
    /// The combined format logs the referer and user agent; JSON does not.
    pub(crate) combined: bool,
}

impl Sink {
    pub(crate) fn new(shared: Arc<Shared>, sample: f64, combined: bool) -> Self {
        Self {
            shared,
            sample,
            combined,
        }
    }

    pub(crate) fn send(&self, entry: Box<Entry>) {
        self.shared.send(entry);
    }

    pub(crate) fn recycle(&self, entry: Box<Entry>) {
        self.shared.recycle(entry);
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.shared.close();
    }
}

/// A thread draining a [`Shared`] queue (the access log's writer, the span
/// exporter), as its owner holds it.
#[derive(Debug)]
pub(crate) struct Handle {
    pub(crate) shared: Arc<Shared>,
    done: std::sync::mpsc::Receiver<()>,
}

impl Handle {
    /// A queue of `capacity` (what a full one drops is counted in
    /// `dropped`) and thread `name` running `run` on it; when the thread
    /// cannot start, says so (`what` is dropped and counted).
    pub(crate) fn spawn(
        name: &str,
        capacity: usize,
        dropped: &'static AtomicU64,
        what: &'static str,
        run: impl FnOnce(&Shared) + Send + 'static,
    ) -> Self {
        let shared = Arc::new(Shared::new(capacity, dropped));
        let (done_tx, done) = std::sync::mpsc::channel();
        let theirs = Arc::clone(&shared);
        let spawned = std::thread::Builder::new().name(name.into()).spawn(move || {
            run(&theirs);
            let _ = done_tx.send(());
        });
        match spawned {
            Ok(handle) => {
                let _ = shared.thread.set(handle.thread().clone());
            }
            Err(e) => {
                tracing::warn!(error = %e, thread = name, "cannot start the thread; {what} are dropped and counted")
            }
        }
        Self { shared, done }
    }

    /// Waits until the thread has ended (closed and drained), at most
    /// `within`.
    pub(crate) fn wait(&self, within: Duration) {
        let _ = self.done.recv_timeout(within);
    }
}

/// What the request path and the writer share.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) lines: ArrayQueue<Box<Entry>>,
    free: ArrayQueue<Box<Entry>>,
    pub(crate) sleeping: AtomicBool,
    /// Set when the last producer is gone: the writer drains and ends.
    pub(crate) closed: AtomicBool,
    pub(crate) reopen: AtomicBool,
    pub(crate) thread: OnceLock<Thread>,
    /// Counts what a full queue drops.
    dropped: &'static AtomicU64,
}

impl Shared {
    pub(crate) fn new(capacity: usize, dropped: &'static AtomicU64) -> Self {
        Self {
            dropped,
            lines: ArrayQueue::new(capacity),
            free: ArrayQueue::new(capacity),
            sleeping: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            reopen: AtomicBool::new(false),
            thread: OnceLock::new(),
        }
    }

    /// A reusable entry, if one is free.
    pub(crate) fn recycled(&self) -> Option<Box<Entry>> {
        self.free.pop()
    }

    pub(crate) fn recycle(&self, entry: Box<Entry>) {
        let _ = self.free.push(entry);
    }

    /// Queues a finished entry; a full queue drops and counts it.
    pub(crate) fn send(&self, entry: Box<Entry>) {
        if let Err(entry) = self.lines.push(entry) {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            let mut entry = entry;
            entry.clear();
            self.recycle(entry);
            return;
        }
        // Pairs with the writer's fence between `sleeping` and its last
        // look at the queue: one of the two sees the other.
        fence(Ordering::SeqCst);
        if self.sleeping.load(Ordering::Relaxed) && self.sleeping.swap(false, Ordering::Relaxed) {
            self.wake();
        }
    }

    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        self.wake();
    }

    pub(crate) fn reopen(&self) {
        self.reopen.store(true, Ordering::Relaxed);
    }

    fn wake(&self) {
        if let Some(thread) = self.thread.get() {
            thread.unpark();
        }
    }
}
