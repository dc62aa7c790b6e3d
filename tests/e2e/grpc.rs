//! gRPC through sluice with a real gRPC stack nobody here wrote: Python
//! grpcio client and server (grpc-core), `tests/e2e/grpc_peer.py`.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};

use serde_json::Value;

use crate::common::{self, tool_present};

const PEER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/e2e/grpc_peer.py");

/// Whether Python's grpcio and grpcio-health-checking are installed.
pub fn grpcio_present() -> bool {
    let ok = Command::new("python3")
        .args(["-c", "import grpc, grpc_health.v1"])
        .output()
        .is_ok_and(|o| o.status.success());
    tool_present(ok, "grpcio (pip install grpcio grpcio-health-checking)")
}

/// A grpcio server on a loopback port, stopped when dropped.
pub struct GrpcServer {
    pub addr: SocketAddr,
    child: Child,
}

impl GrpcServer {
    pub fn start(name: &str) -> Self {
        Self::start_with(&[name])
    }

    /// `args`: the name, then the most concurrent streams it allows.
    pub fn start_with(args: &[&str]) -> Self {
        let mut child = Command::new("python3")
            .arg(PEER)
            .arg("server")
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port: u16 = line
            .trim()
            .strip_prefix("port ")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("grpc server said {line:?}"));
        Self {
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            child,
        }
    }
}

impl GrpcServer {
    /// Starts the server's graceful stop: GOAWAY, then the calls in
    /// flight finish (it stops listening at once).
    pub fn stop_gracefully(&mut self) {
        drop(self.child.stdin.take());
    }
}

impl Drop for GrpcServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs the grpcio client against `target` and returns what it printed.
pub async fn call(target: SocketAddr, args: &[&str]) -> Value {
    call_with(target, None, args).await
}

/// [`call`], over TLS when `ca` names the CA of the target's certificate.
pub async fn call_with(target: SocketAddr, ca: Option<&std::path::Path>, args: &[&str]) -> Value {
    let mut cmd = tokio::process::Command::new("python3");
    cmd.arg(PEER).arg("client").arg(target.to_string()).args(args);
    if let Some(ca) = ca {
        cmd.env("GRPC_PEER_CA", ca);
    }
    let out = cmd.output().await.unwrap();
    assert!(
        out.status.success(),
        "grpc client {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
}

/// `[pools.NAME]` for gRPC backends (HTTP/2 by prior knowledge).
pub fn grpc_pool(name: &str, weight: u32, backend: SocketAddr) -> String {
    format!("{}protocol = \"http2\"\n", common::pool_toml(name, weight, &[backend]))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_calls_pass_through_and_are_balanced_per_call() {
    if !grpcio_present() {
        return;
    }
    let (blue, green) = (GrpcServer::start("blue"), GrpcServer::start("green"));
    let toml = format!(
        "{}{}",
        grpc_pool("blue", 50, blue.addr),
        grpc_pool("green", 50, green.addr)
    );
    let proxy = common::start_proxy(&toml).await;

    // 1,000 unary calls on one client channel: each call routed on its own.
    let out = call(proxy.addr, &["unary", "1000"]).await;
    assert_eq!(out["failed"], serde_json::json!({}), "{out}");
    let blue_calls = out["answers"]["blue"].as_u64().unwrap_or(0);
    let green_calls = out["answers"]["green"].as_u64().unwrap_or(0);
    assert_eq!(blue_calls + green_calls, 1000, "{out}");
    assert!((400..=600).contains(&blue_calls), "not 50/50 per call: {out}");

    // Status codes and details reach the client as the server sent them
    // (in trailers, or Trailers-Only).
    for code in ["NOT_FOUND", "INVALID_ARGUMENT", "UNAVAILABLE", "INTERNAL"] {
        let out = call(proxy.addr, &["fail", code]).await;
        assert_eq!(out["code"], code, "{out}");
        assert_eq!(out["details"], format!("asked to fail with {code}"), "{out}");
    }
    // A 4 MiB message each way, and a server stream of 1,000 messages.
    let size = 4 * 1024 * 1024 - 64;
    let out = call(proxy.addr, &["big", &size.to_string()]).await;
    let extra = out["length"].as_u64().unwrap_or(0).saturating_sub(size);
    assert!(extra == "blue:".len() as u64 || extra == "green:".len() as u64, "{out}");
    let out = call(proxy.addr, &["stream", "1000"]).await;
    assert_eq!(out["messages"], 1000, "{out}");
}

/// What the pool `name` counted: `(requests by HTTP status, gRPC calls by
/// code name, window error ratio)`.
type Counted = (Vec<(u16, u64)>, Vec<(&'static str, u64)>, f64);

fn counted(proxy: &common::TestProxy, name: &str) -> Counted {
    let table = proxy.routing.snapshot();
    let pool = table.pool(name).unwrap();
    let codes = sluice_proxy::grpc::CODE_NAMES
        .iter()
        .copied()
        .zip(pool.stats.grpc_codes())
        .filter(|(_, n)| *n > 0)
        .collect();
    let window = pool
        .stats
        .window
        .snapshot(tokio::time::Instant::now(), std::time::Duration::from_secs(60));
    (pool.stats.statuses(), codes, window.error_ratio())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_failures_count_by_their_grpc_status_not_their_200() {
    if !grpcio_present() {
        return;
    }
    let server = GrpcServer::start("blue");
    let proxy = common::start_proxy(&grpc_pool("blue", 100, server.addr)).await;

    // Client-side codes: counted as 4xx, never as the server's errors.
    for code in ["NOT_FOUND", "INVALID_ARGUMENT"] {
        assert_eq!(call(proxy.addr, &["fail", code]).await["code"], code);
    }
    let (statuses, codes, ratio) = counted(&proxy, "blue");
    assert_eq!(statuses, vec![(400, 1), (404, 1)]);
    assert_eq!(codes, vec![("INVALID_ARGUMENT", 1), ("NOT_FOUND", 1)]);
    assert_eq!(ratio, 0.0);

    // UNAVAILABLE counts as a 503, INTERNAL as a 500: the window sees them.
    for code in ["UNAVAILABLE", "INTERNAL"] {
        assert_eq!(call(proxy.addr, &["fail", code]).await["code"], code);
    }
    let out = call(proxy.addr, &["unary", "6"]).await;
    assert_eq!(out["answers"]["blue"], 6, "{out}");
    let (statuses, codes, ratio) = counted(&proxy, "blue");
    assert_eq!(statuses, vec![(200, 6), (400, 1), (404, 1), (500, 1), (503, 1)]);
    assert_eq!(
        codes,
        vec![
            ("OK", 6),
            ("INVALID_ARGUMENT", 1),
            ("NOT_FOUND", 1),
            ("INTERNAL", 1),
            ("UNAVAILABLE", 1)
        ]
    );
    assert!((ratio - 0.2).abs() < 1e-9, "2 of 10 calls failed: {ratio}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sluice_fails_grpc_calls_in_grpc_language() {
    if !grpcio_present() {
        return;
    }
    // A pool whose only backend is gone: sluice itself fails the call.
    let gone = common::closed_port().await;
    let proxy = common::start_proxy(&grpc_pool("blue", 100, gone)).await;
    let out = call(proxy.addr, &["fail", "OK"]).await;
    assert_eq!(out["code"], "UNAVAILABLE", "{out}");
    assert_eq!(out["details"], "sluice: upstream-connect-failed", "{out}");
    let (statuses, codes, ratio) = counted(&proxy, "blue");
    assert_eq!(statuses, vec![(502, 1)]);
    assert_eq!(codes, vec![("UNAVAILABLE", 1)]);
    assert_eq!(ratio, 1.0);
}

fn grpc_probe_config() -> sluice_config::HealthConfig {
    sluice_config::HealthConfig {
        mode: sluice_config::HealthMode::Grpc,
        timeout: std::time::Duration::from_secs(5),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_probes_speak_http2_and_the_grpc_health_protocol() {
    if !grpcio_present() {
        return;
    }
    use sluice_config::UpstreamProtocol::{Http1, Http2};
    use sluice_control::health::probe;
    let server = GrpcServer::start("blue");
    let addr = server.addr.to_string();
    let cfg = grpc_probe_config();
    assert_eq!(probe(&addr, None, Http2, &cfg).await, Ok(()));

    // NOT_SERVING fails the probe, SERVING passes it again.
    call(server.addr, &["set-health", "NOT_SERVING"]).await;
    assert_eq!(probe(&addr, None, Http2, &cfg).await, Err("NOT_SERVING".into()));
    call(server.addr, &["set-health", "SERVING"]).await;
    assert_eq!(probe(&addr, None, Http2, &cfg).await, Ok(()));

    // A service the server does not know: NOT_FOUND, a failed probe.
    let unknown = sluice_config::HealthConfig {
        grpc_service: "shop.Nothing".into(),
        ..grpc_probe_config()
    };
    let err = probe(&addr, None, Http2, &unknown).await.unwrap_err();
    assert!(err.starts_with("grpc-status 5"), "{err}");

    // An HTTP/1.1 probe is what made every h2c-only backend look down.
    let http = sluice_config::HealthConfig::default();
    assert!(probe(&addr, None, Http1, &http).await.is_err());
    // HTTP mode over HTTP/2 (h2c) against an HTTP backend passes.
    let demo = sluice::demo::spawn_backend("blue", "v1", common::any_addr())
        .await
        .unwrap();
    assert_eq!(probe(&demo.addr.to_string(), None, Http2, &http).await, Ok(()));
}

/// A gRPC call sent with hyper (h2c) so that only sluice enforces its
/// `grpc-timeout` (grpcio's own client would cancel it itself): the
/// response head, its data and its trailers.
async fn call_with_timeout(
    proxy: SocketAddr,
    method: &str,
    timeout: &str,
) -> (http::HeaderMap, Vec<u8>, http::HeaderMap) {
    use http_body_util::BodyExt;
    let io = hyper_util::rt::TokioIo::new(tokio::net::TcpStream::connect(proxy).await.unwrap());
    let (mut sender, conn) = hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), io)
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = http::Request::post(format!("http://{proxy}/test.Echo/{method}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("grpc-timeout", timeout)
        .body(http_body_util::Full::new(bytes::Bytes::from_static(&[
            0, 0, 0, 0, 1, b'x',
        ])))
        .unwrap();
    let res = sender.send_request(req).await.unwrap();
    assert_eq!(res.status(), 200);
    let (head, body) = res.into_parts();
    let collected = body.collect().await.unwrap();
    let trailers = collected.trailers().cloned().unwrap_or_default();
    (head.headers, collected.to_bytes().to_vec(), trailers)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_timeout_is_the_calls_deadline_and_cancels_the_backend() {
    if !grpcio_present() {
        return;
    }
    let server = GrpcServer::start("blue");
    let toml = format!(
        "[proxy.timeouts]\nmax_grpc_timeout = \"400ms\"\n{}",
        grpc_pool("blue", 100, server.addr)
    );
    let proxy = common::start_proxy(&toml).await;

    // Before the response head: Trailers-Only DEADLINE_EXCEEDED.
    let started = tokio::time::Instant::now();
    let (head, _, _) = call_with_timeout(proxy.addr, "Stall", "200m").await;
    assert_eq!(head["grpc-status"], "4", "{head:?}");
    assert_eq!(head["x-sluice-error"], "upstream-timeout");
    // The cap: a call asking for 20 s gets max_grpc_timeout (400 ms).
    let (head, _, _) = call_with_timeout(proxy.addr, "Stall", "20S").await;
    assert_eq!(head["grpc-status"], "4", "{head:?}");
    // After the head and a first message: the stream ends with
    // DEADLINE_EXCEEDED in its trailers.
    let (head, data, trailers) = call_with_timeout(proxy.addr, "StallStream", "300m").await;
    assert!(!head.contains_key("grpc-status"), "{head:?}");
    assert_eq!(data, b"\0\0\0\0\x05first");
    assert_eq!(trailers["grpc-status"], "4", "{trailers:?}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );

    // The backend saw each of the three calls cancelled.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let out = call(server.addr, &["cancelled"]).await;
        if out["cancelled"] == 3 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "backend calls not cancelled: {out}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    // A call within its deadline is unaffected.
    let out = call(proxy.addr, &["unary", "3"]).await;
    assert_eq!(out["answers"]["blue"], 3, "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_serving_takes_a_grpc_backend_out_and_serving_brings_it_back() {
    use crate::common::running::Running;
    use crate::health_e2e::{TOKEN, healthy};
    use std::time::Duration;
    use tokio::time::Instant;
    if !grpcio_present() {
        return;
    }
    let (a, b) = (GrpcServer::start("a"), GrpcServer::start("b"));
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("token"), TOKEN).unwrap();
    let config = format!(
        "[proxy]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\n[[admin.tokens]]\n\
         name = \"ci\"\nrole = \"operator\"\nsecret = \"file:{d}/token\"\n[store]\nurl = \"sqlite://{d}/sluice.db\"\n\
         [health]\nmode = \"grpc\"\ninterval = \"200ms\"\ntimeout = \"150ms\"\nhealthy_threshold = 2\nunhealthy_threshold = 2\n\
         [pools.blue]\nversion = \"v1\"\nweight = 100\nprotocol = \"http2\"\nbackends = [\"{}\", \"{}\"]\n",
        a.addr,
        b.addr,
        d = dir.path().display()
    );
    let sluice = Running::start(dir.path(), &config, &[]);
    let c = common::client();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !(healthy(&c, &sluice, 0, 0).await && healthy(&c, &sluice, 0, 1).await) {
        assert!(Instant::now() < deadline, "gRPC backends never probed healthy");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    call(a.addr, &["set-health", "NOT_SERVING"]).await;
    let set = Instant::now();
    while healthy(&c, &sluice, 0, 0).await {
        assert!(
            set.elapsed() < Duration::from_secs(3),
            "NOT_SERVING backend still healthy"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // unhealthy_threshold (2) × interval, plus a probe and scheduling slack.
    assert!(
        set.elapsed() < Duration::from_millis(2 * 200 + 800),
        "took {:?}",
        set.elapsed()
    );
    let out = call(sluice.addr, &["unary", "40"]).await;
    assert_eq!(out["answers"], serde_json::json!({"b": 40}), "{out}");

    call(a.addr, &["set-health", "SERVING"]).await;
    let set = Instant::now();
    while !healthy(&c, &sluice, 0, 0).await {
        assert!(
            set.elapsed() < Duration::from_secs(3),
            "SERVING backend never came back"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let out = call(sluice.addr, &["unary", "200"]).await;
    assert!(out["answers"]["a"].as_u64().unwrap_or(0) > 40, "{out}");
    assert_eq!(out["failed"], serde_json::json!({}), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_calls_than_a_backend_allows_streams_wait_instead_of_failing() {
    if !grpcio_present() {
        return;
    }
    // The backend allows 100 concurrent streams; 300 one-second calls at once.
    let server = GrpcServer::start_with(&["blue", "max=100"]);
    let proxy = common::start_proxy(&grpc_pool("blue", 100, server.addr)).await;
    // One call first: the burst then meets an established connection.
    assert_eq!(call(proxy.addr, &["unary", "1"]).await["answers"]["blue"], 1);
    let started = tokio::time::Instant::now();
    let out = call(proxy.addr, &["concurrent", "300", "1"]).await;
    eprintln!("300 calls took {:?}", started.elapsed());
    assert_eq!(out["codes"], serde_json::json!({"OK": 300}), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_on_a_cold_backend_opens_one_connection() {
    // A plain HTTP/2 backend that counts connections: the first 50
    // requests arrive together, before any connection exists.
    let backend = sluice::demo::spawn_backend("blue", "v1", common::any_addr())
        .await
        .unwrap();
    let toml = format!(
        "{}protocol = \"http2\"\n",
        common::pool_toml("blue", 100, &[backend.addr])
    );
    let proxy = common::start_proxy(&toml).await;
    let client = common::client();
    let url = proxy.url("/");
    let calls: Vec<_> = (0..50)
        .map(|_| {
            let (client, url) = (client.clone(), url.clone());
            tokio::spawn(async move { common::get(&client, &url, &[]).await.0 })
        })
        .collect();
    for call in calls {
        assert_eq!(call.await.unwrap(), 200);
    }
    assert_eq!(backend.knobs.connections(), 1, "one HTTP/2 connection for the burst");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_in_flight_finish_when_the_backend_goes_away_gracefully() {
    if !grpcio_present() {
        return;
    }
    let mut server = GrpcServer::start("blue");
    let proxy = common::start_proxy(&grpc_pool("blue", 100, server.addr)).await;
    assert_eq!(call(proxy.addr, &["unary", "1"]).await["answers"]["blue"], 1);
    // Five two-second calls in flight on sluice's connection to it...
    let target = proxy.addr;
    let calls = tokio::spawn(async move { call(target, &["concurrent", "5", "2"]).await });
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while call(server.addr, &["sleeping"]).await["sleeping"] != 5 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the calls never reached the backend"
        );
    }
    // ...when it sends GOAWAY and stops: all five still succeed.
    server.stop_gracefully();
    let out = calls.await.unwrap();
    assert_eq!(out["codes"], serde_json::json!({"OK": 5}), "{out}");
}

/// The real binary with gRPC health probes, `blue` at 100 and `green` at 0;
/// then 50/50 under a stream of unary calls. Whether (and how fast) the
/// guard rolls green back, within `watch`.
async fn guard_with_green(green_args: &[&str], watch: std::time::Duration) -> Option<std::time::Duration> {
    use crate::common::running::Running;
    use crate::health_e2e::TOKEN;
    use http_body_util::BodyExt;
    let blue = GrpcServer::start("blue");
    let green = GrpcServer::start_with(green_args);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("token"), TOKEN).unwrap();
    let config = format!(
        "[proxy]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\n[[admin.tokens]]\n\
         name = \"ci\"\nrole = \"operator\"\nsecret = \"file:{d}/token\"\n[store]\nurl = \"sqlite://{d}/sluice.db\"\n\
         [health]\nmode = \"grpc\"\ninterval = \"500ms\"\ntimeout = \"400ms\"\n{}{}",
        grpc_pool("blue", 100, blue.addr),
        grpc_pool("green", 0, green.addr),
        d = dir.path().display()
    );
    let sluice = Running::start(dir.path(), &config, &[]);
    let c = common::client();
    let admin = |method: &str, path: &str, body: &str| {
        http::Request::builder()
            .method(method)
            .uri(format!("http://{}{path}", sluice.admin))
            .header("authorization", format!("Bearer {TOKEN}"))
            .header("content-type", "application/json")
            .body(http_body_util::Full::new(bytes::Bytes::from(body.to_owned())))
            .unwrap()
    };
    let res = c
        .request(admin(
            "PUT",
            "/api/v1/weights",
            r#"{"weights": {"blue": 50, "green": 50}}"#,
        ))
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let target = sluice.addr;
    let load = tokio::spawn(async move { call(target, &["unary", "3000"]).await });
    let started = tokio::time::Instant::now();
    let outcome = loop {
        let res = c.request(admin("GET", "/api/v1/pools", "")).await.unwrap();
        let pools: serde_json::Value =
            serde_json::from_slice(&res.into_body().collect().await.unwrap().to_bytes()).unwrap();
        if pools["pools"][1]["weight"] == 0 {
            break Some(started.elapsed());
        }
        if started.elapsed() > watch || load.is_finished() {
            break None;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    load.abort();
    outcome
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grpc_canary_failing_with_unavailable_is_rolled_back_and_not_found_is_not() {
    if !grpcio_present() {
        return;
    }
    // Every 10th call UNAVAILABLE (HTTP 200 every time): rolled back.
    let took = guard_with_green(&["green", "fail=UNAVAILABLE:10"], std::time::Duration::from_secs(30)).await;
    let took = took.expect("a canary failing 10% of calls with UNAVAILABLE was not rolled back");
    eprintln!("gRPC canary rolled back after {took:?}");
    // Every 10th call NOT_FOUND: the client's concern, never a rollback.
    let left = guard_with_green(&["green", "fail=NOT_FOUND:10"], std::time::Duration::from_secs(8)).await;
    assert_eq!(left, None, "a canary answering NOT_FOUND was rolled back");
}

/// Blue (100) and green (0) grpcio servers behind the real binary with
/// gRPC health probes.
fn grpc_blue_green(dir: &std::path::Path, blue: &GrpcServer, green: &GrpcServer) -> crate::common::running::Running {
    let config = format!(
        "[proxy]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\n[store]\nurl = \"sqlite://{d}/sluice.db\"\n\
         [health]\nmode = \"grpc\"\ninterval = \"500ms\"\ntimeout = \"400ms\"\n{}{}",
        grpc_pool("blue", 100, blue.addr),
        grpc_pool("green", 0, green.addr),
        d = dir.display()
    );
    crate::common::running::Running::start(dir, &config, &[])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grpc_canary_rollout_with_grpc_smoke_checks_promotes_itself() {
    use crate::rollout_e2e::{FAST, call as api, weights};
    if !grpcio_present() {
        return;
    }
    let (blue, green) = (GrpcServer::start("blue"), GrpcServer::start("green"));
    let dir = tempfile::tempdir().unwrap();
    let sluice = grpc_blue_green(dir.path(), &blue, &green);
    let c = common::client();
    let rollouts = format!("http://{}/api/v1/rollouts", sluice.admin);

    // A smoke call that ends with NOT_FOUND where OK is expected: no switch.
    let body = r#"{"from": "blue", "to": "green", "strategy": "blue-green",
        "smoke": [{"name": "lookup", "grpc": {"method": "/test.Echo/Unary", "message_base64": "ZmFpbDpOT1RfRk9VTkQ=", "expect_code": "OK"}}]}"#;
    assert_eq!(api(&c, "POST", rollouts.clone(), body).await.0, 200);
    let current = format!("{rollouts}/current");
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    let aborted = loop {
        let (_, now) = api(&c, "GET", current.clone(), "").await;
        if now["state"] == "aborted" {
            break now;
        }
        assert!(tokio::time::Instant::now() < deadline, "{now}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    let reason = aborted["reason"].as_str().unwrap();
    assert!(
        reason.contains("lookup") && reason.contains("expected OK, got NOT_FOUND"),
        "{aborted}"
    );
    assert_eq!(weights(&c, &sluice).await, (100, 0));

    // gRPC smoke checks that pass, then a canary judged by gRPC calls.
    let body = format!(
        r#"{{"from": "blue", "to": "green", "steps": [{{"weight": 25, "hold": "1s"}}, {{"weight": 100}}], {FAST},
        "smoke": [{{"name": "health", "grpc_health": {{"service": ""}}}},
                  {{"name": "echo", "grpc": {{"method": "/test.Echo/Unary", "message_base64": "aGk="}}}}]}}"#
    );
    let (status, started) = api(&c, "POST", rollouts.clone(), &body).await;
    assert_eq!(status, 200, "{started}");
    let target = sluice.addr;
    let load = tokio::spawn(async move { call(target, &["unary", "20000"]).await });
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    let done = loop {
        let (_, now) = api(&c, "GET", current.clone(), "").await;
        if now["state"] == "completed" {
            break now;
        }
        assert!(now["state"] != "aborted", "{now}");
        assert!(tokio::time::Instant::now() < deadline, "{now}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    load.abort();
    assert_eq!(done["smoke"].as_array().unwrap().len(), 2, "{done}");
    assert_eq!(weights(&c, &sluice).await, (0, 100));
    let out = call(sluice.addr, &["unary", "20"]).await;
    assert_eq!(out["answers"], serde_json::json!({"green": 20}), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_over_tls_at_the_edge_and_to_the_backends() {
    if !grpcio_present() {
        return;
    }
    // One CA signs sluice's certificate and the backends'.
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ca = common::test_ca();
    std::fs::write(d.join("ca.pem"), ca.pem()).unwrap();
    for name in ["edge", "backend"] {
        let leaf = common::leaf(&ca, &["localhost"]);
        std::fs::write(d.join(format!("{name}.crt")), &leaf.cert_pem).unwrap();
        std::fs::write(d.join(format!("{name}.key")), &leaf.key_pem).unwrap();
    }
    let tls = format!(
        "tls={}:{}",
        d.join("backend.crt").display(),
        d.join("backend.key").display()
    );
    let server = GrpcServer::start_with(&["blue", &tls]);
    let config = format!(
        "[proxy]\nlisten = \"127.0.0.1:0\"\n[proxy.tls]\nlisten = \"127.0.0.1:0\"\n[[proxy.tls.certificates]]\n\
         cert = \"file:{d}/edge.crt\"\nkey = \"file:{d}/edge.key\"\n[admin]\nlisten = \"127.0.0.1:0\"\n\
         [store]\nurl = \"sqlite://{d}/sluice.db\"\n[health]\nmode = \"grpc\"\ninterval = \"500ms\"\ntimeout = \"400ms\"\n\
         {}[pools.blue.tls]\nca = \"file:{d}/ca.pem\"\nserver_name = \"localhost\"\n",
        grpc_pool("blue", 100, server.addr),
        d = d.display()
    );
    let sluice = crate::common::running::Running::start(d, &config, &[]);
    let edge = sluice.tls.unwrap();
    let ca_file = d.join("ca.pem");
    // The TLS gRPC probe has to pass before traffic flows.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let out = call_with(edge, Some(&ca_file), &["fail", "NOT_FOUND"]).await;
        if out["code"] == "NOT_FOUND" {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "no call got through: {out}");
    }
    let out = call_with(edge, Some(&ca_file), &["unary", "200"]).await;
    assert_eq!(out["answers"]["blue"], 200, "{out}");
    assert_eq!(out["failed"], serde_json::json!({}), "{out}");
    let out = call_with(edge, Some(&ca_file), &["fail", "NOT_FOUND"]).await;
    assert_eq!(out["code"], "NOT_FOUND", "{out}");
    let out = call_with(edge, Some(&ca_file), &["stream", "500"]).await;
    assert_eq!(out["messages"], 500, "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_weight_flip_moves_new_calls_on_a_channel_at_once_and_streams_continue() {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
    if !grpcio_present() {
        return;
    }
    let (blue, green) = (GrpcServer::start("blue"), GrpcServer::start("green"));
    let toml = format!(
        "{}{}",
        grpc_pool("blue", 100, blue.addr),
        grpc_pool("green", 0, green.addr)
    );
    let proxy = common::start_proxy(&toml).await;
    let mut client = tokio::process::Command::new("python3")
        .args([PEER, "client", &proxy.addr.to_string(), "flip", "50"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(client.stdout.take().unwrap()).lines();
    let before: Value = serde_json::from_str(&lines.next_line().await.unwrap().unwrap()).unwrap();
    assert_eq!(before["before"], serde_json::json!({"blue": 50}), "{before}");
    // The flip, while a server stream from blue is in flight on the channel.
    let weights = [("blue".to_owned(), 0), ("green".to_owned(), 100)]
        .into_iter()
        .collect();
    proxy.routing.set_weights(&weights, "test", false).await.unwrap();
    let mut stdin = client.stdin.take().unwrap();
    stdin.write_all(b"go\n").await.unwrap();
    let after: Value = serde_json::from_str(&lines.next_line().await.unwrap().unwrap()).unwrap();
    assert_eq!(after["after"], serde_json::json!({"green": 50}), "{after}");
    let stream = after["stream"].as_array().unwrap();
    assert_eq!(stream.len(), 40, "{after}");
    assert!(stream.iter().all(|who| who == "blue"), "{after}");
    assert!(client.wait().await.unwrap().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_server_stream_survives_weight_flips_a_reload_and_a_goaway_elsewhere() {
    use crate::common::running::Running;
    use crate::health_e2e::TOKEN;
    use std::time::Duration;
    if !grpcio_present() {
        return;
    }
    let (blue, mut green) = (GrpcServer::start("blue"), GrpcServer::start("green"));
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("token"), TOKEN).unwrap();
    let config = |upstream_response: &str| {
        format!(
            "[proxy]\nlisten = \"127.0.0.1:0\"\n[proxy.timeouts]\nupstream_response = \"{upstream_response}\"\n\
             [admin]\nlisten = \"127.0.0.1:0\"\n[[admin.tokens]]\nname = \"ci\"\nrole = \"operator\"\n\
             secret = \"file:{d}/token\"\n[store]\nurl = \"sqlite://{d}/sluice.db\"\n\
             [health]\nmode = \"grpc\"\ninterval = \"500ms\"\ntimeout = \"400ms\"\n{}{}",
            grpc_pool("blue", 100, blue.addr),
            grpc_pool("green", 0, green.addr),
            d = dir.path().display()
        )
    };
    let sluice = Running::start(dir.path(), &config("30s"), &[]);
    let c = common::client();
    let weights = |blue: u32| {
        http::Request::put(format!("http://{}/api/v1/weights", sluice.admin))
            .header("authorization", format!("Bearer {TOKEN}"))
            .header("content-type", "application/json")
            .body(http_body_util::Full::new(bytes::Bytes::from(format!(
                r#"{{"weights": {{"blue": {blue}, "green": {}}}}}"#,
                100 - blue
            ))))
            .unwrap()
    };

    // A server stream of 200 messages, 50 ms apart (10 s), from blue.
    let target = sluice.addr;
    let stream = tokio::spawn(async move { call(target, &["stream", "200", "0.05"]).await });
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while call(blue.addr, &["streams"]).await["streams"] != 1 {
        assert!(tokio::time::Instant::now() < deadline, "the stream never reached blue");
    }
    // 20 weight flips, with calls that follow each to its pool (so green
    // has a connection of sluice's for its GOAWAY below).
    for flip in 0..20 {
        let to_blue = if flip % 2 == 0 { 0 } else { 100 };
        assert_eq!(c.request(weights(to_blue)).await.unwrap().status(), 200);
        let out = call(sluice.addr, &["unary", "2"]).await;
        let expected = if to_blue == 100 { "blue" } else { "green" };
        assert_eq!(out["answers"][expected], 2, "flip {flip}: {out}");
    }
    // A reload.
    let tmp = dir.path().join("sluice.toml.new");
    std::fs::write(&tmp, config("31s")).unwrap();
    std::fs::rename(&tmp, &sluice.config).unwrap();
    sluice.wait_log("config reloaded", Duration::from_secs(10));
    // Green's backend sends GOAWAY on its connection and stops.
    green.stop_gracefully();

    let out = stream.await.unwrap();
    assert_eq!(out["messages"], 200, "{out}");
    assert_eq!(out["senders"], serde_json::json!(["blue"]), "{out}");
}
