//! The real `sluice` binary: config checking, bounded memory while
//! streaming, SIGHUP reload and graceful SIGTERM drain.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::common::running::{Running, SLUICE, config_for};
use crate::common::*;
use http_body_util::BodyExt;

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("config/examples")
}

#[test]
fn check_config_accepts_every_example() {
    for name in ["minimal.toml", "blue-green.toml", "canary.toml"] {
        let out = Command::new(SLUICE)
            .arg("check-config")
            .arg(examples().join(name))
            .output()
            .unwrap();
        assert!(out.status.success(), "{name}: {}", String::from_utf8_lossy(&out.stderr));
        assert!(String::from_utf8_lossy(&out.stdout).contains("ok"));
    }
}

#[test]
fn check_config_lists_every_problem_and_fails() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("broken.toml");
    std::fs::write(
        &file,
        "[proxy]\nlisten = \"nowhere\"\ntimeout = \"1s\"\n[pools.blue]\nversion = \"v1\"\nweight = 90\nbackends = [\"127.0.0.1:1\"]\n",
    )
    .unwrap();
    let out = Command::new(SLUICE).arg("check-config").arg(&file).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    for expected in [
        "proxy.listen:",
        "proxy.timeout: unknown key",
        "pools: weights must sum to 100, they sum to 90",
    ] {
        assert!(err.contains(expected), "missing {expected:?} in {err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_stays_bounded_while_streaming_50_mib_both_ways() {
    let backend = bulk_backend(64 * 1024, 800).await;
    let other = spawn_backend("green", "v2", any_addr()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let sluice = Running::start(dir.path(), &config_for(dir.path(), backend, other.addr, 100), &[]);
    let idle = sluice.peak_rss_kib();
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build_http();
    // The demo backend reads the whole upload and reports its size.
    let up = http::Request::post(format!("http://{}/up", sluice.addr))
        .body(RepeatBody::new(256 * 1024, 200))
        .unwrap();
    let res = client.request(up).await.unwrap();
    assert_eq!(res.status(), 200);
    let body = res.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body, "52428800");

    let down = http::Request::get(format!("http://{}/down", sluice.addr))
        .body(RepeatBody::new(0, 0))
        .unwrap();
    let mut body = client.request(down).await.unwrap().into_body();
    let mut total = 0usize;
    while let Some(frame) = body.frame().await {
        total += frame.unwrap().into_data().map(|d| d.len()).unwrap_or(0);
    }
    assert_eq!(total, 50 * 1024 * 1024);

    let peak = sluice.peak_rss_kib();
    eprintln!("sluice RSS: idle peak {idle} KiB, peak after 50 MiB up + 50 MiB down {peak} KiB");
    assert!(
        peak < idle + 32 * 1024,
        "RSS grew from {idle} KiB to {peak} KiB: bodies were buffered"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_weights_and_keeps_running_config_when_invalid() {
    let blue = spawn_backend("blue", "v1", any_addr()).await.unwrap();
    let green = spawn_backend("green", "v2", any_addr()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let sluice = Running::start(dir.path(), &config_for(dir.path(), blue.addr, green.addr, 100), &[]);
    let c = client();
    let url = format!("http://{}/", sluice.addr);
    assert_eq!(pool_of(&get(&c, &url, &[]).await.2), "blue");

    std::fs::write(&sluice.config, config_for(dir.path(), blue.addr, green.addr, 0)).unwrap();
    sluice.signal("HUP");
    let end = tokio::time::Instant::now() + Duration::from_secs(10);
    while pool_of(&get(&c, &url, &[]).await.2) != "green" {
        assert!(tokio::time::Instant::now() < end, "reload never took effect");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    std::fs::write(&sluice.config, "[pools.blue]\nweight = 7\n").unwrap();
    sluice.signal("HUP");
    let line = sluice.wait_log("config reload failed", Duration::from_secs(10));
    assert!(line.contains("pools.blue.version"), "the error names the key: {line}");
    // An invalid file changes nothing: green keeps all traffic.
    for _ in 0..20 {
        assert_eq!(pool_of(&get(&c, &url, &[]).await.2), "green");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_in_flight_requests_and_refuses_new_connections() {
    let blue = spawn_backend("blue", "v1", any_addr()).await.unwrap();
    let green = spawn_backend("green", "v2", any_addr()).await.unwrap();
    blue.knobs.set_latency(Duration::from_secs(2));
    let dir = tempfile::tempdir().unwrap();
    let sluice = Running::start(dir.path(), &config_for(dir.path(), blue.addr, green.addr, 100), &[]);
    let url = format!("http://{}/slow", sluice.addr);

    let client = client();
    let mut in_flight = Vec::new();
    for _ in 0..100 {
        let (client, url) = (client.clone(), url.clone());
        in_flight.push(tokio::spawn(async move {
            let req = http::Request::get(url).body(Default::default()).unwrap();
            let res = client.request(req).await.map_err(|e| e.to_string())?;
            let status = res.status().as_u16();
            res.into_body().collect().await.map_err(|e| e.to_string())?;
            Ok::<u16, String>(status)
        }));
    }
    wait_until(Duration::from_secs(10), "100 requests at the backend", || {
        blue.knobs.received() >= 100
    })
    .await;

    sluice.signal("TERM");
    let addr = sluice.addr;
    let end = tokio::time::Instant::now() + Duration::from_secs(2);
    loop {
        if tokio::net::TcpStream::connect(addr).await.is_err() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < end,
            "new connections still accepted after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let mut ok = 0;
    for t in in_flight {
        match t.await.unwrap() {
            Ok(200) => ok += 1,
            other => panic!("in-flight request failed during drain: {other:?}"),
        }
    }
    assert_eq!(ok, 100);
    let code = tokio::task::spawn_blocking(move || sluice.wait_exit(Duration::from_secs(15)))
        .await
        .unwrap();
    assert_eq!(code, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_config_replaced_by_rename_is_picked_up_and_runtime_weights_follow_the_last_intent() {
    let blue = spawn_backend("blue", "v1", any_addr()).await.unwrap();
    let green = spawn_backend("green", "v2", any_addr()).await.unwrap();
    let canary = spawn_backend("canary", "v3", any_addr()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let sluice = Running::start(dir.path(), &config_for(dir.path(), blue.addr, green.addr, 100), &[]);
    let c = client();
    let url = format!("http://{}/", sluice.addr);
    let replace = |text: String| {
        // Kubernetes ConfigMap style: write elsewhere, rename over the file.
        let tmp = dir.path().join("sluice.toml.new");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, &sluice.config).unwrap();
    };

    // 1. The file moves all traffic to green: applied without a signal.
    replace(config_for(dir.path(), blue.addr, green.addr, 0));
    sluice.wait_log("config reloaded", Duration::from_secs(10));
    assert_eq!(pool_of(&get(&c, &url, &[]).await.2), "green");

    // 2. A runtime change (a rollback-like move back to blue) ...
    let routing_url = format!("http://{}/api/v1/weights", sluice.admin);
    let req = http::Request::put(&routing_url)
        .header("content-type", "application/json")
        .body(http_body_util::Full::new(bytes::Bytes::from(
            r#"{"weights": {"blue": 100, "green": 0}}"#,
        )))
        .unwrap();
    assert_eq!(c.request(req).await.unwrap().status(), 200);
    // ... survives a reload that adds a pool but leaves the weights alone.
    let with_canary = format!(
        "{}{}",
        config_for(dir.path(), blue.addr, green.addr, 0),
        pool_toml("canary", 0, &[canary.addr])
    );
    replace(with_canary.clone());
    sluice.wait_log("config reloaded", Duration::from_secs(10));
    for _ in 0..20 {
        assert_eq!(
            pool_of(&get(&c, &url, &[]).await.2),
            "blue",
            "a reload undid the runtime weights"
        );
    }
    let (_, _, pools) = get(&c, &format!("http://{}/api/v1/pools", sluice.admin), &[]).await;
    assert!(pools.contains("\"name\":\"canary\""), "{pools}");

    // A shorter upstream timeout applies to the next request.
    blue.knobs.set_latency(Duration::from_secs(2));
    replace(format!(
        "{with_canary}[proxy.timeouts]\nupstream_response = \"300ms\"\n"
    ));
    sluice.wait_log("config reloaded", Duration::from_secs(10));
    let asked = tokio::time::Instant::now();
    let (status, _, _) = get(&c, &url, &[]).await;
    assert_eq!(status, 504);
    assert!(asked.elapsed() < Duration::from_millis(1500), "{:?}", asked.elapsed());
    blue.knobs.set_latency(Duration::ZERO);

    // 3. A broken replacement keeps everything and is counted.
    replace("[pools.blue]\nweight = 101\n".into());
    let line = sluice.wait_log("config reload failed", Duration::from_secs(10));
    assert!(line.contains("pools.blue.weight"), "{line}");
    assert_eq!(pool_of(&get(&c, &url, &[]).await.2), "blue");
    let (_, _, metrics) = get(&c, &format!("http://{}/metrics", sluice.admin), &[]).await;
    assert!(
        metrics.contains("sluice_config_reloads_total{result=\"error\"} 1"),
        "{metrics}"
    );
}

#[test]
fn check_config_shows_effective_values_and_where_they_came_from() {
    let out = Command::new(SLUICE)
        .arg("check-config")
        .arg(examples().join("canary.toml"))
        .env("SLUICE_PROXY__LISTEN", "127.0.0.1:7000")
        .env("HEALTH_CHECK_INTERVAL", "3s")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    let line = |key: &str| {
        text.lines()
            .find(|l| l.trim_start().starts_with(key))
            .unwrap_or_default()
            .to_owned()
    };
    assert!(
        line("proxy.listen").contains("127.0.0.1:7000") && line("proxy.listen").contains("[env SLUICE_PROXY__LISTEN]"),
        "{text}"
    );
    assert!(line("health.interval").contains("3s") && line("health.interval").contains("[env HEALTH_CHECK_INTERVAL]"));
    assert!(line("proxy.allow_pool_override").contains("[file]"));
    assert!(line("proxy.drain_timeout").contains("[default]"));
    assert!(!text.contains("hunter"), "no secret values");
}

#[test]
fn the_kubernetes_configmap_holds_a_valid_config() {
    let manifest =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/kubernetes/sluice.yaml")).unwrap();
    let body: String = manifest
        .lines()
        .skip_while(|l| !l.contains("sluice.toml: |"))
        .skip(1)
        .take_while(|l| !l.starts_with("---"))
        .map(|l| format!("{}\n", l.strip_prefix("    ").unwrap_or(l)))
        .collect();
    let config = sluice_config::Config::from_toml(&body).unwrap_or_else(|e| panic!("{e}\n{body}"));
    assert_eq!(config.pools.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_moves_the_listener_to_a_new_address() {
    let blue = spawn_backend("blue", "v1", any_addr()).await.unwrap();
    let green = spawn_backend("green", "v2", any_addr()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let text = config_for(dir.path(), blue.addr, green.addr, 100);
    let sluice = Running::start(dir.path(), &text, &[]);
    let old_url = format!("http://{}/", sluice.addr);
    // A keep-alive connection opened on the old address...
    let kept = client();
    assert_eq!(get(&kept, &old_url, &[]).await.0, 200);

    let free = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let moved = text.replacen("listen = \"127.0.0.1:0\"", &format!("listen = \"{free}\""), 1);
    std::fs::write(&sluice.config, moved).unwrap();
    sluice.signal("HUP");
    sluice.wait_log("listener moved", Duration::from_secs(10));

    // ...the new address serves, the old one refuses new connections...
    assert_eq!(get(&client(), &format!("http://{free}/"), &[]).await.0, 200);
    assert!(tokio::net::TcpStream::connect(sluice.addr).await.is_err());
    // ...and the connection opened before the move still finishes its work.
    assert_eq!(get(&kept, &old_url, &[]).await.0, 200);

    // An address that cannot be bound fails the reload and changes nothing.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let clash = text.replacen(
        "listen = \"127.0.0.1:0\"",
        &format!("listen = \"{}\"", taken.local_addr().unwrap()),
        1,
    );
    std::fs::write(&sluice.config, clash).unwrap();
    sluice.signal("HUP");
    let line = sluice.wait_log("config reload failed", Duration::from_secs(10));
    assert!(line.contains("127.0.0.1"), "{line}");
    assert_eq!(get(&client(), &format!("http://{free}/"), &[]).await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_backend_and_health_subcommands_work_for_containers() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let mut backend = Command::new(SLUICE)
        .args(["demo-backend", "--name", "blue", "--version", "v7", "--listen"])
        .arg(port.to_string())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let health = |url: String| Command::new(SLUICE).args(["health", "--url", &url]).output().unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !health(format!("http://{port}/health/ready")).status.success() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the demo backend never became healthy"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (_, _, body) = get(&client(), &format!("http://{port}/"), &[]).await;
    assert!(body.contains("\"version\":\"v7\""), "{body}");
    backend.kill().unwrap();
    backend.wait().unwrap();
    let down = health(format!("http://{port}/health/live"));
    assert!(!down.status.success());
    assert!(String::from_utf8_lossy(&down.stderr).contains(&port.to_string()));
}

/// `workers = 1` runs tokio's single-threaded scheduler on the thread that
/// starts it (no worker threads): the same product on one event loop —
/// HTTP/1.1 and h2c, a SIGHUP reload, a SIGTERM drain of calls in flight.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_worker_serves_reloads_and_drains_on_one_event_loop() {
    let blue = spawn_backend("blue", "v1", any_addr()).await.unwrap();
    let green = spawn_backend("green", "v2", any_addr()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = |blue_weight| {
        config_for(dir.path(), blue.addr, green.addr, blue_weight).replacen("[proxy]\n", "[proxy]\nworkers = 1\n", 1)
    };
    let sluice = Running::start(dir.path(), &config(100), &[]);
    let threads: Vec<String> = std::fs::read_dir(format!("/proc/{}/task", sluice.child.id()))
        .unwrap()
        .map(|t| std::fs::read_to_string(t.unwrap().path().join("comm")).unwrap())
        .collect();
    assert!(
        !threads.iter().any(|t| t.starts_with("tokio-rt-worker")),
        "no worker threads: {threads:?}"
    );
    let url = format!("http://{}/", sluice.addr);
    assert_eq!(pool_of(&get(&client(), &url, &[]).await.2), "blue");
    assert_eq!(pool_of(&get(&h2_client(), &url, &[]).await.2), "blue");

    std::fs::write(&sluice.config, config(0)).unwrap();
    sluice.signal("HUP");
    let c = client();
    let end = tokio::time::Instant::now() + Duration::from_secs(10);
    while pool_of(&get(&c, &url, &[]).await.2) != "green" {
        assert!(tokio::time::Instant::now() < end, "reload never took effect");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    green.knobs.set_latency(Duration::from_secs(1));
    let before = green.knobs.received();
    let in_flight: Vec<_> = (0..20)
        .map(|_| {
            let (c, url) = (c.clone(), format!("{url}slow"));
            tokio::spawn(async move { get(&c, &url, &[]).await.0 })
        })
        .collect();
    wait_until(Duration::from_secs(10), "20 requests at the backend", || {
        green.knobs.received() >= before + 20
    })
    .await;
    sluice.signal("TERM");
    for call in in_flight {
        assert_eq!(call.await.unwrap(), 200, "a request in flight failed during the drain");
    }
    let code = tokio::task::spawn_blocking(move || sluice.wait_exit(Duration::from_secs(15)))
        .await
        .unwrap();
    assert_eq!(code, Some(0));
}
