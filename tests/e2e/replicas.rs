//! Three replicas on one throwaway PostgreSQL: changes made through one
//! are served by the others within a second, concurrent changes never both
//! win, exactly one leads and a killed leader's rollout is finished by
//! another without repeating a step, the leader judges every replica's
//! traffic, and a database outage fails no request and suspends rollouts.
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

/// Three replicas on `url`; A is started first and leads.
async fn three_replicas(url: &str, blue: &DemoBackend, green: &DemoBackend) -> (Vec<tempfile::TempDir>, Vec<Running>) {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    // Named by an address the others can reach: followers pass rollout
    // requests on to the leader there.
    let start = |dir: &tempfile::TempDir| {
        Running::start_with_env(
            dir.path(),
            &replica_config(dir.path(), url, blue, green),
            &[],
            "info",
            &[("SLUICE_REPLICA_HOST", "127.0.0.1")],
        )
    };
    let a = start(&dirs[0]);
    let c = client();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !leads(&c, a.admin).await {
        assert!(Instant::now() < deadline, "A never became the leader");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (b, c3) = (start(&dirs[1]), start(&dirs[2]));
    (dirs, vec![a, b, c3])
}

/// How many of `replicas` lead right now.
async fn leaders(c: &TestClient, replicas: &[&Running]) -> usize {
    let mut n = 0;
    for r in replicas {
        if leads(c, r.admin).await {
            n += 1;
        }
    }
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_follow_each_others_changes_and_conflicts_are_refused() {
    let (_server, url, blue, green) = cluster("sluice_replicas").await;
    let (_dirs, replicas) = three_replicas(&url, &blue, &green).await;
    let (a, b, c3) = (&replicas[0], &replicas[1], &replicas[2]);
    let c = client();

    // 20 changes on A; each is served by B and C within a second.
    let mut lags = Vec::new();
    for i in 0..20u32 {
        let weight = 10 + (i * 37) % 81;
        if blue_weight(&c, a.admin).await == u64::from(weight) {
            continue;
        }
        assert_eq!(put_weights(&c, a.admin, weight).await, 200);
        let changed = Instant::now();
        for follower in [b, c3] {
            while blue_weight(&c, follower.admin).await != u64::from(weight) {
                assert!(
                    changed.elapsed() < Duration::from_secs(1),
                    "a replica did not follow A within a second"
                );
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
        lags.push(changed.elapsed());
    }
    lags.sort();
    eprintln!(
        "{} changes on A served by B and C after: median {:?}, max {:?}",
        lags.len(),
        lags[lags.len() / 2],
        lags[lags.len() - 1]
    );
    assert!(lags.len() >= 18, "too few distinct changes: {}", lags.len());
    assert_eq!(put_weights(&c, a.admin, 30).await, 200);
    wait_for(&c, format!("http://{}/api/v1/pools", c3.admin), "\"weight\":30").await;
    let mut green_seen = 0;
    for _ in 0..200 {
        if pool_of(&get(&c, &format!("http://{}/", c3.addr), &[]).await.2) == "green" {
            green_seen += 1;
        }
    }
    assert!(
        (100..180).contains(&green_seen),
        "C's traffic split: {green_seen}/200 to green"
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
    for r in &replicas {
        while blue_weight(&c, r.admin).await != winner {
            assert!(settled.elapsed() < Duration::from_secs(2), "the replicas disagree");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// `(this replica's name, the leader's name)` from its status.
async fn names(c: &TestClient, admin: std::net::SocketAddr) -> (String, Option<String>) {
    let (_, _, status) = get(c, &format!("http://{admin}/api/v1/status"), &[]).await;
    let v: serde_json::Value = serde_json::from_str(&status).unwrap();
    (
        v["replica"].as_str().unwrap().to_owned(),
        v["leader_replica"].as_str().map(str::to_owned),
    )
}

/// Polls until every replica in `replicas` names `leader` as the leader.
async fn all_name_the_leader(c: &TestClient, replicas: &[&Running], leader: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    for r in replicas {
        while names(c, r.admin).await.1.as_deref() != Some(leader) {
            assert!(
                Instant::now() < deadline,
                "a replica does not name {leader} as the leader"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

async fn leads(c: &TestClient, admin: std::net::SocketAddr) -> bool {
    let (_, _, status) = get(c, &format!("http://{admin}/api/v1/status"), &[]).await;
    let v: serde_json::Value = serde_json::from_str(&status).unwrap();
    v["leader"].as_bool().unwrap()
}

async fn post(c: &TestClient, url: String, body: &str) -> (u16, String) {
    let (status, _, body) = post_with(c, url, body, &[]).await;
    (status, body)
}

/// POSTs JSON with extra `headers`; status, answer headers and body.
async fn post_with(
    c: &TestClient,
    url: String,
    body: &str,
    headers: &[(&str, &str)],
) -> (u16, http::HeaderMap, String) {
    let mut req = http::Request::post(url).header("content-type", "application/json");
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    let res = c
        .request(req.body(Full::new(Bytes::from(body.to_owned()))).unwrap())
        .await
        .unwrap();
    let (status, headers) = (res.status().as_u16(), res.headers().clone());
    let body = res.into_body().collect().await.unwrap().to_bytes();
    (status, headers, String::from_utf8_lossy(&body).into_owned())
}

/// One replica leads the rollout controller (a PostgreSQL advisory lock);
/// the others refuse rollout requests. kill -9 the leader while a canary
/// holds 25%: another replica takes over within seconds, continues the
/// stored rollout to the end, and no step is applied twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_takes_over_a_rollout_when_the_leader_dies() {
    let (_server, url, blue, green) = cluster("sluice_leader").await;
    let (_dirs, mut replicas) = three_replicas(&url, &blue, &green).await;
    let c = client();
    let all: Vec<&Running> = replicas.iter().collect();
    // Once B and C name A, they have campaigned and lost at least once.
    let (a_name, _) = names(&c, replicas[0].admin).await;
    all_name_the_leader(&c, &all, &a_name).await;
    assert_eq!(leaders(&c, &all).await, 1, "not exactly one leader");

    // No traffic here: the steps end on their holds (failover is the test).
    let rollout = r#"{"from": "blue", "to": "green", "steps": [{"weight": 25, "hold": "4s"}, {"weight": 50, "hold": "1s"}],
        "health_gate": "10s", "post_promotion": "0s", "analysis": {"on_no_evidence": "promote"}}"#;
    // A request already passed on once is refused by a follower, naming the
    // leader; any other rollout request to a follower is passed on to it.
    let at_b = format!("http://{}/api/v1/rollouts", replicas[1].admin);
    let (status, _, body) = post_with(&c, at_b.clone(), rollout, &[("x-sluice-forwarded-by", "somewhere")]).await;
    assert_eq!(status, 409, "{body}");
    assert!(body.contains("not-leader"), "{body}");
    assert!(body.contains(&format!("replica {a_name} leads it")), "{body}");
    let (status, headers, body) = post_with(&c, at_b, rollout, &[]).await;
    assert_eq!(
        status, 200,
        "a follower did not pass the rollout on to the leader: {body}"
    );
    assert_eq!(headers["x-sluice-leader"], a_name.as_str());
    // Once the stored history says step 1 (25%), the leader dies without a word.
    wait_for(
        &c,
        format!("http://{}/api/v1/rollouts", replicas[1].admin),
        "\"state\":\"step\",\"step\":1",
    )
    .await;
    // C follows the stored step (a NOTIFY away; the read above was B's).
    let deadline = Instant::now() + Duration::from_secs(5);
    while blue_weight(&c, replicas[2].admin).await != 75 {
        assert!(Instant::now() < deadline, "replica C never served step 1's weights");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut a = replicas.remove(0);
    a.child.kill().unwrap();
    a.child.wait().unwrap();
    let died = Instant::now();
    let survivors: Vec<&Running> = replicas.iter().collect();
    loop {
        match leaders(&c, &survivors).await {
            0 => assert!(died.elapsed() < Duration::from_secs(10), "nobody took over"),
            1 => break,
            n => panic!("{n} leaders at once"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!("a new leader took over {:?} after the old one died", died.elapsed());
    let mut new_leader = None;
    for r in &survivors {
        if leads(&c, r.admin).await {
            new_leader = Some(names(&c, r.admin).await.0);
        }
    }
    all_name_the_leader(&c, &survivors, &new_leader.unwrap()).await;
    // The new leader finishes the rollout; every replica serves the result.
    let done = Instant::now() + Duration::from_secs(20);
    for r in &survivors {
        while blue_weight(&c, r.admin).await != 0 {
            assert!(Instant::now() < done, "the resumed rollout never completed");
            assert!(leaders(&c, &survivors).await <= 1, "two leaders");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    // Each step's weights were stored exactly once across the cluster.
    let (_, _, audit) = get(
        &c,
        &format!("http://{}/api/v1/audit?action=rollout.step", survivors[0].admin),
        &[],
    )
    .await;
    let v: serde_json::Value = serde_json::from_str(&audit).unwrap();
    let results: Vec<&str> = v["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["result"].as_str())
        .collect();
    for step in ["ok: rollout step 1", "ok: rollout step 2", "ok: rollout promoted"] {
        let n = results.iter().filter(|r| **r == step).count();
        assert_eq!(n, 1, "{step:?} stored {n} times: {results:?}");
    }
}

/// The leader judges all the traffic: a canary failing only on replica B's
/// traffic (the leader and C serve nothing) is rolled back by the leader
/// from the windows the replicas share through the store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leader_rolls_back_on_traffic_seen_by_another_replica() {
    let (_server, url, blue, green) = cluster("sluice_cluster_windows").await;
    let (_dirs, replicas) = three_replicas(&url, &blue, &green).await;
    let (a, b) = (&replicas[0], &replicas[1]);
    let c = client();
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

/// PostgreSQL stopped under load: every replica keeps serving on its last
/// routing table with no failed request, stays ready, says the store is
/// down (metric), refuses changes with 503; the running rollout is
/// suspended with the reason (nobody can lead without the store); once the
/// database is back, a leader continues the rollout and changes work
/// again, without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traffic_keeps_flowing_while_postgres_is_down() {
    use crate::common::load::{Tally, start_load};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let (server, url, blue, green) = cluster("sluice_pg_down").await;
    let (_dirs, replicas) = three_replicas(&url, &blue, &green).await;
    let a = &replicas[0];
    let c = client();
    let rollout = r#"{"from": "blue", "to": "green", "steps": [{"weight": 20}, {"pause": true}],
        "health_gate": "10s", "post_promotion": "0s"}"#;
    let (status, body) = post(&c, format!("http://{}/api/v1/rollouts", a.admin), rollout).await;
    assert_eq!(status, 200, "{body}");
    wait_for(
        &c,
        format!("http://{}/api/v1/rollouts", a.admin),
        "\"state\":\"paused\"",
    )
    .await;

    let tally = Arc::new(Tally::default());
    let stop = Arc::new(AtomicBool::new(false));
    let mut load = Vec::new();
    for r in &replicas {
        load.extend(start_load(
            &format!("http://{}/", r.addr),
            6,
            2,
            &tally,
            &Arc::new(AtomicBool::new(false)),
            &stop,
        ));
    }
    wait_until(Duration::from_secs(10), "traffic through every replica", || {
        tally.ok() > 300
    })
    .await;

    tokio::task::block_in_place(|| server.halt());
    let down = Instant::now();
    let metric = |text: &str, name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .map(str::trim)
            .map(str::to_owned)
    };
    for r in &replicas {
        loop {
            let (_, _, scrape) = get(&c, &format!("http://{}/metrics", r.admin), &[]).await;
            if metric(&scrape, "sluice_store_up").as_deref() == Some("0") {
                break;
            }
            assert!(
                down.elapsed() < Duration::from_secs(10),
                "sluice_store_up never went to 0"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let (ready, _, body) = get(&c, &format!("http://{}/health/ready", r.admin), &[]).await;
        assert_eq!(
            ready, 200,
            "a replica must stay ready while the shared store is down: {body}"
        );
        let asked = Instant::now();
        assert_eq!(put_weights(&c, r.admin, 50).await, 503, "a change without a store");
        eprintln!("a change with the store down answered 503 in {:?}", asked.elapsed());
    }
    // Without the store nobody leads: the rollout is suspended, saying why.
    wait_for(
        &c,
        format!("http://{}/api/v1/rollouts/current", a.admin),
        "\"state\":\"suspended\"",
    )
    .await;
    let (_, _, current) = get(&c, &format!("http://{}/api/v1/rollouts/current", a.admin), &[]).await;
    assert!(current.contains("lost its connection to the store"), "{current}");
    let all: Vec<&Running> = replicas.iter().collect();
    assert_eq!(leaders(&c, &all).await, 0, "a leader without a store");
    // Ten seconds without the database, under load.
    while down.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::task::block_in_place(|| server.resume());
    let back = Instant::now();

    // A leader continues the stored rollout (paused at its gate); promote it.
    let leader = loop {
        let mut found = None;
        for r in &replicas {
            if leads(&c, r.admin).await {
                found = Some(r);
            }
        }
        if let Some(r) = found {
            break r;
        }
        assert!(back.elapsed() < Duration::from_secs(20), "nobody leads again");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    eprintln!("a replica leads again {:?} after PostgreSQL came back", back.elapsed());
    wait_for(
        &c,
        format!("http://{}/api/v1/rollouts/current", leader.admin),
        "\"state\":\"paused\"",
    )
    .await;
    let (status, body) = post(
        &c,
        format!("http://{}/api/v1/rollouts/current/promote", leader.admin),
        "",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    for r in &replicas {
        while blue_weight(&c, r.admin).await != 0 {
            assert!(back.elapsed() < Duration::from_secs(30), "the rollout never completed");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    while put_weights(&c, replicas[1].admin, 50).await != 200 {
        assert!(back.elapsed() < Duration::from_secs(30), "changes never worked again");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!("changes work again {:?} after PostgreSQL came back", back.elapsed());
    stop.store(true, Ordering::Relaxed);
    for t in load {
        t.await.unwrap();
    }
    let (ok, failed) = (tally.ok(), tally.failed());
    eprintln!("PostgreSQL down 10 s under load on three replicas: {ok} requests served, {failed} failed");
    assert!(ok > 1000, "only {ok} requests");
    assert_eq!(failed, 0, "requests failed while the store was down");
    for r in &replicas {
        wait_for(&c, format!("http://{}/api/v1/pools", r.admin), "\"weight\":50").await;
    }
}
