//! SIGTERM with a WebSocket open through the real binary: the tunnel keeps
//! working while sluice drains (a WebSocket cannot be told in-band), and
//! sluice exits 0 as soon as the client closes it, well before the drain
//! timeout.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use crate::common::running::{Running, config_for};
use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_waits_for_an_open_websocket_then_exits_when_it_closes() {
    let ws = websocket_backend().await;
    let green = spawn_backend("green", "v2", any_addr()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    // drain_timeout is 20 s in this config.
    let config = config_for(dir.path(), ws, green.addr, 100);
    let sluice = Running::start(dir.path(), &config, &[]);
    let (head, mut s) = open_websocket(sluice.addr).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    echo(&mut s, b"before").await;

    sluice.signal("TERM");
    sluice.wait_log("waiting for upgraded connections", Duration::from_secs(10));
    // Still draining: the tunnel works.
    echo(&mut s, b"during the drain").await;
    let closed = tokio::time::Instant::now();
    drop(s);
    let code = tokio::task::spawn_blocking(move || sluice.wait_exit(Duration::from_secs(15)))
        .await
        .unwrap();
    assert_eq!(code, Some(0), "sluice did not exit cleanly after the WebSocket closed");
    assert!(
        closed.elapsed() < Duration::from_secs(5),
        "exit took {:?} after the WebSocket closed",
        closed.elapsed()
    );
}
