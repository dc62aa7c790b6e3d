//! Trace context and spans (`[tracing]`): what each request's
//! `traceparent` becomes ([`context`]) and, with an OTLP endpoint, the
//! spans of the sampled requests, exported off the request path
//! ([`export`]).
//!
//! On the request path this is one relaxed load when `propagate = false`,
//! and one header lookup without an exporter. A recorded span's data is
//! the access-log entry's (see [`crate::access`]): finished when the
//! response ends, handed to the exporter's thread through a bounded queue,
//! dropped and counted (`sluice_spans_dropped_total`) when it is full or
//! the collector does not take them.

pub(crate) mod context;
mod export;
mod span;

use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use http::HeaderMap;
use sluice_config::TracingConfig;

use crate::access::entry::{Handle, Sink};
use crate::noted::Noted;

pub use context::{Trace, TraceSlot};

/// Spans waiting for the exporter at most; past this they are dropped.
const QUEUE: usize = 2048;

const OFF: u8 = 0;
const CHECK: u8 = 1;
const EXPORT: u8 = 2;

/// What a request's trace context gets (`Tracing::mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// `propagate = false`: not looked at.
    Off,
    /// No exporter: checked, an invalid one removed.
    Check,
    /// sluice takes part in the trace.
    Export,
}

/// Tracing as the proxy holds it.
#[derive(Debug)]
pub struct Tracing {
    mode: AtomicU8,
    /// New traces are sampled when their id's low 63 bits fall below this
    /// (`sample_ratio` × 2^63).
    threshold: AtomicU64,
    spans: ArcSwapOption<Sink>,
    /// The settings in force and their exporter (control plane only).
    state: Mutex<Option<Running>>,
}

#[derive(Debug)]
struct Running {
    config: TracingConfig,
    exporter: Option<Handle>,
}

impl Default for Tracing {
    fn default() -> Self {
        // As `[tracing]` left out: check traceparents, export nothing.
        Self {
            mode: AtomicU8::new(CHECK),
            threshold: AtomicU64::new(0),
            spans: ArcSwapOption::empty(),
            state: Mutex::new(None),
        }
    }
}

impl Tracing {
    /// Applies `[tracing]`: an unchanged endpoint keeps its exporter; a
    /// changed one starts a new exporter and lets the old one finish.
    pub fn configure(&self, config: &TracingConfig) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let ratio = config.sample_ratio.clamp(0.0, 1.0);
        self.threshold
            .store((ratio * (1u64 << 63) as f64) as u64, Ordering::Relaxed);
        let same_endpoint = state
            .as_ref()
            .is_some_and(|running| running.config.otlp_endpoint == config.otlp_endpoint);
        let exporter = match (&config.otlp_endpoint, same_endpoint) {
            (_, true) => state.take().and_then(|running| running.exporter),
            (Some(endpoint), false) => Some(export::start(QUEUE, endpoint.clone())),
            (None, false) => None,
        };
        let spans = exporter
            .as_ref()
            .map(|e| Arc::new(Sink::new(Arc::clone(&e.shared), 1.0, false)));
        let mode = match (config.propagate, &exporter) {
            (false, _) => OFF,
            (true, None) => CHECK,
            (true, Some(_)) => EXPORT,
        };
        // Spans first: a request that sees EXPORT finds where they go.
        if !same_endpoint {
            self.spans.store(spans);
        }
        self.mode.store(mode, Ordering::Relaxed);
        *state = Some(Running {
            config: config.clone(),
            exporter,
        });
    }

    /// Stops recording and waits, at most `within`, for the exporter to
    /// send the spans it has (at shutdown, after the drain).
    pub fn close(&self, within: Duration) {
        self.mode
            .store(CHECK.min(self.mode.load(Ordering::Relaxed)), Ordering::Relaxed);
        self.spans.store(None);
        let running = self.state.lock().unwrap_or_else(PoisonError::into_inner).take();
        if let Some(exporter) = running.and_then(|r| r.exporter) {
            exporter.wait(within);
        }
    }

    /// What requests' trace context gets now: one relaxed load.
    #[inline(always)]
    pub(crate) fn mode(&self) -> Mode {
        match self.mode.load(Ordering::Relaxed) {
            OFF => Mode::Off,
            CHECK => Mode::Check,
            _ => Mode::Export,
        }
    }

    /// The request's trace context, from and into its headers, which
    /// `noted` has looked through.
    #[inline(always)]
    pub(crate) fn take(&self, mode: Mode, trace: &mut TraceSlot, headers: &mut HeaderMap, noted: &Noted) {
        match mode {
            Mode::Check if noted.traceparent => trace.make().check(headers),
            Mode::Off | Mode::Check => trace.clear(),
            Mode::Export => trace
                .make()
                .join_or_start(headers, self.threshold.load(Ordering::Relaxed), noted),
        }
    }

    /// Where recorded spans go, while an exporter runs.
    pub(crate) fn spans(&self) -> Option<Arc<Sink>> {
        self.spans.load_full()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn config(propagate: bool, endpoint: Option<&str>) -> TracingConfig {
        TracingConfig {
            propagate,
            otlp_endpoint: endpoint.map(str::to_owned),
            sample_ratio: 0.5,
        }
    }

    #[test]
    fn a_reload_moves_between_off_checking_and_exporting() {
        let tracing = Tracing::default();
        assert_eq!(tracing.mode(), Mode::Check, "as [tracing] left out");
        let collector = Some("http://127.0.0.1:9/v1/traces");
        tracing.configure(&config(true, collector));
        assert_eq!(tracing.mode(), Mode::Export);
        assert_eq!(tracing.threshold.load(Ordering::Relaxed), 1 << 62);
        let first = tracing.spans().unwrap();
        // The same endpoint keeps its exporter (a new ratio or not).
        tracing.configure(&config(true, collector));
        assert!(Arc::ptr_eq(&first, &tracing.spans().unwrap()));
        tracing.configure(&config(true, Some("http://127.0.0.1:10/v1/traces")));
        assert!(!Arc::ptr_eq(&first, &tracing.spans().unwrap()));
        tracing.configure(&config(false, None));
        assert_eq!(tracing.mode(), Mode::Off);
        assert!(tracing.spans().is_none());
        tracing.configure(&config(true, None));
        assert_eq!(tracing.mode(), Mode::Check);
        tracing.configure(&config(true, collector));
        tracing.close(Duration::from_secs(1));
        assert_eq!((tracing.mode(), tracing.spans().is_none()), (Mode::Check, true));
    }
}
