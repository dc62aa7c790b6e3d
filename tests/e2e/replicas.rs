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

/// A migrated database on a throwaway PostgreSQL, and blue and green demo
/// backends.
async fn cluster(database: &str) -> (pg::PgServer, String, DemoBackend, DemoBackend) {
    let server = pg::PgServer::start();
    let url = server.database(database).await;
    let store = sluice_store::Store::connect(&url).await.unwrap();
    store.migrate_up().await.unwrap();
    store.close().await;
    let blue = spawn_backend("blue", "v1", any_addr()).await.unwrap();
    let green = spawn_backend("green", "v2", any_addr()).await.unwrap();
    (server, url, blue, green)
}

/// A replica's config (blue at 100%) on the shared store `url`, its other
/// files in `dir`.
fn replica_config(dir: &std::path::Path, url: &str, blue: &DemoBackend, green: &DemoBackend) -> String {
    config_for(dir, blue.addr, green.addr, 100).replace(
        &format!("url = \"sqlite://{}\"", dir.join("sluice.db").display()),
        &format!("url = \"{url}\""),
    )
}

/// Polls `url` until its body contains `needle` (10 s deadline).
async fn wait_for(c: &TestClient, url: String, needle: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, _, body) = get(c, &url, &[]).await;
        if body.contains(needle) {
            return;
        }
        assert!(Instant::now() < deadline, "{url} never showed {needle}: {body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

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
    let (_server, url, blue, green) = cluster("sluice_replicas").await;
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let config = |dir: &std::path::Path| replica_config(dir, &url, &blue, &green);
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

async fn leads(c: &TestClient, admin: std::net::SocketAddr) -> bool {
    let (_, _, status) = get(c, &format!("http://{admin}/api/v1/status"), &[]).await;
    let v: serde_json::Value = serde_json::from_str(&status).unwrap();
    v["leader"].as_bool().unwrap()
}

async fn post(c: &TestClient, url: String, body: &str) -> (u16, String) {
    let req = http::Request::post(url)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_owned())))
        .unwrap();
    let res = c.request(req).await.unwrap();
    let status = res.status().as_u16();
    let body = res.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// One replica leads the rollout controller (a PostgreSQL advisory lock);
/// the other refuses rollout requests; when the leader dies mid-rollout,
/// the other takes over within seconds and continues the stored rollout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_takes_over_a_rollout_when_the_leader_dies() {
    let (_server, url, blue, green) = cluster("sluice_leader").await;
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let config = |dir: &std::path::Path| replica_config(dir, &url, &blue, &green);
    let mut a = Running::start(dir_a.path(), &config(dir_a.path()), &[]);
    let c = client();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !leads(&c, a.admin).await {
        assert!(Instant::now() < deadline, "A never became the leader");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let b = Running::start(dir_b.path(), &config(dir_b.path()), &[]);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(!leads(&c, b.admin).await, "two leaders");

    let rollout = r#"{"from": "blue", "to": "green", "steps": [{"weight": 20}, {"pause": true}, {"weight": 100}],
        "health_gate": "10s", "post_promotion": "0s"}"#;
    let (status, body) = post(&c, format!("http://{}/api/v1/rollouts", b.admin), rollout).await;
    assert_eq!(status, 409, "{body}");
    assert!(body.contains("not-leader"), "{body}");
    let (status, body) = post(&c, format!("http://{}/api/v1/rollouts", a.admin), rollout).await;
    assert_eq!(status, 200, "{body}");
    wait_for(
        &c,
        format!("http://{}/api/v1/rollouts/current", a.admin),
        "\"state\":\"paused\"",
    )
    .await;
    // Once the stored history says paused too, the leader dies without a word.
    wait_for(
        &c,
        format!("http://{}/api/v1/rollouts", a.admin),
        "\"state\":\"paused\"",
    )
    .await;
    a.child.kill().unwrap();
    a.child.wait().unwrap();
    let died = Instant::now();
    while !leads(&c, b.admin).await {
        assert!(died.elapsed() < Duration::from_secs(10), "B never took over");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!("B took over {:?} after A died", died.elapsed());
    // B continues the rollout from its stored gate and completes it.
    wait_for(
        &c,
        format!("http://{}/api/v1/rollouts/current", b.admin),
        "\"state\":\"paused\"",
    )
    .await;
    let (status, body) = post(&c, format!("http://{}/api/v1/rollouts/current/promote", b.admin), "").await;
    assert_eq!(status, 200, "{body}");
    let done = Instant::now() + Duration::from_secs(15);
    while blue_weight(&c, b.admin).await != 0 {
        assert!(Instant::now() < done, "the resumed rollout never completed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The leader judges all the traffic: a canary failing only on the other
/// replica (the leader itself serves nothing) is rolled back by the leader
/// from the windows the replicas share through the store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leader_rolls_back_on_traffic_seen_by_another_replica() {
    let (_server, url, blue, green) = cluster("sluice_cluster_windows").await;
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let config = |dir: &std::path::Path| replica_config(dir, &url, &blue, &green);
    let a = Running::start(dir_a.path(), &config(dir_a.path()), &[]);
    let c = client();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !leads(&c, a.admin).await {
        assert!(Instant::now() < deadline, "A never became the leader");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let b = Running::start(dir_b.path(), &config(dir_b.path()), &[]);
    green.knobs.set_error_rate(0.5);
    assert_eq!(put_weights(&c, a.admin, 50).await, 200);
    // Traffic through B only, until the weights come back.
    let started = Instant::now();
    loop {
        for _ in 0..20 {
            get(&c, &format!("http://{}/", b.addr), &[]).await;
        }
        if blue_weight(&c, b.admin).await == 100 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the leader never rolled back"
        );
    }
    eprintln!(
        "rolled back {:?} after the failing traffic began (served by B only)",
        started.elapsed()
    );
    let (_, _, audit) = get(&c, &format!("http://{}/api/v1/audit?action=rollback", a.admin), &[]).await;
    assert!(
        audit.contains("\"actor\":\"sluice\"") && audit.contains("green error ratio"),
        "{audit}"
    );
}

/// PostgreSQL stopped under load: the replica keeps serving on its last
/// routing table with no failed request, stays ready, says the store is
/// down (metric), refuses changes with 503, and takes changes again once
/// the database is back, without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traffic_keeps_flowing_while_postgres_is_down() {
    use crate::common::load::{Tally, start_load};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let (server, url, blue, green) = cluster("sluice_pg_down").await;
    let dir = tempfile::tempdir().unwrap();
    let a = Running::start(dir.path(), &replica_config(dir.path(), &url, &blue, &green), &[]);
    let c = client();
    let tally = Arc::new(Tally::default());
    let stop = Arc::new(AtomicBool::new(false));
    let load = start_load(
        &format!("http://{}/", a.addr),
        16,
        2,
        &tally,
        &Arc::new(AtomicBool::new(false)),
        &stop,
    );
    tokio::time::sleep(Duration::from_millis(500)).await;

    tokio::task::block_in_place(|| server.halt());
    let down = Instant::now();
    let metric = |text: &str, name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .map(str::trim)
            .map(str::to_owned)
    };
    loop {
        let (_, _, scrape) = get(&c, &format!("http://{}/metrics", a.admin), &[]).await;
        if metric(&scrape, "sluice_store_up").as_deref() == Some("0") {
            break;
        }
        assert!(
            down.elapsed() < Duration::from_secs(10),
            "sluice_store_up never went to 0"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (ready, _, body) = get(&c, &format!("http://{}/health/ready", a.admin), &[]).await;
    assert_eq!(
        ready, 200,
        "a replica must stay ready while the shared store is down: {body}"
    );
    let asked = Instant::now();
    assert_eq!(put_weights(&c, a.admin, 50).await, 503, "a change without a store");
    eprintln!("a change with the store down answered 503 in {:?}", asked.elapsed());
    // Ten seconds without the database, under load.
    while down.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::task::block_in_place(|| server.resume());
    let back = Instant::now();
    while put_weights(&c, a.admin, 50).await != 200 {
        assert!(back.elapsed() < Duration::from_secs(20), "changes never worked again");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!("changes work again {:?} after PostgreSQL came back", back.elapsed());
    stop.store(true, Ordering::Relaxed);
    for t in load {
        t.await.unwrap();
    }
    let (ok, failed) = (tally.ok(), tally.failed());
    eprintln!("PostgreSQL down 10 s under load: {ok} requests served, {failed} failed");
    assert!(ok > 1000, "only {ok} requests");
    assert_eq!(failed, 0, "requests failed while the store was down");
    assert_eq!(blue_weight(&c, a.admin).await, 50);
}
