//! `sluice ctl` against a running sluice: every command's output and exit
//! code, including the server's error messages.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::process::Command;

use crate::common::running::{Running, SLUICE, config_for};
use crate::common::*;

/// `sluice ctl ARGS` against `admin` with `token` ("" for an open admin
/// API): exit code, stdout, stderr.
pub(crate) fn ctl(admin: SocketAddr, token: &str, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(SLUICE)
        .arg("ctl")
        .args(args)
        .env("SLUICE_ADMIN", format!("http://{admin}"))
        .env("SLUICE_TOKEN", token)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Polls `sluice ctl rollout status` (open admin API) until it says `state`,
/// for up to 10 s.
pub(crate) async fn wait_rollout_status(admin: SocketAddr, state: &str) {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let (_, out, _) = ctl(admin, "", &["rollout", "status"]);
        if out.contains(state) {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "never {state}: {out}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctl_drives_a_running_sluice() {
    let blue = spawn_backend("blue", "v1", any_addr()).await.unwrap();
    let green = spawn_backend("green", "v2", any_addr()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("token"), "ctl-secret").unwrap();
    let config = format!(
        "[proxy]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\n[[admin.tokens]]\nname = \"ops\"\nrole = \"operator\"\nsecret = \"file:{d}/token\"\n[store]\nurl = \"sqlite://{d}/sluice.db\"\n{}{}",
        pool_toml("blue", 100, &[blue.addr]),
        pool_toml("green", 0, &[green.addr]),
        d = dir.path().display()
    );
    let sluice = Running::start(dir.path(), &config, &[]);
    let t = "ctl-secret";

    let (code, out, _) = ctl(sluice.admin, t, &["status"]);
    assert_eq!(code, 0);
    assert!(out.contains("blue") && out.contains("100%"), "{out}");
    assert!(out.contains(&format!(":{} (leader)", sluice.admin.port())), "{out}");

    let (code, out, err) = ctl(sluice.admin, t, &["weights", "blue=90", "green=10"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("generation 2"), "{out}");

    let (code, _, err) = ctl(sluice.admin, t, &["weights", "blue=90", "green=20"]);
    assert_eq!(code, 1);
    assert!(err.contains("422") && err.contains("sum to 110"), "{err}");
    let (code, _, err) = ctl(sluice.admin, t, &["weights", "blue:90"]);
    assert_eq!(code, 1);
    assert!(err.contains("POOL=PERCENT"), "{err}");

    let (code, _, err) = ctl(
        sluice.admin,
        t,
        &["deploy", "blue", "--version", "v9", "--backend", "127.0.0.1:1"],
    );
    assert_eq!(code, 1);
    assert!(err.contains("409") && err.contains("carries 90%"), "{err}");
    assert_eq!(ctl(sluice.admin, t, &["weights", "blue=100", "green=0"]).0, 0);
    let (code, out, err) = ctl(
        sluice.admin,
        t,
        &[
            "deploy",
            "green",
            "--version",
            "v3",
            "--backend",
            &green.addr.to_string(),
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("v3"), "{out}");

    let (code, out, _) = ctl(sluice.admin, t, &["rollback"]);
    assert_eq!(code, 0);
    assert!(out.contains("rolled back"), "{out}");
    let (_, out, _) = ctl(sluice.admin, t, &["--output", "json", "pools"]);
    let pools: serde_json::Value = serde_json::from_str(&out).unwrap();
    // Back to what was in force before the last weight change.
    assert_eq!(pools["pools"][0]["weight"], 90);

    let (code, out, _) = ctl(sluice.admin, t, &["audit", "--actor", "ops", "--limit", "10"]);
    assert_eq!(code, 0);
    for action in ["rollback", "pool.update", "weights.set"] {
        assert!(out.contains(action), "missing {action} in {out}");
    }
    let (code, out, _) = ctl(sluice.admin, t, &["history"]);
    assert_eq!(code, 0);
    assert!(out.contains("green") && out.contains("v3"), "{out}");

    let (code, _, err) = ctl(sluice.admin, "wrong", &["status"]);
    assert_eq!(code, 1);
    assert!(err.contains("401"), "{err}");

    // watch: one snapshot event, then stops.
    let (code, out, err) = ctl(sluice.admin, t, &["watch", "--count", "1"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("snapshot") && out.contains("blue=90 green=10"), "{out}");

    let admin = sluice.admin;
    drop(sluice);
    let (code, _, err) = ctl(admin, t, &["status"]);
    assert_eq!(code, 1);
    assert!(err.contains("cannot reach the admin API"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctl_runs_a_rollout_through_a_gate() {
    let blue = spawn_backend("blue", "v1", any_addr()).await.unwrap();
    let green = spawn_backend("green", "v2", any_addr()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let sluice = Running::start(dir.path(), &config_for(dir.path(), blue.addr, green.addr, 100), &[]);
    let (code, out, err) = ctl(
        sluice.admin,
        "",
        &[
            "rollout",
            "start",
            "--from",
            "blue",
            "--to",
            "green",
            "--steps",
            "20:0s,pause,100",
            "--smoke",
            "home=/",
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("blue → green"), "{out}");
    wait_rollout_status(sluice.admin, "paused").await;
    let (code, _, err) = ctl(
        sluice.admin,
        "",
        &["rollout", "start", "--from", "blue", "--to", "green"],
    );
    assert_eq!(code, 1);
    assert!(err.contains("409"), "{err}");
    let (code, out, _) = ctl(sluice.admin, "", &["rollout", "abort"]);
    assert_eq!(code, 0, "{out}");
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let (_, out, _) = ctl(sluice.admin, "", &["rollout", "list"]);
        if out.contains("aborted") {
            assert!(out.contains("aborted by an operator"), "{out}");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "never aborted: {out}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let (_, out, _) = ctl(sluice.admin, "", &["status"]);
    assert!(out.contains("100%"), "weights not restored: {out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctl_dry_runs_a_rollout_from_a_spec_file() {
    let blue = spawn_backend("blue", "v1", any_addr()).await.unwrap();
    let green = spawn_backend("green", "v2", any_addr()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let sluice = Running::start(dir.path(), &config_for(dir.path(), blue.addr, green.addr, 100), &[]);
    let spec = dir.path().join("rollout.json");
    std::fs::write(
        &spec,
        r#"{"hooks": {"pre_switch": [{"name": "expand", "command": ["true"]}]}, "health_gate": "10s"}"#,
    )
    .unwrap();
    let spec = spec.display().to_string();
    let args = [
        "rollout",
        "start",
        "--from",
        "blue",
        "--to",
        "green",
        "--strategy",
        "blue-green",
        "--dry-run",
        "--spec",
        &spec,
    ];
    let (code, out, err) = ctl(sluice.admin, "", &args);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("plan (dry run):") && out.contains("pre_switch hooks: expand"),
        "{out}"
    );
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let (_, out, _) = ctl(sluice.admin, "", &["rollout", "status"]);
        if out.contains("completed") {
            assert!(
                out.contains("dry run passed") && out.contains("hook pre_switch expand: ok"),
                "{out}"
            );
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{out}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let (_, out, _) = ctl(sluice.admin, "", &["status"]);
    assert!(out.contains("100%"), "{out}");
    let (code, _, err) = ctl(
        sluice.admin,
        "",
        &[
            "rollout",
            "start",
            "--from",
            "blue",
            "--to",
            "green",
            "--spec",
            "/nonexistent.json",
        ],
    );
    assert_eq!(code, 1);
    assert!(err.contains("--spec /nonexistent.json"), "{err}");
}

/// What `echo secret > file` and `export SLUICE_TOKEN=$(cat file)`-style
/// scripts produce: a trailing newline is not part of the token, on either
/// side; a token with a control character inside is refused by name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctl_tokens_with_a_trailing_newline_work_and_inner_controls_are_refused() {
    let blue = spawn_backend("blue", "v1", any_addr()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("token"), "nl-secret\n").unwrap();
    let config = format!(
        "[proxy]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\n[[admin.tokens]]\nname = \"ops\"\nrole = \"operator\"\nsecret = \"file:{d}/token\"\n{}",
        pool_toml("blue", 100, &[blue.addr]),
        d = dir.path().display()
    );
    let sluice = Running::start(dir.path(), &config, &[]);

    let (code, out, err) = ctl(sluice.admin, "nl-secret\n", &["status"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("blue"), "{out}");

    let file = dir.path().join("ctl-token");
    std::fs::write(&file, "nl-secret\r\n").unwrap();
    let (code, out, err) = ctl(sluice.admin, "", &["--token-file", file.to_str().unwrap(), "status"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("blue"), "{out}");

    let (code, _, err) = ctl(sluice.admin, "nl-\u{1}secret", &["status"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("SLUICE_TOKEN") && err.contains("control character"),
        "{err}"
    );
    assert!(!err.contains("admin URL") && !err.contains("nl-"), "{err}");

    std::fs::write(&file, "nl-\tsecret\n").unwrap();
    let (code, _, err) = ctl(sluice.admin, "", &["--token-file", file.to_str().unwrap(), "status"]);
    assert_eq!(code, 1);
    assert!(
        err.contains(file.to_str().unwrap()) && err.contains("control character"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctl_logs_shows_failed_requests_and_follows_new_lines_for_operators_only() {
    use std::io::BufRead;
    let blue = spawn_backend("blue", "v1", any_addr()).await.unwrap();
    let green = spawn_backend("green", "v2", any_addr()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ops"), "ops-secret").unwrap();
    std::fs::write(dir.path().join("view"), "view-secret").unwrap();
    let config = format!(
        "[proxy]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\n\
         [[admin.tokens]]\nname = \"ops\"\nrole = \"operator\"\nsecret = \"file:{d}/ops\"\n\
         [[admin.tokens]]\nname = \"view\"\nrole = \"viewer\"\nsecret = \"file:{d}/view\"\n\
         [store]\nurl = \"sqlite://{d}/sluice.db\"\n[access_log]\nenabled = true\npath = \"{d}/access.log\"\n{}{}",
        pool_toml("blue", 100, &[blue.addr]),
        pool_toml("green", 0, &[green.addr]),
        d = dir.path().display()
    );
    let sluice = Running::start(dir.path(), &config, &[]);
    let c = client();
    let url = |path: &str| format!("http://{}{path}", sluice.addr);
    blue.knobs.set_error_rate(1.0);
    for _ in 0..3 {
        assert_eq!(get(&c, &url("/fails"), &[("x-request-id", "bad-1")]).await.0, 500);
    }
    blue.knobs.set_error_rate(0.0);
    assert_eq!(get(&c, &url("/fine"), &[]).await.0, 200);

    // The failed requests are kept (the writer publishes them off the
    // request path: poll).
    let end = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    let out = loop {
        let (code, out, err) = ctl(
            sluice.admin,
            "ops-secret",
            &["logs", "--status", "5xx", "--pool", "blue"],
        );
        assert_eq!(code, 0, "{err}");
        if out.lines().count() >= 3 {
            break out;
        }
        assert!(tokio::time::Instant::now() < end, "kept lines: {out}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert_eq!(out.lines().count(), 3, "{out}");
    assert!(
        out.lines()
            .all(|l| l.contains(" 500 GET /fails -> blue/blue-v ") && l.contains("id=bad-1")),
        "{out}"
    );
    let (code, out, _) = ctl(sluice.admin, "ops-secret", &["logs", "--pool", "green"]);
    assert_eq!((code, out.as_str()), (0, ""));
    let (code, _, err) = ctl(sluice.admin, "view-secret", &["logs"]);
    assert_eq!(code, 1);
    assert!(err.contains("403"), "{err}");
    let (code, _, err) = ctl(sluice.admin, "ops-secret", &["logs", "--status", "5x"]);
    assert_eq!(code, 1);
    assert!(err.contains("400") && err.contains("5xx"), "{err}");

    // --follow: the kept lines, then each new one as it is written.
    let mut follow = Command::new(SLUICE)
        .args(["ctl", "logs", "--follow", "--pool", "blue"])
        .env("SLUICE_ADMIN", format!("http://{}", sluice.admin))
        .env("SLUICE_TOKEN", "ops-secret")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = follow.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            if tx.send(line.unwrap()).is_err() {
                return;
            }
        }
    });
    let mut seen = Vec::new();
    while seen.len() < 3 {
        seen.push(rx.recv_timeout(std::time::Duration::from_secs(10)).expect("kept lines"));
    }
    // Sent until the follower shows it (it may subscribe after the first).
    let end = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    'found: loop {
        assert_eq!(get(&c, &url("/live"), &[("x-request-id", "live-1")]).await.0, 200);
        while let Ok(line) = rx.recv_timeout(std::time::Duration::from_millis(200)) {
            if line.contains(" 200 GET /live -> blue/blue-v ") && line.contains("id=live-1") {
                break 'found;
            }
        }
        assert!(tokio::time::Instant::now() < end, "the follower never showed /live");
    }
    let _ = follow.kill();
    let _ = follow.wait();
}
