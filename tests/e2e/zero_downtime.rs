//! The zero-downtime proof: constant load on the proxy (64 keep-alive
//! clients, clients that open a new connection per request, and TLS
//! clients) while an operator does everything at once — 100 weight flips,
//! 20 config reloads, 10 backend add/drain/remove cycles, certificate
//! rotations, a blue-green rollout and a rollback — and every response is
//! counted. Then the load stops and SIGTERM drains to exit 0.
//!
//! `ZERO_DOWNTIME_SECONDS` (default: as long as the operations take)
//! stretches the run for longer soaks: `benches/zero_downtime.sh`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::common::load::{Tally, start_load};
use crate::common::running::Running;
use crate::common::*;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use tokio::time::Instant;

fn config(dir: &Path, blue: &[SocketAddr], green: &[SocketAddr], extra_timeout: &str, engine: &str) -> String {
    format!(
        r#"[proxy]
listen = "127.0.0.1:0"
engine = "{engine}"
drain_timeout = "20s"
[proxy.tls]
listen = "127.0.0.1:0"
[[proxy.tls.certificates]]
cert = "file:{d}/site.crt"
key = "file:{d}/site.key"
[proxy.timeouts]
upstream_response = "{extra_timeout}"
[admin]
listen = "127.0.0.1:0"
[store]
url = "sqlite://{d}/sluice.db"
[health]
interval = "200ms"
timeout = "150ms"
{}{}"#,
        pool_toml("blue", 100, blue),
        pool_toml("green", 0, green),
        d = dir.display()
    )
}

async fn api(c: &TestClient, method: &str, url: String, body: &str) -> u16 {
    let req = http::Request::builder()
        .method(method)
        .uri(url)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_owned())))
        .unwrap();
    let res = c.request(req).await.unwrap();
    let status = res.status().as_u16();
    let _ = res.into_body().collect().await;
    status
}

fn p99(samples: &Mutex<Vec<u64>>) -> Duration {
    let mut v = samples.lock().unwrap().clone();
    v.sort_unstable();
    Duration::from_micros(v.get(v.len().saturating_sub(1) * 99 / 100).copied().unwrap_or(0))
}

/// A TLS client: HTTP/1.1 over a fresh TLS connection for every 20
/// requests (so certificate rotations reach it), counting every outcome.
async fn tls_client(addr: SocketAddr, tally: Arc<Tally>, stop: Arc<AtomicBool>) {
    while !stop.load(Ordering::Relaxed) {
        let (_, _, stream) = crate::tls_e2e::handshake_http1(addr, "site.test").await;
        let Ok((mut sender, conn)) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await
        else {
            tally.conn_errors.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        tokio::spawn(conn);
        for _ in 0..20 {
            if stop.load(Ordering::Relaxed) {
                return;
            }
            let req = http::Request::get("/")
                .header("host", "site.test")
                .body(http_body_util::Empty::<Bytes>::new())
                .unwrap();
            match sender.send_request(req).await {
                Ok(res) if res.status().is_success() => {
                    let _ = res.into_body().collect().await;
                    tally.ok.fetch_add(1, Ordering::Relaxed);
                }
                Ok(_) => {
                    tally.non_2xx.fetch_add(1, Ordering::Relaxed);
                }
                Err(_) => {
                    tally.conn_errors.fetch_add(1, Ordering::Relaxed);
                    break;
                }
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_operation_under_load_fails_no_request() {
    every_operation_under_load("sluice").await;
}

/// The same on `proxy.engine = "hyper"`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_operation_under_load_fails_no_request_on_the_hyper_engine() {
    every_operation_under_load("hyper").await;
}

async fn every_operation_under_load(engine: &str) {
    let b1 = spawn_backend("blue", "v1", any_addr()).await.unwrap();
    let b2 = spawn_backend("blue", "v1", any_addr()).await.unwrap();
    let b3 = spawn_backend("blue", "v1", any_addr()).await.unwrap();
    let g1 = spawn_backend("green", "v2", any_addr()).await.unwrap();
    let g2 = spawn_backend("green", "v2", any_addr()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    crate::tls_e2e::write_pair(dir.path(), "site", "site.test");
    let sluice = Running::start(
        dir.path(),
        &config(dir.path(), &[b1.addr, b2.addr], &[g1.addr], "30s", engine),
        &[],
    );
    let url = format!("http://{}/", sluice.addr);
    let tally = Arc::new(Tally::default());
    let busy = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));

    let mut load = start_load(&url, 64, 8, &tally, &busy, &stop);
    let tls_addr = sluice.tls.expect("no TLS listener");
    for _ in 0..6 {
        load.push(tokio::spawn(tls_client(
            tls_addr,
            Arc::clone(&tally),
            Arc::clone(&stop),
        )));
    }
    // A quiet phase for the latency baseline.
    tokio::time::sleep(Duration::from_secs(2)).await;
    busy.store(true, Ordering::Relaxed);

    let admin = client();
    let base = format!("http://{}/api/v1", sluice.admin);
    let soak = std::env::var("ZERO_DOWNTIME_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .map(Duration::from_secs);
    let ops_started = Instant::now();
    let mut round = 0;
    loop {
        // 100 weight flips, interleaved with the rest.
        for i in 0..5 {
            let (b, g) = if (round * 5 + i) % 2 == 0 { (0, 100) } else { (100, 0) };
            let body = format!(r#"{{"weights": {{"blue": {b}, "green": {g}}}}}"#);
            assert_eq!(api(&admin, "PUT", format!("{base}/weights"), &body).await, 200);
        }
        // A config reload: blue's backends change in the file (so does a
        // timeout, which is read at start only and must not disturb anything).
        let blue: &[SocketAddr] = if round % 2 == 0 {
            &[b1.addr, b2.addr, b3.addr]
        } else {
            &[b1.addr, b2.addr]
        };
        let timeout = if round % 2 == 0 { "25s" } else { "30s" };
        let tmp = dir.path().join("sluice.toml.new");
        std::fs::write(&tmp, config(dir.path(), blue, &[g1.addr], timeout, engine)).unwrap();
        std::fs::rename(&tmp, &sluice.config).unwrap();
        sluice.wait_log("config reloaded", Duration::from_secs(10));
        // Every fourth round, the certificate is rotated (new connections
        // get the new one; open ones keep going).
        if round % 4 == 1 {
            crate::tls_e2e::write_pair(dir.path(), "site", "site.test");
        }
        // Once: a blue-green rollout to green, then a rollback to blue.
        if round == 10 {
            let rollout = r#"{"from": "blue", "to": "green", "strategy": "blue-green", "post_promotion": "0s",
                "health_gate": "10s", "smoke": [{"name": "home", "path": "/"}]}"#;
            let deadline = Instant::now() + Duration::from_secs(10);
            // Weight flips may have left green at 100: start from blue.
            let reset = r#"{"weights": {"blue": 100, "green": 0}}"#;
            assert_eq!(api(&admin, "PUT", format!("{base}/weights"), reset).await, 200);
            assert_eq!(api(&admin, "POST", format!("{base}/rollouts"), rollout).await, 200);
            loop {
                let (_, _, current) = get(&admin, &format!("{base}/rollouts/current"), &[]).await;
                if current.contains("\"state\":\"completed\"") {
                    break;
                }
                assert!(!current.contains("aborted"), "{current}");
                assert!(Instant::now() < deadline, "rollout never completed: {current}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            assert_eq!(api(&admin, "POST", format!("{base}/rollback"), "").await, 200);
        }
        // Every other round, a green backend comes, is drained, and goes.
        if round % 2 == 0 {
            let add = format!(r#"{{"addr": "{}"}}"#, g2.addr);
            assert_eq!(
                api(&admin, "POST", format!("{base}/pools/green/backends"), &add).await,
                200
            );
            tokio::time::sleep(Duration::from_millis(300)).await;
            let drain = format!("{base}/pools/green/backends/{}/drain", g2.addr);
            assert_eq!(api(&admin, "POST", drain, "").await, 200);
        }
        round += 1;
        let done_ops = round >= 20;
        if done_ops && soak.is_none_or(|s| ops_started.elapsed() >= s) {
            break;
        }
    }
    let ops_took = ops_started.elapsed();
    stop.store(true, Ordering::Relaxed);
    for t in load {
        t.await.unwrap();
    }

    let ok = tally.ok.load(Ordering::Relaxed);
    let non_2xx = tally.non_2xx.load(Ordering::Relaxed);
    let conn_errors = tally.conn_errors.load(Ordering::Relaxed);
    let (quiet, during) = (p99(&tally.latencies[0]), p99(&tally.latencies[1]));
    eprintln!(
        "zero-downtime: {} requests in {ops_took:?} of operations (100 weight flips, 20 reloads, 10 drain cycles, \
         5 certificate rotations, a blue-green rollout and a rollback): \
         {non_2xx} non-2xx, {conn_errors} connection errors; p99 quiet {quiet:?}, during operations {during:?}",
        ok + non_2xx + conn_errors
    );
    assert!(ok > 1000, "only {ok} requests");
    assert_eq!((non_2xx, conn_errors), (0, 0), "requests failed during operations");

    sluice.signal("TERM");
    let code = tokio::task::spawn_blocking(move || sluice.wait_exit(Duration::from_secs(25)))
        .await
        .unwrap();
    assert_eq!(code, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_binary_upgrade_under_load_fails_no_request() {
    let b1 = spawn_backend("blue", "v1", any_addr()).await.unwrap();
    let g1 = spawn_backend("green", "v2", any_addr()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("upgrade.sock");
    let socket_arg = socket.to_str().unwrap().to_owned();
    // The TLS listener is handed over too.
    crate::tls_e2e::write_pair(dir.path(), "site", "site.test");
    let text = config(dir.path(), &[b1.addr], &[g1.addr], "30s", "sluice");
    let old = Running::start(dir.path(), &text, &["--upgrade-socket", &socket_arg]);
    old.wait_log("upgrade socket ready", Duration::from_secs(10));
    let url = format!("http://{}/", old.addr);

    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Tally::default());
    let load = start_load(&url, 32, 8, &tally, &Arc::new(AtomicBool::new(false)), &stop);
    tokio::time::sleep(Duration::from_millis(500)).await;

    // The new binary takes the sockets over; the old one drains and exits.
    let new = Running::start(dir.path(), &text, &["--upgrade", "--upgrade-socket", &socket_arg]);
    assert_eq!(new.addr, old.addr, "the new process serves the same socket");
    assert_eq!(new.tls, old.tls, "and the same TLS socket");
    let code = tokio::task::spawn_blocking(move || old.wait_exit(Duration::from_secs(25)))
        .await
        .unwrap();
    assert_eq!(code, Some(0), "the old process did not drain and exit cleanly");
    let before = tally.ok.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        tally.ok.load(Ordering::Relaxed) > before,
        "nothing served after the old process left"
    );

    stop.store(true, Ordering::Relaxed);
    for t in load {
        t.await.unwrap();
    }
    let ok = tally.ok.load(Ordering::Relaxed);
    let failed = tally.non_2xx.load(Ordering::Relaxed) + tally.conn_errors.load(Ordering::Relaxed);
    eprintln!("upgrade under load: {ok} requests ok, {failed} failed");
    assert_eq!(
        failed,
        0,
        "{failed} of {} requests failed during the upgrade",
        ok + failed
    );
    // And the new process can be upgraded again.
    new.wait_log("upgrade socket ready", Duration::from_secs(10));
}
