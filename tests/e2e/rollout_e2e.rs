//! Rollouts through the real binary: a canary that promotes itself, one
//! that fails its analysis and reverses, a smoke failure that never
//! switches, a manual gate, and a blue-green switch under load that fails
//! no request.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::common::load::{Tally, start_load};
use crate::common::running::Running;
use crate::common::*;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use serde_json::Value;
use tokio::time::Instant;

pub(crate) fn config(dir: &Path, blue: SocketAddr, green: SocketAddr) -> String {
    format!(
        r#"[proxy]
listen = "127.0.0.1:0"
[admin]
listen = "127.0.0.1:0"
[store]
url = "sqlite://{d}/sluice.db"
[health]
interval = "1s"
timeout = "500ms"
{}{}"#,
        pool_toml("blue", 100, &[blue]),
        pool_toml("green", 0, &[green]),
        d = dir.display()
    )
}

/// Blue (100) and green (0) demo backends behind a running sluice.
pub(crate) async fn blue_green_sluice() -> (DemoBackend, DemoBackend, tempfile::TempDir, Running) {
    let blue = spawn_backend("blue", "v1", any_addr()).await.unwrap();
    let green = spawn_backend("green", "v2", any_addr()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let sluice = Running::start(dir.path(), &config(dir.path(), blue.addr, green.addr), &[]);
    (blue, green, dir, sluice)
}

pub(crate) async fn call(c: &TestClient, method: &str, url: String, body: &str) -> (u16, Value) {
    let req = http::Request::builder()
        .method(method)
        .uri(url)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_owned())))
        .unwrap();
    let res = c.request(req).await.unwrap();
    let status = res.status().as_u16();
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

/// Waits for the current rollout to reach `state`, sending a request now
/// and then so the windows have traffic.
pub(crate) async fn wait_state(c: &TestClient, sluice: &Running, state: &str, within: Duration) -> Value {
    let started = Instant::now();
    loop {
        let (_, current) = call(c, "GET", format!("http://{}/api/v1/rollouts/current", sluice.admin), "").await;
        if current["state"] == state {
            return current;
        }
        assert!(started.elapsed() < within, "rollout never reached {state}: {current}");
        for _ in 0..10 {
            get(c, &format!("http://{}/", sluice.addr), &[]).await;
        }
    }
}

/// Waits for the stored history (written by a queue behind the engine) to
/// show the latest rollout in `state`.
pub(crate) async fn wait_stored_state(c: &TestClient, sluice: &Running, state: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, list) = call(c, "GET", format!("http://{}/api/v1/rollouts", sluice.admin), "").await;
        if list["rollouts"][0]["state"] == state {
            return;
        }
        assert!(Instant::now() < deadline, "{list}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub(crate) async fn weights(c: &TestClient, sluice: &Running) -> (u64, u64) {
    let (_, p) = call(c, "GET", format!("http://{}/api/v1/pools", sluice.admin), "").await;
    (
        p["pools"][0]["weight"].as_u64().unwrap(),
        p["pools"][1]["weight"].as_u64().unwrap(),
    )
}

pub(crate) const FAST: &str =
    r#""analysis": {"interval": "200ms", "min_requests": 20, "max_failed_checks": 2}, "post_promotion": "1s""#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_healthy_canary_promotes_itself() {
    let (_blue, _green, _dir, sluice) = blue_green_sluice().await;
    let c = client();
    let body = format!(
        r#"{{"from": "blue", "to": "green", "steps": [{{"weight": 5, "hold": "1s"}}, {{"weight": 25, "hold": "1s"}}, {{"weight": 100}}], {FAST}}}"#
    );
    let (status, started) = call(&c, "POST", format!("http://{}/api/v1/rollouts", sluice.admin), &body).await;
    assert_eq!(status, 200, "{started}");
    // A second one is refused while this one runs.
    let (status, _) = call(&c, "POST", format!("http://{}/api/v1/rollouts", sluice.admin), &body).await;
    assert_eq!(status, 409);
    wait_state(&c, &sluice, "completed", Duration::from_secs(20)).await;
    assert_eq!(weights(&c, &sluice).await, (0, 100));
    for _ in 0..20 {
        assert_eq!(
            pool_of(&get(&c, &format!("http://{}/", sluice.addr), &[]).await.2),
            "green"
        );
    }
    // The history is written by a queue behind the engine: it catches up.
    wait_stored_state(&c, &sluice, "completed").await;
    let (_, _, scrape) = get(&c, &format!("http://{}/metrics", sluice.admin), &[]).await;
    assert!(
        scrape.contains("sluice_rollout_state{state=\"completed\"} 1"),
        "{scrape}"
    );
    assert!(
        scrape.contains("sluice_rollout_step{from=\"blue\",to=\"green\"} 0"),
        "{scrape}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_canary_aborts_and_restores_the_weights() {
    let (_blue, green, _dir, sluice) = blue_green_sluice().await;
    green.knobs.set_error_rate(0.3);
    let c = client();
    let body = format!(
        r#"{{"from": "blue", "to": "green", "steps": [{{"weight": 50, "hold": "30s"}}, {{"weight": 100}}], {FAST}}}"#
    );
    assert_eq!(
        call(&c, "POST", format!("http://{}/api/v1/rollouts", sluice.admin), &body)
            .await
            .0,
        200
    );
    let aborted = wait_state(&c, &sluice, "aborted", Duration::from_secs(20)).await;
    assert!(
        aborted["reason"].as_str().unwrap().contains("green error ratio"),
        "{aborted}"
    );
    assert_eq!(weights(&c, &sluice).await, (100, 0));
    let reached = green.knobs.received();
    for _ in 0..200 {
        get(&c, &format!("http://{}/", sluice.addr), &[]).await;
    }
    assert_eq!(
        green.knobs.received(),
        reached,
        "requests reached green after the abort"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_smoke_check_never_switches() {
    let (_blue, green, _dir, sluice) = blue_green_sluice().await;
    let c = client();
    let body = r#"{"from": "blue", "to": "green", "strategy": "blue-green",
        "smoke": [{"name": "version", "path": "/version", "json_pointer": "/version", "json_equals": "v9"}]}"#;
    assert_eq!(
        call(&c, "POST", format!("http://{}/api/v1/rollouts", sluice.admin), body)
            .await
            .0,
        200
    );
    let aborted = wait_state(&c, &sluice, "aborted", Duration::from_secs(10)).await;
    let reason = aborted["reason"].as_str().unwrap();
    assert!(
        reason.contains("smoke check failed: version") && reason.contains("v9"),
        "{aborted}"
    );
    assert_eq!(weights(&c, &sluice).await, (100, 0));
    assert_eq!(green.knobs.received(), 1, "only the smoke check reached green");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manual_gate_waits_for_promote() {
    let (_blue, _green, _dir, sluice) = blue_green_sluice().await;
    let c = client();
    let body = format!(
        r#"{{"from": "blue", "to": "green", "steps": [{{"weight": 10, "hold": "0s"}}, {{"pause": true}}, {{"weight": 100}}], {FAST}}}"#
    );
    assert_eq!(
        call(&c, "POST", format!("http://{}/api/v1/rollouts", sluice.admin), &body)
            .await
            .0,
        200
    );
    let paused = wait_state(&c, &sluice, "paused", Duration::from_secs(10)).await;
    assert_eq!(paused["step"], 2);
    assert!(
        paused["hold_remaining_seconds"].is_null(),
        "a gate has no end: {paused}"
    );
    // It stays at the gate.
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(weights(&c, &sluice).await, (90, 10));
    let (status, _) = call(
        &c,
        "POST",
        format!("http://{}/api/v1/rollouts/current/promote", sluice.admin),
        "",
    )
    .await;
    assert_eq!(status, 200);
    wait_state(&c, &sluice, "completed", Duration::from_secs(10)).await;
    assert_eq!(weights(&c, &sluice).await, (0, 100));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blue_green_switch_under_load_fails_no_request() {
    let (_blue, _green, _dir, sluice) = blue_green_sluice().await;
    let c = client();
    let (stop, tally) = (Arc::new(AtomicBool::new(false)), Arc::new(Tally::default()));
    let load = start_load(
        &format!("http://{}/", sluice.addr),
        50,
        0,
        &tally,
        &Arc::new(AtomicBool::new(false)),
        &stop,
    );
    let body = r#"{"from": "blue", "to": "green", "strategy": "blue-green", "post_promotion": "1s",
        "smoke": [
            {"name": "health", "path": "/health/ready"},
            {"name": "home", "method": "POST", "path": "/", "headers": {"x-smoke": "1"}, "body": "{}", "body_contains": "\"pool\":\"green\""},
            {"name": "version", "path": "/version", "json_pointer": "/version", "json_equals": "v2", "max_latency": "500ms"}
        ]}"#;
    let began = Instant::now();
    assert_eq!(
        call(&c, "POST", format!("http://{}/api/v1/rollouts", sluice.admin), body)
            .await
            .0,
        200
    );
    let done = wait_state(&c, &sluice, "monitoring", Duration::from_secs(30)).await;
    let switched_in = began.elapsed();
    assert_eq!(done["smoke"].as_array().unwrap().len(), 3, "{done}");
    for _ in 0..50 {
        assert_eq!(
            pool_of(&get(&c, &format!("http://{}/", sluice.addr), &[]).await.2),
            "green"
        );
    }
    wait_state(&c, &sluice, "completed", Duration::from_secs(10)).await;
    stop.store(true, Ordering::Relaxed);
    for t in load {
        t.await.unwrap();
    }
    let (ok, failed) = (tally.ok(), tally.failed());
    eprintln!(
        "blue-green deployment (health gate + 3 smoke checks + switch) in {switched_in:?}; {ok} requests, {failed} failed"
    );
    assert!(ok > 500);
    assert_eq!(failed, 0);
    assert!(switched_in < Duration::from_secs(10), "took {switched_in:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollout_survives_kill_9_and_continues_after_restart() {
    let blue = spawn_backend("blue", "v1", any_addr()).await.unwrap();
    let green = spawn_backend("green", "v2", any_addr()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let text = config(dir.path(), blue.addr, green.addr);
    let mut first = Running::start(dir.path(), &text, &[]);
    let c = client();
    let body = format!(
        r#"{{"from": "blue", "to": "green", "steps": [{{"weight": 5, "hold": "0s"}}, {{"weight": 25, "hold": "60s"}}, {{"weight": 100}}], {FAST}}}"#
    );
    assert_eq!(
        call(&c, "POST", format!("http://{}/api/v1/rollouts", first.admin), &body)
            .await
            .0,
        200
    );
    // Step 2 holding: the API says what is left of its 60 s.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, current) = call(&c, "GET", format!("http://{}/api/v1/rollouts/current", first.admin), "").await;
        if current["step"] == 2
            && let Some(left) = current["hold_remaining_seconds"].as_f64()
        {
            assert!(left > 50.0 && left <= 60.0, "{current}");
            break;
        }
        assert!(Instant::now() < deadline, "step 2 never held: {current}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Wait for the step to be stored, then die without any shutdown.
    let store_url = format!("sqlite://{}/sluice.db", dir.path().display());
    let store = sluice_store::Store::connect(&store_url).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while store.rollouts(1).await.unwrap()[0].current_step != 2 {
        assert!(Instant::now() < deadline, "step 2 never stored");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    store.close().await;
    first.child.kill().unwrap();
    first.child.wait().unwrap();

    let second = Running::start(dir.path(), &text, &[]);
    // The stored weights are served at once, and the rollout is back at step 2.
    assert_eq!(weights(&c, &second).await, (75, 25));
    let (_, current) = call(
        &c,
        "GET",
        format!("http://{}/api/v1/rollouts/current", second.admin),
        "",
    )
    .await;
    assert_eq!(
        (current["state"].as_str(), current["step"].as_u64()),
        (Some("step"), Some(2)),
        "{current}"
    );
    assert_eq!(
        call(
            &c,
            "POST",
            format!("http://{}/api/v1/rollouts/current/promote", second.admin),
            ""
        )
        .await
        .0,
        200
    );
    wait_state(&c, &second, "completed", Duration::from_secs(10)).await;
    assert_eq!(weights(&c, &second).await, (0, 100));
    let (_, list) = call(&c, "GET", format!("http://{}/api/v1/rollouts", second.admin), "").await;
    assert_eq!(list["rollouts"][1]["state"], "resumed", "{list}");
}
