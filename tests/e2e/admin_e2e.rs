//! The admin API of the real binary: token rotation by rewriting the file,
//! a Prometheus scrape that `promtool` accepts and whose numbers match the
//! traffic, and weight changes under load that fail no request.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use crate::common::running::Running;
use crate::common::*;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use tokio::time::Instant;

const TOKEN: &str = "first-secret";

fn config(dir: &Path, blue: SocketAddr, green: SocketAddr) -> String {
    std::fs::write(dir.join("ci-token"), format!("{TOKEN}\n")).unwrap();
    format!(
        r#"[proxy]
listen = "127.0.0.1:0"
[admin]
listen = "127.0.0.1:0"
[[admin.tokens]]
name = "ci"
role = "operator"
secret = "file:{d}/ci-token"
[store]
url = "sqlite://{d}/sluice.db"
{}{}"#,
        pool_toml("blue", 100, &[blue]),
        pool_toml("green", 0, &[green]),
        d = dir.display()
    )
}

async fn admin(c: &TestClient, method: &str, url: String, token: &str, body: Option<String>) -> (u16, String) {
    let req = http::Request::builder()
        .method(method)
        .uri(url)
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.unwrap_or_default())))
        .unwrap();
    let res = c.request(req).await.unwrap();
    let status = res.status().as_u16();
    let body = res.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_rotation_takes_effect_within_a_second() {
    let blue = spawn_backend("blue", "v1", any_addr()).await.unwrap();
    let green = spawn_backend("green", "v2", any_addr()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let sluice = Running::start(dir.path(), &config(dir.path(), blue.addr, green.addr), &[]);
    let c = client();
    let status_url = format!("http://{}/api/v1/status", sluice.admin);
    assert_eq!(admin(&c, "GET", status_url.clone(), TOKEN, None).await.0, 200);
    assert_eq!(admin(&c, "GET", status_url.clone(), "second-secret", None).await.0, 401);

    // Kubernetes-style: the new secret is written elsewhere and renamed in.
    std::fs::write(dir.path().join("ci-token.new"), "second-secret\n").unwrap();
    std::fs::rename(dir.path().join("ci-token.new"), dir.path().join("ci-token")).unwrap();
    let changed = Instant::now();
    loop {
        if admin(&c, "GET", status_url.clone(), TOKEN, None).await.0 == 401 {
            break;
        }
        assert!(
            changed.elapsed() < Duration::from_secs(1),
            "old token still accepted after 1 s"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(admin(&c, "GET", status_url.clone(), "second-secret", None).await.0, 200);
    // The rotation is audited right after it takes effect.
    let audit_url = format!("http://{}/api/v1/audit?action=token.rotate", sluice.admin);
    let audited = Instant::now();
    let audit = loop {
        let (_, audit) = admin(&c, "GET", audit_url.clone(), "second-secret", None).await;
        if audit.contains("tokens/ci") {
            break audit;
        }
        assert!(
            audited.elapsed() < Duration::from_secs(5),
            "rotation never audited: {audit}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(
        !audit.contains("second-secret") && !audit.contains(TOKEN),
        "a token value reached the audit trail"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_pass_promtool_and_count_the_traffic() {
    let blue = spawn_backend("blue", "v1", any_addr()).await.unwrap();
    let green = spawn_backend("green", "v2", any_addr()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let sluice = Running::start(dir.path(), &config(dir.path(), blue.addr, green.addr), &[]);
    let c = client();
    let (status, body) = admin(
        &c,
        "PUT",
        format!("http://{}/api/v1/weights", sluice.admin),
        TOKEN,
        Some(r#"{"weights": {"blue": 0, "green": 100}}"#.into()),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    for _ in 0..300 {
        assert_eq!(get(&c, &format!("http://{}/", sluice.addr), &[]).await.0, 200);
    }
    let (_, _, scrape) = get(&c, &format!("http://{}/metrics", sluice.admin), &[]).await;
    let value = |prefix: &str| -> f64 {
        scrape
            .lines()
            .filter(|l| l.starts_with(prefix))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    assert_eq!(
        value("sluice_requests_total{pool=\"green\",code=\"200\"}"),
        300.0,
        "{scrape}"
    );
    assert_eq!(value("sluice_requests_total{pool=\"blue\",code=\"200\"}"), 0.0);
    assert_eq!(value("sluice_request_duration_seconds_count{pool=\"green\"}"), 300.0);
    assert_eq!(value("sluice_pool_weight{pool=\"green\"}"), 100.0);
    assert!(value("sluice_routing_generation") >= 2.0);
    assert!(value("sluice_admin_requests_total") >= 1.0);

    let Some(promtool) = promtool() else { return };
    let mut child = std::process::Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(scrape.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weights_changed_through_the_api_under_load_fail_no_request() {
    let blue = spawn_backend("blue", "v1", any_addr()).await.unwrap();
    let green = spawn_backend("green", "v2", any_addr()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let sluice = Running::start(dir.path(), &config(dir.path(), blue.addr, green.addr), &[]);
    let url = format!("http://{}/", sluice.addr);
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let c = client();
    let mut tasks = Vec::new();
    for _ in 0..100 {
        let (c, url, stop, ok, failed) = (c.clone(), url.clone(), stop.clone(), ok.clone(), failed.clone());
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let req = http::Request::get(&url).body(Full::new(Bytes::new())).unwrap();
                let good = match c.request(req).await {
                    Ok(res) if res.status() == 200 => res.into_body().collect().await.is_ok(),
                    _ => false,
                };
                if good { &ok } else { &failed }.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    let admin_client = client();
    let weights_url = format!("http://{}/api/v1/weights", sluice.admin);
    for i in 0..20 {
        let (blue_w, green_w) = if i % 2 == 0 { (0, 100) } else { (100, 0) };
        let body = format!(r#"{{"weights": {{"blue": {blue_w}, "green": {green_w}}}}}"#);
        let (status, text) = admin(&admin_client, "PUT", weights_url.clone(), TOKEN, Some(body)).await;
        assert_eq!(status, 200, "{text}");
        // The change is served from the very next request on.
        let expect = if green_w == 100 { "green" } else { "blue" };
        for _ in 0..5 {
            assert_eq!(pool_of(&get(&admin_client, &url, &[]).await.2), expect);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    assert!(ok > 500, "only {ok} requests were made");
    assert_eq!(
        failed,
        0,
        "{failed} of {} requests failed while weights changed",
        ok + failed
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_lets_in_flight_requests_finish_and_reports_them() {
    let blue = spawn_backend("blue", "v1", any_addr()).await.unwrap();
    let blue2 = spawn_backend("blue", "v1", any_addr()).await.unwrap();
    let green = spawn_backend("green", "v2", any_addr()).await.unwrap();
    blue.knobs.set_latency(Duration::from_millis(800));
    let dir = tempfile::tempdir().unwrap();
    let text = config(dir.path(), blue.addr, green.addr).replace(
        &format!("backends = [\"{}\"]", blue.addr),
        &format!("backends = [\"{}\", \"{}\"]", blue.addr, blue2.addr),
    );
    let sluice = Running::start(dir.path(), &text, &[]);
    let c = client();
    // Park five slow requests on the first backend (the other is idle, so
    // power-of-two-choices sends new ones there; pin them with a retry loop).
    let mut slow = Vec::new();
    while blue.knobs.received() < 5 {
        let (c, url) = (c.clone(), format!("http://{}/slow", sluice.addr));
        slow.push(tokio::spawn(async move { get(&c, &url, &[]).await.0 }));
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let parked = blue.knobs.received();
    let (status, body) = admin(
        &c,
        "POST",
        format!("http://{}/api/v1/pools/blue/backends/{}/drain", sluice.admin, blue.addr),
        TOKEN,
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let report: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(report["in_flight_at_start"].as_u64().unwrap() >= 1, "{report}");
    assert_eq!(report["drained"], true, "{report}");
    assert_eq!(report["in_flight_now"], 0);
    for t in slow {
        assert_eq!(t.await.unwrap(), 200, "a request on the drained backend failed");
    }
    // No new request reaches the drained backend.
    for _ in 0..20 {
        assert_eq!(get(&c, &format!("http://{}/", sluice.addr), &[]).await.0, 200);
    }
    assert_eq!(blue.knobs.received(), parked);
}

#[test]
fn shipped_alert_rules_pass_promtool_and_use_real_metrics() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let rules = root.join("deploy/prometheus/alerts.yml");
    let Some(promtool) = promtool() else { return };
    let promtool_ok = |command: &str, file: &Path| {
        let out = std::process::Command::new(promtool)
            .args([command, "rules"])
            .arg(file)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "promtool {command} rules: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    };
    promtool_ok("check", &rules);
    // And the rules' unit tests.
    promtool_ok("test", &root.join("deploy/prometheus/alerts_test.yml"));
    // Every sluice metric the rules use is one the exporter defines.
    let exporter = std::fs::read_to_string(root.join("admin-api/src/metrics.rs")).unwrap();
    let text = std::fs::read_to_string(&rules).unwrap();
    for word in text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
        if word.starts_with("sluice_") && word != "sluice_" {
            assert!(
                exporter.contains(&format!("\"{word}\"")),
                "alert rules use unknown metric {word}"
            );
        }
    }
}

#[test]
fn shipped_grafana_dashboard_is_valid_json_on_real_metrics() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(root.join("deploy/grafana/sluice.json")).unwrap();
    let dashboard: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert!(dashboard["panels"].as_array().unwrap().len() >= 6);
    let exporter = std::fs::read_to_string(root.join("admin-api/src/metrics.rs")).unwrap();
    for word in text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
        if let Some(name) = word.strip_suffix("_bucket").or(Some(word))
            && name.starts_with("sluice_")
        {
            assert!(
                exporter.contains(&format!("\"{name}\"")),
                "dashboard uses unknown metric {name}"
            );
        }
    }
}

/// Token values never reach the logs, at any level: not on success, not on
/// a failed attempt, not when the token file is rotated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_never_appear_in_the_logs_at_trace_level() {
    const FIRST: &str = "first-secret-token-3b1f9c";
    const SECOND: &str = "second-secret-token-77ad02";
    const GUESS: &str = "guessed-token-value-0e4411";
    let blue = spawn_backend("blue", "v1", any_addr()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, FIRST).unwrap();
    let text = format!(
        "[proxy]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\n[[admin.tokens]]\nname = \"ops\"\n\
         role = \"operator\"\nsecret = \"file:{}\"\n[store]\nurl = \"sqlite://{}/sluice.db\"\n{}",
        token.display(),
        dir.path().display(),
        pool_toml("blue", 100, &[blue.addr])
    );
    let sluice = Running::start_logging_at(dir.path(), &text, &[], "trace");
    let c = client();
    let status = format!("http://{}/api/v1/status", sluice.admin);
    let call = |t: &'static str| {
        let (c, status) = (c.clone(), status.clone());
        async move {
            let auth = format!("Bearer {t}");
            get(&c, &status, &[("authorization", &auth)]).await.0
        }
    };
    assert_eq!(call(FIRST).await, 200);
    assert_eq!(call(GUESS).await, 401);
    std::fs::write(&token, SECOND).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while call(SECOND).await != 200 {
        assert!(Instant::now() < deadline, "the rotated token never took effect");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(call(FIRST).await, 401);
    get(
        &c,
        &format!("http://{}/", sluice.addr),
        &[("authorization", &format!("Bearer {SECOND}"))],
    )
    .await;
    sluice.signal("TERM");
    let lines = sluice.logs_until_exit(Duration::from_secs(20));
    // Proof that trace logging was on (the request path, the store and
    // hyper log at trace level).
    let traced = lines.iter().filter(|l| l.contains(" TRACE ")).count();
    assert!(traced >= 20, "trace logging produced only {traced} trace lines");
    for secret in [FIRST, SECOND, GUESS] {
        let leaks: Vec<&String> = lines.iter().filter(|l| l.contains(secret)).collect();
        assert!(leaks.is_empty(), "{secret} logged: {leaks:?}");
    }
}

/// schemathesis (PyPI) generates requests from docs/admin-api.yaml against
/// a running sluice with an operator token: no 5xx, every answer within
/// the schema. `scripts/test` installs it; without it the test fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_no_server_errors_and_no_schema_violations() {
    if !tool_present(
        runs("schemathesis", "--version"),
        "schemathesis (pip install schemathesis)",
    ) {
        return;
    }
    let blue = spawn_backend("blue", "v1", any_addr()).await.unwrap();
    let green = spawn_backend("green", "v2", any_addr()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("token"), "schema-token").unwrap();
    let text = format!(
        "[proxy]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\n[[admin.tokens]]\nname = \"st\"\n\
         role = \"operator\"\nsecret = \"file:{d}/token\"\n[store]\nurl = \"sqlite://{d}/sluice.db\"\n{}{}",
        pool_toml("blue", 100, &[blue.addr]),
        pool_toml("green", 0, &[green.addr]),
        d = dir.path().display()
    );
    let sluice = Running::start(dir.path(), &text, &[]);
    let spec = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/admin-api.yaml");
    let url = format!("http://{}", sluice.admin);
    // schemathesis writes a cache (.schemathesis/) where it runs: not in the checkout.
    let scratch = dir.path().to_path_buf();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("schemathesis")
            .current_dir(scratch)
            .arg("run")
            .arg(spec)
            .args(["--url", &url, "-H", "Authorization: Bearer schema-token"])
            .args(["--checks", "not_a_server_error,response_schema_conformance"])
            .args([
                "--exclude-path",
                "/api/v1/events",
                "--exclude-path",
                "/api/v1/logs/stream",
                "-n",
                "20",
            ])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{report}{}", String::from_utf8_lossy(&out.stderr));
    let summary = report.lines().find(|l| l.contains(" generated, ")).unwrap_or_default();
    eprintln!("schemathesis: {}", summary.trim());
}
