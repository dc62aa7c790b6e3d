//! Active health checks through the real binary: a dead backend leaves
//! rotation within fall × interval and comes back after rise × interval; a
//! pool with no healthy backend hands its traffic to the others; a backend
//! added at runtime gets traffic only after it passes a probe.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use crate::common::running::Running;
use crate::common::*;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use tokio::time::Instant;

pub(crate) const TOKEN: &str = "health-test";
const INTERVAL_MS: u64 = 200;

fn config(dir: &Path, blue: &[SocketAddr], green: &[SocketAddr], green_weight: u32) -> String {
    std::fs::write(dir.join("token"), TOKEN).unwrap();
    format!(
        r#"[proxy]
listen = "127.0.0.1:0"
[proxy.timeouts]
connect = "300ms"
[admin]
listen = "127.0.0.1:0"
[[admin.tokens]]
name = "ci"
role = "operator"
secret = "file:{d}/token"
[store]
url = "sqlite://{d}/sluice.db"
[health]
interval = "{INTERVAL_MS}ms"
timeout = "150ms"
healthy_threshold = 2
unhealthy_threshold = 2
{}{}"#,
        pool_toml("blue", 100 - green_weight, blue),
        pool_toml("green", green_weight, green),
        d = dir.display()
    )
}

pub(crate) async fn pools(c: &TestClient, sluice: &Running) -> serde_json::Value {
    let req = http::Request::get(format!("http://{}/api/v1/pools", sluice.admin))
        .header("authorization", format!("Bearer {TOKEN}"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let body = c
        .request(req)
        .await
        .unwrap()
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes();
    serde_json::from_slice(&body).unwrap()
}

pub(crate) async fn healthy(c: &TestClient, sluice: &Running, pool: usize, backend: usize) -> bool {
    pools(c, sluice).await["pools"][pool]["backends"][backend]["healthy"] == true
}

/// Clients sending requests until stopped; counts failures after `since`.
struct Load {
    stop: Arc<AtomicBool>,
    failures_after_mark: Arc<AtomicU64>,
    marked: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    fn start(url: String, clients: usize) -> Load {
        let (stop, marked) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicBool::new(false)));
        let (failures_after_mark, ok) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let c = client();
        let tasks = (0..clients)
            .map(|_| {
                let (c, url, stop, marked, fails, ok) = (
                    c.clone(),
                    url.clone(),
                    stop.clone(),
                    marked.clone(),
                    failures_after_mark.clone(),
                    ok.clone(),
                );
                tokio::spawn(async move {
                    while !stop.load(Ordering::Relaxed) {
                        // Only requests that start after the mark count.
                        let counted = marked.load(Ordering::Acquire);
                        let req = http::Request::get(&url).body(Full::new(Bytes::new())).unwrap();
                        let good = match c.request(req).await {
                            Ok(res) if res.status() == 200 => res.into_body().collect().await.is_ok(),
                            _ => false,
                        };
                        if good {
                            ok.fetch_add(1, Ordering::Relaxed);
                        } else if counted {
                            fails.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                })
            })
            .collect();
        Load {
            stop,
            failures_after_mark,
            marked,
            ok,
            tasks,
        }
    }

    /// From now on, failed requests count.
    fn mark(&self) {
        self.marked.store(true, Ordering::Release);
    }

    async fn finish(self) -> (u64, u64) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            t.await.unwrap();
        }
        (
            self.ok.load(Ordering::Relaxed),
            self.failures_after_mark.load(Ordering::Relaxed),
        )
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_backend_leaves_rotation_and_returns_when_healthy() {
    let b1 = spawn_backend("blue", "v1", any_addr()).await.unwrap();
    let b2 = spawn_backend("blue", "v1", any_addr()).await.unwrap();
    let green = spawn_backend("green", "v2", any_addr()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let sluice = Running::start(
        dir.path(),
        &config(dir.path(), &[b1.addr, b2.addr], &[green.addr], 0),
        &[],
    );
    let c = client();
    let load = Load::start(format!("http://{}/", sluice.addr), 8);

    b1.stop();
    let killed = Instant::now();
    while healthy(&c, &sluice, 0, 0).await {
        assert!(
            killed.elapsed() < Duration::from_secs(3),
            "dead backend still marked healthy"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let detected = killed.elapsed();
    // fall (2) × interval, plus a probe timeout and scheduling slack.
    assert!(
        detected < Duration::from_millis(2 * INTERVAL_MS + 800),
        "took {detected:?}"
    );
    load.mark();
    tokio::time::sleep(Duration::from_millis(500)).await;

    // Back on the same port.
    let revived = spawn_backend("blue", "v1", b1.addr).await.unwrap();
    let restarted = Instant::now();
    while !healthy(&c, &sluice, 0, 0).await {
        assert!(
            restarted.elapsed() < Duration::from_secs(3),
            "revived backend never came back"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    wait_until(Duration::from_secs(3), "traffic to reach the revived backend", || {
        revived.knobs.received() > 0
    })
    .await;
    let (ok, failed) = load.finish().await;
    eprintln!("detected a dead backend after {detected:?}; {ok} requests ok");
    assert!(ok > 100);
    assert_eq!(failed, 0, "requests failed after the dead backend left rotation");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_without_healthy_backends_fails_over_to_the_others() {
    let blue = spawn_backend("blue", "v1", any_addr()).await.unwrap();
    let green = spawn_backend("green", "v2", any_addr()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let sluice = Running::start(dir.path(), &config(dir.path(), &[blue.addr], &[green.addr], 50), &[]);
    let c = client();
    let load = Load::start(format!("http://{}/", sluice.addr), 8);
    green.stop();
    let killed = Instant::now();
    loop {
        let p = pools(&c, &sluice).await;
        if p["pools"][1]["effective_weight"] == 0 {
            assert_eq!(p["pools"][1]["weight"], 50, "configured weights stay as they were");
            break;
        }
        assert!(killed.elapsed() < Duration::from_secs(3), "green kept its share: {p}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    load.mark();
    tokio::time::sleep(Duration::from_millis(800)).await;
    let (ok, failed) = load.finish().await;
    assert!(ok > 100);
    assert_eq!(failed, 0, "requests failed after green's share moved to blue");
    // The audit trail recorded the backend going down.
    let store = sluice_store::Store::connect(&format!("sqlite://{}/sluice.db", dir.path().display()))
        .await
        .unwrap();
    let rows = store
        .audit(&sluice_store::AuditQuery {
            action: Some("backend.down".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(
        rows.iter().any(|r| r.entry.target.contains(&green.addr.to_string())),
        "{rows:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_added_at_runtime_gets_traffic_only_after_a_probe() {
    let blue = spawn_backend("blue", "v1", any_addr()).await.unwrap();
    let green = spawn_backend("green", "v2", any_addr()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let sluice = Running::start(dir.path(), &config(dir.path(), &[blue.addr], &[green.addr], 0), &[]);
    let c = client();
    // A backend that is not there yet: added, it must never get traffic.
    let later = closed_port().await;
    let req = http::Request::post(format!("http://{}/api/v1/pools/blue/backends", sluice.admin))
        .header("authorization", format!("Bearer {TOKEN}"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(format!(r#"{{"addr": "{later}"}}"#))))
        .unwrap();
    assert_eq!(c.request(req).await.unwrap().status(), 200);
    for _ in 0..200 {
        assert_eq!(get(&c, &format!("http://{}/", sluice.addr), &[]).await.0, 200);
    }
    assert!(!healthy(&c, &sluice, 0, 1).await);
    // Once something answers there, it joins after one passing probe.
    let load = Load::start(format!("http://{}/", sluice.addr), 2);
    let arrived = spawn_backend("blue", "v1", later).await.unwrap();
    wait_until(Duration::from_secs(3), "the new backend to get traffic", || {
        arrived.knobs.received() > 0
    })
    .await;
    load.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_failing_in_a_row_is_ejected_but_never_half_the_pool() {
    let bad = spawn_backend("blue", "v1", any_addr()).await.unwrap();
    let good = spawn_backend("blue", "v1", any_addr()).await.unwrap();
    let green = spawn_backend("green", "v2", any_addr()).await.unwrap();
    // Health checks pass (the probe path answers 200); real requests fail.
    bad.knobs.set_error_rate(1.0);
    let dir = tempfile::tempdir().unwrap();
    let sluice = Running::start(
        dir.path(),
        &config(dir.path(), &[bad.addr, good.addr], &[green.addr], 0),
        &[],
    );
    let c = client();
    let url = format!("http://{}/", sluice.addr);
    let mut failures = 0;
    for _ in 0..100 {
        if get(&c, &url, &[]).await.0 != 200 {
            failures += 1;
        }
    }
    assert!(
        failures <= 6,
        "{failures} failures: the bad backend was not ejected after 5 in a row"
    );
    let p = pools(&c, &sluice).await;
    assert_eq!(p["pools"][0]["backends"][0]["ejected"], true, "{p}");
    for _ in 0..100 {
        assert_eq!(get(&c, &url, &[]).await.0, 200, "a request reached the ejected backend");
    }
    // Now the good one fails too: ejecting it would empty the pool's half.
    good.knobs.set_error_rate(1.0);
    for _ in 0..30 {
        get(&c, &url, &[]).await;
    }
    let p = pools(&c, &sluice).await;
    assert_eq!(
        p["pools"][0]["backends"][1]["ejected"], false,
        "more than half the pool was ejected: {p}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_back_from_the_dead_ramps_up_over_slow_start() {
    let b1 = spawn_backend("blue", "v1", any_addr()).await.unwrap();
    let b2 = spawn_backend("blue", "v1", any_addr()).await.unwrap();
    let green = spawn_backend("green", "v2", any_addr()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "{}[pools.blue.health]\nslow_start = \"3s\"\n",
        config(dir.path(), &[b1.addr, b2.addr], &[green.addr], 0)
    );
    let sluice = Running::start(dir.path(), &text, &[]);
    let c = client();
    b1.stop();
    wait_for_health(&c, &sluice, false).await;
    let revived = spawn_backend("blue", "v1", b1.addr).await.unwrap();
    wait_for_health(&c, &sluice, true).await;
    let back = Instant::now();
    // Requests one at a time: with nothing in flight, two backends would
    // each get half.
    let share = |until: Instant| {
        let (c, url, revived) = (c.clone(), format!("http://{}/", sluice.addr), &revived);
        async move {
            let (before, mut sent) = (revived.knobs.received(), 0u64);
            while Instant::now() < until {
                assert_eq!(get(&c, &url, &[]).await.0, 200);
                sent += 1;
            }
            (revived.knobs.received() - before) as f64 / sent as f64
        }
    };
    let first = share(back + Duration::from_secs(1)).await;
    tokio::time::sleep_until(back + Duration::from_millis(3200)).await;
    let after = share(Instant::now() + Duration::from_secs(1)).await;
    eprintln!("revived backend's share: {first:.3} in its first second, {after:.3} after the ramp");
    // From a tenth of its half towards 40% of it within the first second.
    assert!(first < 0.3, "first second: {first:.3}");
    assert!(after > 0.35, "after the ramp: {after:.3}");
}

/// Polls the API until the first blue backend's health is `healthy`.
async fn wait_for_health(c: &TestClient, sluice: &Running, want: bool) {
    let start = Instant::now();
    while healthy(c, sluice, 0, 0).await != want {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "backend never became healthy={want}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
