//! gRPC calls through sluice: per-call balancing, codes and details, large
//! messages, streams, TLS, deadlines, weight flips, and the backend side
//! (concurrency limits, refused streams, GOAWAY, one connection per burst).

use sluice_routing::{Actor, WeightChange};
use std::net::SocketAddr;
use std::process::Stdio;

use serde_json::Value;

use super::*;
use crate::common;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_calls_pass_through_and_are_balanced_per_call() {
    if !grpcio_present() {
        return;
    }
    let (_blue, _green, proxy) = blue_green(50).await;

    // 1,000 unary calls on one client channel: each call routed on its own.
    let out = call(proxy.addr, &["unary", "1000"]).await;
    assert_eq!(out["failed"], serde_json::json!({}), "{out}");
    let blue_calls = out["answers"]["blue"].as_u64().unwrap_or(0);
    let green_calls = out["answers"]["green"].as_u64().unwrap_or(0);
    assert_eq!(blue_calls + green_calls, 1000, "{out}");
    assert!((400..=600).contains(&blue_calls), "not 50/50 per call: {out}");

    // Status codes and details reach the client as the server sent them
    // (in trailers, or Trailers-Only).
    for code in ["NOT_FOUND", "INVALID_ARGUMENT", "UNAVAILABLE", "INTERNAL"] {
        let out = call(proxy.addr, &["fail", code]).await;
        assert_eq!(out["code"], code, "{out}");
        assert_eq!(out["details"], format!("asked to fail with {code}"), "{out}");
    }
    // A 4 MiB message each way, and a server stream of 1,000 messages.
    let size = 4 * 1024 * 1024 - 64;
    let out = call(proxy.addr, &["big", &size.to_string()]).await;
    let extra = out["length"].as_u64().unwrap_or(0).saturating_sub(size);
    assert!(extra == "blue:".len() as u64 || extra == "green:".len() as u64, "{out}");
    let out = call(proxy.addr, &["stream", "1000"]).await;
    assert_eq!(out["messages"], 1000, "{out}");
}

/// A gRPC call sent with hyper (h2c) so that only sluice enforces its
/// `grpc-timeout` (grpcio's own client would cancel it itself): the
/// response head, its data and its trailers.
async fn call_with_timeout(
    proxy: SocketAddr,
    method: &str,
    timeout: &str,
) -> (http::HeaderMap, Vec<u8>, http::HeaderMap) {
    use http_body_util::BodyExt;
    let io = hyper_util::rt::TokioIo::new(tokio::net::TcpStream::connect(proxy).await.unwrap());
    let (mut sender, conn) = hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), io)
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = http::Request::post(format!("http://{proxy}/test.Echo/{method}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("grpc-timeout", timeout)
        .body(http_body_util::Full::new(bytes::Bytes::from_static(&[
            0, 0, 0, 0, 1, b'x',
        ])))
        .unwrap();
    let res = sender.send_request(req).await.unwrap();
    assert_eq!(res.status(), 200);
    let (head, body) = res.into_parts();
    let collected = body.collect().await.unwrap();
    let trailers = collected.trailers().cloned().unwrap_or_default();
    (head.headers, collected.to_bytes().to_vec(), trailers)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_timeout_is_the_calls_deadline_and_cancels_the_backend() {
    if !grpcio_present() {
        return;
    }
    let server = GrpcServer::start("blue");
    let toml = format!(
        "[proxy.timeouts]\nmax_grpc_timeout = \"400ms\"\n{}",
        grpc_pool("blue", 100, server.addr)
    );
    let proxy = common::start_proxy(&toml).await;

    // Before the response head: Trailers-Only DEADLINE_EXCEEDED. (The
    // backend got the same grpc-timeout: under load its own timer may
    // answer first, so whose answer it is is checked with the cap below.)
    let started = tokio::time::Instant::now();
    let (head, _, _) = call_with_timeout(proxy.addr, "Stall", "200m").await;
    assert_eq!(head["grpc-status"], "4", "{head:?}");
    // The cap: a call asking for 20 s gets max_grpc_timeout (400 ms).
    // sluice's timer and the backend's (sluice tells it the capped
    // deadline) end the call within a millisecond of each other, so either
    // may answer: sluice's answer names its error; the backend's could
    // only come that early from the capped `grpc-timeout` sluice sent.
    let capped = tokio::time::Instant::now();
    let (head, _, _) = call_with_timeout(proxy.addr, "Stall", "20S").await;
    assert_eq!(head["grpc-status"], "4", "{head:?}");
    assert!(
        head.get("x-sluice-error").is_none_or(|e| e == "upstream-timeout"),
        "{head:?}"
    );
    let took = capped.elapsed();
    assert!(
        took >= std::time::Duration::from_millis(390) && took < std::time::Duration::from_secs(3),
        "{took:?}"
    );
    // After the head and a first message: the stream ends with
    // DEADLINE_EXCEEDED in its trailers.
    let (head, data, trailers) = call_with_timeout(proxy.addr, "StallStream", "300m").await;
    assert!(!head.contains_key("grpc-status"), "{head:?}");
    assert_eq!(data, b"\0\0\0\0\x05first");
    assert_eq!(trailers["grpc-status"], "4", "{trailers:?}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );

    // The backend saw each of the three calls cancelled.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let out = call(server.addr, &["cancelled"]).await;
        if out["cancelled"] == 3 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "backend calls not cancelled: {out}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    // A call within its deadline is unaffected.
    let out = call(proxy.addr, &["unary", "3"]).await;
    assert_eq!(out["answers"]["blue"], 3, "{out}");
}

/// `[proxy.timeouts] stream_idle`: a server stream whose backend goes
/// quiet after its first message ends with UNAVAILABLE ("sluice:
/// stream-idle") and the backend's call is cancelled, long before the
/// call's own deadline; a stream sending every 100 ms is not touched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_silent_for_stream_idle_ends_unavailable() {
    if !grpcio_present() {
        return;
    }
    let server = GrpcServer::start("blue");
    let toml = format!(
        "[proxy.timeouts]\nstream_idle = \"500ms\"\n{}",
        grpc_pool("blue", 100, server.addr)
    );
    let proxy = common::start_proxy(&toml).await;
    let started = tokio::time::Instant::now();
    let (head, data, trailers) = call_with_timeout(proxy.addr, "StallStream", "60S").await;
    let took = started.elapsed();
    assert!(!head.contains_key("grpc-status"), "{head:?}");
    assert_eq!(data, b"\0\0\0\0\x05first");
    assert_eq!(trailers["grpc-status"], "14", "{trailers:?}");
    assert_eq!(trailers["grpc-message"], "sluice: stream-idle", "{trailers:?}");
    assert!(
        took >= std::time::Duration::from_millis(450) && took < std::time::Duration::from_secs(5),
        "{took:?}"
    );
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while call(server.addr, &["cancelled"]).await["cancelled"] != 1 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the backend's call was not cancelled"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    // Messages 100 ms apart keep the stream alive well past 500 ms.
    let out = call(proxy.addr, &["stream", "10", "0.1"]).await;
    assert_eq!(out["messages"], 10, "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_calls_than_a_backend_allows_streams_wait_instead_of_failing() {
    if !grpcio_present() {
        return;
    }
    // The backend allows 100 concurrent streams; 300 one-second calls at once.
    let server = GrpcServer::start_with(&["blue", "max=100"]);
    let proxy = common::start_proxy(&grpc_pool("blue", 100, server.addr)).await;
    // One call first: the burst then meets an established connection.
    assert_eq!(call(proxy.addr, &["unary", "1"]).await["answers"]["blue"], 1);
    let started = tokio::time::Instant::now();
    let out = call(proxy.addr, &["concurrent", "300", "1"]).await;
    eprintln!("300 calls took {:?}", started.elapsed());
    assert_eq!(out["codes"], serde_json::json!({"OK": 300}), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_on_a_cold_backend_opens_one_connection() {
    // A plain HTTP/2 backend that counts connections: the first 50
    // requests arrive together, before any connection exists.
    let backend = sluice::demo::spawn_backend("blue", "v1", common::any_addr())
        .await
        .unwrap();
    let toml = format!(
        "{}protocol = \"http2\"\n",
        common::pool_toml("blue", 100, &[backend.addr])
    );
    let proxy = common::start_proxy(&toml).await;
    let client = common::client();
    let url = proxy.url("/");
    let calls: Vec<_> = (0..50)
        .map(|_| {
            let (client, url) = (client.clone(), url.clone());
            tokio::spawn(async move { common::get(&client, &url, &[]).await.0 })
        })
        .collect();
    for call in calls {
        assert_eq!(call.await.unwrap(), 200);
    }
    assert_eq!(backend.knobs.connections(), 1, "one HTTP/2 connection for the burst");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_beside_a_long_stream_go_on_another_connection_to_the_backend() {
    if !grpcio_present() {
        return;
    }
    // The grpcio server tells each call the address it came from: one per
    // connection sluice has to it.
    let server = GrpcServer::start("blue");
    let proxy = common::start_proxy(&grpc_pool("blue", 100, server.addr)).await;
    let out = call(proxy.addr, &["beside-bulk", "5"]).await;
    let peers = |key: &str| -> Vec<String> {
        out[key]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p.as_str().unwrap().to_owned())
            .collect()
    };
    let (before, during) = (peers("before"), peers("during"));
    let stream = out["stream"].as_str().unwrap();
    assert_eq!(out["received"], 128 * 1024, "{out}");
    assert!(
        before.iter().all(|p| p == stream),
        "calls and the stream shared one connection: {out}"
    );
    assert!(
        during.iter().all(|p| p == &during[0]),
        "the calls beside it shared one: {out}"
    );
    assert_ne!(
        during[0], stream,
        "calls beside the long stream went on another connection: {out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_in_flight_finish_when_the_backend_goes_away_gracefully() {
    if !grpcio_present() {
        return;
    }
    let mut server = GrpcServer::start("blue");
    let proxy = common::start_proxy(&grpc_pool("blue", 100, server.addr)).await;
    assert_eq!(call(proxy.addr, &["unary", "1"]).await["answers"]["blue"], 1);
    // Five two-second calls in flight on sluice's connection to it...
    let target = proxy.addr;
    let calls = tokio::spawn(async move { call(target, &["concurrent", "5", "2"]).await });
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while call(server.addr, &["sleeping"]).await["sleeping"] != 5 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the calls never reached the backend"
        );
    }
    // ...when it sends GOAWAY and stops: all five still succeed.
    server.stop_gracefully();
    let out = calls.await.unwrap();
    assert_eq!(out["codes"], serde_json::json!({"OK": 5}), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_over_tls_at_the_edge_and_to_the_backends() {
    if !grpcio_present() {
        return;
    }
    // One CA signs sluice's certificate and the backends'.
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ca = common::test_ca();
    std::fs::write(d.join("ca.pem"), ca.pem()).unwrap();
    for name in ["edge", "backend"] {
        let leaf = common::leaf(&ca, &["localhost"]);
        std::fs::write(d.join(format!("{name}.crt")), &leaf.cert_pem).unwrap();
        std::fs::write(d.join(format!("{name}.key")), &leaf.key_pem).unwrap();
    }
    let tls = format!(
        "tls={}:{}",
        d.join("backend.crt").display(),
        d.join("backend.key").display()
    );
    let server = GrpcServer::start_with(&["blue", &tls]);
    let config = format!(
        "[proxy]\nlisten = \"127.0.0.1:0\"\n[proxy.tls]\nlisten = \"127.0.0.1:0\"\n[[proxy.tls.certificates]]\n\
         cert = \"file:{d}/edge.crt\"\nkey = \"file:{d}/edge.key\"\n[admin]\nlisten = \"127.0.0.1:0\"\n\
         [store]\nurl = \"sqlite://{d}/sluice.db\"\n[health]\nmode = \"grpc\"\ninterval = \"500ms\"\ntimeout = \"400ms\"\n\
         {}[pools.blue.tls]\nca = \"file:{d}/ca.pem\"\nserver_name = \"localhost\"\n",
        grpc_pool("blue", 100, server.addr),
        d = d.display()
    );
    let sluice = crate::common::running::Running::start(d, &config, &[]);
    let edge = sluice.tls.unwrap();
    let ca_file = d.join("ca.pem");
    // The TLS gRPC probe has to pass before traffic flows.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let out = call_with(edge, Some(&ca_file), &["fail", "NOT_FOUND"]).await;
        if out["code"] == "NOT_FOUND" {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "no call got through: {out}");
    }
    let out = call_with(edge, Some(&ca_file), &["unary", "200"]).await;
    assert_eq!(out["answers"]["blue"], 200, "{out}");
    assert_eq!(out["failed"], serde_json::json!({}), "{out}");
    let out = call_with(edge, Some(&ca_file), &["fail", "NOT_FOUND"]).await;
    assert_eq!(out["code"], "NOT_FOUND", "{out}");
    let out = call_with(edge, Some(&ca_file), &["stream", "500"]).await;
    assert_eq!(out["messages"], 500, "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_weight_flip_moves_new_calls_on_a_channel_at_once_and_streams_continue() {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
    if !grpcio_present() {
        return;
    }
    let (_blue, _green, proxy) = blue_green(100).await;
    let mut client = tokio::process::Command::new("python3")
        .args([PEER, "client", &proxy.addr.to_string(), "flip", "50"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(client.stdout.take().unwrap()).lines();
    let before: Value = serde_json::from_str(&lines.next_line().await.unwrap().unwrap()).unwrap();
    assert_eq!(before["before"], serde_json::json!({"blue": 50}), "{before}");
    // The flip, while a server stream from blue is in flight on the channel.
    let weights = [
        ("blue".to_owned(), sluice_config::Weight::ZERO),
        ("green".to_owned(), sluice_config::Weight::FULL),
    ]
    .into_iter()
    .collect();
    proxy
        .routing
        .change_weights(WeightChange::set(&weights, Actor::operator("test")))
        .await
        .unwrap();
    let mut stdin = client.stdin.take().unwrap();
    stdin.write_all(b"go\n").await.unwrap();
    let after: Value = serde_json::from_str(&lines.next_line().await.unwrap().unwrap()).unwrap();
    assert_eq!(after["after"], serde_json::json!({"green": 50}), "{after}");
    let stream = after["stream"].as_array().unwrap();
    assert_eq!(stream.len(), 40, "{after}");
    assert!(stream.iter().all(|who| who == "blue"), "{after}");
    assert!(client.wait().await.unwrap().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_server_stream_survives_weight_flips_a_reload_and_a_goaway_elsewhere() {
    use crate::common::running::Running;
    use crate::health_e2e::TOKEN;
    use std::time::Duration;
    if !grpcio_present() {
        return;
    }
    let (blue, mut green) = (GrpcServer::start("blue"), GrpcServer::start("green"));
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("token"), TOKEN).unwrap();
    let config = |upstream_response: &str| {
        format!(
            "[proxy]\nlisten = \"127.0.0.1:0\"\n[proxy.timeouts]\nupstream_response = \"{upstream_response}\"\n\
             [admin]\nlisten = \"127.0.0.1:0\"\n[[admin.tokens]]\nname = \"ci\"\nrole = \"operator\"\n\
             secret = \"file:{d}/token\"\n[store]\nurl = \"sqlite://{d}/sluice.db\"\n\
             [health]\nmode = \"grpc\"\ninterval = \"500ms\"\ntimeout = \"400ms\"\n{}{}",
            grpc_pool("blue", 100, blue.addr),
            grpc_pool("green", 0, green.addr),
            d = dir.path().display()
        )
    };
    let sluice = Running::start(dir.path(), &config("30s"), &[]);
    let c = common::client();
    let weights = |blue: u32| {
        http::Request::put(format!("http://{}/api/v1/weights", sluice.admin))
            .header("authorization", format!("Bearer {TOKEN}"))
            .header("content-type", "application/json")
            .body(http_body_util::Full::new(bytes::Bytes::from(format!(
                r#"{{"weights": {{"blue": {blue}, "green": {}}}}}"#,
                100 - blue
            ))))
            .unwrap()
    };

    // A server stream of 20 messages a second, 50 ms apart, from blue:
    // 10 s here; `SLUICE_LONG_STREAM_SECS=600` makes it the 10-minute soak,
    // with the flips spread over its first four fifths.
    let secs: u64 = std::env::var("SLUICE_LONG_STREAM_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    let messages = secs * 20;
    let between_flips = if secs > 10 {
        Duration::from_secs(secs) / 25
    } else {
        Duration::ZERO
    };
    let target = sluice.addr;
    let count = messages.to_string();
    let stream = tokio::spawn(async move { call(target, &["stream", &count, "0.05"]).await });
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while call(blue.addr, &["streams"]).await["streams"] != 1 {
        assert!(tokio::time::Instant::now() < deadline, "the stream never reached blue");
    }
    // 20 weight flips, with calls that follow each to its pool (so green
    // has a connection of sluice's for its GOAWAY below).
    for flip in 0..20 {
        let to_blue = if flip % 2 == 0 { 0 } else { 100 };
        assert_eq!(c.request(weights(to_blue)).await.unwrap().status(), 200);
        let out = call(sluice.addr, &["unary", "2"]).await;
        let expected = if to_blue == 100 { "blue" } else { "green" };
        assert_eq!(out["answers"][expected], 2, "flip {flip}: {out}");
        tokio::time::sleep(between_flips).await;
    }
    // A reload.
    let tmp = dir.path().join("sluice.toml.new");
    std::fs::write(&tmp, config("31s")).unwrap();
    std::fs::rename(&tmp, &sluice.config).unwrap();
    sluice.wait_log("config reloaded", Duration::from_secs(10));
    // Green's backend sends GOAWAY on its connection and stops.
    green.stop_gracefully();

    let out = stream.await.unwrap();
    assert_eq!(out["messages"], messages, "{out}");
    assert_eq!(out["senders"], serde_json::json!(["blue"]), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_backend_is_told_the_capped_deadline() {
    if !grpcio_present() {
        return;
    }
    let server = GrpcServer::start("blue");
    let toml = format!(
        "[proxy.timeouts]\nmax_grpc_timeout = \"2s\"\n{}",
        grpc_pool("blue", 100, server.addr)
    );
    let proxy = common::start_proxy(&toml).await;
    let left = |data: Vec<u8>| -> f64 {
        let text = String::from_utf8(data.get(5..).unwrap_or_default().to_vec()).unwrap();
        text.parse().unwrap_or_else(|_| panic!("{text:?}"))
    };
    // Asking for 60 s: the server's deadline is sluice's 2 s.
    let (head, data, trailers) = call_with_timeout(proxy.addr, "Remaining", "60S").await;
    assert_eq!(trailers["grpc-status"], "0", "{head:?} {trailers:?}");
    let capped = left(data);
    assert!(capped > 0.0 && capped <= 2.0, "the backend had {capped} s left");
    // Under the cap: the call's own deadline goes on unchanged.
    let (_, data, _) = call_with_timeout(proxy.addr, "Remaining", "1500m").await;
    let own = left(data);
    assert!(own > 0.0 && own <= 1.5, "the backend had {own} s left");
}
