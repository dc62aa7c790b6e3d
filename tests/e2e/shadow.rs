//! Shadow traffic (`[[mirror]]`, a rollout's mirror step): a share of live
//! requests is copied to a pool, marked `x-sluice-shadow: 1`, answers
//! thrown away; clients never see it, whatever the shadow pool does; and a
//! rollout judges the new version on the copies before any user reaches it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use sluice_routing::mirror::ShadowResult;
use tokio::time::Instant;

use crate::common::*;
use crate::rollout_e2e::{FAST, blue_green_sluice, call, wait_state, weights};

fn shadow_counts(proxy: &TestProxy, pool: &str) -> [u64; 3] {
    let table = proxy.routing.snapshot();
    let counts = &table.pool(pool).unwrap().stats.shadow;
    ShadowResult::ALL.map(|r| counts.get(r))
}

/// Client-side latencies (ms, sorted) and failures of `n` GETs.
async fn measure(url: &str, n: usize) -> (Vec<f64>, usize) {
    let c = client();
    let mut took = Vec::with_capacity(n);
    let mut failed = 0;
    for _ in 0..n {
        let started = Instant::now();
        let (status, _, body) = get(&c, url, &[]).await;
        took.push(started.elapsed().as_secs_f64() * 1e3);
        if status != 200 || pool_of(&body) != "blue" {
            failed += 1;
        }
    }
    took.sort_by(f64::total_cmp);
    (took, failed)
}

fn p99(sorted: &[f64]) -> f64 {
    sorted[(sorted.len() * 99 / 100).min(sorted.len() - 1)]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_share_of_requests_is_copied_marked_and_its_answers_discarded() {
    let blue = spawn_backend("blue", "v1", any_addr()).await.unwrap();
    let (green, recorder) = Recorder::start().await;
    let proxy = start_proxy(&format!(
        "[[mirror]]\nto = \"green\"\npercent = 50\n{}{}",
        pool_toml("blue", 100, &[blue.addr]),
        pool_toml("green", 0, &[green])
    ))
    .await;
    let (_, failed) = measure(&proxy.url("/search?q=shadow"), 400).await;
    assert_eq!(failed, 0, "every client got blue's answer");
    assert_eq!(blue.knobs.received(), 400);
    // Copies run on their own tasks: wait until every one seen by the
    // backend was also counted, answer and window.
    let in_window = || {
        let table = proxy.routing.snapshot();
        let stats = &table.pool("green").unwrap().stats;
        stats.window.snapshot(Instant::now(), Duration::from_secs(60)).requests
    };
    wait_until(Duration::from_secs(10), "the copies answered and counted", || {
        let [answered, _, _] = shadow_counts(&proxy, "green");
        let seen = recorder.heads().len() as u64;
        seen >= 150 && seen == answered && in_window() == answered
    })
    .await;
    let heads = recorder.heads();
    // 200 expected; five standard deviations is ±50.
    assert!((150..=250).contains(&heads.len()), "{} copies", heads.len());
    for head in &heads {
        assert!(head.starts_with("GET /search?q=shadow HTTP/1.1"), "{head}");
        assert!(
            head.to_ascii_lowercase().contains("\r\nx-sluice-shadow: 1\r\n"),
            "{head}"
        );
        assert!(
            head.to_ascii_lowercase().contains("\r\nx-forwarded-for: 127.0.0.1"),
            "{head}"
        );
    }
    // The copies' answers count in green's window (checked in the wait
    // above): what a rollout judges.
    assert_eq!(shadow_counts(&proxy, "green")[2], 0, "none dropped");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_post_is_copied_only_when_allowed() {
    let blue = spawn_backend("blue", "v1", any_addr()).await.unwrap();
    let (green, recorder) = Recorder::start().await;
    let proxy = start_proxy(&format!(
        "[[mirror]]\nto = \"green\"\npercent = 100\n{}{}",
        pool_toml("blue", 100, &[blue.addr]),
        pool_toml("green", 0, &[green])
    ))
    .await;
    let c = client();
    let req = http::Request::post(proxy.url("/orders"))
        .body(http_body_util::Full::new(bytes::Bytes::from_static(b"{}")))
        .unwrap();
    assert_eq!(c.request(req).await.unwrap().status(), 200);
    assert_eq!(get(&c, &proxy.url("/after"), &[]).await.0, 200);
    wait_until(Duration::from_secs(10), "the GET's copy", || {
        !recorder.heads().is_empty()
    })
    .await;
    let heads = recorder.heads();
    assert_eq!(heads.len(), 1, "{heads:?}");
    assert!(heads[0].starts_with("GET /after "), "the POST was copied: {heads:?}");
}

/// With the shadow pool hanging, resetting or failing, clients see blue's
/// answers as fast as with no mirror at all (same run, shadow on vs off).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_shadow_pool_changes_nothing_clients_see() {
    let blue = spawn_backend("blue", "v1", any_addr()).await.unwrap();
    let off = start_proxy(&pool_toml("blue", 100, &[blue.addr])).await;
    let (baseline, failed) = measure(&off.url("/"), 300).await;
    assert_eq!(failed, 0);
    for fault in [Fault::Hang, Fault::ResetBeforeHeaders, Fault::Malformed] {
        let green = fault_backend(fault).await;
        let on = start_proxy(&format!(
            "[[mirror]]\nto = \"green\"\npercent = 100\ntimeout = \"30s\"\n{}{}",
            pool_toml("blue", 100, &[blue.addr]),
            pool_toml("green", 0, &[green])
        ))
        .await;
        let (with_shadow, failed) = measure(&on.url("/"), 300).await;
        assert_eq!(failed, 0, "{fault:?}: a client saw the shadow pool");
        let (p99_off, p99_on) = (p99(&baseline), p99(&with_shadow));
        println!("{fault:?}: client p99 {p99_on:.2} ms with the shadow pool, {p99_off:.2} ms without");
        assert!(
            p99_on < p99_off * 3.0 + 20.0,
            "{fault:?}: p99 {p99_on:.2} ms vs {p99_off:.2} ms"
        );
        let [answered, failed_copies, dropped] = shadow_counts(&on, "green");
        assert_eq!(answered, 0, "{fault:?}");
        if matches!(fault, Fault::Hang) {
            // 256 copies wait on the hanging pool; the rest are dropped.
            assert!(dropped > 0, "{fault:?}: {failed_copies} failed, {dropped} dropped");
        } else {
            wait_until(Duration::from_secs(10), "the copies failed", || {
                let [_, failed, dropped] = shadow_counts(&on, "green");
                failed + dropped == 300
            })
            .await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mirror_step_fails_the_rollout_before_any_user_reaches_the_new_version() {
    let (blue, green, _dir, sluice) = blue_green_sluice().await;
    green.knobs.set_error_rate(0.1);
    let c = client();
    let body = format!(
        r#"{{"from": "blue", "to": "green", "steps": [{{"mirror": 100, "hold": "30s"}}, {{"weight": 50, "hold": "1s"}}, {{"weight": 100}}], {FAST}}}"#
    );
    let (status, started) = call(&c, "POST", format!("http://{}/api/v1/rollouts", sluice.admin), &body).await;
    assert_eq!(status, 200, "{started}");
    // wait_state sends requests as it polls: every one is served by blue.
    let aborted = wait_state(&c, &sluice, "aborted", Duration::from_secs(30)).await;
    let reason = aborted["reason"].as_str().unwrap();
    assert!(reason.contains("green error ratio"), "{aborted}");
    assert_eq!(weights(&c, &sluice).await, (100, 0), "green never had a share");
    assert!(
        green.knobs.received() >= 20,
        "green saw {} copies",
        green.knobs.received()
    );
    assert!(blue.knobs.received() >= green.knobs.received());
    // The copies stopped with the rollout.
    let copies = green.knobs.received();
    for _ in 0..50 {
        assert_eq!(
            pool_of(&get(&c, &format!("http://{}/", sluice.addr), &[]).await.2),
            "blue"
        );
    }
    assert_eq!(green.knobs.received(), copies, "copies after the abort");
    let (_, _, scrape) = get(&c, &format!("http://{}/metrics", sluice.admin), &[]).await;
    assert!(
        scrape.contains("sluice_shadow_requests_total{pool=\"green\",result=\"answered\"}"),
        "{scrape}"
    );
}

/// Bodies are copied byte for byte up to `max_body_bytes`; a larger one is
/// not copied at all (never cut short), and the live request is served
/// either way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_bodies_are_copied_whole_up_to_max_body_bytes() {
    let blue = spawn_backend("blue", "v1", any_addr()).await.unwrap();
    let (green, seen) = body_recorder().await;
    let proxy = start_proxy(&format!(
        "[[mirror]]\nto = \"green\"\npercent = 100\nmax_body_bytes = 1024\nallow_non_idempotent = true\n{}{}",
        pool_toml("blue", 100, &[blue.addr]),
        pool_toml("green", 0, &[green])
    ))
    .await;
    let c = client();
    let put_body: Vec<u8> = (0..1000u32).map(|i| (i % 251) as u8).collect();
    let big: Vec<u8> = vec![b'x'; 5_000];
    for (method, path, body) in [
        ("PUT", "/items/1", put_body.clone()),
        ("POST", "/orders", b"{\"sku\": 42}".to_vec()),
        ("PUT", "/big", big),
    ] {
        let req = http::Request::builder()
            .method(method)
            .uri(proxy.url(path))
            .body(http_body_util::Full::new(bytes::Bytes::from(body)))
            .unwrap();
        let res = c.request(req).await.unwrap();
        assert_eq!(res.status(), 200, "{method} {path} was not served");
    }
    assert_eq!(get(&c, &proxy.url("/after"), &[]).await.0, 200);
    wait_until(Duration::from_secs(10), "the copies", || {
        seen.lock().unwrap().iter().any(|(line, _)| line == "GET /after") && seen.lock().unwrap().len() >= 3
    })
    .await;
    let copies = seen.lock().unwrap().clone();
    let body_of = |line: &str| copies.iter().find(|(l, _)| l == line).map(|(_, b)| b.to_vec());
    assert_eq!(body_of("PUT /items/1"), Some(put_body), "the PUT's body, byte for byte");
    assert_eq!(body_of("POST /orders").as_deref(), Some(&b"{\"sku\": 42}"[..]));
    assert_eq!(
        body_of("PUT /big"),
        None,
        "a body over max_body_bytes is not copied: {copies:?}"
    );
    assert_eq!(body_of("GET /after"), Some(Vec::new()));
}
