//! The span exporter: a thread of its own with a one-thread runtime for
//! OpenTelemetry's OTLP/HTTP exporter. It takes finished entries from the
//! bounded queue the request path fills (never waiting on it), makes them
//! spans in batches of up to 512, at least every 5 seconds, and sends each
//! batch once, with a deadline. A batch the collector does not take (down,
//! slow, refusing) is dropped and counted in `sluice_spans_dropped_total`,
//! so a dead collector fails no request and grows no memory.

use std::sync::atomic::Ordering;
use std::time::Duration;

use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_otlp::{SpanExporter, WithExportConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SpanExporter as _;
use sluice_routing::stats::SPANS_DROPPED;
use tracing::{info, warn};

use super::span;
use crate::access::entry::{Handle, Shared};

/// Spans sent per request at most.
const BATCH: usize = 512;
/// A batch smaller than that waits at most this long (OpenTelemetry's
/// batch processor's default delay: fewer, larger requests).
const FLUSH_EVERY: Duration = Duration::from_secs(5);
/// How long one batch may take to be sent, retries included.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(5);

pub(super) fn start(capacity: usize, endpoint: String) -> Handle {
    Handle::spawn("sluice-spans", capacity, &SPANS_DROPPED, "spans", move |shared| {
        run(shared, &endpoint);
    })
}

fn run(shared: &Shared, endpoint: &str) {
    let built = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())
        .and_then(|rt| {
            // hyper's client needs the runtime's context when it is made.
            let exporter = {
                let _entered = rt.enter();
                SpanExporter::builder()
                    .with_http()
                    .with_endpoint(endpoint)
                    .with_timeout(EXPORT_TIMEOUT)
                    .build()
                    .map_err(|e| e.to_string())?
            };
            Ok((rt, exporter))
        });
    let (runtime, mut exporter) = match built {
        Ok(built) => built,
        Err(e) => {
            warn!(error = %e, endpoint, "cannot start the span exporter; spans are dropped and counted");
            return drop_all(shared);
        }
    };
    exporter.set_resource(
        &Resource::builder_empty()
            .with_service_name("sluice")
            .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
            .build(),
    );
    let scope = InstrumentationScope::builder("sluice")
        .with_version(env!("CARGO_PKG_VERSION"))
        .build();
    let mut failing = false;
    loop {
        let mut batch = Vec::new();
        while batch.len() < BATCH {
            let Some(mut entry) = shared.lines.pop() else { break };
            batch.push(span::of(&entry, &scope));
            entry.clear();
            shared.recycle(entry);
        }
        let full = batch.len() == BATCH;
        if !batch.is_empty() {
            let count = batch.len() as u64;
            let sent =
                runtime.block_on(async { tokio::time::timeout(EXPORT_TIMEOUT * 2, exporter.export(batch)).await });
            match sent {
                Ok(Ok(())) if failing => {
                    failing = false;
                    info!(endpoint, "spans reach the collector again");
                }
                Ok(Ok(())) => {}
                Ok(Err(e)) => failed(&mut failing, count, endpoint, &e.to_string()),
                Err(_) => failed(&mut failing, count, endpoint, "no answer in time"),
            }
        }
        if full {
            continue;
        }
        if shared.closed.load(Ordering::SeqCst) {
            if shared.lines.is_empty() {
                break;
            }
            continue;
        }
        std::thread::park_timeout(FLUSH_EVERY);
    }
    let _ = exporter.shutdown();
}

/// A batch the collector did not take: counted; said once per outage.
fn failed(failing: &mut bool, count: u64, endpoint: &str, why: &str) {
    SPANS_DROPPED.fetch_add(count, Ordering::Relaxed);
    if !*failing {
        *failing = true;
        warn!(
            endpoint,
            error = why,
            "the collector does not take spans; they are dropped and counted"
        );
    }
}

/// Without an exporter, spans are counted as dropped until closed.
fn drop_all(shared: &Shared) {
    loop {
        while let Some(mut entry) = shared.lines.pop() {
            SPANS_DROPPED.fetch_add(1, Ordering::Relaxed);
            entry.clear();
            shared.recycle(entry);
        }
        if shared.closed.load(Ordering::SeqCst) {
            return;
        }
        std::thread::park_timeout(FLUSH_EVERY);
    }
}
