//! Several replicas on one PostgreSQL store: a change made through one
//! replica's admin API is served by the other within a second (LISTEN /
//! NOTIFY, with a periodic re-read behind it), and two changes made on the
//! same generation never both win: the later one gets 409 and changes
//! nothing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::pg;

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use tokio::time::Instant;

use crate::common::running::{Running, config_for};
use crate::common::*;

async fn put_weights(c: &TestClient, admin: std::net::SocketAddr, blue: u32) -> u16 {
    let body = format!(r#"{{"weights": {{"blue": {blue}, "green": {}}}}}"#, 100 - blue);
    let req = http::Request::put(format!("http://{admin}/api/v1/weights"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    let res = c.request(req).await.unwrap();
    let status = res.status().as_u16();
    let _ = res.into_body().collect().await;
    status
}

async fn blue_weight(c: &TestClient, admin: std::net::SocketAddr) -> u64 {
    let (_, _, pools) = get(c, &format!("http://{admin}/api/v1/pools"), &[]).await;
    let v: serde_json::Value = serde_json::from_str(&pools).unwrap();
    v["pools"][0]["weight"].as_u64().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_follow_each_others_changes_and_conflicts_are_refused() {
    let server = pg::PgServer::start();
    let url = server.database("sluice_replicas").await;
    let store = sluice_store::Store::connect(&url).await.unwrap();
    store.migrate_up().await.unwrap();
    store.close().await;
    let blue = spawn_backend("blue", "v1", any_addr()).await.unwrap();
    let green = spawn_backend("green", "v2", any_addr()).await.unwrap();
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let config = |dir: &std::path::Path| {
        config_for(dir, blue.addr, green.addr, 100).replace(
            &format!("url = \"sqlite://{}\"", dir.join("sluice.db").display()),
            &format!("url = \"{url}\""),
        )
    };
    let a = Running::start(dir_a.path(), &config(dir_a.path()), &[]);
    let b = Running::start(dir_b.path(), &config(dir_b.path()), &[]);
    let c = client();

    // A change on A is served by B within a second.
    assert_eq!(put_weights(&c, a.admin, 30).await, 200);
    let changed = Instant::now();
    while blue_weight(&c, b.admin).await != 30 {
        assert!(
            changed.elapsed() < Duration::from_secs(1),
            "B did not follow A within a second"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eprintln!("replica B served A's change after {:?}", changed.elapsed());
    let mut green_seen = 0;
    for _ in 0..200 {
        if pool_of(&get(&c, &format!("http://{}/", b.addr), &[]).await.2) == "green" {
            green_seen += 1;
        }
    }
    assert!(
        (100..180).contains(&green_seen),
        "B's traffic split: {green_seen}/200 to green"
    );

    // Both change at once from the same generation: one wins, the other
    // gets 409 and changes nothing. (A replica that already followed the
    // first change may legitimately apply its own on top: then it is not a
    // conflict, so try a few times.)
    let mut conflict = None;
    for _ in 0..5 {
        let (ra, rb) = tokio::join!(put_weights(&c, a.admin, 10), put_weights(&c, b.admin, 90));
        assert!(ra == 200 || rb == 200, "neither change went through: {ra}, {rb}");
        if ra == 409 || rb == 409 {
            conflict = Some(if ra == 200 { 10 } else { 90 });
            break;
        }
    }
    let winner = conflict.expect("two concurrent changes never conflicted");
    let settled = Instant::now();
    while blue_weight(&c, a.admin).await != winner || blue_weight(&c, b.admin).await != winner {
        assert!(settled.elapsed() < Duration::from_secs(2), "the replicas disagree");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
