//! Request ids (`proxy.request_id_header`): kept when the client sends a
//! well-formed one, made otherwise; the backend, the client and sluice's
//! own error bodies see the same id, over HTTP/1.1 and HTTP/2 alike.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashSet;

use crate::common::*;

#[tokio::test]
async fn every_request_carries_one_id_to_the_backend_and_back() {
    let (backend, recorder) = Recorder::start().await;
    let proxy = start_proxy(&pool_toml("blue", 100, &[backend])).await;
    let mut seen = HashSet::new();
    for (i, client) in [client(), h2_client()].iter().enumerate() {
        // Made by sluice: 32 hex digits, the same at the backend.
        let (status, headers, _) = get(client, &proxy.url("/a"), &[]).await;
        assert_eq!(status, 200);
        let id = headers["x-request-id"].to_str().unwrap().to_owned();
        assert_eq!(id.len(), 32, "{id}");
        assert!(id.bytes().all(|b| b.is_ascii_hexdigit()), "{id}");
        assert!(seen.insert(id.clone()), "ids repeat");
        let at_backend = recorder.header_map(2 * i);
        assert_eq!(at_backend["x-request-id"], vec![id]);
        // The client's own, well-formed: kept end to end.
        let (_, headers, _) = get(client, &proxy.url("/b"), &[("x-request-id", "client-7f3a")]).await;
        assert_eq!(headers["x-request-id"], "client-7f3a");
        assert_eq!(
            recorder.header_map(2 * i + 1)["x-request-id"],
            vec!["client-7f3a".to_owned()]
        );
    }
    // An id too long to log is replaced.
    let long = "x".repeat(200);
    let (_, headers, _) = get(&client(), &proxy.url("/c"), &[("x-request-id", &long)]).await;
    assert_eq!(headers["x-request-id"].len(), 32);
    assert_eq!(
        recorder.header_map(4)["x-request-id"],
        vec![headers["x-request-id"].to_str().unwrap().to_owned()]
    );
}

#[tokio::test]
async fn sluice_s_own_errors_name_the_request_id() {
    let proxy = start_proxy(&pool_toml("blue", 100, &[closed_port().await])).await;
    let (status, headers, body) = get(&client(), &proxy.url("/"), &[("x-request-id", "trace-me-1")]).await;
    assert_eq!(status, 502);
    assert_eq!(headers["x-request-id"], "trace-me-1");
    assert_eq!(
        body,
        "sluice: could not connect to the backend (request id trace-me-1)\n"
    );
}

#[tokio::test]
async fn an_empty_header_name_turns_ids_off() {
    let (backend, recorder) = Recorder::start().await;
    let proxy = start_proxy(&format!(
        "[proxy]\nrequest_id_header = \"\"\n{}",
        pool_toml("blue", 100, &[backend])
    ))
    .await;
    let (status, headers, _) = get(&client(), &proxy.url("/"), &[]).await;
    assert_eq!(status, 200);
    assert!(!headers.contains_key("x-request-id"));
    assert!(!recorder.header_map(0).contains_key("x-request-id"));
}

/// A backend that answers every request with its own `x-request-id`.
async fn echoing_backend() -> std::net::SocketAddr {
    use tokio::io::AsyncWriteExt;
    let listener = tokio::net::TcpListener::bind(ANY).await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                while read_head(&mut stream).await.is_some() {
                    let answer = b"HTTP/1.1 200 OK\r\nx-request-id: from-backend\r\ncontent-length: 2\r\n\r\nok";
                    if stream.write_all(answer).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

#[tokio::test]
async fn a_backend_s_own_id_is_not_doubled_on_either_engine_or_protocol() {
    let backend = echoing_backend().await;
    for engine in ["sluice", "hyper"] {
        let proxy = start_proxy(&format!(
            "[proxy]\nengine = \"{engine}\"\n{}",
            pool_toml("blue", 100, &[backend])
        ))
        .await;
        for client in [client(), h2_client()] {
            let (status, headers, _) = get(&client, &proxy.url("/"), &[]).await;
            assert_eq!(status, 200);
            let ids: Vec<_> = headers.get_all("x-request-id").iter().collect();
            assert_eq!(ids, vec!["from-backend"], "{engine}");
        }
    }
}

#[tokio::test]
async fn the_hyper_engine_carries_ids_too() {
    let (backend, recorder) = Recorder::start().await;
    let proxy = start_proxy(&format!(
        "[proxy]\nengine = \"hyper\"\n{}",
        pool_toml("blue", 100, &[backend])
    ))
    .await;
    let (status, headers, _) = get(&client(), &proxy.url("/"), &[]).await;
    assert_eq!(status, 200);
    let id = headers["x-request-id"].to_str().unwrap().to_owned();
    assert_eq!(id.len(), 32);
    assert_eq!(recorder.header_map(0)["x-request-id"], vec![id]);
}
