//! gRPC outcomes counted by `grpc-status`: windows, statuses, sluice's own
//! failures in gRPC's terms, the rollback guard and rollouts with gRPC
//! smoke checks.

use super::*;
use crate::common;

/// What the pool `name` counted: `(requests by HTTP status, gRPC calls by
/// code name, window error ratio)`.
type Counted = (Vec<(u16, u64)>, Vec<(&'static str, u64)>, f64);

fn counted(proxy: &common::TestProxy, name: &str) -> Counted {
    let table = proxy.routing.snapshot();
    let pool = table.pool(name).unwrap();
    let codes = sluice_routing::grpc::CODE_NAMES
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

/// The real binary with gRPC health probes, `blue` at 100 and `green` at 0;
/// then 50/50 under a stream of unary calls. Whether (and how fast) the
/// guard rolls green back, within `watch`; and the pools as last seen.
async fn guard_with_green(
    green_args: &[&str],
    watch: std::time::Duration,
) -> (Option<std::time::Duration>, serde_json::Value) {
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
            break (Some(started.elapsed()), pools);
        }
        if started.elapsed() > watch || load.is_finished() {
            break (None, pools);
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
    let (took, _) = guard_with_green(&["green", "fail=UNAVAILABLE:10"], std::time::Duration::from_secs(30)).await;
    let took = took.expect("a canary failing 10% of calls with UNAVAILABLE was not rolled back");
    eprintln!("gRPC canary rolled back after {took:?}");
    // Every 10th call NOT_FOUND: the client's concern, never a rollback,
    // though green answered enough of them for the guard to judge.
    let (left, pools) = guard_with_green(&["green", "fail=NOT_FOUND:10"], std::time::Duration::from_secs(8)).await;
    assert_eq!(left, None, "a canary answering NOT_FOUND was rolled back");
    let not_found = pools["pools"][1]["grpc"]["NOT_FOUND"].as_u64().unwrap_or(0);
    assert!(not_found >= 2, "green answered too few calls to be judged: {pools}");
    assert_eq!(pools["pools"][1]["weight"], 50, "{pools}");
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
    use crate::rollout_e2e::{call as api, weights};
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

    // gRPC smoke checks that pass, then a canary judged by gRPC calls. The
    // latency comparison is off: blue and green are two Python processes
    // whose sub-millisecond answers differ by themselves (green, the
    // younger, was slower in up to 82% of pairs on either engine), which
    // is not what this test is about.
    let body = r#"{"from": "blue", "to": "green", "steps": [{"weight": 25, "hold": "1s"}, {"weight": 100}],
        "analysis": {"interval": "200ms", "min_requests": 20, "max_failed_checks": 2, "max_slower_share": 1.0}, "post_promotion": "1s",
        "smoke": [{"name": "health", "grpc_health": {"service": ""}},
                  {"name": "echo", "grpc": {"method": "/test.Echo/Unary", "message_base64": "aGk="}}]}"#;
    let (status, started) = api(&c, "POST", rollouts.clone(), body).await;
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
    // The API (and the dashboard with it) shows the pools' gRPC codes.
    let (_, pools) = api(&c, "GET", format!("http://{}/api/v1/pools", sluice.admin), "").await;
    let green_ok = pools["pools"][1]["grpc"]["OK"].as_u64().unwrap_or(0);
    assert!(green_ok >= 20, "{pools}");
    assert_eq!(
        pools["pools"][1]["grpc"].as_object().unwrap().len(),
        1,
        "only OK: {pools}"
    );
}
