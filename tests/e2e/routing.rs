//! Weighted routing, sticky cohorts and the atomic table swap, observed from
//! the outside: which pool answered each request.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use sluice_routing::{Actor, WeightChange};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use crate::common::*;

fn weights(pairs: &[(&str, u32)]) -> HashMap<String, sluice_config::Weight> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), sluice_config::Weight::percent(*v).unwrap()))
        .collect()
}

/// Sends `total` requests over `concurrency` tasks; counts answers per pool.
async fn pool_counts(url: &str, total: usize, concurrency: usize) -> HashMap<String, usize> {
    let client = client();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let client = client.clone();
        let url = url.to_owned();
        tasks.push(tokio::spawn(async move {
            let mut counts: HashMap<String, usize> = HashMap::new();
            for _ in 0..total / concurrency {
                let (status, _, body) = get(&client, &url, &[]).await;
                assert_eq!(status, 200, "{body}");
                *counts.entry(pool_of(&body)).or_default() += 1;
            }
            counts
        }));
    }
    let mut all = HashMap::new();
    for t in tasks {
        for (k, v) in t.await.unwrap() {
            *all.entry(k).or_default() += v;
        }
    }
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weights_80_20_split_within_3_points() {
    let (proxy, _blue, _green) = blue_green(80, "").await;
    let counts = pool_counts(&proxy.url("/"), 5000, 25).await;
    let blue = counts.get("blue").copied().unwrap_or(0) as f64 / 5000.0 * 100.0;
    let green = counts.get("green").copied().unwrap_or(0) as f64 / 5000.0 * 100.0;
    assert!((blue - 80.0).abs() <= 3.0, "blue got {blue:.1}% ({counts:?})");
    assert!((green - 20.0).abs() <= 3.0, "green got {green:.1}% ({counts:?})");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weight_zero_gets_exactly_nothing() {
    let (proxy, blue, green) = blue_green(100, "").await;
    let counts = pool_counts(&proxy.url("/"), 2000, 20).await;
    assert_eq!(counts.get("blue"), Some(&2000));
    assert_eq!(counts.get("green"), None);
    assert_eq!(green.knobs.received(), 0, "green's backend saw traffic");
    assert_eq!(blue.knobs.received(), 2000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn override_header_only_when_allowed() {
    let (strict, _b, _g) = blue_green(100, "").await;
    let c = client();
    let (_, _, body) = get(&c, &strict.url("/"), &[("x-sluice-pool", "green")]).await;
    assert_eq!(pool_of(&body), "blue", "override must be ignored unless allowed");

    let (open, _b2, _g2) = blue_green(100, "[proxy]\nallow_pool_override = true\n").await;
    let (_, _, body) = get(&c, &open.url("/"), &[("x-sluice-pool", "green")]).await;
    assert_eq!(pool_of(&body), "green");
    let (status, headers, _) = get(&c, &open.url("/"), &[("x-sluice-pool", "purple")]).await;
    assert_eq!(status, 400);
    assert_eq!(headers["x-sluice-error"], "unknown-pool");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sticky_cookie_keeps_clients_and_raising_a_pool_only_adds() {
    let (proxy, _blue, _green) = blue_green(95, "[sticky]\ncookie = \"cohort\"\n").await;
    let c = client();
    let url = proxy.url("/");
    let cookies: Vec<String> = (0..1000).map(|i| format!("cohort=user-{i}")).collect();

    let mut before = HashMap::new();
    for cookie in &cookies {
        let (_, _, body) = get(&c, &url, &[("cookie", cookie)]).await;
        before.insert(cookie.clone(), pool_of(&body));
    }
    // The same cookie always lands in the same pool.
    for cookie in cookies.iter().take(50) {
        for _ in 0..5 {
            let (_, _, body) = get(&c, &url, &[("cookie", cookie)]).await;
            assert_eq!(pool_of(&body), before[cookie]);
        }
    }

    proxy
        .routing
        .change_weights(WeightChange::set(
            &weights(&[("blue", 75), ("green", 25)]),
            Actor::operator("test"),
        ))
        .await
        .unwrap();
    let mut moved_out = 0;
    let mut green_after = 0;
    for cookie in &cookies {
        let (_, _, body) = get(&c, &url, &[("cookie", cookie)]).await;
        let now = pool_of(&body);
        if before[cookie] == "green" && now != "green" {
            moved_out += 1;
        }
        green_after += usize::from(now == "green");
    }
    let green_before = before.values().filter(|p| *p == "green").count();
    assert_eq!(moved_out, 0, "clients left green when it grew");
    assert!(
        green_before > 20 && green_before < 90,
        "5% cohort was {green_before}/1000"
    );
    assert!(
        green_after > 200 && green_after < 300,
        "25% cohort was {green_after}/1000"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_clients_get_a_cohort_cookie_that_sticks() {
    let (proxy, _blue, _green) = blue_green(50, "[sticky]\ncookie = \"cohort\"\n").await;
    let c = client();
    for _ in 0..30 {
        let (_, headers, body) = get(&c, &proxy.url("/"), &[]).await;
        let set = headers["set-cookie"].to_str().unwrap();
        assert!(set.starts_with("cohort="), "{set}");
        let pair = set.split(';').next().unwrap();
        for _ in 0..3 {
            let (_, h, again) = get(&c, &proxy.url("/"), &[("cookie", pair)]).await;
            assert_eq!(pool_of(&again), pool_of(&body));
            assert!(h.get("set-cookie").is_none());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn atomic_swap_under_load_fails_no_request() {
    let (proxy, _blue, _green) = blue_green(100, "").await;
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let seen_green = Arc::new(AtomicU64::new(0));
    let client = client();
    let mut tasks = Vec::new();
    for _ in 0..200 {
        let (client, url) = (client.clone(), proxy.url("/"));
        let (stop, ok, failed, seen_green) = (stop.clone(), ok.clone(), failed.clone(), seen_green.clone());
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let req = http::Request::get(&url).body(Default::default()).unwrap();
                match client.request(req).await {
                    Ok(res) if res.status() == 200 => {
                        use http_body_util::BodyExt;
                        match res.into_body().collect().await {
                            Ok(b) => {
                                ok.fetch_add(1, Ordering::Relaxed);
                                if pool_of(&String::from_utf8_lossy(&b.to_bytes())) == "green" {
                                    seen_green.fetch_add(1, Ordering::Relaxed);
                                }
                            }
                            Err(_) => {
                                failed.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    }
                    _ => {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    let flips = tokio::spawn({
        let routing = proxy.routing.clone();
        async move {
            let mut interval = tokio::time::interval(Duration::from_millis(10));
            let end = tokio::time::Instant::now() + Duration::from_secs(5);
            let mut to_green = true;
            let mut n = 0u64;
            while tokio::time::Instant::now() < end {
                interval.tick().await;
                let w = if to_green {
                    [("blue", 0), ("green", 100)]
                } else {
                    [("blue", 100), ("green", 0)]
                };
                routing
                    .change_weights(WeightChange::set(&weights(&w), Actor::operator("test")))
                    .await
                    .unwrap();
                to_green = !to_green;
                n += 1;
            }
            n
        }
    });
    let flipped = flips.await.unwrap();
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    assert!(flipped > 100, "only {flipped} flips");
    assert!(ok > 1000, "only {ok} requests completed");
    assert!(seen_green.load(Ordering::Relaxed) > 0, "flips never reached traffic");
    assert_eq!(
        failed,
        0,
        "{failed} of {} requests failed during {flipped} swaps",
        ok + failed
    );
    assert_eq!(proxy.routing.snapshot().generation(), 1 + flipped);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_connections_are_kept_alive_and_reused() {
    let (proxy, blue, _green) = blue_green(100, "").await;
    let c = client();
    for _ in 0..200 {
        let (status, _, _) = get(&c, &proxy.url("/"), &[]).await;
        assert_eq!(status, 200);
    }
    assert_eq!(blue.knobs.received(), 200);
    assert_eq!(
        blue.knobs.connections(),
        1,
        "sequential requests must share one upstream connection"
    );

    let counts = {
        let mut tasks = Vec::new();
        for _ in 0..8 {
            let (c, url) = (c.clone(), proxy.url("/"));
            tasks.push(tokio::spawn(async move {
                for _ in 0..100 {
                    assert_eq!(get(&c, &url, &[]).await.0, 200);
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        blue.knobs.connections()
    };
    assert!(
        counts <= 9,
        "8 concurrent clients opened {counts} upstream connections for 800 requests"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn testers_matched_by_header_or_cookie_reach_green_while_the_split_goes_on() {
    let (proxy, _blue, _green) = blue_green(
        90,
        "[[pools.green.match]]\nheader = \"x-beta\"\nvalue = \"1\"\n\
         [[pools.green.match]]\ncookie = \"beta\"\nvalue = \"yes\"\n",
    )
    .await;
    let c = client();
    let url = proxy.url("/");
    for headers in [&[("x-beta", "1")][..], &[("cookie", "session=7; beta=yes")]] {
        for _ in 0..200 {
            let (status, _, body) = get(&c, &url, headers).await;
            assert_eq!((status, pool_of(&body).as_str()), (200, "green"), "{headers:?}");
        }
    }
    // Everyone else: the 90/10 split, unchanged.
    let n = 4000;
    let mut green = 0;
    for _ in 0..n {
        let (_, _, body) = get(&c, &url, &[("x-beta", "0")]).await;
        green += usize::from(pool_of(&body) == "green");
    }
    let share = green as f64 / n as f64;
    assert!((share - 0.10).abs() < 0.02, "green got {share:.3} of the others");
}
