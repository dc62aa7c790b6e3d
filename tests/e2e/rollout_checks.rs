//! A rollout's external checks and gates against real peers: a webhook
//! gate that holds the rollout until it answers 2xx (and aborts it at its
//! timeout), a webhook check that fails the step, and Prometheus queries
//! against a real Prometheus scraping sluice itself (a bound breached
//! fails the step; a Prometheus that is down fails it too, never passes).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::time::Instant;

use crate::common::running::Running;
use crate::common::*;
use crate::rollout_e2e::{blue_green_sluice, call, wait_state, weights};

const QUICK: &str = r#""analysis": {"interval": "200ms", "min_requests": 20, "max_failed_checks": 2"#;

/// A webhook that answers `status` (changeable) and counts its calls.
struct Webhook {
    url: String,
    status: Arc<AtomicU16>,
    calls: Arc<AtomicU64>,
}

async fn webhook(status: u16) -> Webhook {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (answer, calls) = (Arc::new(AtomicU16::new(status)), Arc::new(AtomicU64::new(0)));
    let (a, c) = (Arc::clone(&answer), Arc::clone(&calls));
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = listener.accept().await else { return };
            let (a, c) = (Arc::clone(&a), Arc::clone(&c));
            tokio::spawn(async move {
                let svc = service_fn(move |_req: http::Request<hyper::body::Incoming>| {
                    c.fetch_add(1, Ordering::SeqCst);
                    let status = a.load(Ordering::SeqCst);
                    async move {
                        let mut res = http::Response::new(http_body_util::Full::new(bytes::Bytes::new()));
                        *res.status_mut() = http::StatusCode::from_u16(status).unwrap();
                        Ok::<_, std::convert::Infallible>(res)
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    Webhook {
        url: format!("http://{addr}/approve"),
        status: answer,
        calls,
    }
}

/// Starts a rollout; its id.
async fn start(c: &TestClient, sluice: &Running, body: &str) -> u64 {
    let (status, started) = call(c, "POST", format!("http://{}/api/v1/rollouts", sluice.admin), body).await;
    assert_eq!(status, 200, "{started}");
    started["id"].as_u64().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_gate_holds_the_rollout_until_it_answers_2xx() {
    let (_blue, _green, _dir, sluice) = blue_green_sluice().await;
    let hook = webhook(503).await;
    let c = client();
    let body = format!(
        r#"{{"from": "blue", "to": "green", "steps": [{{"weight": 10}}, {{"gate": {{"webhook": {{"url": "{}", "interval": "200ms", "timeout": "60s"}}}}}}, {{"weight": 100}}], {QUICK}}}, "post_promotion": "0s"}}"#,
        hook.url
    );
    start(&c, &sluice, &body).await;
    let waiting = wait_state(&c, &sluice, "paused", Duration::from_secs(20)).await;
    assert!(
        waiting["reason"].as_str().unwrap().contains("gate: waiting for"),
        "{waiting}"
    );
    assert_eq!(weights(&c, &sluice).await, (90, 10));
    // Asked again and again; still held.
    let asked = hook.calls.load(Ordering::SeqCst);
    wait_until(Duration::from_secs(10), "asked again", || {
        hook.calls.load(Ordering::SeqCst) >= asked + 3
    })
    .await;
    assert_eq!(weights(&c, &sluice).await, (90, 10));
    hook.status.store(200, Ordering::SeqCst);
    wait_state(&c, &sluice, "completed", Duration::from_secs(20)).await;
    assert_eq!(weights(&c, &sluice).await, (0, 100));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gate_never_answered_2xx_aborts_at_its_timeout() {
    let (_blue, _green, _dir, sluice) = blue_green_sluice().await;
    let hook = webhook(403).await;
    let c = client();
    let body = format!(
        r#"{{"from": "blue", "to": "green", "steps": [{{"weight": 10}}, {{"gate": {{"webhook": {{"url": "{}", "interval": "200ms", "timeout": "2s"}}}}}}, {{"weight": 100}}], {QUICK}}}}}"#,
        hook.url
    );
    start(&c, &sluice, &body).await;
    let aborted = wait_state(&c, &sluice, "aborted", Duration::from_secs(20)).await;
    let reason = aborted["reason"].as_str().unwrap();
    assert!(reason.starts_with("gate not passed within 2s"), "{reason}");
    assert!(reason.contains("answered 403 Forbidden"), "{reason}");
    assert_eq!(weights(&c, &sluice).await, (100, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_webhook_check_fails_the_step() {
    let (_blue, _green, _dir, sluice) = blue_green_sluice().await;
    let hook = webhook(500).await;
    let c = client();
    let body = format!(
        r#"{{"from": "blue", "to": "green", "steps": [{{"weight": 25, "hold": "30s"}}, {{"weight": 100}}], {QUICK}, "checks": [{{"name": "tests", "webhook": {{"url": "{}"}}}}]}}}}"#,
        hook.url
    );
    start(&c, &sluice, &body).await;
    let aborted = wait_state(&c, &sluice, "aborted", Duration::from_secs(20)).await;
    let reason = aborted["reason"].as_str().unwrap();
    assert!(reason.starts_with("check failed: tests: "), "{reason}");
    assert!(reason.contains("answered 500"), "{reason}");
    assert_eq!(
        aborted["checks"][0].as_str().unwrap(),
        reason.trim_start_matches("check failed: ")
    );
    assert_eq!(weights(&c, &sluice).await, (100, 0));
}

/// A Prometheus scraping `sluice`'s admin endpoint every second.
struct Prometheus {
    child: std::process::Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn prometheus(target: SocketAddr) -> Option<Prometheus> {
    let found = std::path::Path::new("/usr/bin/prometheus").exists();
    if !tool_present(found, "prometheus (apt install prometheus)") {
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: sluice\n    static_configs:\n      - targets: [\"{target}\"]\n"
        ),
    )
    .unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = std::process::Command::new("/usr/bin/prometheus")
        .arg(format!("--config.file={}", config.display()))
        .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    Some(Prometheus {
        child,
        url: format!("http://127.0.0.1:{port}"),
        _dir: dir,
    })
}

/// The value Prometheus has for `query` now, once it has one.
async fn scraped(c: &TestClient, prom: &Prometheus, query: &str, within: Duration) -> f64 {
    let deadline = Instant::now() + within;
    loop {
        let url = format!("{}/api/v1/query?query={}", prom.url, query.replace(' ', "%20"));
        if let Ok(res) = tokio::time::timeout(Duration::from_secs(2), c.get(url.parse().unwrap())).await
            && let Ok(res) = res
        {
            let body = http_body_util::BodyExt::collect(res.into_body())
                .await
                .unwrap()
                .to_bytes();
            let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
            if let Some(text) = v["data"]["result"][0]["value"][1].as_str() {
                return text.parse().unwrap();
            }
        }
        assert!(Instant::now() < deadline, "Prometheus never had {query}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_checks_judge_on_the_business_metric_and_a_prometheus_that_is_down_fails() {
    // The rollback guard would see green's errors first: off here (alert
    // only), so the rollout's checks are what acts.
    let blue = spawn_backend("blue", "v1", any_addr()).await.unwrap();
    let green = spawn_backend("green", "v2", any_addr()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "{}\n[rollback]\nenabled = false\n",
        crate::rollout_e2e::config(dir.path(), blue.addr, green.addr)
    );
    let sluice = Running::start(dir.path(), &text, &[]);
    let Some(prom) = prometheus(sluice.admin) else { return };
    let c = client();
    // sluice's own thresholds let 30% errors pass here: only the query can
    // see them.
    green.knobs.set_error_rate(0.3);
    scraped(&c, &prom, "up", Duration::from_secs(30)).await;
    let query = r#"sum(sluice_requests_total{pool=\"green\",code=~\"5..\"}) or vector(0)"#;
    let body = format!(
        r#"{{"from": "blue", "to": "green", "steps": [{{"weight": 50, "hold": "60s"}}, {{"weight": 100}}],
            "analysis": {{"interval": "500ms", "max_error_ratio": 1.0, "min_requests": 20, "max_failed_checks": 2,
              "checks": [{{"name": "green 5xx", "prometheus": {{"url": "{}", "query": "{query}", "max": 0}}}}]}}}}"#,
        prom.url
    );
    start(&c, &sluice, &body).await;
    let aborted = wait_state(&c, &sluice, "aborted", Duration::from_secs(60)).await;
    let reason = aborted["reason"].as_str().unwrap();
    assert!(reason.starts_with("check failed: green 5xx: "), "{reason}");
    assert!(reason.ends_with("(max 0): fail"), "{reason}");
    assert_eq!(weights(&c, &sluice).await, (100, 0));

    // The same check against a Prometheus that is not there fails too.
    green.knobs.set_error_rate(0.0);
    let gone = closed_port().await;
    let body = format!(
        r#"{{"from": "blue", "to": "green", "steps": [{{"weight": 50, "hold": "60s"}}, {{"weight": 100}}],
            "analysis": {{"interval": "500ms", "max_error_ratio": 1.0, "min_requests": 20, "max_failed_checks": 2,
              "checks": [{{"name": "checkout", "prometheus": {{"url": "http://{gone}", "query": "up", "min": 1, "on_no_data": "ignore"}}}}]}}}}"#
    );
    let second = start(&c, &sluice, &body).await;
    let aborted = loop {
        let current = wait_state(&c, &sluice, "aborted", Duration::from_secs(30)).await;
        if current["id"] == second {
            break current;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let reason = aborted["reason"].as_str().unwrap();
    assert!(
        reason.starts_with("check failed: checkout: failed: Prometheus unreachable"),
        "{reason}"
    );
}

/// A backend answering 500 to every other request under `/predict` and
/// 200 to everything else.
async fn predict_breaks() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let n = Arc::new(AtomicU64::new(0));
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = listener.accept().await else { return };
            let n = Arc::clone(&n);
            tokio::spawn(async move {
                let svc = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let broken =
                        req.uri().path().starts_with("/predict") && n.fetch_add(1, Ordering::SeqCst).is_multiple_of(2);
                    async move {
                        let mut res = http::Response::new(http_body_util::Full::new(bytes::Bytes::from_static(
                            b"pool=green version=v2",
                        )));
                        if broken {
                            *res.status_mut() = http::StatusCode::INTERNAL_SERVER_ERROR;
                        }
                        Ok::<_, std::convert::Infallible>(res)
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    addr
}

/// One route failing half its requests while it is 1% of the traffic: the
/// pool's average (0.5% errors) passes, the route does not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_that_breaks_fails_the_step_while_the_pool_average_passes() {
    let blue = spawn_backend("blue", "v1", any_addr()).await.unwrap();
    let green = predict_breaks().await;
    let dir = tempfile::tempdir().unwrap();
    // The guard would act on the route first: off here (alert only).
    let text = format!(
        "{}\n[rollback]\nenabled = false\n[[analysis.routes]]\nname = \"predict\"\nprefix = \"/predict\"\n",
        crate::rollout_e2e::config(dir.path(), blue.addr, green)
    );
    let sluice = Running::start(dir.path(), &text, &[]);
    let c = client();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = {
        let (c, stop, base) = (c.clone(), Arc::clone(&stop), format!("http://{}", sluice.addr));
        tokio::spawn(async move {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let path = if i % 100 == 99 { "/predict" } else { "/" };
                get(&c, &format!("{base}{path}"), &[]).await;
                i += 1;
            }
        })
    };
    let body = format!(
        r#"{{"from": "blue", "to": "green", "steps": [{{"weight": 50, "hold": "60s"}}, {{"weight": 100}}], {QUICK}}}}}"#
    );
    start(&c, &sluice, &body).await;
    let aborted = wait_state(&c, &sluice, "aborted", Duration::from_secs(60)).await;
    stop.store(true, Ordering::Relaxed);
    load.await.unwrap();
    let reason = aborted["reason"].as_str().unwrap();
    assert!(reason.starts_with("green route predict error ratio"), "{reason}");
    assert_eq!(weights(&c, &sluice).await, (100, 0));
    let (_, _, scrape) = get(&c, &format!("http://{}/metrics", sluice.admin), &[]).await;
    assert!(
        scrape.contains("sluice_route_error_ratio{pool=\"green\",route=\"predict\"}"),
        "{scrape}"
    );
    let (_, pools) = call(&c, "GET", format!("http://{}/api/v1/pools", sluice.admin), "").await;
    assert_eq!(pools["pools"][1]["routes"][0]["name"], "predict", "{pools}");
}
