//! gRPC health probes: HTTP/2 probes, the gRPC health checking protocol,
//! and NOT_SERVING taking a backend out of the real binary's rotation.

use super::*;
use crate::common;

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
