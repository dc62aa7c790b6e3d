//! Overload: a cap on requests in flight per backend (503 + `Retry-After`,
//! recovering when load drops), a cap on open client connections (closed
//! on accept, recovering when connections close), and memory under 10,000
//! idle connections.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::common::running::{Running, one_pool_config};
use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_past_the_in_flight_cap_get_503_with_retry_after() {
    let slow = spawn_backend("blue", "v1", any_addr()).await.unwrap();
    // Long enough that the two held requests are still in flight while the
    // others are tried, however loaded the machine is (with 800 ms and six
    // requests sent at once, a late one could find a slot freed again).
    slow.knobs.set_latency(Duration::from_secs(3));
    let proxy = start_proxy(&format!(
        "[proxy.limits]\nmax_in_flight_per_backend = 2\n{}",
        pool_toml("blue", 100, &[slow.addr])
    ))
    .await;
    let c = client();
    let url = proxy.url("/");
    let held: Vec<_> = (0..2)
        .map(|_| {
            let (c, url) = (c.clone(), url.clone());
            tokio::spawn(async move { get(&c, &url, &[]).await })
        })
        .collect();
    wait_until(Duration::from_secs(10), "both held requests at the backend", || {
        slow.knobs.received() >= 2
    })
    .await;
    for _ in 0..4 {
        let (status, headers, _) = get(&c, &url, &[]).await;
        assert_eq!(status, 503);
        assert_eq!(headers["x-sluice-error"], "backend-overloaded");
        assert_eq!(headers["retry-after"], "1");
    }
    for call in held {
        assert_eq!(call.await.unwrap().0, 200);
    }
    // Shed requests are not the version's fault: no error in the window.
    let table = proxy.routing.snapshot();
    let window = table
        .pool("blue")
        .unwrap()
        .stats
        .window
        .snapshot(tokio::time::Instant::now(), Duration::from_secs(30));
    assert_eq!(window.errors, 0);
    // Once the load is gone, requests pass again.
    slow.knobs.set_latency(Duration::ZERO);
    assert_eq!(get(&c, &url, &[]).await.0, 200);
}

/// A connection that completed one request and stays open.
async fn open_kept(addr: std::net::SocketAddr) -> TcpStream {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n").await.unwrap();
    let mut buf = [0u8; 4096];
    let n = s.read(&mut buf).await.unwrap();
    assert!(
        buf[..n].starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&buf[..n])
    );
    s
}

/// Whether a new connection is closed without an answer.
async fn refused(addr: std::net::SocketAddr) -> bool {
    let Ok(mut s) = TcpStream::connect(addr).await else {
        return true;
    };
    let _ = s.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n").await;
    let mut buf = [0u8; 64];
    matches!(
        tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await,
        Ok(Ok(0) | Err(_))
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_the_cap_are_closed_and_counted() {
    let blue = spawn_backend("blue", "v1", any_addr()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "[proxy]\nlisten = \"127.0.0.1:0\"\n[proxy.limits]\nmax_connections = 5\n[admin]\nlisten = \"127.0.0.1:0\"\n\
         [store]\nurl = \"sqlite://{}/sluice.db\"\n{}",
        dir.path().display(),
        pool_toml("blue", 100, &[blue.addr])
    );
    let sluice = Running::start(dir.path(), &text, &[]);
    let mut kept = Vec::new();
    for _ in 0..5 {
        kept.push(open_kept(sluice.addr).await);
    }
    assert!(refused(sluice.addr).await, "a sixth connection was served");
    let (_, _, metrics) = get(&client(), &format!("http://{}/metrics", sluice.admin), &[]).await;
    assert!(
        metrics.contains("sluice_connections_refused_total 1")
            || metrics.contains("sluice_connections_refused_total 2"),
        "{metrics}"
    );
    // Room again once a connection closes.
    drop(kept.pop());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let mut s = TcpStream::connect(sluice.addr).await.unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n").await.unwrap();
        let mut buf = [0u8; 64];
        if matches!(s.read(&mut buf).await, Ok(n) if n > 0) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "never recovered");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A sluice process with a minute's header timeout (so idle connections
/// stay), serving one backend; it has answered one request.
async fn sluice_for_idle_connections() -> (DemoBackend, tempfile::TempDir, Running, TestClient, String) {
    let blue = spawn_backend("blue", "v1", any_addr()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "[proxy]\nlisten = \"127.0.0.1:0\"\n[proxy.timeouts]\nrequest_header = \"60s\"\n[admin]\nlisten = \"127.0.0.1:0\"\n\
         [store]\nurl = \"sqlite://{}/sluice.db\"\n{}",
        dir.path().display(),
        pool_toml("blue", 100, &[blue.addr])
    );
    let sluice = Running::start(dir.path(), &text, &[]);
    let c = client();
    let url = format!("http://{}/", sluice.addr);
    assert_eq!(get(&c, &url, &[]).await.0, 200);
    (blue, dir, sluice, c, url)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_idle_connections_stay_within_bounded_memory() {
    let (_blue, _dir, sluice, c, url) = sluice_for_idle_connections().await;
    let before = sluice.peak_rss_kib();
    let mut idle = Vec::with_capacity(10_000);
    for _ in 0..10_000 {
        idle.push(TcpStream::connect(sluice.addr).await.unwrap());
    }
    // Every one accepted (the gauge says so) and requests still served.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (_, _, metrics) = get(&c, &format!("http://{}/metrics", sluice.admin), &[]).await;
        let open: f64 = metrics
            .lines()
            .find_map(|l| l.strip_prefix("sluice_open_connections "))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0.0);
        if open >= 10_000.0 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "only {open} connections open");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(get(&c, &url, &[]).await.0, 200);
    let after = sluice.peak_rss_kib();
    let per_conn = (after.saturating_sub(before)) as f64 * 1024.0 / 10_000.0;
    eprintln!("10k idle connections: RSS {before} KiB → {after} KiB ({per_conn:.0} bytes per connection)");
    assert!(after < 200 * 1024, "RSS {after} KiB with 10k idle connections");
    drop(idle);
}

/// The same over HTTP/2: each connection has sent its preface and SETTINGS,
/// so it sits in sluice's HTTP/2 server, which frees an idle connection's
/// buffers after a second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_idle_h2_connections_stay_within_bounded_memory() {
    let (_blue, _dir, sluice, c, url) = sluice_for_idle_connections().await;
    let before = sluice.rss_kib();
    let mut idle = Vec::with_capacity(10_000);
    for _ in 0..10_000 {
        let mut tcp = TcpStream::connect(sluice.addr).await.unwrap();
        tcp.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0")
            .await
            .unwrap();
        idle.push(tcp);
    }
    // Once they have all been idle a moment, memory settles.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let after = loop {
        let rss = sluice.rss_kib();
        if rss < 200 * 1024 {
            break rss;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "RSS {rss} KiB with 10k idle h2 connections"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(get(&c, &url, &[]).await.0, 200);
    let per_conn = (after.saturating_sub(before)) as f64 * 1024.0 / 10_000.0;
    eprintln!("10k idle h2 connections: RSS {before} KiB → {after} KiB ({per_conn:.0} bytes per connection)");
    drop(idle);
}

/// A client that sends its body at a few bytes per second holds only its
/// own request: it gets a 504 once the backend has not answered within the
/// response timeout, and everyone else is served meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_body_times_out_without_holding_anyone_else() {
    let backend = bulk_backend(1024, 1).await;
    let proxy = start_proxy(&format!(
        "[proxy.timeouts]\nupstream_response = \"1s\"\n{}",
        pool_toml("blue", 100, &[backend])
    ))
    .await;
    let mut slow = TcpStream::connect(proxy.addr).await.unwrap();
    slow.write_all(b"POST /up HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\n")
        .await
        .unwrap();
    let started = tokio::time::Instant::now();
    let (mut reader, mut writer) = slow.into_split();
    let drip = tokio::spawn(async move {
        for _ in 0..100 {
            if writer.write_all(b"x").await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    let c = client();
    assert_eq!(get(&c, &proxy.url("/"), &[]).await.0, 200, "others are served");
    let mut buf = [0u8; 256];
    let n = tokio::time::timeout(Duration::from_secs(10), reader.read(&mut buf))
        .await
        .expect("the slow body was never cut off")
        .unwrap();
    let answer = String::from_utf8_lossy(&buf[..n]);
    assert!(answer.starts_with("HTTP/1.1 504"), "{answer}");
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
    drip.abort();
}

/// A client that stops reading a large download: sluice stops reading from
/// the backend too (backpressure) instead of buffering the body.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_reader_keeps_memory_bounded() {
    // 400 MiB available from the backend.
    let backend = bulk_backend(64 * 1024, 6400).await;
    let dir = tempfile::tempdir().unwrap();
    let sluice = Running::start(dir.path(), &one_pool_config(dir.path(), backend), &[]);
    let mut stalled = TcpStream::connect(sluice.addr).await.unwrap();
    stalled
        .write_all(b"GET /down HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    // Read only the first bytes, then nothing for a while.
    let mut buf = [0u8; 4096];
    let _ = stalled.read(&mut buf).await.unwrap();
    let before = sluice.peak_rss_kib();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = sluice.peak_rss_kib();
    eprintln!("slow reader: sluice peak RSS {before} KiB → {after} KiB while stalled on a 400 MiB body");
    assert!(after < before + 32 * 1024, "RSS grew from {before} to {after} KiB");
    // It is still serving.
    assert_eq!(get(&client(), &format!("http://{}/up", sluice.addr), &[]).await.0, 200);
}

/// A backend whose listen queue is full and never drained: past the first
/// connections, connects hang (the kernel drops the SYNs).
async fn blackhole() -> (tokio::net::TcpListener, std::net::SocketAddr) {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(any_addr()).unwrap();
    let listener = socket.listen(1).unwrap();
    let addr = listener.local_addr().unwrap();
    (listener, addr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connects_piling_up_past_the_pending_cap_fail_fast_and_other_pools_are_served() {
    let (_held, hole) = blackhole().await;
    let green = spawn_backend("green", "v2", any_addr()).await.unwrap();
    let proxy = start_proxy(&format!(
        "[proxy]\nallow_pool_override = true\n[proxy.limits]\nmax_pending_per_backend = 4\n\
         [proxy.timeouts]\nconnect = \"4s\"\nupstream_response = \"4s\"\n{}{}",
        pool_toml("blue", 100, &[hole]),
        pool_toml("green", 0, &[green.addr])
    ))
    .await;
    let c = client();
    let mut calls = tokio::task::JoinSet::new();
    for _ in 0..200 {
        let (c, url) = (c.clone(), proxy.url("/"));
        calls.spawn(async move {
            let start = tokio::time::Instant::now();
            let (status, headers, _) = get(&c, &url, &[]).await;
            let error = headers
                .get("x-sluice-error")
                .map(|v| v.to_str().unwrap().to_owned())
                .unwrap_or_default();
            (status, error, start.elapsed(), headers.contains_key("retry-after"))
        });
    }
    // While blue's connects hang, green (by override) is served at once.
    let start = tokio::time::Instant::now();
    let (status, _, body) = get(&c, &proxy.url("/"), &[("x-sluice-pool", "green")]).await;
    assert_eq!(status, 200, "{body}");
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "green waited {:?}",
        start.elapsed()
    );
    let results = calls.join_all().await;
    let shed: Vec<_> = results.iter().filter(|r| r.1 == "upstream-overloaded").collect();
    // At most a few connect (the cap, plus the queue's first connections
    // and requests that passed the check together); the rest fail fast.
    assert!(shed.len() >= 180, "{} of 200 shed: {results:?}", shed.len());
    for (status, _, took, retry_after) in &shed {
        assert_eq!(*status, 503);
        assert!(*retry_after, "no Retry-After");
        assert!(*took < Duration::from_secs(2), "a shed request took {took:?}");
    }
    // The ones that did connect or wait failed as what they were.
    for (status, error, _, _) in results.iter().filter(|r| r.1 != "upstream-overloaded") {
        assert!(
            [502, 504].contains(status) && error.starts_with("upstream-"),
            "{status} {error}"
        );
    }
}
