//! The access log (`[access_log]`): one line per request, gathered on the
//! request path only while the log is on (off, it costs one relaxed load
//! per request), handed through a bounded channel to a writer thread that
//! formats and writes it. The request path never waits for the writer:
//! when the channel is full, the line is dropped and counted
//! (`sluice_access_log_dropped_total`). A reload turns the log on, off or
//! moves it; the old writer finishes the lines it was given and ends.

pub(crate) mod entry;
mod format;
mod writer;

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwapOption;
use http::header;
use http::{HeaderValue, Request};
use sluice_config::{AccessLogConfig, AccessLogFormat};
use sluice_routing::tap::LogTap;
use tokio::time::Instant;

use crate::request_id::RequestId;
use crate::trace::{Trace, Tracing, context};

pub(crate) use entry::{Entry, Sink};

/// Lines waiting for the writer at most; past this they are dropped. An
/// entry shares the client's read buffer until written, so this bounds
/// what a stalled writer can hold (4,096 × a 4 KiB buffer at worst).
const QUEUE: usize = 4096;

/// The access log as the proxy holds it: on or off, and where lines go.
#[derive(Debug, Default)]
pub struct AccessLog {
    on: AtomicBool,
    sink: ArcSwapOption<Sink>,
    /// The settings in force and their writer (control plane only).
    state: Mutex<Option<Running>>,
    /// Where writers also publish lines for the admin API, once set.
    tap: writer::Tap,
}

#[derive(Debug)]
struct Running {
    config: AccessLogConfig,
    writer: entry::Handle,
}

impl AccessLog {
    /// Applies `[access_log]`: unchanged settings keep the running writer;
    /// changed ones start a new writer and let the old one finish.
    pub fn configure(&self, config: &AccessLogConfig) {
        let mut state = self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if !config.enabled {
            self.on.store(false, Ordering::Relaxed);
            self.sink.store(None);
            *state = None;
            return;
        }
        if state.as_ref().is_some_and(|running| running.config == *config) {
            return;
        }
        let writer = writer::start(QUEUE, config.path.clone(), config.format, Arc::clone(&self.tap));
        let combined = config.format == AccessLogFormat::Combined;
        let sink = Sink::new(Arc::clone(&writer.shared), config.sample, combined);
        self.sink.store(Some(Arc::new(sink)));
        self.on.store(true, Ordering::Relaxed);
        *state = Some(Running {
            config: config.clone(),
            writer,
        });
    }

    /// Lines go to `tap` too (the admin API's `/api/v1/logs`), from now on.
    pub fn set_tap(&self, tap: Arc<LogTap>) {
        let _ = self.tap.set(tap);
    }

    /// Reopens the log file (SIGUSR1, after a rotation that copied it
    /// away); renames and removals are noticed without it.
    pub fn reopen(&self) {
        let state = self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(running) = state.as_ref() {
            running.writer.shared.reopen();
        }
    }

    /// Stops taking lines and waits, at most `within`, for the writer to
    /// write those it has (at shutdown, after the drain).
    pub fn close(&self, within: Duration) {
        self.on.store(false, Ordering::Relaxed);
        self.sink.store(None);
        let running = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(running) = running {
            running.writer.wait(within);
        }
    }

    /// An entry for `req` when the log is on or its span is recorded.
    /// Inlined: with neither, this is one load and two compares on the
    /// request path.
    #[inline(always)]
    pub(crate) fn begin<B: http_body::Body>(
        &self,
        req: &Request<B>,
        client: IpAddr,
        started: Instant,
        id: &RequestId,
        trace: Option<&Trace>,
        tracing: &Tracing,
    ) -> Option<Box<Entry>> {
        if !self.on.load(Ordering::Relaxed) && !trace.is_some_and(Trace::recorded) {
            return None;
        }
        self.begin_on(req, client, started, id, trace, tracing)
    }

    #[inline(never)]
    fn begin_on<B: http_body::Body>(
        &self,
        req: &Request<B>,
        client: IpAddr,
        started: Instant,
        id: &RequestId,
        trace: Option<&Trace>,
        tracing: &Tracing,
    ) -> Option<Box<Entry>> {
        let trace = trace.copied().unwrap_or_default();
        let sink = self.sink.load_full().filter(|_| self.on.load(Ordering::Relaxed));
        let spans = tracing.spans().filter(|_| trace.recorded());
        let recycled = match (&sink, &spans) {
            (Some(sink), _) => sink.shared.recycled(),
            (None, Some(spans)) => spans.shared.recycled(),
            (None, None) => return None,
        };
        let mut entry = recycled.unwrap_or_else(|| Box::new(Entry::blank()));
        let headers = req.headers();
        let combined = sink.as_ref().is_some_and(|s| s.combined);
        let (referer, user_agent) = if combined || spans.is_some() {
            (
                headers.get(header::REFERER).cloned(),
                headers.get(header::USER_AGENT).cloned(),
            )
        } else {
            (None, None)
        };
        // Blank (new, or cleared when it came back): only the request's
        // own fields are set here, the rest as the request goes on.
        entry.at = SystemTime::now();
        entry.started = started;
        entry.client = client;
        entry.method = req.method().clone();
        entry.uri = req.uri().clone();
        entry.version = req.version();
        entry.referer = referer;
        entry.user_agent = user_agent;
        entry.request_id = id.clone();
        entry.trace = trace;
        if trace.trace_id_hex().is_none()
            && let Some(traceparent) = headers.get(&context::TRACEPARENT)
        {
            // Not looked at on the way in (`propagate = false`): a
            // caller's trace id is still worth a line.
            let _ = entry.trace.note_caller(traceparent.as_bytes());
        }
        if spans.is_some() {
            entry.host = req
                .uri()
                .authority()
                .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
                .or_else(|| headers.get(header::HOST).cloned());
        }
        entry.bytes_in = req.body().size_hint().exact();
        entry.sink = sink;
        entry.spans = spans;
        Some(entry)
    }
}
