//! RFC 9113 §7–§8 cases (h2spec's `http2` groups 7 and 8): error codes,
//! HTTP semantics, pseudo-headers, connection-specific fields, lengths,
//! trailers and server push; and the rapid-reset defence.

use super::conn::*;

// --- §7: error codes ----------------------------------------------------------

pub async fn goaway_unknown_code(c: &mut Conn) -> CaseResult {
    c.handshake().await?;
    c.send(GOAWAY, 0, 0, &[0, 0, 0, 0, 0, 0, 0, 0xff]).await;
    c.ping([3; 8]).await;
    c.ping_ack_or_close([3; 8]).await
}

pub async fn rst_unknown_code(c: &mut Conn) -> CaseResult {
    c.handshake().await?;
    let block = c.request("POST");
    c.send(HEADERS, END_HEADERS, 1, &block).await;
    c.rst(1, 0xff).await;
    c.ping([4; 8]).await;
    c.ping_ack_or_close([4; 8]).await
}

// --- §8.1: request/response exchange ------------------------------------------

pub async fn second_headers_without_end_stream(c: &mut Conn) -> CaseResult {
    c.handshake().await?;
    let block = c.request("POST");
    c.send(HEADERS, END_HEADERS, 1, &block).await;
    c.send(DATA, 0, 1, b"test").await;
    let trailers = c.block(&[("x-test", "ok")]);
    c.send(HEADERS, END_HEADERS, 1, &trailers).await;
    c.stream_error(1, &[PROTOCOL_ERROR]).await
}

pub async fn trailers_with_pseudo_header(c: &mut Conn) -> CaseResult {
    c.handshake().await?;
    let block = c.request("POST");
    c.send(HEADERS, END_HEADERS, 1, &block).await;
    c.send(DATA, 0, 1, b"test").await;
    let trailers = c.block(&[(":method", "POST")]);
    c.send(HEADERS, END_STREAM | END_HEADERS, 1, &trailers).await;
    c.stream_error(1, &[PROTOCOL_ERROR]).await
}

async fn malformed(c: &mut Conn, fields: &[(&str, &str)]) -> CaseResult {
    c.handshake().await?;
    let block = c.block(fields);
    c.send(HEADERS, END_STREAM | END_HEADERS, 1, &block).await;
    c.stream_error(1, &[PROTOCOL_ERROR]).await
}

/// The common request's fields with `change` applied.
fn fields(c: &Conn, change: impl FnOnce(&mut Vec<(String, String)>)) -> Vec<(String, String)> {
    let mut f: Vec<(String, String)> = c.common().into_iter().map(|(n, v)| (n.to_owned(), v)).collect();
    change(&mut f);
    f
}

async fn malformed_with(c: &mut Conn, change: impl FnOnce(&mut Vec<(String, String)>)) -> CaseResult {
    let f = fields(c, change);
    let refs: Vec<(&str, &str)> = f.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
    malformed(c, &refs).await
}

fn add(f: &mut Vec<(String, String)>, name: &str, value: &str) {
    f.push((name.to_owned(), value.to_owned()));
}

// §8.2 (h2spec 8.1.2): field names in lower case.
pub async fn uppercase_name(c: &mut Conn) -> CaseResult {
    malformed_with(c, |f| add(f, "X-TEST", "ok")).await
}

// §8.3 (h2spec 8.1.2.1): pseudo-header fields.
pub async fn unknown_pseudo(c: &mut Conn) -> CaseResult {
    malformed_with(c, |f| f.insert(0, (":test".into(), "ok".into()))).await
}

pub async fn response_pseudo(c: &mut Conn) -> CaseResult {
    malformed_with(c, |f| add(f, ":status", "200")).await
}

pub async fn pseudo_after_regular(c: &mut Conn) -> CaseResult {
    malformed_with(c, |f| f.insert(3, ("x-test".into(), "ok".into()))).await
}

// §8.2.2 (h2spec 8.1.2.2): connection-specific fields.
pub async fn connection_field(c: &mut Conn) -> CaseResult {
    malformed_with(c, |f| add(f, "connection", "keep-alive")).await
}

pub async fn te_not_trailers(c: &mut Conn) -> CaseResult {
    malformed_with(c, |f| add(f, "te", "trailers, deflate")).await
}

pub async fn transfer_encoding_field(c: &mut Conn) -> CaseResult {
    malformed_with(c, |f| add(f, "transfer-encoding", "chunked")).await
}

pub async fn upgrade_field(c: &mut Conn) -> CaseResult {
    malformed_with(c, |f| add(f, "upgrade", "websocket")).await
}

pub async fn keep_alive_field(c: &mut Conn) -> CaseResult {
    malformed_with(c, |f| add(f, "keep-alive", "timeout=5")).await
}

pub async fn proxy_connection_field(c: &mut Conn) -> CaseResult {
    malformed_with(c, |f| add(f, "proxy-connection", "keep-alive")).await
}

// §8.3.1 (h2spec 8.1.2.3): request pseudo-header fields.
pub async fn empty_path(c: &mut Conn) -> CaseResult {
    malformed_with(c, |f| f[2].1 = String::new()).await
}

pub async fn no_method(c: &mut Conn) -> CaseResult {
    malformed_with(c, |f| {
        f.remove(0);
    })
    .await
}

pub async fn no_scheme(c: &mut Conn) -> CaseResult {
    malformed_with(c, |f| {
        f.remove(1);
    })
    .await
}

pub async fn no_path(c: &mut Conn) -> CaseResult {
    malformed_with(c, |f| {
        f.remove(2);
    })
    .await
}

pub async fn duplicate_method(c: &mut Conn) -> CaseResult {
    malformed_with(c, |f| f.insert(1, (":method".into(), "GET".into()))).await
}

pub async fn duplicate_scheme(c: &mut Conn) -> CaseResult {
    malformed_with(c, |f| f.insert(2, (":scheme".into(), "http".into()))).await
}

pub async fn duplicate_path(c: &mut Conn) -> CaseResult {
    malformed_with(c, |f| f.insert(3, (":path".into(), "/".into()))).await
}

pub async fn duplicate_authority(c: &mut Conn) -> CaseResult {
    let authority = c.authority.clone();
    malformed_with(c, |f| f.insert(4, (":authority".into(), authority))).await
}

pub async fn relative_path(c: &mut Conn) -> CaseResult {
    // ":path" must be origin-form ('/...') or '*' for OPTIONS (§8.3.1).
    malformed_with(c, |f| f[2].1 = "index.html".into()).await
}

pub async fn connect_with_path(c: &mut Conn) -> CaseResult {
    // CONNECT carries only :method and :authority (§8.5).
    malformed_with(c, |f| f[0].1 = "CONNECT".into()).await
}

// §8.1.1 (h2spec 8.1.2.6): content-length against the DATA received.
pub async fn length_one_frame(c: &mut Conn) -> CaseResult {
    c.handshake().await?;
    let block = c.request_with("POST", &[("content-length", "1")]);
    c.send(HEADERS, END_HEADERS, 1, &block).await;
    c.send(DATA, END_STREAM, 1, b"test").await;
    c.stream_error(1, &[PROTOCOL_ERROR]).await
}

pub async fn length_many_frames(c: &mut Conn) -> CaseResult {
    c.handshake().await?;
    let block = c.request_with("POST", &[("content-length", "1")]);
    c.send(HEADERS, END_HEADERS, 1, &block).await;
    c.send(DATA, 0, 1, b"test").await;
    c.send(DATA, END_STREAM, 1, b"test").await;
    c.stream_error(1, &[PROTOCOL_ERROR]).await
}

pub async fn length_short_body(c: &mut Conn) -> CaseResult {
    c.handshake().await?;
    let block = c.request_with("POST", &[("content-length", "10")]);
    c.send(HEADERS, END_HEADERS, 1, &block).await;
    c.send(DATA, END_STREAM, 1, b"test").await;
    c.stream_error(1, &[PROTOCOL_ERROR]).await
}

pub async fn length_no_body(c: &mut Conn) -> CaseResult {
    c.handshake().await?;
    let block = c.request_with("POST", &[("content-length", "4")]);
    c.send(HEADERS, END_STREAM | END_HEADERS, 1, &block).await;
    c.stream_error(1, &[PROTOCOL_ERROR]).await
}

// §8.4: server push.
pub async fn push_promise_from_client(c: &mut Conn) -> CaseResult {
    c.handshake().await?;
    let mut payload = 2u32.to_be_bytes().to_vec();
    payload.extend(c.request("GET"));
    c.send(PUSH_PROMISE, END_HEADERS, 1, &payload).await;
    c.connection_error(&[PROTOCOL_ERROR]).await
}

// --- Beyond h2spec: floods (CVE-2023-44487, CVE-2024-27316) -------------------

pub async fn rapid_reset(c: &mut Conn) -> CaseResult {
    c.handshake().await?;
    let block = c.request("GET");
    let mut frames = Vec::new();
    for i in 0..1000u32 {
        let id = 1 + 2 * i;
        frames.extend(frame_head(block.len(), HEADERS, END_STREAM | END_HEADERS, id));
        frames.extend_from_slice(&block);
        frames.extend(frame_head(4, RST_STREAM, 0, id));
        frames.extend_from_slice(&CANCEL.to_be_bytes());
    }
    c.send_raw(&frames).await;
    c.connection_error(&[ENHANCE_YOUR_CALM, PROTOCOL_ERROR]).await
}

pub async fn endless_continuation(c: &mut Conn) -> CaseResult {
    c.handshake().await?;
    let block = c.request("GET");
    c.send(HEADERS, END_STREAM, 1, &block).await;
    let more = c.block(&[("x-dummy", &dummy(1000))]);
    for _ in 0..300 {
        c.send(CONTINUATION, 0, 1, &more).await;
        if c.closed {
            break;
        }
    }
    c.connection_error(&[ENHANCE_YOUR_CALM, PROTOCOL_ERROR, COMPRESSION_ERROR])
        .await
}
