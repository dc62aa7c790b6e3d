//! W3C trace context and OTLP spans (`[tracing]`), checked against a real
//! OTLP/HTTP receiver built on OpenTelemetry's own protobuf types
//! (`tests/e2e/otlp_collector.py`): the span ids the collector gets are
//! the parents the backend was sent, a caller's trace is joined, and a
//! collector that never answers fails no request.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use sluice_routing::stats::SPANS_DROPPED;

use crate::common::*;

const COLLECTOR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/e2e/otlp_collector.py");
const CALLER: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

/// The OTLP receiver, and the spans it has printed so far.
struct Collector {
    port: u16,
    spans: Arc<Mutex<Vec<Value>>>,
    child: Child,
}

impl Collector {
    /// `None` when opentelemetry-proto is missing (a failure unless the
    /// developer opted out, see `tool_present`).
    fn start() -> Option<Self> {
        let present = Command::new("python3")
            .args(["-c", "import opentelemetry.proto.collector.trace.v1.trace_service_pb2"])
            .output()
            .is_ok_and(|o| o.status.success());
        if !tool_present(present, "opentelemetry-proto (pip install opentelemetry-proto)") {
            return None;
        }
        let mut child = Command::new("python3")
            .arg(COLLECTOR)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        let port = line
            .trim()
            .strip_prefix("port ")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("collector said {line:?}"));
        let spans = Arc::new(Mutex::new(Vec::new()));
        let theirs = Arc::clone(&spans);
        std::thread::spawn(move || {
            for line in out.lines().map_while(Result::ok) {
                theirs.lock().unwrap().push(serde_json::from_str(&line).unwrap());
            }
        });
        Some(Self { port, spans, child })
    }

    fn toml(&self, extra: &str) -> String {
        format!(
            "[tracing]\notlp_endpoint = \"http://127.0.0.1:{}/v1/traces\"\n{extra}\n",
            self.port
        )
    }

    /// The span `span_id`, once it has arrived.
    async fn span(&self, span_id: &str) -> Value {
        let found = || {
            self.spans
                .lock()
                .unwrap()
                .iter()
                .find(|s| s["span_id"] == span_id)
                .cloned()
        };
        wait_until(Duration::from_secs(20), "the span at the collector", || {
            found().is_some()
        })
        .await;
        found().unwrap()
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `(trace id, span id, flags)` of a `traceparent` the backend got.
fn ids(traceparent: &str) -> (String, String, String) {
    let parts: Vec<&str> = traceparent.split('-').collect();
    assert_eq!(parts.len(), 4, "{traceparent}");
    assert_eq!(
        (parts[0], parts[1].len(), parts[2].len()),
        ("00", 32, 16),
        "{traceparent}"
    );
    (parts[1].into(), parts[2].into(), parts[3].into())
}

#[tokio::test]
async fn spans_reach_the_collector_as_the_parents_the_backend_was_sent() {
    let Some(collector) = Collector::start() else { return };
    let (backend, recorder) = Recorder::start().await;
    let proxy = start_proxy(&format!("{}{}", collector.toml(""), pool_toml("blue", 100, &[backend]))).await;

    // All requests first: their spans go in one batch (sent at the latest
    // 5 s after the first), in the order the responses ended.
    // 0. A caller's sampled trace: joined, sluice's span its child.
    let (status, headers, _) = get(
        &client(),
        &proxy.url("/orders?id=7"),
        &[("traceparent", CALLER), ("tracestate", "vendor=a1")],
    )
    .await;
    assert_eq!(status, 200);
    // 1. A caller's unsampled trace: its flag is followed, no span.
    let unsampled = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00";
    get(&client(), &proxy.url("/quiet"), &[("traceparent", unsampled)]).await;
    // 2. No traceparent (over HTTP/2 this time): sluice starts the trace.
    let (status, _, _) = get(&h2_client(), &proxy.url("/new"), &[("tracestate", "stray=1")]).await;
    assert_eq!(status, 200);
    // 3. An invalid one is replaced by a new trace.
    let invalid = [("traceparent", "00-zz-zz-01"), ("tracestate", "a=1")];
    get(&client(), &proxy.url("/bad"), &invalid).await;

    let sent = recorder.header_map(0);
    let (trace, parent, flags) = ids(&sent["traceparent"][0]);
    assert_eq!((trace.as_str(), flags.as_str()), (&CALLER[3..35], "01"));
    assert_ne!(parent, &CALLER[36..52], "the backend's parent is sluice's span");
    assert_eq!(sent["tracestate"], vec!["vendor=a1".to_owned()]);
    let span = collector.span(&parent).await;
    assert_eq!(span["trace_id"], trace);
    assert_eq!(span["parent_span_id"], &CALLER[36..52]);
    assert_eq!(
        (span["name"].as_str(), span["kind"].as_i64()),
        (Some("GET"), Some(2)),
        "GET, SERVER"
    );
    assert_eq!(span["path"], "/v1/traces");
    assert_eq!(span["content_type"], "application/x-protobuf");
    assert_eq!(span["resource"]["service.name"], "sluice");
    let a = &span["attributes"];
    assert_eq!(a["http.request.method"], "GET");
    assert_eq!(a["url.path"], "/orders");
    assert_eq!(a["url.query"], "id=7");
    assert_eq!(a["url.scheme"], "http");
    assert_eq!(a["http.response.status_code"], 200);
    assert_eq!(a["server.address"], "127.0.0.1");
    assert_eq!(a["server.port"], proxy.addr.port());
    assert_eq!(a["network.protocol.version"], "1.1");
    assert_eq!(
        (&a["sluice.pool"], &a["sluice.version"]),
        (&"blue".into(), &"blue-v".into())
    );
    assert_eq!(a["sluice.backend"], backend.to_string());
    assert_eq!(a["sluice.request_id"], headers["x-request-id"].to_str().unwrap());
    assert_eq!(span["status"], 0, "unset for a 2xx");
    assert!(span["end"].as_u64() >= span["start"].as_u64());

    let (trace, _, flags) = ids(&recorder.header_map(1)["traceparent"][0]);
    assert_eq!((trace.as_str(), flags.as_str()), (&unsampled[3..35], "00"));

    let sent = recorder.header_map(2);
    let (trace, parent, flags) = ids(&sent["traceparent"][0]);
    assert_eq!(flags, "01", "sample_ratio defaults to 1");
    assert!(
        !sent.contains_key("tracestate"),
        "a new trace keeps no caller's tracestate"
    );
    let span = collector.span(&parent).await;
    assert_eq!(
        (&span["trace_id"], &span["parent_span_id"]),
        (&trace.into(), &"".into())
    );
    assert_eq!(span["attributes"]["network.protocol.version"], "2");

    let sent = recorder.header_map(3);
    let (_, parent, _) = ids(&sent["traceparent"][0]);
    assert!(!sent.contains_key("tracestate"));
    assert_eq!(collector.span(&parent).await["parent_span_id"], "");
    // The unsampled request recorded nothing (no span is made for it,
    // so none can come later).
    let spans = collector.spans.lock().unwrap();
    assert!(spans.iter().all(|s| s["attributes"]["url.path"] != "/quiet"));
    assert_eq!(spans.len(), 3, "{spans:?}");
}

#[tokio::test]
async fn the_header_map_paths_and_sluice_s_own_errors_are_traced_too() {
    let Some(collector) = Collector::start() else { return };
    // hyper's engine sends from header maps, not from sluice's own head.
    let (backend, recorder) = Recorder::start().await;
    let hyper = format!("[proxy]\nengine = \"hyper\"\n{}", collector.toml(""));
    let proxy = start_proxy(&format!("{hyper}{}", pool_toml("blue", 100, &[backend]))).await;
    assert_eq!(get(&client(), &proxy.url("/h"), &[]).await.0, 200);
    let (_, parent, _) = ids(&recorder.header_map(0)["traceparent"][0]);
    assert_eq!(collector.span(&parent).await["attributes"]["url.path"], "/h");

    // A backend that cannot be reached: the span is an error, named.
    let down = start_proxy(&format!(
        "{}{}",
        collector.toml(""),
        pool_toml("blue", 100, &[closed_port().await])
    ))
    .await;
    let (status, _, _) = get(&client(), &down.url("/x"), &[("traceparent", CALLER)]).await;
    assert_eq!(status, 502);
    let found = || {
        let spans = collector.spans.lock().unwrap();
        spans
            .iter()
            .find(|s| s["attributes"]["url.path"] == "/x" && s["trace_id"] == CALLER[3..35])
            .cloned()
    };
    wait_until(Duration::from_secs(20), "the failed request's span", || {
        found().is_some()
    })
    .await;
    let span = found().unwrap();
    assert_eq!(span["status"], 2, "ERROR");
    assert_eq!(span["attributes"]["error.type"], "upstream-connect-failed");
    assert_eq!(span["attributes"]["http.response.status_code"], 502);
}

#[tokio::test]
async fn without_a_collector_traceparents_pass_or_go_and_none_are_made() {
    let (backend, recorder) = Recorder::start().await;
    let proxy = start_proxy(&pool_toml("blue", 100, &[backend])).await;
    let headers = [("traceparent", CALLER), ("tracestate", "vendor=a1")];
    get(&client(), &proxy.url("/"), &headers).await;
    let sent = recorder.header_map(0);
    assert_eq!(
        sent["traceparent"],
        vec![CALLER.to_owned()],
        "unchanged: sluice has no span"
    );
    assert_eq!(sent["tracestate"], vec!["vendor=a1".to_owned()]);
    get(
        &client(),
        &proxy.url("/"),
        &[("traceparent", "junk"), ("tracestate", "a=1")],
    )
    .await;
    let sent = recorder.header_map(1);
    assert!(!sent.contains_key("traceparent") && !sent.contains_key("tracestate"));
    get(&client(), &proxy.url("/"), &[]).await;
    assert!(!recorder.header_map(2).contains_key("traceparent"));

    // propagate = false: not looked at.
    let (backend, recorder) = Recorder::start().await;
    let off = start_proxy(&format!(
        "[tracing]\npropagate = false\n{}",
        pool_toml("blue", 100, &[backend])
    ))
    .await;
    get(&client(), &off.url("/"), &[("traceparent", "junk")]).await;
    assert_eq!(recorder.header_map(0)["traceparent"], vec!["junk".to_owned()]);
}

/// A collector that takes connections and never answers.
async fn silent_collector() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind(ANY).await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
        }
    });
    addr
}

#[tokio::test]
async fn a_collector_that_never_answers_fails_no_request_and_holds_no_more_than_its_queue() {
    let collector = silent_collector().await;
    let backend = spawn_backend("blue", "v1", any_addr()).await.unwrap();
    let toml = format!(
        "[tracing]\notlp_endpoint = \"http://{collector}/v1/traces\"\n{}",
        pool_toml("blue", 100, &[backend.addr])
    );
    let proxy = start_proxy(&toml).await;
    let before = SPANS_DROPPED.load(Ordering::Relaxed);
    // More than the queue (2,048) and a batch (512) hold: the rest are
    // dropped at once, the request never waits.
    let requests = 3_500;
    let client = client();
    let mut failed = 0;
    for chunk in 0..(requests / 50) {
        let mut calls = tokio::task::JoinSet::new();
        for i in 0..50 {
            let client = client.clone();
            let url = proxy.url(&format!("/{chunk}/{i}"));
            calls.spawn(async move { get(&client, &url, &[]).await.0 });
        }
        failed += calls.join_all().await.into_iter().filter(|&s| s != 200).count();
    }
    assert_eq!(failed, 0, "requests failed while the collector hung");
    let at_least = (requests - 2_048 - 512) as u64;
    wait_until(Duration::from_secs(20), "spans dropped and counted", || {
        SPANS_DROPPED.load(Ordering::Relaxed) - before >= at_least
    })
    .await;
}

#[tokio::test]
async fn the_access_log_span_and_backend_name_the_same_trace() {
    let Some(collector) = Collector::start() else { return };
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("access.log");
    let (backend, recorder) = Recorder::start().await;
    let toml = format!(
        "[access_log]\nenabled = true\npath = \"{}\"\n{}{}",
        file.display(),
        collector.toml(""),
        pool_toml("blue", 100, &[backend])
    );
    let proxy = start_proxy(&toml).await;
    let (status, headers, _) = get(&client(), &proxy.url("/one"), &[]).await;
    assert_eq!(status, 200);
    let (trace, parent, _) = ids(&recorder.header_map(0)["traceparent"][0]);
    let span = collector.span(&parent).await;
    assert_eq!(span["trace_id"], trace);
    let line = {
        let read = || std::fs::read_to_string(&file).unwrap_or_default();
        wait_until(Duration::from_secs(10), "the access-log line", || !read().is_empty()).await;
        read()
    };
    let logged: Value = serde_json::from_str(line.lines().next().unwrap()).unwrap();
    assert_eq!(logged["trace_id"], trace);
    assert_eq!(logged["request_id"], headers["x-request-id"].to_str().unwrap());
    assert_eq!(span["attributes"]["sluice.request_id"], logged["request_id"]);
}
