//! Rate limits (`[[rate_limits]]`) as a client sees them: 429 with
//! `Retry-After` and `x-sluice-error: rate-limited` past the burst, the
//! rate held over time, keys counted apart, and the refusals counted.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::time::Instant;

use sluice_routing::ratelimit::REFUSED;

use crate::common::*;

fn limited(toml: &str, backend: std::net::SocketAddr) -> String {
    format!("{toml}\n{}", pool_toml("blue", 100, &[backend]))
}

#[tokio::test]
async fn past_its_burst_a_client_gets_429_with_retry_after_and_keeps_its_connection() {
    let backend = spawn_backend("blue", "v1", any_addr()).await.unwrap();
    let proxy = start_proxy(&limited(
        "[[rate_limits]]\nkey = \"client_ip\"\nrate = 1\nburst = 5",
        backend.addr,
    ))
    .await;
    let before = REFUSED[0].load(Ordering::Relaxed);
    let c = client();
    for i in 0..5 {
        assert_eq!(get(&c, &proxy.url("/"), &[]).await.0, 200, "request {i} of the burst");
    }
    let (status, headers, body) = get(&c, &proxy.url("/"), &[("x-request-id", "slow-down-1")]).await;
    assert_eq!(status, 429);
    assert_eq!(headers["x-sluice-error"], "rate-limited");
    // One request a second: the next is allowed in a second.
    assert_eq!(headers["retry-after"], "1");
    assert!(body.contains("rate limited") && body.contains("slow-down-1"), "{body}");
    assert!(
        !headers.contains_key("connection"),
        "a limited client keeps its connection"
    );
    assert!(REFUSED[0].load(Ordering::Relaxed) > before);
    // The backend never saw the refused request.
    assert_eq!(backend.knobs.received(), 5);
}

#[tokio::test]
async fn over_seconds_the_allowed_share_follows_the_rate() {
    let backend = spawn_backend("blue", "v1", any_addr()).await.unwrap();
    let (rate, burst) = (40.0, 10.0);
    let proxy = start_proxy(&limited(
        &format!("[[rate_limits]]\nkey = \"global\"\nrate = {rate}\nburst = {burst}"),
        backend.addr,
    ))
    .await;
    let c = client();
    // About five times the rate, for three seconds.
    let start = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(5));
    let (mut sent, mut ok, mut refused) = (0u32, 0u32, 0u32);
    while start.elapsed() < Duration::from_secs(3) {
        tick.tick().await;
        sent += 1;
        match get(&c, &proxy.url("/"), &[]).await.0 {
            200 => ok += 1,
            429 => refused += 1,
            other => panic!("status {other}"),
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    // GCRA never lets more through than the rate plus the burst; as long
    // as the offer stays above the rate, it lets nearly that many.
    let most = rate * elapsed + burst + 1.0;
    assert!(
        f64::from(ok) <= most,
        "{ok} allowed in {elapsed:.2} s, at most {most:.0}"
    );
    let least = (rate * elapsed).min(f64::from(sent)) * 0.9;
    assert!(
        f64::from(ok) >= least,
        "{ok} allowed of {sent}, expected {least:.0} or more"
    );
    assert!(refused > 0 && ok + refused == sent);
}

#[tokio::test]
async fn a_header_limit_counts_each_key_apart_and_leaves_keyless_requests_alone() {
    let backend = spawn_backend("blue", "v1", any_addr()).await.unwrap();
    let proxy = start_proxy(&limited(
        "[[rate_limits]]\nkey = \"header:x-api-key\"\nrate = 0.5\nburst = 2",
        backend.addr,
    ))
    .await;
    let c = client();
    let status = |key: Option<&'static str>| {
        let c = c.clone();
        let url = proxy.url("/");
        async move {
            let headers: Vec<(&str, &str)> = key.map(|k| vec![("x-api-key", k)]).unwrap_or_default();
            get(&c, &url, &headers).await.0
        }
    };
    assert_eq!(
        [
            status(Some("a")).await,
            status(Some("a")).await,
            status(Some("a")).await
        ],
        [200, 200, 429]
    );
    assert_eq!(status(Some("b")).await, 200, "another key has its own bucket");
    for _ in 0..5 {
        assert_eq!(status(None).await, 200, "no key: not counted by this limit");
    }
}
