//! What each fuzz target checks, shared by the libFuzzer targets (nightly,
//! `cargo fuzz run TARGET`) and the corpus replay in the stable test suite
//! (`tests/e2e/fuzz_replay.rs`), so a finding stays a regression test.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use sluice_routing::{Actor, WeightChange};
use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::sync::OnceLock;
use std::time::Duration;

use http::{HeaderMap, HeaderValue};
use sluice_config::{Sticky, UpstreamProtocol};
use sluice_routing::{PoolSpec, RoutingPolicy, RoutingTable};

/// The config parser and validator: any text gives a config or errors
/// with key paths, never a panic.
pub fn config(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        match sluice_config::Config::from_toml(text) {
            Ok(c) => assert_eq!(sluice_config::weight_total(c.pools.iter().map(|p| &p.weight)), 10_000),
            Err(e) => assert!(!e.to_string().is_empty()),
        }
    }
}

/// The admin API's rollout bodies and weight bodies: parsed or refused
/// with a message, never a panic.
pub fn admin_json(data: &[u8]) {
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    let defaults = sluice_control::rollout::RolloutDefaults {
        analysis: sluice_config::RollbackConfig::default(),
        canary_percentage: sluice_config::Weight::percent(5).unwrap(),
        canary_duration: Duration::from_secs(300),
    };
    if let Err(e) = sluice_control::rollout::parse_request(&value, &defaults) {
        assert!(!e.to_string().is_empty());
    }
    // A weights body against a two-pool table: refused or summing to 100.
    if let Some(weights) = value.get("weights").and_then(|w| w.as_object()) {
        let weights: HashMap<String, sluice_config::Weight> = weights
            .iter()
            .filter_map(|(k, v)| {
                Some((
                    k.clone(),
                    serde_json::from_value::<sluice_config::Weight>(v.clone()).ok()?,
                ))
            })
            .collect();
        let handle = sluice_routing::RoutingHandle::new(&two_pools(), RoutingPolicy::default()).unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        if let Ok(table) = runtime.block_on(handle.change_weights(WeightChange::set(&weights, Actor::operator("fuzz"))))
        {
            assert_eq!(
                sluice_config::weight_total(table.pools().iter().map(|p| &p.weight)),
                10_000
            );
        }
    }
}

fn two_pools() -> Vec<PoolSpec> {
    ["blue", "green"]
        .iter()
        .enumerate()
        .map(|(i, name)| PoolSpec {
            name: (*name).to_owned(),
            version: "v".into(),
            weight: if i == 0 {
                sluice_config::Weight::percent(100).unwrap()
            } else {
                sluice_config::Weight::percent(0).unwrap()
            },
            protocol: UpstreamProtocol::Http1,
            backends: vec![format!("127.0.0.1:{}", 9000 + i)],
            tls: None,
            matches: Vec::new(),
        })
        .collect()
}

/// The routing-table builder and the pool choice: whatever the weights,
/// stickiness and client keys, a pool with weight 0 is never chosen.
pub fn routing(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let pools = usize::from(rest.first().copied().unwrap_or(0) % 4) + 1;
    let rest = rest.get(1..).unwrap_or_default();
    // Weights (hundredths of a percent) from the bytes, made to sum to 100%
    // (the remainder on the last); odd bytes give decimals such as 0.39%.
    let mut weights: Vec<u32> = (0..pools)
        .map(|i| u32::from(rest.get(i).copied().unwrap_or(0)) * 39 % 10_001)
        .collect();
    let mut left = 10_000u32;
    for w in weights.iter_mut() {
        *w = (*w).min(left);
        left -= *w;
    }
    if let Some(last) = weights.last_mut() {
        *last += left;
    }
    let specs: Vec<PoolSpec> = weights
        .iter()
        .enumerate()
        .map(|(i, w)| PoolSpec {
            name: format!("p{i}"),
            version: "v".into(),
            weight: sluice_config::Weight::from_hundredths(*w).unwrap_or_default(),
            protocol: UpstreamProtocol::Http1,
            backends: vec![format!("127.0.0.1:{}", 9000 + i)],
            tls: None,
            matches: Vec::new(),
        })
        .collect();
    let sticky = match mode % 4 {
        0 => None,
        1 => Some(Sticky::Cookie("sluice_cohort".into())),
        2 => Some(Sticky::Header("x-user".into())),
        _ => Some(Sticky::ClientIp),
    };
    let policy = RoutingPolicy {
        sticky,
        ..RoutingPolicy::default()
    };
    let Ok(table) = RoutingTable::build(1, &specs, policy, None) else {
        return;
    };
    let keys = rest.get(pools..).unwrap_or_default();
    for chunk in keys.chunks(8).take(16) {
        let mut headers = HeaderMap::new();
        if let Ok(v) = HeaderValue::from_bytes(chunk) {
            headers.insert("x-user", v.clone());
            if let Ok(cookie) = HeaderValue::from_str(&format!("sluice_cohort={}", String::from_utf8_lossy(chunk))) {
                headers.insert(http::header::COOKIE, cookie);
            }
        }
        let ip = IpAddr::V4(Ipv4Addr::new(
            chunk.first().copied().unwrap_or(0),
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
            chunk.get(3).copied().unwrap_or(0),
        ));
        if let Ok(choice) = sluice_routing::select::choose_pool(&table, &headers, ip) {
            assert!(
                !choice.pool.weight.is_zero(),
                "pool {} with weight 0 chosen",
                choice.pool.name
            );
        }
    }
}

/// A proxy (with one backend) serving on a loopback port for the whole
/// fuzzing process.
fn proxy() -> SocketAddr {
    static PROXY: OnceLock<SocketAddr> = OnceLock::new();
    *PROXY.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let backend = sluice::demo::spawn_backend("blue", "v1", "127.0.0.1:0".parse().unwrap())
                    .await
                    .unwrap();
                let toml = format!(
                    "[proxy.timeouts]\nrequest_header = \"1s\"\nupstream_response = \"1s\"\n\
                     [pools.blue]\nversion = \"v1\"\nweight = 100\nbackends = [\"{}\"]\n",
                    backend.addr
                );
                let config = sluice_config::Config::from_toml(&toml).unwrap();
                let (_, proxy) = sluice_proxy::build(&config).unwrap();
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                tx.send(listener.local_addr().unwrap()).unwrap();
                let opts = sluice_proxy::ListenerOptions::from(&config.proxy);
                sluice_proxy::serve(listener, proxy, opts, std::future::pending()).await;
                drop(backend);
            });
        });
        rx.recv().unwrap()
    })
}

/// The request path over raw bytes: whatever a client sends, the answer is
/// nothing or an HTTP/1.x response, and the proxy keeps serving.
pub fn raw_request(data: &[u8]) {
    let addr = proxy();
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let _ = s.write_all(data);
    let _ = s.shutdown(std::net::Shutdown::Write);
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer);
    assert!(
        answer.is_empty() || answer.starts_with(b"HTTP/1.") || answer.starts_with(&[0, 0]),
        "not an HTTP answer: {:?}",
        String::from_utf8_lossy(&answer[..answer.len().min(200)])
    );
}

/// sluice's HTTP/2 server over raw frames: after the preface and an empty
/// SETTINGS, whatever frames a client sends, the answer is a run of whole
/// HTTP/2 frames starting with sluice's SETTINGS (no panic, nothing else on
/// the wire), and the proxy keeps serving.
pub fn h2_frames(data: &[u8]) {
    let mut s = TcpStream::connect(proxy()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let mut input = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0".to_vec();
    input.extend_from_slice(data);
    let _ = s.write_all(&input);
    let _ = s.shutdown(std::net::Shutdown::Write);
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer);
    let mut rest = &answer[..];
    let mut first = true;
    while !rest.is_empty() {
        assert!(rest.len() >= 9, "a partial frame header: {rest:?}");
        let len = (usize::from(rest[0]) << 16) | (usize::from(rest[1]) << 8) | usize::from(rest[2]);
        assert!(
            rest.len() >= 9 + len,
            "a partial frame: {len} bytes announced, {} left",
            rest.len() - 9
        );
        if first {
            assert_eq!(rest[3], 0x4, "the answer does not start with SETTINGS");
            first = false;
        }
        rest = &rest[9 + len..];
    }
}

/// After a run: the proxy still answers a well-formed request.
pub fn proxy_still_serves() {
    let mut s = TcpStream::connect(proxy()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .unwrap();
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer);
    assert!(
        answer.starts_with(b"HTTP/1.1 200"),
        "{:?}",
        String::from_utf8_lossy(&answer)
    );
}

/// A backend's response as sluice's own HTTP/1.1 exchange reads it: any
/// bytes give a status and a body or an error, never a panic; an answer
/// that has no body by its status or method gets none, and a declared
/// length is exactly the body's length.
pub fn backend_response(data: &[u8]) {
    let Some((&selector, bytes)) = data.split_first() else {
        return;
    };
    let method = if selector & 1 == 1 {
        http::Method::HEAD
    } else {
        http::Method::GET
    };
    if let Ok(Some((map, lines))) = sluice_proxy::http1::head_both_ways(bytes, &method) {
        same_headers(&map, &lines);
    }
    let Ok((res, _)) = sluice_proxy::http1::decode_whole(bytes, &method) else {
        return;
    };
    // Differential: hyper's client reads the same bytes, answering the same
    // method, as the same status and the same body (never looser).
    match hyper_client_reads(bytes, &method) {
        Some((status, body)) => {
            assert_eq!(status, res.status(), "status differs from hyper's");
            assert_eq!(
                &body,
                res.body(),
                "body differs from hyper's for {:?}",
                String::from_utf8_lossy(bytes)
            );
        }
        None => panic!(
            "sluice read a response hyper refuses: {:?}",
            String::from_utf8_lossy(bytes)
        ),
    }
    let status = res.status();
    let bodiless = method == http::Method::HEAD || status == 204 || status == 304;
    if bodiless {
        assert!(res.body().is_empty(), "{status} to {method} with a body");
    }
    let lengths: Vec<_> = res.headers().get_all(http::header::CONTENT_LENGTH).iter().collect();
    if let [length] = lengths[..]
        && !bodiless
        && !res.headers().contains_key(http::header::TRANSFER_ENCODING)
    {
        let declared: usize = length.to_str().unwrap().trim().parse().unwrap();
        assert_eq!(res.body().len(), declared, "body length differs from content-length");
    }
}

/// The header lines sluice's own loop writes say what the header map a
/// hyper connection writes says: the same values in the same order for
/// each name (HeaderMap groups a name's values; lines keep the backend's
/// order across names). A length is in the lines only where no body
/// follows (HEAD, 1xx, 204, 304), and then as the map has it.
fn same_headers(map: &http::HeaderMap, lines: &sluice_proxy::http1::HeaderLines) {
    let text = std::str::from_utf8(&lines.bytes).ok();
    // The HTTP/2 server reads the lines field by field: the same fields.
    let mut fields = lines.fields();
    for line in lines.bytes.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
        let (name, value) = fields.next().expect("a field for each line");
        assert_eq!([name, b": ", value, b"\r"].concat(), line, "{text:?}");
    }
    assert_eq!(fields.next(), None, "{text:?}");
    let mut from_lines: Vec<(String, Vec<u8>)> = Vec::new();
    for line in lines.bytes.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
        let line = line.strip_suffix(b"\r").expect("lines end in CRLF");
        let colon = line.iter().position(|&b| b == b':').expect("name: value");
        let name = String::from_utf8(line[..colon].to_vec()).expect("names are tokens");
        assert_eq!(name, name.to_ascii_lowercase(), "{text:?}");
        let value = line[colon + 2..].to_vec();
        if name == "content-length" {
            assert!(
                map.get_all(http::header::CONTENT_LENGTH)
                    .iter()
                    .any(|v| v.as_bytes() == value)
            );
            continue;
        }
        from_lines.push((name, value));
    }
    let mut from_map: Vec<(String, Vec<u8>)> = map
        .iter()
        .filter(|(name, _)| **name != http::header::CONTENT_LENGTH)
        .map(|(name, value)| (name.as_str().to_owned(), value.as_bytes().to_vec()))
        .collect();
    // Same multiset, same order within each name.
    from_lines.sort_by(|a, b| a.0.cmp(&b.0));
    from_map.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(from_lines, from_map, "{text:?}");
    assert_eq!(lines.has_date, map.contains_key(http::header::DATE));
}

/// A client's request as sluice's own HTTP/1.1 server reads it: any bytes
/// give a request or are left whole for hyper (`parse_whole` asserts
/// that), never a panic; a request taken has a valid target, at most the
/// allowed headers, no framing it cannot honour, and a body of exactly
/// its declared length.
pub fn client_request(data: &[u8]) {
    let Some((&limit, bytes)) = data.split_first() else {
        return;
    };
    let max_headers = usize::from(limit % 64) + 1;
    let Some((req, consumed)) = sluice_proxy::http1::parse_whole(bytes, max_headers) else {
        return;
    };
    assert!(consumed <= bytes.len());
    assert!(req.headers().len() <= max_headers);
    for refused in ["transfer-encoding", "upgrade", "expect"] {
        assert!(!req.headers().contains_key(refused), "{refused} taken");
    }
    assert_ne!(req.method(), http::Method::CONNECT);
    let declared: usize = req
        .headers()
        .get(http::header::CONTENT_LENGTH)
        .map_or(0, |v| v.to_str().unwrap().trim().parse().unwrap());
    assert_eq!(req.body().as_ref().map_or(0, |b| b.len()), declared);
    // Differential: hyper's HTTP/1.1 server reads the same bytes as the
    // same request (never looser: sluice takes nothing hyper refuses).
    let taken = &bytes[..consumed];
    let theirs = hyper_reads(taken);
    let Some((parts, body)) = theirs.first() else {
        panic!(
            "sluice took a request hyper refuses: {:?}",
            String::from_utf8_lossy(taken)
        );
    };
    assert_eq!(
        theirs.len(),
        1,
        "hyper read more requests from {:?}",
        String::from_utf8_lossy(taken)
    );
    assert_eq!(parts.method, *req.method());
    assert_eq!(parts.uri, *req.uri());
    let fields = |h: &http::HeaderMap| {
        let mut v: Vec<(String, Vec<u8>)> = h
            .iter()
            .map(|(n, v)| (n.as_str().to_owned(), v.as_bytes().to_vec()))
            .collect();
        v.sort();
        v
    };
    assert_eq!(fields(&parts.headers), fields(req.headers()));
    assert_eq!(&body[..], req.body().as_deref().unwrap_or_default());
}

/// The requests hyper's HTTP/1.1 server reads from `bytes`, followed by the
/// end of input: each one's head and whole body.
fn hyper_reads(bytes: &[u8]) -> Vec<(http::request::Parts, Vec<u8>)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let (mut client, server) = tokio::io::duplex(1 << 20);
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let record = std::sync::Arc::clone(&seen);
        let service = hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
            let record = std::sync::Arc::clone(&record);
            async move {
                let (parts, body) = req.into_parts();
                if let Ok(body) = http_body_util::BodyExt::collect(body).await {
                    record.lock().unwrap().push((parts, body.to_bytes().to_vec()));
                }
                Ok::<_, std::convert::Infallible>(http::Response::new(http_body_util::Empty::<bytes::Bytes>::new()))
            }
        });
        // The input ends with the client's half-close: hyper must still
        // answer what it read.
        let conn = hyper::server::conn::http1::Builder::new()
            .half_close(true)
            .serve_connection(hyper_util::rt::TokioIo::new(server), service);
        let task = tokio::spawn(conn);
        client.write_all(bytes).await.unwrap();
        client.shutdown().await.unwrap();
        let mut answers = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), client.read_to_end(&mut answers)).await;
        let _ = task.await;
        std::mem::take(&mut *seen.lock().unwrap())
    })
}

/// Header blocks for the HPACK targets: each input byte run prefixed by its
/// length (one byte), as blocks arrive one after another on a connection.
fn hpack_blocks(data: &[u8]) -> Vec<&[u8]> {
    let mut blocks = Vec::new();
    let mut rest = data;
    while let Some((&len, tail)) = rest.split_first() {
        let len = usize::from(len).min(tail.len());
        let (block, next) = tail.split_at(len);
        blocks.push(block);
        rest = next;
    }
    blocks
}

/// sluice's HPACK decoder against an independent one (loona-hpack, the
/// fork of hpack-rs that passes h2spec), block after block with the same
/// dynamic table: the same header list, or both refuse the block. Three
/// documented differences end the comparison (the tables may part): sluice
/// refuses a size update after a field and one above 4096 (RFC 7541 §4.2,
/// §6.3) where the reference may not, and takes a block of size updates
/// only, which the reference refuses; anything else is a finding.
pub fn hpack_decoder(data: &[u8]) {
    let blocks = hpack_blocks(data);
    let ours = sluice_proxy::h2::hpack_decode_blocks(&blocks);
    let mut reference = loona_hpack::Decoder::new();
    reference.set_max_allowed_table_size(4096);
    for (block, ours) in blocks.iter().zip(ours) {
        let theirs = reference.decode(block);
        match (ours, theirs) {
            (Ok(a), Ok(b)) => assert_eq!(a, b, "the decoders disagree on {block:02x?}"),
            (Err(_), Err(_)) => return,
            (Err(e), Ok(_)) if e.contains("table size") => return,
            // A block of size updates only: sluice takes them as at the
            // start of the block (RFC 7541 §4.2, as nghttp2 does);
            // the reference calls them "at the end".
            (Ok(fields), Err(e)) if fields.is_empty() && format!("{e:?}").contains("SizeUpdateAtEnd") => return,
            (ours, theirs) => panic!("sluice: {ours:?}\nreference: {theirs:?}\nblock: {block:02x?}"),
        }
    }
}

/// sluice's HPACK encoder, round-tripped through the independent decoder:
/// the response head it writes (after a lowered table size too) decodes to
/// exactly the fields written, whatever names and values.
pub fn hpack_encoder(data: &[u8]) {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let status = http::StatusCode::from_u16(100 + u16::from(first) % 500).unwrap();
    let size_update = first & 1 == 1;
    let mut fields = Vec::new();
    for pair in rest.split(|&b| b == 0xff) {
        let (name, value) = pair.split_at(pair.len() / 3);
        let (Ok(name), Ok(value)) = (http::HeaderName::from_bytes(name), HeaderValue::from_bytes(value)) else {
            continue;
        };
        fields.push((name, value));
    }
    let block = sluice_proxy::h2::hpack_encode_response(status, &fields, size_update);
    let mut reference = loona_hpack::Decoder::new();
    let decoded = reference
        .decode(&block)
        .unwrap_or_else(|e| panic!("{e:?}: {block:02x?}"));
    let mut expected = vec![(b":status".to_vec(), status.as_str().as_bytes().to_vec())];
    expected.extend(
        fields
            .iter()
            .map(|(n, v)| (n.as_str().as_bytes().to_vec(), v.as_bytes().to_vec())),
    );
    assert_eq!(decoded, expected);
}

/// The response hyper's HTTP/1.1 client reads from `bytes` (then the end of
/// input) to a `method` request: its final status and whole body.
fn hyper_client_reads(bytes: &[u8], method: &http::Method) -> Option<(http::StatusCode, Vec<u8>)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let (client, mut server) = tokio::io::duplex(1 << 20);
        let (mut sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(client))
            .await
            .ok()?;
        tokio::spawn(conn);
        let backend = async {
            // The request's head, then the response, then the end.
            let mut head = [0u8; 1024];
            let _ = server.read(&mut head).await;
            let _ = server.write_all(bytes).await;
            let _ = server.shutdown().await;
        };
        let request = http::Request::builder()
            .method(method.clone())
            .uri("/")
            .header(http::header::HOST, "backend")
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .ok()?;
        let exchange = async {
            let res = sender.send_request(request).await.ok()?;
            let status = res.status();
            let body = http_body_util::BodyExt::collect(res.into_body()).await.ok()?;
            Some((status, body.to_bytes().to_vec()))
        };
        let (_, got) = tokio::join!(backend, tokio::time::timeout(Duration::from_secs(5), exchange));
        got.ok().flatten()
    })
}
