//! Protocols through the proxy: h2c in, h2 to backends, WebSocket upgrades,
//! chunked and large bodies streamed both ways; each on both engines
//! (`proxy.engine`: sluice's own servers, and hyper's).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use crate::common::*;
use http_body_util::BodyExt;

async fn h2c_prior_knowledge_from_the_client(engine: &str) {
    let (proxy, _blue, _green) = blue_green(100, engine).await;
    let res = h2_client()
        .request(http::Request::get(proxy.url("/h2")).body(Default::default()).unwrap())
        .await
        .unwrap();
    assert_eq!(res.version(), http::Version::HTTP_2);
    assert_eq!(res.status(), 200);
    let body = res.into_body().collect().await.unwrap().to_bytes();
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["pool"], "blue");
    assert_eq!(v["path"], "/h2");
}

async fn h2_to_backends_when_the_pool_asks_for_it(engine: &str) {
    let backend = spawn_backend("blue", "v1", any_addr()).await.unwrap();
    let toml = format!("{}protocol = \"http2\"\n", pool_toml("blue", 100, &[backend.addr]));
    let proxy = start_proxy(&format!("{engine}{toml}")).await;
    let c = client();
    for _ in 0..20 {
        let (status, _, body) = get(&c, &proxy.url("/"), &[]).await;
        assert_eq!(status, 200);
        assert_eq!(pool_of(&body), "blue");
    }
    assert_eq!(backend.knobs.received(), 20);
}

async fn websocket_upgrade_is_tunnelled_both_ways(engine: &str) {
    let backend = websocket_backend().await;
    let proxy = start_proxy(&format!("{engine}{}", pool_toml("blue", 100, &[backend]))).await;
    let (head, mut s) = open_websocket(proxy.addr).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(head.to_ascii_lowercase().contains("upgrade: websocket"), "{head}");
    for msg in [&b"ping"[..], &b"a longer frame of bytes"[..], &[0u8, 1, 2, 255][..]] {
        echo(&mut s, msg).await;
    }
}

async fn h2c_upgrade_request_is_served_as_plain_http11(engine: &str) {
    let (addr, rec) = Recorder::start().await;
    let proxy = start_proxy(&format!("{engine}{}", pool_toml("blue", 100, &[addr]))).await;
    let res = raw_exchange(
        proxy.addr,
        b"GET / HTTP/1.1\r\nhost: x\r\nconnection: Upgrade, HTTP2-Settings\r\nupgrade: h2c\r\nhttp2-settings: AAMAAABkAAQAAP__\r\n\r\n",
        Duration::from_secs(3),
    )
    .await;
    assert_eq!(raw_status(&res), 200, "{res}");
    let h = rec.header_map(0);
    assert!(!h.contains_key("upgrade") && !h.contains_key("http2-settings"), "{h:?}");
}

async fn chunked_request_body_is_streamed_to_the_backend(engine: &str) {
    let (proxy, _blue, _green) = blue_green(100, engine).await;
    let req = b"POST /upload HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n";
    let res = raw_exchange(proxy.addr, req, Duration::from_secs(3)).await;
    assert_eq!(raw_status(&res), 200, "{res}");
    assert!(res.contains("\"received_bytes\":11"), "{res}");
}

const MIB: usize = 1024 * 1024;

async fn fifty_mib_up_and_down_are_streamed(engine: &str) {
    let backend = bulk_backend(64 * 1024, 50 * 16).await;
    let proxy = start_proxy(&format!("{engine}{}", pool_toml("blue", 100, &[backend]))).await;
    let client = upload_50_mib(&proxy.url("/up")).await;

    let down = http::Request::get(proxy.url("/down"))
        .body(RepeatBody::new(0, 0))
        .unwrap();
    let res = client.request(down).await.unwrap();
    assert_eq!(res.status(), 200);
    let mut body = res.into_body();
    let mut total = 0usize;
    while let Some(frame) = body.frame().await {
        total += frame.unwrap().into_data().map(|d| d.len()).unwrap_or(0);
    }
    assert_eq!(total, 50 * MIB);
}

/// Request bodies to an HTTP/2 pool: one that has arrived whole goes out
/// with the head, an empty POST declares its length, a chunked one is
/// streamed, and 50 MiB stream up within the backend's window.
async fn bodies_reach_http2_backends_whole_and_streamed(engine: &str) {
    let h2_pool = |addr| format!("{engine}{}protocol = \"http2\"\n", pool_toml("blue", 100, &[addr]));
    let (addr, seen) = body_recorder().await;
    let proxy = start_proxy(&h2_pool(addr)).await;
    for req in [
        &b"POST /whole HTTP/1.1\r\nhost: x\r\ncontent-length: 5\r\nconnection: close\r\n\r\nhello"[..],
        b"POST /empty HTTP/1.1\r\nhost: x\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
        b"POST /chunked HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
    ] {
        let res = raw_exchange(proxy.addr, req, Duration::from_secs(3)).await;
        assert_eq!(raw_status(&res), 200, "{res}");
    }
    // An upgrade request: HTTP/2 has no Upgrade, the backend gets a plain GET.
    let upgrade = b"GET /ws HTTP/1.1\r\nhost: x\r\nconnection: Upgrade\r\nupgrade: websocket\r\nsec-websocket-version: 13\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";
    let res = raw_exchange(proxy.addr, upgrade, Duration::from_secs(3)).await;
    assert_eq!(raw_status(&res), 200, "{res}");
    let seen: Vec<(String, String)> = seen
        .lock()
        .unwrap()
        .iter()
        .map(|(line, body)| (line.clone(), String::from_utf8_lossy(body).into_owned()))
        .collect();
    let expected = [
        ("POST /whole", "hello"),
        ("POST /empty", ""),
        ("POST /chunked", "hello world"),
        ("GET /ws", ""),
    ];
    assert_eq!(seen, expected.map(|(l, b)| (l.to_string(), b.to_string())).to_vec());

    let proxy = start_proxy(&h2_pool(bulk_backend(64 * 1024, 50 * 16).await)).await;
    upload_50_mib(&proxy.url("/up")).await;
}

/// POSTs 50 MiB to `url` (a bulk backend's, which answers with the count
/// it read) and checks the count; the client, for more.
async fn upload_50_mib(
    url: &str,
) -> hyper_util::client::legacy::Client<hyper_util::client::legacy::connect::HttpConnector, RepeatBody> {
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build_http();
    let up = http::Request::post(url)
        .body(RepeatBody::new(64 * 1024, 50 * 16))
        .unwrap();
    let res = client.request(up).await.unwrap();
    assert_eq!(res.status(), 200);
    let got = res.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(got, (50 * MIB).to_string().as_bytes());
    client
}

async fn host_reaches_http1_backends_from_h2_and_http10_clients(engine: &str) {
    let (addr, rec) = Recorder::start().await;
    let proxy = start_proxy(&format!("{engine}{}", pool_toml("blue", 100, &[addr]))).await;
    // HTTP/2 carries the host as :authority; the backend must see it as Host
    // (the proxy's address here, not the backend's).
    let req = http::Request::get(proxy.url("/a")).body(Default::default()).unwrap();
    assert_eq!(h2_client().request(req).await.unwrap().status(), 200);
    assert_eq!(rec.header_map(0)["host"], [proxy.addr.to_string()]);
    // HTTP/1.0 may send no Host at all: the backend's address stands in.
    let res = raw_exchange(proxy.addr, b"GET /b HTTP/1.0\r\n\r\n", Duration::from_secs(3)).await;
    assert_eq!(raw_status(&res), 200, "{res}");
    assert_eq!(rec.header_map(1)["host"], [addr.to_string()]);
}

/// Each test above, in a module per engine.
macro_rules! on_engine {
    ($module:ident, $engine:expr, $($name:ident),* $(,)?) => {
        mod $module {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($engine).await;
                }
            )*
        }
    };
}

macro_rules! on_both_engines {
    ($($name:ident),* $(,)?) => {
        // sluice's own engines (the default).
        on_engine!(sluice_engine, "", $($name),*);
        // hyper's servers and client.
        on_engine!(hyper_engine, "[proxy]\nengine = \"hyper\"\n", $($name),*);
    };
}

on_both_engines!(
    h2c_prior_knowledge_from_the_client,
    h2_to_backends_when_the_pool_asks_for_it,
    websocket_upgrade_is_tunnelled_both_ways,
    h2c_upgrade_request_is_served_as_plain_http11,
    chunked_request_body_is_streamed_to_the_backend,
    fifty_mib_up_and_down_are_streamed,
    bodies_reach_http2_backends_whole_and_streamed,
    host_reaches_http1_backends_from_h2_and_http10_clients,
);
