//! Retries (`[retry]`): idempotent requests survive a backend that resets
//! every connection, on both engines; a POST the backend may have seen is
//! never sent twice (one it never reached is); and when every backend
//! fails, retries stay within the pool's budget.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use sluice_routing::retry::Condition;

use crate::common::*;

/// Retries made and refused so far by pool `pool` of `proxy`.
fn retries(proxy: &TestProxy, pool: &str) -> ([u64; 5], u64) {
    let table = proxy.routing.snapshot();
    let stats = &table.pool(pool).unwrap().stats.retries;
    (stats.made(), stats.exhausted())
}

/// `total` requests from `clients` concurrent clients; statuses counted
/// (0: no response), and the answers that say they were retried.
async fn send_many(url: &str, method: http::Method, body: &'static [u8], total: u64, clients: u64) -> (Vec<u64>, u64) {
    let by_status: Arc<Vec<AtomicU64>> = Arc::new((0..600).map(|_| AtomicU64::new(0)).collect());
    let retried = Arc::new(AtomicU64::new(0));
    let c = client();
    let tasks: Vec<_> = (0..clients)
        .map(|_| {
            let (c, url, method, by_status, retried) = (
                c.clone(),
                url.to_owned(),
                method.clone(),
                by_status.clone(),
                retried.clone(),
            );
            tokio::spawn(async move {
                for _ in 0..total / clients {
                    let req = http::Request::builder()
                        .method(method.clone())
                        .uri(&url)
                        .body(Full::new(Bytes::from_static(body)))
                        .unwrap();
                    let status = match c.request(req).await {
                        Ok(res) => {
                            if res.headers().get("x-sluice-retries").is_some_and(|v| v == "1") {
                                retried.fetch_add(1, Ordering::Relaxed);
                            }
                            let status = res.status().as_u16();
                            match res.into_body().collect().await {
                                Ok(_) => status,
                                Err(_) => 0,
                            }
                        }
                        Err(_) => 0,
                    };
                    by_status[usize::from(status)].fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let counts = by_status.iter().map(|n| n.load(Ordering::Relaxed)).collect();
    (counts, retried.load(Ordering::Relaxed))
}

async fn survives_a_resetting_backend(engine: &str, total: u64) {
    let a = spawn_backend("blue", "v1", any_addr()).await.unwrap();
    let b = spawn_backend("blue", "v1", any_addr()).await.unwrap();
    let bad = fault_backend(Fault::ResetBeforeHeaders).await;
    // A third of first tries meet the bad backend: the budget has room.
    let proxy = start_proxy(&format!(
        "[proxy]\nengine = \"{engine}\"\n[retry]\nattempts = 2\nbudget = 0.5\n{}",
        pool_toml("blue", 100, &[a.addr, bad, b.addr])
    ))
    .await;
    let (counts, retried) = send_many(&proxy.url("/"), http::Method::GET, b"", total, 8).await;
    assert_eq!(
        counts[200], total,
        "{engine}: every GET answered 200 ({} 502s)",
        counts[502]
    );
    let (made, refused) = retries(&proxy, "blue");
    let resets = made[Condition::Reset as usize];
    assert!(resets > total / 10, "{engine}: {resets} retries after resets");
    assert_eq!(refused, 0);
    assert_eq!(retried, resets, "{engine}: x-sluice-retries on every retried answer");
    // The two good backends served every request once.
    assert_eq!(a.knobs.received() + b.knobs.received(), total);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotent_requests_survive_a_backend_that_resets_every_connection() {
    survives_a_resetting_backend("sluice", 10_000).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hyper_engine_retries_the_same_way() {
    survives_a_resetting_backend("hyper", 2_000).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_post_the_backend_may_have_seen_is_never_sent_twice() {
    let good = spawn_backend("blue", "v1", any_addr()).await.unwrap();
    let bad = fault_backend(Fault::ResetBeforeHeaders).await;
    let proxy = start_proxy(&format!(
        "[retry]\nattempts = 3\nbudget = 1.0\non = [\"connect-failure\", \"reset\", \"502\", \"503\", \"timeout\"]\n{}",
        pool_toml("blue", 100, &[good.addr, bad])
    ))
    .await;
    let (counts, retried) = send_many(&proxy.url("/orders"), http::Method::POST, b"{\"item\": 1}", 400, 4).await;
    // The bad backend read each POST sent to it: those fail, none goes again.
    assert!(counts[502] > 0, "no POST met the bad backend: {}", counts[200]);
    assert_eq!(counts[200] + counts[502], 400);
    assert_eq!(
        good.knobs.received(),
        counts[200],
        "the good backend saw each POST it answered, once"
    );
    assert_eq!(retried, 0);
    assert_eq!(retries(&proxy, "blue").0, [0; 5]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_post_that_never_reached_a_backend_goes_to_another() {
    let good = spawn_backend("blue", "v1", any_addr()).await.unwrap();
    let gone = closed_port().await;
    let proxy = start_proxy(&format!(
        "[retry]\nbudget = 1.0\n{}",
        pool_toml("blue", 100, &[good.addr, gone])
    ))
    .await;
    let (counts, retried) = send_many(&proxy.url("/orders"), http::Method::POST, b"{\"item\": 1}", 400, 4).await;
    assert_eq!(counts[200], 400);
    assert_eq!(good.knobs.received(), 400, "each POST reached the backend once");
    let made = retries(&proxy, "blue").0[Condition::ConnectFailure as usize];
    assert!(
        made > 0 && made == retried,
        "{made} connect-failure retries, {retried} answers marked"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_every_backend_fails_retries_stay_within_the_budget() {
    let bad = [
        fault_backend(Fault::ResetBeforeHeaders).await,
        fault_backend(Fault::ResetBeforeHeaders).await,
        fault_backend(Fault::ResetBeforeHeaders).await,
    ];
    let proxy = start_proxy(&format!(
        "[retry]\nattempts = 3\nbudget = 0.2\nmin_per_second = 1\n{}",
        pool_toml("blue", 100, &bad)
    ))
    .await;
    let started = tokio::time::Instant::now();
    let requests = 1_000;
    let (counts, _) = send_many(&proxy.url("/"), http::Method::GET, b"", requests, 4).await;
    assert_eq!(counts[502], requests);
    // Within one budget window, or the bound below would be the wrong one.
    assert!(started.elapsed().as_secs() < 10, "took {:?}", started.elapsed());
    let (made, refused) = retries(&proxy, "blue");
    let made: u64 = made.iter().sum();
    // 20% of the requests plus 1 a second over the 10 s window; a retry
    // racing the slot's count may slip through.
    let bound = requests / 5 + 10;
    assert!(
        made <= bound + 4,
        "{made} retries for {requests} requests (bound {bound})"
    );
    assert!(made >= bound - 20, "{made} retries: the budget was not used");
    assert!(refused > 0);
    let attempts = requests + made;
    println!(
        "attempts {attempts} for {requests} requests ({:.3}×)",
        attempts as f64 / requests as f64
    );
}
