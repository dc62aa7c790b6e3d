//! Rollout hooks and the expand/contract migration pattern through the
//! real binary, on a real SQLite database file changed by the `sqlite3`
//! tool: expand before the switch, the backward migration on rollback, the
//! contract step fencing the old version off (across a restart), failing
//! hooks, dry runs, gradual rollback and the split at each canary step.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};

use crate::common::running::Running;
use crate::common::*;
use crate::rollout_e2e::{FAST, blue_green_sluice, call, config, wait_state, wait_stored_state, weights};

/// The application's database, as its own migrations would leave it.
fn app_db(dir: &Path) -> String {
    let db = dir.join("app.db").display().to_string();
    sqlite(
        &db,
        "CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT, legacy TEXT);",
    );
    db
}

fn sqlite(db: &str, sql: &str) -> String {
    let out = Command::new("sqlite3").arg(db).arg(sql).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn columns(db: &str) -> Vec<String> {
    sqlite(db, "SELECT name FROM pragma_table_info('users');")
        .lines()
        .map(str::to_owned)
        .collect()
}

fn hook(name: &str, db: &str, sql: &str) -> Value {
    json!({"name": name, "command": ["sqlite3", db, sql], "timeout": "10s"})
}

async fn start(c: &TestClient, sluice: &Running, body: &Value) -> (u16, Value) {
    call(
        c,
        "POST",
        format!("http://{}/api/v1/rollouts", sluice.admin),
        &body.to_string(),
    )
    .await
}

fn fast(mut body: Value) -> Value {
    let extra: Value = serde_json::from_str(&format!("{{{FAST}}}")).unwrap();
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    body
}

/// The audit rows of `action`, once there is one: rollout records are
/// written by a queue behind the engine, so they may trail its state.
async fn audit(c: &TestClient, sluice: &Running, action: &str) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (_, a) = call(
            c,
            "GET",
            format!("http://{}/api/v1/audit?action={action}", sluice.admin),
            "",
        )
        .await;
        let rows = a["entries"].as_array().unwrap().clone();
        if !rows.is_empty() || tokio::time::Instant::now() > deadline {
            return rows;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolled_back_canary_runs_the_backward_migration() {
    let (_blue, green, dir, sluice) = blue_green_sluice().await;
    let db = app_db(dir.path());
    green.knobs.set_error_rate(0.3);
    let c = client();
    let body = fast(json!({
        "from": "blue", "to": "green",
        "steps": [{"weight": 50, "hold": "30s"}, {"weight": 100}],
        "hooks": {
            "pre_switch": [hook("expand", &db, "ALTER TABLE users ADD COLUMN email TEXT;")],
            "on_rollback": [hook("expand-down", &db, "ALTER TABLE users DROP COLUMN email;")],
        }
    }));
    assert_eq!(start(&c, &sluice, &body).await.0, 200);
    let aborted = wait_state(&c, &sluice, "aborted", Duration::from_secs(20)).await;
    assert!(aborted["reason"].as_str().unwrap().contains("error ratio"), "{aborted}");
    assert_eq!(weights(&c, &sluice).await, (100, 0));
    assert_eq!(columns(&db), ["id", "name", "legacy"], "the down migration ran");
    let hooks = aborted["hooks"].as_array().unwrap();
    let names: Vec<&str> = hooks.iter().map(|h| h["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["expand", "expand-down"]);
    // Each run is in the audit trail with its exit code and duration.
    let rows = audit(&c, &sluice, "rollout.hook.pre_switch").await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["result"], "ok");
    assert_eq!(rows[0]["after"]["code"], 0);
    assert!(rows[0]["after"]["duration_ms"].is_u64());
    assert_eq!(audit(&c, &sluice, "rollout.hook.on_rollback").await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_the_contract_step_rollback_is_refused_unless_forced() {
    let blue = spawn_backend("blue", "v1", any_addr()).await.unwrap();
    let green = spawn_backend("green", "v2", any_addr()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let text = config(dir.path(), blue.addr, green.addr);
    let sluice = Running::start(dir.path(), &text, &[]);
    let db = app_db(dir.path());
    let c = client();
    let body = fast(json!({
        "from": "blue", "to": "green", "strategy": "blue-green",
        "hooks": {
            "pre_switch": [hook("expand", &db, "ALTER TABLE users ADD COLUMN email TEXT;")],
            "post_promotion": [hook("contract", &db, "ALTER TABLE users DROP COLUMN legacy;")],
        }
    }));
    assert_eq!(start(&c, &sluice, &body).await.0, 200);
    let done = wait_state(&c, &sluice, "completed", Duration::from_secs(20)).await;
    assert_eq!(done["contracted"], true, "{done}");
    assert_eq!(columns(&db), ["id", "name", "email"]);

    let back = r#"{"weights": {"blue": 100, "green": 0}}"#;
    let weights_url = format!("http://{}/api/v1/weights", sluice.admin);
    let (status, refused) = call(&c, "PUT", weights_url.clone(), back).await;
    assert_eq!(status, 409, "{refused}");
    assert_eq!(refused["error"]["code"], "contracted");
    let message = refused["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("\"blue\" runs blue-v") && message.contains("contract") && message.contains("force"),
        "{message}"
    );
    let (status, _) = call(&c, "POST", format!("http://{}/api/v1/rollback", sluice.admin), "").await;
    assert_eq!(status, 409, "rollback must not give blue traffic back");
    assert_eq!(weights(&c, &sluice).await, (0, 100));
    let reverse = fast(json!({"from": "green", "to": "blue", "strategy": "blue-green"}));
    let (status, refused) = start(&c, &sluice, &reverse).await;
    assert_eq!((status, refused["error"]["code"].as_str()), (409, Some("contracted")));

    // The fence survives a restart (once the history shows the rollout
    // completed, the fence is stored: it is written first).
    wait_stored_state(&c, &sluice, "completed").await;
    drop(sluice);
    let sluice = Running::start(dir.path(), &text, &[]);
    let weights_url = format!("http://{}/api/v1/weights", sluice.admin);
    assert_eq!(call(&c, "PUT", weights_url.clone(), back).await.0, 409);
    // An operator who knows better can force it.
    let forced = r#"{"weights": {"blue": 100, "green": 0}, "force": true}"#;
    assert_eq!(call(&c, "PUT", weights_url, forced).await.0, 200);
    assert_eq!(weights(&c, &sluice).await, (100, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_hook_aborts_before_any_traffic_and_a_warning_hook_does_not() {
    let (_blue, green, _dir, sluice) = blue_green_sluice().await;
    let c = client();
    let body = fast(json!({
        "from": "blue", "to": "green", "strategy": "blue-green",
        "hooks": {
            "pre_rollout": [{"name": "ticket", "command": ["sh", "-c", "echo no ticket system; exit 2"], "on_failure": "warn"}],
            "pre_switch": [{"name": "expand", "command": ["sh", "-c", "echo cannot migrate >&2; exit 1"]}],
        }
    }));
    assert_eq!(start(&c, &sluice, &body).await.0, 200);
    let aborted = wait_state(&c, &sluice, "aborted", Duration::from_secs(10)).await;
    let reason = aborted["reason"].as_str().unwrap();
    assert!(
        reason.contains("pre_switch") && reason.contains("\"expand\"") && reason.contains("exited with 1"),
        "{reason}"
    );
    let hooks = aborted["hooks"].as_array().unwrap();
    assert_eq!(hooks.len(), 2);
    assert_eq!(hooks[0]["output"], "no ticket system\n");
    assert_eq!(hooks[1]["output"], "cannot migrate\n");
    assert_eq!(weights(&c, &sluice).await, (100, 0));
    assert_eq!(green.knobs.received(), 0, "no request reached green");
    let rows = audit(&c, &sluice, "rollout.hook.pre_switch").await;
    assert!(
        rows[0]["result"].as_str().unwrap().contains("exited with 1"),
        "{rows:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dry_run_runs_hooks_with_the_flag_and_changes_no_weight() {
    let (_blue, green, dir, sluice) = blue_green_sluice().await;
    let c = client();
    let (_, before) = call(&c, "GET", format!("http://{}/api/v1/status", sluice.admin), "").await;
    let seen = dir.path().join("seen");
    let record = format!("echo $SLUICE_HOOK=$SLUICE_DRY_RUN >> {}", seen.display());
    let body = fast(json!({
        "from": "blue", "to": "green", "dry_run": true,
        "smoke": [{"name": "version", "path": "/version", "body_contains": "v2"}],
        "hooks": {
            "pre_switch": [{"command": ["sh", "-c", record]}],
            "post_promotion": [{"command": ["sh", "-c", record]}],
            "on_rollback": [{"command": ["sh", "-c", record]}],
        }
    }));
    let (status, started) = start(&c, &sluice, &body).await;
    assert_eq!(status, 200, "{started}");
    assert!(started["plan"].as_array().unwrap().len() >= 5, "{started}");
    let done = wait_state(&c, &sluice, "completed", Duration::from_secs(10)).await;
    assert!(done["reason"].as_str().unwrap().starts_with("dry run passed"), "{done}");
    assert_eq!(
        std::fs::read_to_string(&seen).unwrap(),
        "pre_switch=1\npost_promotion=1\non_rollback=1\n"
    );
    let (_, after) = call(&c, "GET", format!("http://{}/api/v1/status", sluice.admin), "").await;
    assert_eq!(after["generation"], before["generation"], "no routing change");
    assert_eq!(weights(&c, &sluice).await, (100, 0));
    assert_eq!(green.knobs.received(), 1, "only the smoke check reached green");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gradual_rollback_walks_back_through_the_steps() {
    let (_blue, green, _dir, sluice) = blue_green_sluice().await;
    let c = client();
    let body = fast(json!({
        "from": "blue", "to": "green", "rollback": "gradual",
        "steps": [{"weight": 10, "hold": "0s"}, {"weight": 30, "hold": "0s"}, {"weight": 60, "hold": "60s"}, {"weight": 100}],
    }));
    assert_eq!(start(&c, &sluice, &body).await.0, 200);
    let at = wait_state(&c, &sluice, "step", Duration::from_secs(10)).await;
    assert!(at["step"].as_u64().unwrap() >= 1);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while weights(&c, &sluice).await != (40, 60) {
        assert!(tokio::time::Instant::now() < deadline, "step 3 never reached");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    green.knobs.set_error_rate(0.5);
    wait_state(&c, &sluice, "aborted", Duration::from_secs(20)).await;
    assert_eq!(weights(&c, &sluice).await, (100, 0));
    // The rollout's routing changes, oldest first: up 10, 30, 60, then down
    // through 30 and 10 before 0.
    let mut green_weights: Vec<u64> = audit(&c, &sluice, "rollout.step")
        .await
        .iter()
        .chain(audit(&c, &sluice, "rollout.abort").await.iter())
        // Routing changes only (rollout transitions share the action name).
        .filter(|r| r["after"]["pools"].is_array())
        .map(|r| {
            (
                r["id"].as_u64().unwrap(),
                r["after"]["pools"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|p| p["name"] == "green")
                    .unwrap()["weight"]
                    .as_u64()
                    .unwrap(),
            )
        })
        .collect::<std::collections::BTreeMap<_, _>>()
        .into_values()
        .collect();
    green_weights.dedup();
    assert_eq!(green_weights, [10, 30, 60, 30, 10, 0]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_canary_step_splits_traffic_within_three_points() {
    let (_blue, _green, _dir, sluice) = blue_green_sluice().await;
    let c = client();
    let body = fast(json!({
        "from": "blue", "to": "green",
        "steps": [{"weight": 5}, {"pause": true}, {"weight": 25}, {"pause": true}, {"weight": 50}, {"pause": true}, {"weight": 100}],
    }));
    assert_eq!(start(&c, &sluice, &body).await.0, 200);
    let url = format!("http://{}/", sluice.addr);
    for expected in [5.0, 25.0, 50.0] {
        let gate = wait_state(&c, &sluice, "paused", Duration::from_secs(10)).await;
        let gate_step = gate["step"].as_u64();
        const N: usize = 4000;
        let mut green = 0;
        for _ in 0..N {
            if pool_of(&get(&c, &url, &[]).await.2) == "green" {
                green += 1;
            }
        }
        let share = green as f64 * 100.0 / N as f64;
        assert!(
            (share - expected).abs() <= 3.0,
            "green got {share:.1}% at the {expected}% step"
        );
        let (status, _) = call(
            &c,
            "POST",
            format!("http://{}/api/v1/rollouts/current/promote", sluice.admin),
            "",
        )
        .await;
        assert_eq!(status, 200);
        // Past this gate before waiting for the next one (the next step
        // holds 0 s, so the state may be "paused" again at once).
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            let (_, current) = call(
                &c,
                "GET",
                format!("http://{}/api/v1/rollouts/current", sluice.admin),
                "",
            )
            .await;
            if current["step"].as_u64() != gate_step {
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "{current}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    wait_state(&c, &sluice, "completed", Duration::from_secs(20)).await;
}
