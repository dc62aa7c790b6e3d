//! Durable state through the real binary: weights survive kill -9,
//! `--reset-state` brings the config back, a migration killed halfway
//! leaves the previous schema, `sluice run` refuses schemas it must not
//! serve, and a store that fails a write refuses the change.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::pg;
use sluice_routing::{Actor, WeightChange};

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::common::running::{Running, SLUICE, config_for, spawn_logging};
use crate::common::*;
use sluice_store::{AuditQuery, Store};

fn migrate(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(SLUICE).arg("migrate").args(args).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn sqlite_url(dir: &Path) -> String {
    format!("sqlite://{}", dir.join("sluice.db").display())
}

async fn served_pool(c: &TestClient, sluice: &Running) -> String {
    pool_of(&get(c, &format!("http://{}/", sluice.addr), &[]).await.2)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weights_survive_kill_9_and_reset_state_restores_the_config() {
    let blue = spawn_backend("blue", "v1", any_addr()).await.unwrap();
    let green = spawn_backend("green", "v2", any_addr()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let at_blue = config_for(dir.path(), blue.addr, green.addr, 100);
    let c = client();

    let mut sluice = Running::start(dir.path(), &at_blue, &[]);
    assert_eq!(served_pool(&c, &sluice).await, "blue");
    // Move all traffic to green through a reload, then put the file back:
    // the stored state (green) is what a restart must serve.
    std::fs::write(&sluice.config, config_for(dir.path(), blue.addr, green.addr, 0)).unwrap();
    sluice.signal("HUP");
    sluice.wait_log("config reloaded", Duration::from_secs(10));
    assert_eq!(served_pool(&c, &sluice).await, "green");
    sluice.child.kill().unwrap(); // SIGKILL: no shutdown path runs
    sluice.child.wait().unwrap();

    let sluice = Running::start(dir.path(), &at_blue, &[]);
    for _ in 0..20 {
        assert_eq!(served_pool(&c, &sluice).await, "green", "stored weights were lost");
    }
    drop(sluice);

    let sluice = Running::start(dir.path(), &at_blue, &["--reset-state"]);
    for _ in 0..20 {
        assert_eq!(
            served_pool(&c, &sluice).await,
            "blue",
            "--reset-state did not apply the config"
        );
    }
    drop(sluice);

    let store = Store::connect(&sqlite_url(dir.path())).await.unwrap();
    let trail = store.audit(&AuditQuery::default()).await.unwrap();
    let actions: Vec<&str> = trail.iter().rev().map(|a| a.entry.action.as_str()).collect();
    assert_eq!(actions, ["routing.init", "config.reload", "routing.reset"]);
    assert!(trail.iter().all(|a| a.entry.actor == "config-file"));
    let reload = &trail[1];
    assert!(reload.entry.before.as_deref().unwrap().contains("\"weight\":100"));
    let routing = store.load_routing().await.unwrap().unwrap();
    assert_eq!(routing.generation, 3);
    assert_eq!(routing.pools[0].weight_hundredths, 10_000);
}

#[test]
fn a_migration_killed_halfway_leaves_the_previous_version() {
    let dir = tempfile::tempdir().unwrap();
    let migrations = dir.path().join("migrations");
    std::fs::create_dir(&migrations).unwrap();
    let write = |name: &str, sql: &str| std::fs::write(migrations.join(name), sql).unwrap();
    write(
        "0001_create_predictions.up.sql",
        "CREATE TABLE predictions (id BIGINT PRIMARY KEY);",
    );
    write("0001_create_predictions.down.sql", "DROP TABLE predictions;");
    // Creates a table, then spends a long time counting: killed in between.
    write(
        "0002_slow_backfill.up.sql",
        "CREATE TABLE backfill (n BIGINT);
         INSERT INTO backfill
           WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 500000000)
           SELECT count(*) FROM c;",
    );
    write("0002_slow_backfill.down.sql", "DROP TABLE backfill;");
    let url = sqlite_url(dir.path());
    let dir_arg = migrations.to_str().unwrap();

    let (mut child, rx) = spawn_logging(&["migrate", "up", "--store", &url, "--dir", dir_arg]);
    loop {
        let line = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("migration 2 never started");
        if line.contains("applying migration") && line.contains("version=2") {
            break;
        }
    }
    child.kill().unwrap();
    child.wait().unwrap();

    let (ok, status, err) = migrate(&["status", "--store", &url, "--dir", dir_arg]);
    assert!(ok, "{err}");
    let lines: Vec<&str> = status.lines().collect();
    assert!(lines[1].starts_with("1 ") && lines[1].contains("applied"), "{status}");
    assert!(lines[2].starts_with("2 ") && lines[2].contains("pending"), "{status}");
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let store = Store::connect(&url).await.unwrap();
        let exists: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = 'backfill'")
                .fetch_one(store.db())
                .await
                .unwrap();
        assert_eq!(exists, 0, "half of migration 2 was left behind");
    });
}

/// sluice's own schema migrations (0001 …).
const MIGRATIONS: usize = 7;

#[test]
fn migrate_cli_dry_runs_change_nothing_and_down_reverses() {
    let dir = tempfile::tempdir().unwrap();
    let url = sqlite_url(dir.path());
    let (ok, plan, _) = migrate(&["up", "--dry-run", "--store", &url]);
    assert!(ok);
    assert!(plan.contains("-- would apply 0001 initial") && plan.contains("CREATE TABLE audit_log"));
    let (_, status, _) = migrate(&["status", "--store", &url]);
    assert_eq!(
        status.matches("pending").count(),
        MIGRATIONS,
        "dry run applied something: {status}"
    );

    assert!(migrate(&["up", "--store", &url]).0);
    let (_, status, _) = migrate(&["status", "--store", &url]);
    assert_eq!(status.matches("applied").count(), MIGRATIONS, "{status}");
    let (ok, plan, _) = migrate(&["down", "--to", "0", "--dry-run", "--store", &url]);
    assert!(ok);
    assert!(
        plan.find("0002").unwrap() < plan.find("0001").unwrap(),
        "newest first: {plan}"
    );
    assert_eq!(
        migrate(&["status", "--store", &url]).1.matches("applied").count(),
        MIGRATIONS
    );
    let (ok, out, _) = migrate(&["down", "--to", "0", "--store", &url]);
    assert!(ok, "{out}");
    assert_eq!(
        migrate(&["status", "--store", &url]).1.matches("pending").count(),
        MIGRATIONS
    );

    let (ok, _, err) = migrate(&["status", "--store", "mysql://nope"]);
    assert!(!ok);
    assert!(err.contains("neither sqlite: nor postgres://"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_refuses_a_schema_behind_without_auto_migrate_and_one_newer_always() {
    let blue = spawn_backend("blue", "v1", any_addr()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let url = sqlite_url(dir.path());
    let config = dir.path().join("sluice.toml");
    let write_config = |auto: bool| {
        std::fs::write(
            &config,
            format!(
                "[proxy]\nlisten = \"127.0.0.1:0\"\n[store]\nurl = \"{url}\"\nauto_migrate = {auto}\n{}",
                pool_toml("blue", 100, &[blue.addr])
            ),
        )
        .unwrap()
    };
    let run = || {
        Command::new(SLUICE)
            .args(["run", "--config"])
            .arg(&config)
            .output()
            .unwrap()
    };
    assert!(migrate(&["up", "--to", "1", "--store", &url]).0);
    write_config(false);
    let out = run();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("schema is at version 1") && err.contains("sluice migrate up"),
        "{err}"
    );

    // A newer sluice applied a step this one does not know.
    assert!(migrate(&["up", "--store", &url]).0);
    let store = Store::connect(&url).await.unwrap();
    sqlx::query(
        "INSERT INTO sluice_schema_migrations (version, description, checksum, applied_at, duration_ms)
         VALUES (99, 'from the future', 'x', '2030-01-01T00:00:00Z', 1)",
    )
    .execute(store.db())
    .await
    .unwrap();
    write_config(true);
    let out = run();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("newer than this sluice"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_store_write_refuses_the_change_and_serves_the_old_table() {
    let dir = tempfile::tempdir().unwrap();
    let url = sqlite_url(dir.path());
    let config = sluice_config::Config::from_toml(&format!(
        "[store]\nurl = \"{url}\"\n{}{}",
        pool_toml("blue", 100, &[any_addr()]),
        pool_toml("green", 0, &[any_addr()])
    ))
    .unwrap();
    let store = sluice::app::open_store(&config).await.unwrap();
    let routing = sluice::state::open_routing(&config, &store, false, Some("test".into()))
        .await
        .unwrap();
    let before = routing.snapshot().generation();
    // Break the store underneath: the audit row of the change cannot be written.
    sqlx::query("DROP TABLE audit_log").execute(store.db()).await.unwrap();
    let weights: HashMap<String, sluice_config::Weight> = [
        ("blue".to_owned(), sluice_config::Weight::ZERO),
        ("green".to_owned(), sluice_config::Weight::FULL),
    ]
    .into();
    let err = routing
        .change_weights(WeightChange::set(&weights, Actor::operator("ci")))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("could not be stored"), "{err}");
    let served = routing.snapshot();
    assert_eq!(served.generation(), before);
    assert_eq!(served.pool("blue").unwrap().weight, sluice_config::Weight::FULL);
    let stored = store.load_routing().await.unwrap().unwrap();
    assert_eq!(stored.generation as u64, before, "the store and the table disagree");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_store_serves_and_keeps_state_across_restarts() {
    let server = pg::PgServer::start();
    let url = server.database("sluice_run").await;
    let blue = spawn_backend("blue", "v1", any_addr()).await.unwrap();
    let green = spawn_backend("green", "v2", any_addr()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = |w: u32| {
        config_for(dir.path(), blue.addr, green.addr, w).replace(
            &format!("url = \"{}\"", sqlite_url(dir.path())),
            &format!("url = \"{url}\""),
        )
    };
    // PostgreSQL is not migrated automatically: run refuses, migrate fixes it.
    std::fs::write(dir.path().join("sluice.toml"), config(100)).unwrap();
    let out = Command::new(SLUICE)
        .args(["run", "--config"])
        .arg(dir.path().join("sluice.toml"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("sluice migrate up"));
    let (ok, _, err) = migrate(&["up", "--store", &url]);
    assert!(ok, "{err}");

    let c = client();
    let sluice = Running::start(dir.path(), &config(100), &[]);
    assert_eq!(served_pool(&c, &sluice).await, "blue");
    std::fs::write(&sluice.config, config(0)).unwrap();
    sluice.signal("HUP");
    sluice.wait_log("config reloaded", Duration::from_secs(10));
    drop(sluice);
    let sluice = Running::start(dir.path(), &config(100), &[]);
    assert_eq!(served_pool(&c, &sluice).await, "green");
    drop(sluice);
}

/// Testers' match rules set through the API: routed at once, shown, audited,
/// refused whole when bad, stored (a restart keeps them), removed with `[]`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn match_rules_set_through_the_api_route_testers_and_survive_a_restart() {
    let blue = spawn_backend("blue", "v1", any_addr()).await.unwrap();
    let green = spawn_backend("green", "v2", any_addr()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let text = config_for(dir.path(), blue.addr, green.addr, 100);
    let c = client();
    const TESTER: &[(&str, &str)] = &[("x-beta", "1")];
    let served = |sluice: &Running, headers: &'static [(&'static str, &'static str)]| {
        let (c, url) = (c.clone(), format!("http://{}/", sluice.addr));
        async move { pool_of(&get(&c, &url, headers).await.2) }
    };
    let pools_url = |sluice: &Running| format!("http://{}/api/v1/pools/green", sluice.admin);

    let mut sluice = Running::start(dir.path(), &text, &[]);
    let (status, body) = crate::rollout_e2e::call(
        &c,
        "PUT",
        pools_url(&sluice),
        r#"{"matches": [{"header": "X-Beta", "value": "1"}, {"cookie": "beta", "value": "yes"}]}"#,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    for _ in 0..20 {
        assert_eq!(served(&sluice, TESTER).await, "green");
        assert_eq!(served(&sluice, &[("cookie", "a=b; beta=yes")]).await, "green");
        assert_eq!(served(&sluice, &[]).await, "blue", "the split (100/0) goes on");
    }
    let (_, pools) = crate::rollout_e2e::call(&c, "GET", format!("http://{}/api/v1/pools", sluice.admin), "").await;
    let green_pool = pools["pools"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "green")
        .unwrap();
    assert_eq!(
        green_pool["matches"],
        serde_json::json!([{"header": "x-beta", "value": "1"}, {"cookie": "beta", "value": "yes"}])
    );
    let (_, audit) = crate::rollout_e2e::call(
        &c,
        "GET",
        format!("http://{}/api/v1/audit?action=pool.update", sluice.admin),
        "",
    )
    .await;
    assert!(audit.to_string().contains("x-beta"), "{audit}");

    // A bad rule refuses the whole change.
    for bad in [
        r#"{"matches": [{"header": "bad name", "value": "1"}]}"#,
        r#"{"matches": [{"header": "x", "cookie": "y", "value": "1"}]}"#,
        r#"{"matches": [{"header": "x-beta", "value": ""}]}"#,
    ] {
        let (status, body) = crate::rollout_e2e::call(&c, "PUT", pools_url(&sluice), bad).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (422, Some("invalid-match")),
            "{bad}: {body}"
        );
    }
    assert_eq!(served(&sluice, TESTER).await, "green");

    // Stored: a restart (even after kill -9) routes testers the same way.
    sluice.child.kill().unwrap();
    sluice.child.wait().unwrap();
    let sluice = Running::start(dir.path(), &text, &[]);
    for _ in 0..20 {
        assert_eq!(served(&sluice, TESTER).await, "green", "the stored rules were lost");
    }
    let (status, _) = crate::rollout_e2e::call(&c, "PUT", pools_url(&sluice), r#"{"matches": []}"#).await;
    assert_eq!(status, 200);
    for _ in 0..20 {
        assert_eq!(served(&sluice, TESTER).await, "blue");
    }
}
