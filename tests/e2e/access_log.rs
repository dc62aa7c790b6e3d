//! The access log as an operator reads it: one line per request in the
//! file it was told, JSON that parses or combined lines that log tooling
//! matches, errors always written and successes sampled, a rotated file
//! reopened, a reload that turns the log on, moves it and turns it off,
//! and a log that cannot be written failing no request.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use crate::common::running::{Running, config_for};
use crate::common::*;

/// The file's lines once it has at least `n` (polled, with a deadline).
async fn lines(path: &Path, n: usize, deadline: Duration) -> Vec<String> {
    let end = tokio::time::Instant::now() + deadline;
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let lines: Vec<String> = text.lines().map(str::to_owned).collect();
        if lines.len() >= n {
            return lines;
        }
        assert!(
            tokio::time::Instant::now() < end,
            "{} has {} lines, expected {n}",
            path.display(),
            lines.len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn json(line: &str) -> serde_json::Value {
    serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
}

fn log_section(path: &Path, extra: &str) -> String {
    format!("[access_log]\nenabled = true\npath = \"{}\"\n{extra}", path.display())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_request_is_one_json_line_and_its_id_agrees_with_the_client_and_backend() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("access.log");
    let blue = spawn_backend("blue", "v1", any_addr()).await.unwrap();
    let green = spawn_backend("green", "v2", any_addr()).await.unwrap();
    let toml = format!(
        "{}\n{}{}",
        log_section(&file, ""),
        pool_toml("blue", 50, &[blue.addr]),
        pool_toml("green", 50, &[green.addr])
    );
    let proxy = start_proxy(&toml).await;
    const TOTAL: usize = 10_000;
    const H2: usize = 1_000;
    // What each client saw, by the request id it got back; half send
    // their own, the others get one made by sluice.
    let mut seen: HashMap<String, (String, usize, &str)> = HashMap::new();
    let (h1, h2) = (client(), h2_client());
    for batch in 0..TOTAL / 100 {
        let mut calls = Vec::new();
        for i in batch * 100..(batch + 1) * 100 {
            let (c, protocol) = if i < H2 {
                (h2.clone(), "HTTP/2.0")
            } else {
                (h1.clone(), "HTTP/1.1")
            };
            let url = proxy.url(&format!("/item/{i}?q=%22x%22"));
            calls.push(tokio::spawn(async move {
                let own = format!("req-{i}");
                let sent: &[(&str, &str)] = if i % 2 == 0 { &[("x-request-id", &own)] } else { &[] };
                let (status, headers, body) = get(&c, &url, sent).await;
                assert_eq!(status, 200, "{body}");
                let id = headers["x-request-id"].to_str().unwrap().to_owned();
                if i % 2 == 0 {
                    assert_eq!(id, own, "a client's id is kept");
                } else {
                    assert!(id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()), "{id}");
                }
                let at_backend: serde_json::Value = serde_json::from_str(&body).unwrap();
                assert_eq!(at_backend["request_id"], id.as_str(), "the backend saw another id");
                (id, (pool_of(&body), body.len(), protocol))
            }));
        }
        for call in calls {
            let (id, view) = call.await.unwrap();
            assert!(seen.insert(id, view).is_none(), "an id repeats");
        }
    }
    let lines = lines(&file, TOTAL, Duration::from_secs(30)).await;
    assert_eq!(lines.len(), TOTAL, "one line per request");
    // The writer's fields are the API's (`ctl logs`, the dashboard): the
    // hand-written JSON and `sluice_api::AccessLine` name the same keys.
    let written = json(&lines[0]);
    let typed: sluice_api::AccessLine = serde_json::from_value(written.clone()).unwrap();
    let keys = |v: &serde_json::Value| v.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
    assert_eq!(keys(&written), keys(&serde_json::to_value(typed).unwrap()));
    let mut logged = 0;
    for line in &lines {
        let v = json(line);
        let id = v["request_id"]
            .as_str()
            .unwrap_or_else(|| panic!("no request id: {line}"));
        let (pool, len, protocol) = seen
            .remove(id)
            .unwrap_or_else(|| panic!("unknown or repeated id: {line}"));
        assert_eq!(v["pool"], pool.as_str(), "{line}");
        let (version, backend) = if pool == "blue" {
            ("blue-v", blue.addr)
        } else {
            ("green-v", green.addr)
        };
        assert_eq!(v["version"], version, "{line}");
        assert_eq!(v["backend"], backend.to_string(), "{line}");
        assert_eq!(v["status"], 200, "{line}");
        assert_eq!(v["method"], "GET", "{line}");
        assert_eq!(v["protocol"], protocol, "{line}");
        assert!(v["path"].as_str().unwrap().starts_with("/item/"), "{line}");
        assert!(v["path"].as_str().unwrap().ends_with("?q=%22x%22"), "{line}");
        assert_eq!(v["client"], "127.0.0.1", "{line}");
        assert_eq!(v["bytes_out"], len as u64, "{line}");
        assert_eq!(v["bytes_in"], 0, "{line}");
        assert_eq!(v["error"], serde_json::Value::Null, "{line}");
        assert_eq!(v["retries"], 0, "{line}");
        let (total, upstream) = (v["duration_ms"].as_f64().unwrap(), v["upstream_ms"].as_f64().unwrap());
        assert!(0.0 <= upstream && upstream <= total, "{line}");
        let ts = v["ts"].as_str().unwrap();
        assert!(
            ts.len() == 24 && ts.ends_with('Z') && ts.as_bytes()[10] == b'T',
            "{line}"
        );
        logged += 1;
    }
    assert_eq!(logged, TOTAL);
    assert!(seen.is_empty(), "requests without a line: {}", seen.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_are_always_written_and_successes_sampled() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("access.log");
    let extra = format!(
        "[proxy]\nallow_pool_override = true\n{}",
        log_section(&file, "sample = 0.0\n")
    );
    let (proxy, _b, _g) = blue_green(100, &extra).await;
    let c = client();
    for _ in 0..50 {
        assert_eq!(get(&c, &proxy.url("/ok"), &[]).await.0, 200);
    }
    for _ in 0..3 {
        assert_eq!(get(&c, &proxy.url("/bad"), &[("x-sluice-pool", "nope")]).await.0, 400);
    }
    // Successes are never queued at sample = 0: the first three lines are
    // the errors, or a success slipped in.
    for line in lines(&file, 3, Duration::from_secs(10)).await {
        let v = json(&line);
        assert_eq!(
            (v["status"].as_u64(), v["error"].as_str()),
            (Some(400), Some("unknown-pool")),
            "{line}"
        );
        assert_eq!(v["pool"], serde_json::Value::Null, "{line}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn combined_lines_match_the_combined_format() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("access.log");
    let (proxy, blue, _g) = blue_green(100, &log_section(&file, "format = \"combined\"\n")).await;
    let c = client();
    let agent = "tool/1.0 \"quoted\"";
    get(
        &c,
        &proxy.url("/a?b=c"),
        &[("user-agent", agent), ("referer", "http://r.example/")],
    )
    .await;
    get(&c, &proxy.url("/two"), &[("x-request-id", "id-2")]).await;
    let lines = lines(&file, 2, Duration::from_secs(10)).await;
    // nginx's combined format, then sluice's fields.
    let combined = regex::Regex::new(
        r#"^(\S+) - (\S+) \[(\d{2}/[A-Z][a-z]{2}/\d{4}:\d{2}:\d{2}:\d{2} [+-]\d{4})\] "([^"]*)" (\d{3}) (\d+) "([^"]*)" "([^"]*)" pool="([^"]*)" version="([^"]*)" backend="([^"]*)" upstream_ms=([\d.]+|-) duration_ms=([\d.]+) request_id="([^"]*)" error="([^"]*)" retries=(\d+)$"#,
    )
    .unwrap();
    let first = combined
        .captures(&lines[0])
        .unwrap_or_else(|| panic!("not combined: {}", lines[0]));
    assert_eq!(&first[1], "127.0.0.1");
    assert_eq!(&first[4], "GET /a?b=c HTTP/1.1");
    assert_eq!(&first[5], "200");
    assert_eq!(&first[7], "http://r.example/");
    assert_eq!(&first[8], r#"tool/1.0 \x22quoted\x22"#);
    assert_eq!((&first[9], &first[10]), ("blue", "blue-v"));
    assert_eq!(&first[11], blue.addr.to_string());
    // No id sent: the one sluice made.
    assert!(
        first[14].len() == 32 && first[14].bytes().all(|b| b.is_ascii_hexdigit()),
        "{}",
        &first[14]
    );
    assert_eq!(&first[15], "-");
    let second = combined
        .captures(&lines[1])
        .unwrap_or_else(|| panic!("not combined: {}", lines[1]));
    assert_eq!((&second[4], &second[14]), ("GET /two HTTP/1.1", "id-2"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_that_cannot_be_opened_fails_no_request() {
    // Not even root can create a file under /proc.
    let extra = "[access_log]\nenabled = true\npath = \"/proc/sluice-no-such-dir/access.log\"\n";
    let (proxy, _b, _g) = blue_green(100, extra).await;
    let c = client();
    for _ in 0..200 {
        assert_eq!(get(&c, &proxy.url("/"), &[]).await.0, 200);
    }
}

/// `sluice run` with an access log in `dir`, `extra` added to its config.
fn run_with_log(dir: &Path, blue: &DemoBackend, green: &DemoBackend, log: &str) -> Running {
    let text = format!("{}\n{log}", config_for(dir, blue.addr, green.addr, 100));
    Running::start(dir, &text, &[])
}

/// Sends `path` until a line for it is in `file`; whether it also reached
/// `not_in` (an old, rotated file) is for the caller to check.
async fn until_logged(c: &TestClient, sluice: &Running, path: &str, file: &Path) {
    let end = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        assert_eq!(get(c, &format!("http://{}{path}", sluice.addr), &[]).await.0, 200);
        let text = std::fs::read_to_string(file).unwrap_or_default();
        if text.contains(&format!("\"path\":\"{path}\"")) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < end,
            "{path} never reached {}",
            file.display()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_log_is_reopened_by_rename_and_by_sigusr1() {
    let blue = spawn_backend("blue", "v1", any_addr()).await.unwrap();
    let green = spawn_backend("green", "v2", any_addr()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("access.log");
    let sluice = run_with_log(dir.path(), &blue, &green, &log_section(&file, ""));
    let c = client();
    until_logged(&c, &sluice, "/one", &file).await;

    // logrotate's default: rename, and the writer notices by itself.
    std::fs::rename(&file, dir.path().join("access.log.1")).unwrap();
    until_logged(&c, &sluice, "/two", &file).await;

    // With a signal, the next line already goes to the new file.
    let rotated = dir.path().join("access.log.2");
    std::fs::rename(&file, &rotated).unwrap();
    sluice.signal("USR1");
    sluice.wait_log("reopening the access log", Duration::from_secs(10));
    assert_eq!(get(&c, &format!("http://{}/three", sluice.addr), &[]).await.0, 200);
    // Waits for /three itself: a late /two line (its entry ends when its
    // body is dropped, after the client has the answer) may reach the new
    // file first.
    let end = tokio::time::Instant::now() + Duration::from_secs(10);
    let new = loop {
        let new = std::fs::read_to_string(&file).unwrap_or_default();
        if new.contains("\"path\":\"/three\"") || tokio::time::Instant::now() >= end {
            break new;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(new.contains("\"path\":\"/three\""), "{new}");
    let old = std::fs::read_to_string(&rotated).unwrap();
    assert!(!old.contains("/three"), "written to the rotated file: {old}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_turns_the_log_on_moves_it_and_turns_it_off() {
    let blue = spawn_backend("blue", "v1", any_addr()).await.unwrap();
    let green = spawn_backend("green", "v2", any_addr()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a.log"), dir.path().join("b.log"));
    let sluice = run_with_log(dir.path(), &blue, &green, "");
    let c = client();
    let reload = |log: String| {
        let text = format!("{}\n{log}", config_for(dir.path(), blue.addr, green.addr, 100));
        std::fs::write(&sluice.config, text).unwrap();
        sluice.signal("HUP");
        sluice.wait_log("config reloaded", Duration::from_secs(10));
    };
    assert_eq!(get(&c, &format!("http://{}/before", sluice.addr), &[]).await.0, 200);
    reload(log_section(&a, ""));
    until_logged(&c, &sluice, "/on", &a).await;
    reload(log_section(&b, ""));
    until_logged(&c, &sluice, "/moved", &b).await;
    reload(String::new());
    assert_eq!(get(&c, &format!("http://{}/off", sluice.addr), &[]).await.0, 200);
    reload(log_section(&a, ""));
    until_logged(&c, &sluice, "/again", &a).await;
    let (a, b) = (
        std::fs::read_to_string(&a).unwrap(),
        std::fs::read_to_string(&b).unwrap(),
    );
    for (text, absent) in [(&a, "/before"), (&a, "/off"), (&b, "/off"), (&a, "/moved")] {
        assert!(
            !text.contains(&format!("\"path\":\"{absent}\"")),
            "{absent} logged: {text}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_fails_no_request_and_the_lost_lines_are_counted() {
    let blue = spawn_backend("blue", "v1", any_addr()).await.unwrap();
    let green = spawn_backend("green", "v2", any_addr()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    // Every write to /dev/full fails with ENOSPC, as on a full disk.
    let sluice = run_with_log(
        dir.path(),
        &blue,
        &green,
        "[access_log]\nenabled = true\npath = \"/dev/full\"\n",
    );
    let c = client();
    for _ in 0..500 {
        assert_eq!(get(&c, &format!("http://{}/", sluice.addr), &[]).await.0, 200);
    }
    sluice.wait_log("cannot write the access log", Duration::from_secs(10));
    let end = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (_, _, scrape) = get(&c, &format!("http://{}/metrics", sluice.admin), &[]).await;
        let dropped: f64 = scrape
            .lines()
            .find_map(|l| l.strip_prefix("sluice_access_log_dropped_total ")?.parse().ok())
            .unwrap_or_else(|| panic!("no sluice_access_log_dropped_total in {scrape}"));
        if dropped >= 500.0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < end,
            "{dropped} lines counted as dropped, 500 expected"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_leaves_before_its_answer_is_logged_with_499() {
    use tokio::io::AsyncWriteExt;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("access.log");
    let (proxy, blue, _g) = blue_green(100, &log_section(&file, "")).await;
    blue.knobs.set_latency(Duration::from_secs(2));
    let mut stream = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    stream
        .write_all(b"GET /slow HTTP/1.1\r\nhost: x\r\nx-request-id: gave-up-1\r\n\r\n")
        .await
        .unwrap();
    // Gone while the backend still works on it.
    wait_until(Duration::from_secs(5), "the backend got the request", || {
        blue.knobs.received() >= 1
    })
    .await;
    drop(stream);
    let line = &lines(&file, 1, Duration::from_secs(10)).await[0];
    let v = json(line);
    assert_eq!(v["status"], 499, "{line}");
    assert_eq!(v["error"], "client-closed", "{line}");
    assert_eq!(v["request_id"], "gave-up-1", "{line}");
    assert_eq!(v["pool"], "blue", "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_stream_the_client_resets_is_logged_with_499() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("access.log");
    let (proxy, blue, _g) = blue_green(100, &log_section(&file, "")).await;
    blue.knobs.set_latency(Duration::from_secs(2));
    let c = h2_client();
    let url = proxy.url("/slow-h2");
    let call = tokio::spawn(async move { get(&c, &url, &[("x-request-id", "reset-1")]).await });
    wait_until(Duration::from_secs(5), "the backend got the request", || {
        blue.knobs.received() >= 1
    })
    .await;
    // Dropping the call resets its stream (RST_STREAM CANCEL).
    call.abort();
    let line = &lines(&file, 1, Duration::from_secs(10)).await[0];
    let v = json(line);
    assert_eq!(
        (v["status"].as_u64(), v["error"].as_str()),
        (Some(499), Some("client-closed")),
        "{line}"
    );
    assert_eq!(
        (v["protocol"].as_str(), v["request_id"].as_str()),
        (Some("HTTP/2.0"), Some("reset-1")),
        "{line}"
    );
}
