//! The dashboard in a real browser (Debian's Chromium driven by
//! playwright-core, `tests/browser/dashboard.mjs`): token prompt, pools and
//! weights, a live weight change, the rollback button with its
//! confirmation, live charts; the weights it restored are checked through
//! the API, and a screenshot is left in the test output.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;

use crate::common::running::Running;
use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_pools_and_rolls_back_in_chromium() {
    let browser_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    let ready = browser_dir.join("node_modules/playwright-core").exists() && Path::new("/usr/bin/chromium").exists();
    let what = "chromium or playwright-core (apt install chromium; npm ci in tests/browser)";
    if !tool_present(ready, what) {
        return;
    }
    let blue = spawn_backend("blue", "v1", any_addr()).await.unwrap();
    let green = spawn_backend("green", "v2", any_addr()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let token = "dashboard-test-token";
    std::fs::write(dir.path().join("token"), token).unwrap();
    let text = format!(
        "[proxy]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\n[[admin.tokens]]\nname = \"ops\"\n\
         role = \"operator\"\nsecret = \"file:{d}/token\"\n[store]\nurl = \"sqlite://{d}/sluice.db\"\n\
         [access_log]\nenabled = true\npath = \"{d}/access.log\"\n{}{}",
        pool_toml("blue", 100, &[blue.addr]),
        pool_toml("green", 0, &[green.addr]),
        d = dir.path().display()
    );
    let sluice = Running::start(dir.path(), &text, &[]);
    // Some traffic for the charts.
    let c = client();
    for _ in 0..20 {
        get(&c, &format!("http://{}/", sluice.addr), &[]).await;
    }
    // A canary that fails, rolled back by the guard: the banner's reason.
    let auth = format!("Bearer {token}");
    let weights = http::Request::put(format!("http://{}/api/v1/weights", sluice.admin))
        .header("authorization", &auth)
        .header("content-type", "application/json")
        .body(http_body_util::Full::new(bytes::Bytes::from_static(
            br#"{"weights": {"blue": 50, "green": 50}}"#,
        )))
        .unwrap();
    assert_eq!(c.request(weights).await.unwrap().status(), 200);
    green.knobs.set_error_rate(1.0);
    let end = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        get(&c, &format!("http://{}/", sluice.addr), &[]).await;
        let (_, _, audit) = get(
            &c,
            &format!("http://{}/api/v1/audit?actor=sluice&action=rollback", sluice.admin),
            &[("authorization", &auth)],
        )
        .await;
        if audit.contains("\"rollback\"") {
            break;
        }
        assert!(
            tokio::time::Instant::now() < end,
            "the guard never rolled green back: {audit}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    green.knobs.set_error_rate(0.0);
    // One failed request for the errors panel, with an id to look for.
    blue.knobs.set_error_rate(1.0);
    let (status, _, _) = get(
        &c,
        &format!("http://{}/checkout", sluice.addr),
        &[("x-request-id", "dash-err-1")],
    )
    .await;
    assert_eq!(status, 500);
    blue.knobs.set_error_rate(0.0);
    let screenshot = Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard.png");
    let admin = format!("http://{}", sluice.admin);
    let shot = screenshot.display().to_string();
    let out = tokio::task::spawn_blocking(move || {
        Command::new("node")
            .arg("dashboard.mjs")
            .args([&admin, token, &shot])
            .current_dir(browser_dir)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{said}");
    eprintln!("{said}");
    assert!(std::fs::metadata(&screenshot).unwrap().len() > 10_000);
    // The rollback clicked in the page really happened (the page then
    // started a rollout, now at its first step: green at 10%).
    let auth = format!("Bearer {token}");
    let (_, _, pools) = get(
        &c,
        &format!("http://{}/api/v1/pools", sluice.admin),
        &[("authorization", &auth)],
    )
    .await;
    let v: serde_json::Value = serde_json::from_str(&pools).unwrap();
    assert_eq!(
        (v["pools"][0]["weight"].as_u64(), v["pools"][1]["weight"].as_u64()),
        (Some(90), Some(10))
    );
    let (_, _, audit) = get(
        &c,
        &format!("http://{}/api/v1/audit?action=rollback", sluice.admin),
        &[("authorization", &auth)],
    )
    .await;
    assert!(audit.contains("\"actor\":\"ops\""), "{audit}");
}
