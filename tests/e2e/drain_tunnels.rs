//! SIGTERM with a WebSocket open through the real binary: the tunnel keeps
//! working while sluice drains (a WebSocket cannot be told in-band), and
//! sluice exits 0 as soon as the client closes it, well before the drain
//! timeout.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::common::running::{Running, config_for};
use crate::common::*;

/// Answers health checks with 200 and WebSocket upgrades with 101, then
/// echoes the upgraded connection's bytes.
async fn websocket_backend() -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let Some(head) = read_head(&mut s).await else { return };
                if head.to_ascii_lowercase().contains("upgrade: websocket") {
                    let _ = s
                        .write_all(
                            b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: Upgrade\r\n\r\n",
                        )
                        .await;
                    let (mut r, mut w) = s.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                } else {
                    let _ = s
                        .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok")
                        .await;
                }
            });
        }
    });
    addr
}

async fn echo(s: &mut TcpStream, msg: &[u8]) {
    s.write_all(msg).await.unwrap();
    let mut back = vec![0u8; msg.len()];
    tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut back))
        .await
        .expect("no echo through the tunnel")
        .unwrap();
    assert_eq!(back, msg);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_waits_for_an_open_websocket_then_exits_when_it_closes() {
    let ws = websocket_backend().await;
    let green = spawn_backend("green", "v2", any_addr()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    // drain_timeout is 20 s in this config.
    let config = config_for(dir.path(), ws, green.addr, 100);
    let sluice = Running::start(dir.path(), &config, &[]);
    let mut s = TcpStream::connect(sluice.addr).await.unwrap();
    s.write_all(
        b"GET /ws HTTP/1.1\r\nhost: x\r\nconnection: Upgrade\r\nupgrade: websocket\r\nsec-websocket-version: 13\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
    )
    .await
    .unwrap();
    let head = read_head(&mut s).await.unwrap();
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
