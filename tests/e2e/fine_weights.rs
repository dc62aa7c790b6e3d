//! Weights in steps of 0.01% through the real binary: the config file, the
//! admin API and `sluice ctl`, the store across a restart, the rollback of
//! the last change, a rollout step at 0.1%, the metrics and the traffic.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use serde_json::Value;

use crate::common::running::Running;
use crate::common::*;

/// `sluice ctl ARGS` against an open admin API.
fn ctl(admin: SocketAddr, args: &[&str]) -> (i32, String, String) {
    crate::ctl::ctl(admin, "", args)
}

async fn pools(admin: SocketAddr) -> Value {
    let (status, _, body) = get(&client(), &format!("http://{admin}/api/v1/pools"), &[]).await;
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

async fn put_weights(admin: SocketAddr, body: &'static str) -> (u16, String) {
    let req = http::Request::builder()
        .method("PUT")
        .uri(format!("http://{admin}/api/v1/weights"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(body.as_bytes())))
        .unwrap();
    let res = client().request(req).await.unwrap();
    let status = res.status().as_u16();
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&bytes).into_owned())
}

/// The JSON weight of `pool`, as the API writes it.
async fn weight(admin: SocketAddr, pool: &str) -> String {
    let all = pools(admin).await;
    let list = all["pools"].as_array().cloned().unwrap_or_default();
    let p = list.iter().find(|p| p["name"] == pool).unwrap();
    p["weight"].to_string()
}

fn config(dir: &std::path::Path, blue: SocketAddr, green: SocketAddr) -> String {
    format!(
        "[proxy]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\n[store]\nurl = \"sqlite://{}/sluice.db\"\n\
         [pools.blue]\nversion = \"v1\"\nweight = 99.9\nbackends = [\"{blue}\"]\n\
         [pools.green]\nversion = \"v2\"\nweight = 0.1\nbackends = [\"{green}\"]\n",
        dir.display()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundredths_of_a_percent_hold_from_the_file_to_the_traffic_and_across_a_restart() {
    let blue = spawn_backend("blue", "v1", any_addr()).await.unwrap();
    let green = spawn_backend("green", "v2", any_addr()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let text = config(dir.path(), blue.addr, green.addr);
    let sluice = Running::start(dir.path(), &text, &[]);

    // From the file: written back as decimals, whole ones as integers.
    assert_eq!(weight(sluice.admin, "green").await, "0.1");
    assert_eq!(weight(sluice.admin, "blue").await, "99.9");
    let (code, out, err) = ctl(sluice.admin, &["status"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(" 99.9%") && out.contains("  0.1%"), "{out}");
    let (_, _, metrics) = get(&client(), &format!("http://{}/metrics", sluice.admin), &[]).await;
    assert!(metrics.contains("sluice_pool_weight{pool=\"green\"} 0.1"), "{metrics}");

    // Through ctl: two decimals go, a third is refused before any request.
    let (code, out, err) = ctl(sluice.admin, &["weights", "blue=99.5", "green=0.5"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("generation"), "{out}");
    assert_eq!(weight(sluice.admin, "green").await, "0.5");
    let (code, _, err) = ctl(sluice.admin, &["weights", "blue=99.995", "green=0.005"]);
    assert_eq!(code, 1);
    assert!(err.contains("two decimals"), "{err}");
    // Through the API: three decimals are a 422 naming the pool; a sum
    // off by 0.01 is named exactly.
    let (status, body) = put_weights(sluice.admin, r#"{"weights": {"blue": 99.995, "green": 0.005}}"#).await;
    assert_eq!(status, 422, "{body}");
    assert!(
        body.contains("invalid-weights") && body.contains("two decimals"),
        "{body}"
    );
    let (status, body) = put_weights(sluice.admin, r#"{"weights": {"blue": 99.5, "green": 0.49}}"#).await;
    assert_eq!(status, 422, "{body}");
    assert!(body.contains("they sum to 99.99"), "{body}");
    assert_eq!(
        weight(sluice.admin, "green").await,
        "0.5",
        "a refused change changes nothing"
    );

    // The traffic: 0.5% of 4,000 requests is 20 (one standard deviation
    // 4.5); the bounds are five of them either side.
    let c = client();
    let mut on_green = 0;
    for _ in 0..4_000 {
        let (status, _, body) = get(&c, &format!("http://{}/", sluice.addr), &[]).await;
        assert_eq!(status, 200);
        on_green += usize::from(pool_of(&body) == "green");
    }
    assert!((1..=42).contains(&on_green), "{on_green} of 4,000 on green at 0.5%");

    // The rollback of the last change brings the decimals back.
    let (code, _, err) = ctl(sluice.admin, &["rollback"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(weight(sluice.admin, "green").await, "0.1");

    // Stored: a restart on the same store keeps 12.34 / 87.66.
    let (code, _, err) = ctl(sluice.admin, &["weights", "blue=87.66", "green=12.34"]);
    assert_eq!(code, 0, "{err}");
    sluice.signal("TERM");
    assert_eq!(sluice.wait_exit(Duration::from_secs(30)), Some(0));
    let again = Running::start(dir.path(), &text, &[]);
    assert_eq!(weight(again.admin, "green").await, "12.34");
    assert_eq!(weight(again.admin, "blue").await, "87.66");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_starts_at_a_tenth_of_a_percent_and_an_abort_restores_the_decimals() {
    let blue = spawn_backend("blue", "v1", any_addr()).await.unwrap();
    let green = spawn_backend("green", "v2", any_addr()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let text = config(dir.path(), blue.addr, green.addr);
    let sluice = Running::start(dir.path(), &text, &[]);
    let (code, _, err) = ctl(sluice.admin, &["weights", "blue=100", "green=0"]);
    assert_eq!(code, 0, "{err}");
    let (code, out, err) = ctl(
        sluice.admin,
        &[
            "rollout",
            "start",
            "--from",
            "blue",
            "--to",
            "green",
            "--steps",
            "0.1:0s,pause,100",
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("blue → green"), "{out}");
    crate::ctl::wait_rollout_status(sluice.admin, "paused").await;
    assert_eq!(weight(sluice.admin, "green").await, "0.1");
    assert_eq!(weight(sluice.admin, "blue").await, "99.9");
    let (code, _, err) = ctl(sluice.admin, &["rollout", "abort"]);
    assert_eq!(code, 0, "{err}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while weight(sluice.admin, "green").await != "0" {
        assert!(tokio::time::Instant::now() < deadline, "weights never restored");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(weight(sluice.admin, "blue").await, "100");
}
