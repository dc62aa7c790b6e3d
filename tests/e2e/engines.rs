//! `proxy.engine`: a reload switches the connections accepted after it to
//! hyper's servers (and back) without a new binary, and connections open
//! before it are served to their end on the engine they started with.

use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::common::running::Running;
use crate::common::*;
use crate::h2spec;

/// Which HTTP/2 server answers a new h2c connection: sluice's own says
/// SETTINGS_ENABLE_PUSH = 0 (a server never pushes anyway), hyper's (the
/// `h2` crate) does not send it.
async fn h2_server_is_sluices(addr: std::net::SocketAddr) -> bool {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let mut c = h2spec::Conn::new(Box::new(tcp), "http", addr.to_string());
    c.handshake().await.unwrap();
    c.get(1).await;
    c.headers(1).await.unwrap();
    c.server_setting(0x2) == Some(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_switches_new_connections_and_keeps_open_ones() {
    let blue = spawn_backend("blue", "v1", any_addr()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    crate::tls_e2e::write_pair(dir.path(), "a", "a.test");
    let config = |engine: &str| h2spec::sluice_config(dir.path(), blue.addr, engine);
    let sluice = Running::start(dir.path(), &config("sluice"), &[]);
    assert!(h2_server_is_sluices(sluice.addr).await);

    // A keep-alive HTTP/1.1 connection opened before the reload.
    let mut before = TcpStream::connect(sluice.addr).await.unwrap();
    before.write_all(b"GET /one HTTP/1.1\r\nhost: x\r\n\r\n").await.unwrap();
    expect_served(&mut before, "/one").await;

    let replace = |text: String| {
        let tmp = dir.path().join("sluice.toml.new");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, &sluice.config).unwrap();
    };
    replace(config("hyper"));
    sluice.wait_log("config reloaded", Duration::from_secs(10));
    assert!(
        !h2_server_is_sluices(sluice.addr).await,
        "a new connection still met sluice's HTTP/2 server"
    );
    // HTTP/1.1 and TLS on the hyper engine.
    let mut after = TcpStream::connect(sluice.addr).await.unwrap();
    after.write_all(b"GET /two HTTP/1.1\r\nhost: x\r\n\r\n").await.unwrap();
    expect_served(&mut after, "/two").await;
    let (_, alpn, mut tls) = crate::tls_e2e::handshake_http1(sluice.tls.unwrap(), "a.test").await;
    assert_eq!(alpn.as_deref(), Some(&b"http/1.1"[..]));
    tls.write_all(b"GET /tls HTTP/1.1\r\nhost: a.test\r\n\r\n")
        .await
        .unwrap();
    expect_served(&mut tls, "/tls").await;
    // The connection from before goes on.
    before
        .write_all(b"GET /three HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    expect_served(&mut before, "/three").await;

    // And back.
    replace(config("sluice"));
    sluice.wait_log("config reloaded", Duration::from_secs(10));
    assert!(h2_server_is_sluices(sluice.addr).await);
    after.write_all(b"GET /four HTTP/1.1\r\nhost: x\r\n\r\n").await.unwrap();
    expect_served(&mut after, "/four").await;
}

#[test]
fn an_unknown_engine_is_a_config_error_naming_the_key() {
    let err = sluice_config::Config::from_toml(&format!(
        "[proxy]\nengine = \"nginx\"\n{}",
        pool_toml("blue", 100, &["127.0.0.1:1".parse().unwrap()])
    ))
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("proxy.engine") && err.contains("\"sluice\" or \"hyper\""),
        "{err}"
    );
}
