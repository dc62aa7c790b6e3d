//! RFC 9113 §3–§5 cases (h2spec's `http2` groups 3.5 to 5.5): the preface,
//! frame format and size, header compression errors, stream states and
//! identifiers, concurrency, dependencies, error handling, extensions.

use super::conn::*;

// --- §3.4 (h2spec 3.5): the connection preface ---------------------------

pub async fn preface_valid(c: &mut Conn) -> CaseResult {
    c.handshake().await
}

pub async fn preface_invalid(c: &mut Conn) -> CaseResult {
    c.send_raw(b"INVALID CONNECTION PREFACE\r\n\r\n").await;
    // RFC 9113 §3.4: a connection error; the GOAWAY MAY be omitted here.
    loop {
        match c.event().await {
            Event::Closed => return Ok(()),
            Event::Frame(f) if f.kind == GOAWAY => {
                return if f.code() == Some(PROTOCOL_ERROR) {
                    c.closes().await
                } else {
                    Err(format!("expected GOAWAY PROTOCOL_ERROR, got {}", Event::Frame(f)))
                };
            }
            Event::Frame(_) => {}
            Event::Timeout => return Err("the connection stayed open".into()),
        }
    }
}

// --- §4.1: frame format ------------------------------------------------------

pub async fn unknown_frame_type(c: &mut Conn) -> CaseResult {
    c.handshake().await?;
    c.send(0x16, 0, 0, b"dummy").await;
    c.ping([1, 2, 3, 4, 5, 6, 7, 8]).await;
    c.ping_ack([1, 2, 3, 4, 5, 6, 7, 8]).await
}

pub async fn undefined_flag(c: &mut Conn) -> CaseResult {
    c.handshake().await?;
    c.send(PING, 0x16, 0, &[0; 8]).await;
    c.ping_ack([0; 8]).await
}

pub async fn reserved_bit(c: &mut Conn) -> CaseResult {
    c.handshake().await?;
    let block = c.request("GET");
    // The stream id with the reserved bit set: ignored on receipt.
    let mut frame = frame_head(block.len(), HEADERS, END_STREAM | END_HEADERS, 1);
    frame[5] |= 0x80;
    frame.extend_from_slice(&block);
    c.send_raw(&frame).await;
    c.headers(1).await.map(drop)
}

// --- §4.2: frame size --------------------------------------------------------

pub async fn data_max_frame(c: &mut Conn) -> CaseResult {
    c.handshake().await?;
    let block = c.request("POST");
    c.send(HEADERS, END_HEADERS, 1, &block).await;
    c.send(DATA, END_STREAM, 1, dummy(16_384).as_bytes()).await;
    c.headers(1).await.map(drop)
}

pub async fn data_over_max_frame(c: &mut Conn) -> CaseResult {
    c.handshake().await?;
    let block = c.request("POST");
    c.send(HEADERS, END_HEADERS, 1, &block).await;
    c.send(DATA, END_STREAM, 1, dummy(16_385).as_bytes()).await;
    c.stream_error(1, &[FRAME_SIZE_ERROR]).await
}

pub async fn headers_over_max_frame(c: &mut Conn) -> CaseResult {
    c.handshake().await?;
    let big = dummy(4000);
    let extra: Vec<(String, &str)> = (0..5).map(|i| (format!("x-dummy{i}"), big.as_str())).collect();
    let refs: Vec<(&str, &str)> = extra.iter().map(|(n, v)| (n.as_str(), *v)).collect();
    let block = c.request_with("GET", &refs);
    c.send(HEADERS, END_STREAM | END_HEADERS, 1, &block).await;
    c.connection_error(&[FRAME_SIZE_ERROR]).await
}

// --- §4.3: header compression ----------------------------------------------

pub async fn invalid_block(c: &mut Conn) -> CaseResult {
    c.handshake().await?;
    // An indexed field past the tables, then a literal cut short.
    c.send(
        HEADERS,
        END_STREAM | END_HEADERS,
        1,
        b"\x00\x85\xf2\xb2\x4a\x87\xff\xff\xff\xfd\x25\x42\x7f",
    )
    .await;
    c.connection_error(&[COMPRESSION_ERROR]).await
}

pub async fn priority_inside_block(c: &mut Conn) -> CaseResult {
    c.handshake().await?;
    let block = c.request("GET");
    c.send(HEADERS, END_STREAM, 1, &block).await;
    c.priority(1, 0, 255).await;
    let more = c.block(&[("x-dummy", "x")]);
    c.send(CONTINUATION, END_HEADERS, 1, &more).await;
    c.connection_error(&[PROTOCOL_ERROR]).await
}

pub async fn headers_other_stream_inside_block(c: &mut Conn) -> CaseResult {
    c.handshake().await?;
    let block = c.request("GET");
    c.send(HEADERS, END_STREAM, 1, &block).await;
    c.send(HEADERS, END_STREAM | END_HEADERS, 3, &block).await;
    let more = c.block(&[("x-dummy", "x")]);
    c.send(CONTINUATION, END_HEADERS, 1, &more).await;
    c.connection_error(&[PROTOCOL_ERROR]).await
}

// --- §5.1: stream states ----------------------------------------------------

pub async fn idle_data(c: &mut Conn) -> CaseResult {
    c.handshake().await?;
    c.send(DATA, END_STREAM, 1, b"test").await;
    c.stream_error(1, &[PROTOCOL_ERROR, STREAM_CLOSED]).await
}

pub async fn idle_rst(c: &mut Conn) -> CaseResult {
    c.handshake().await?;
    c.rst(1, CANCEL).await;
    c.connection_error(&[PROTOCOL_ERROR]).await
}

pub async fn idle_window_update(c: &mut Conn) -> CaseResult {
    c.handshake().await?;
    c.window_update(1, 100).await;
    c.connection_error(&[PROTOCOL_ERROR]).await
}

pub async fn idle_continuation(c: &mut Conn) -> CaseResult {
    c.handshake().await?;
    let block = c.request("GET");
    c.send(CONTINUATION, END_HEADERS, 1, &block).await;
    c.connection_error(&[PROTOCOL_ERROR]).await
}

/// A request that ends with its HEADERS, whose response cannot finish
/// (no window), so the stream stays half-closed (remote).
async fn half_closed(c: &mut Conn) -> CaseResult {
    c.handshake().await?;
    c.settings(&[(SETTINGS_INITIAL_WINDOW_SIZE, 0)]).await;
    c.settings_ack().await?;
    c.get(1).await;
    Ok(())
}

pub async fn half_closed_data(c: &mut Conn) -> CaseResult {
    half_closed(c).await?;
    c.send(DATA, END_STREAM, 1, b"test").await;
    c.stream_error(1, &[STREAM_CLOSED]).await
}

pub async fn half_closed_headers(c: &mut Conn) -> CaseResult {
    half_closed(c).await?;
    let block = c.request("GET");
    c.send(HEADERS, END_STREAM | END_HEADERS, 1, &block).await;
    c.stream_error(1, &[STREAM_CLOSED]).await
}

pub async fn half_closed_continuation(c: &mut Conn) -> CaseResult {
    half_closed(c).await?;
    let block = c.block(&[("x-dummy", "x")]);
    c.send(CONTINUATION, END_HEADERS, 1, &block).await;
    c.stream_error(1, &[STREAM_CLOSED, PROTOCOL_ERROR]).await
}

/// A request whose body is still open, reset by the client.
async fn reset_by_client(c: &mut Conn) -> CaseResult {
    c.handshake().await?;
    let block = c.request("POST");
    c.send(HEADERS, END_HEADERS, 1, &block).await;
    c.rst(1, CANCEL).await;
    Ok(())
}

pub async fn closed_rst_data(c: &mut Conn) -> CaseResult {
    reset_by_client(c).await?;
    c.send(DATA, END_STREAM, 1, b"test").await;
    c.stream_error(1, &[STREAM_CLOSED]).await
}

pub async fn closed_rst_headers(c: &mut Conn) -> CaseResult {
    reset_by_client(c).await?;
    let block = c.request("GET");
    c.send(HEADERS, END_STREAM | END_HEADERS, 1, &block).await;
    c.stream_error(1, &[STREAM_CLOSED]).await
}

pub async fn closed_rst_continuation(c: &mut Conn) -> CaseResult {
    reset_by_client(c).await?;
    let block = c.block(&[("x-dummy", "x")]);
    c.send(CONTINUATION, END_HEADERS, 1, &block).await;
    c.stream_error(1, &[STREAM_CLOSED, PROTOCOL_ERROR]).await
}

/// A request answered in full: the stream is closed.
async fn closed(c: &mut Conn) -> CaseResult {
    c.handshake().await?;
    c.get(1).await;
    c.stream_close(1).await
}

pub async fn closed_data(c: &mut Conn) -> CaseResult {
    closed(c).await?;
    c.send(DATA, END_STREAM, 1, b"test").await;
    c.stream_error(1, &[STREAM_CLOSED]).await
}

pub async fn closed_headers(c: &mut Conn) -> CaseResult {
    closed(c).await?;
    c.get(1).await;
    c.connection_error(&[STREAM_CLOSED]).await
}

pub async fn closed_continuation(c: &mut Conn) -> CaseResult {
    closed(c).await?;
    let block = c.block(&[("x-dummy", "x")]);
    c.send(CONTINUATION, END_HEADERS, 1, &block).await;
    c.connection_error(&[STREAM_CLOSED, PROTOCOL_ERROR]).await
}

// --- §5.1.1: stream identifiers ---------------------------------------------

pub async fn even_stream_id(c: &mut Conn) -> CaseResult {
    c.handshake().await?;
    c.get(2).await;
    c.connection_error(&[PROTOCOL_ERROR]).await
}

pub async fn smaller_stream_id(c: &mut Conn) -> CaseResult {
    c.handshake().await?;
    c.get(5).await;
    c.get(3).await;
    c.connection_error(&[PROTOCOL_ERROR]).await
}

// --- §5.1.2: stream concurrency ----------------------------------------------

pub async fn over_concurrency(c: &mut Conn) -> CaseResult {
    c.handshake().await?;
    let Some(max) = c.server_setting(SETTINGS_MAX_CONCURRENT_STREAMS) else {
        return Err("the server sets no SETTINGS_MAX_CONCURRENT_STREAMS".into());
    };
    // No window: every response stays open.
    c.settings(&[(SETTINGS_INITIAL_WINDOW_SIZE, 0)]).await;
    let block = c.request("GET");
    let mut frames = Vec::new();
    for i in 0..=max {
        frames.extend(frame_head(block.len(), HEADERS, END_STREAM | END_HEADERS, 1 + 2 * i));
        frames.extend_from_slice(&block);
    }
    c.send_raw(&frames).await;
    let last = 1 + 2 * max;
    c.stream_error(last, &[PROTOCOL_ERROR, REFUSED_STREAM]).await
}

// --- §5.3.1: stream dependencies ----------------------------------------------

pub async fn headers_self_dependent(c: &mut Conn) -> CaseResult {
    c.handshake().await?;
    let mut payload = 1u32.to_be_bytes().to_vec();
    payload.push(255);
    payload.extend(c.request("GET"));
    c.send(HEADERS, END_STREAM | END_HEADERS | PRIORITY_FLAG, 1, &payload)
        .await;
    c.stream_error(1, &[PROTOCOL_ERROR]).await
}

/// The same, with the header block ended by a CONTINUATION: the priority
/// still counts (a fuzzing finding: the check was skipped, then sent twice).
pub async fn headers_self_dependent_continued(c: &mut Conn) -> CaseResult {
    c.handshake().await?;
    let mut payload = 1u32.to_be_bytes().to_vec();
    payload.push(255);
    let block = c.request("GET");
    let (first, rest) = block.split_at(block.len() / 2);
    payload.extend_from_slice(first);
    c.send(HEADERS, END_STREAM | PRIORITY_FLAG, 1, &payload).await;
    c.send(CONTINUATION, END_HEADERS, 1, rest).await;
    c.stream_error(1, &[PROTOCOL_ERROR]).await
}

pub async fn priority_self_dependent(c: &mut Conn) -> CaseResult {
    c.handshake().await?;
    c.priority(1, 1, 255).await;
    c.stream_error(1, &[PROTOCOL_ERROR]).await
}

// --- §5.4.1: connection error handling ----------------------------------------

async fn bad_ping(c: &mut Conn) -> CaseResult {
    c.handshake().await?;
    // A PING on stream 3: a connection error.
    c.send(PING, 0, 3, &[0; 8]).await;
    Ok(())
}

pub async fn error_closes(c: &mut Conn) -> CaseResult {
    bad_ping(c).await?;
    c.closes().await
}

pub async fn error_goaway(c: &mut Conn) -> CaseResult {
    bad_ping(c).await?;
    c.connection_error(&[PROTOCOL_ERROR]).await
}

// --- §5.5: extending HTTP/2 -------------------------------------------------

pub async fn unknown_extension_frame(c: &mut Conn) -> CaseResult {
    c.handshake().await?;
    c.send(0xff, 0, 0, b"dummy").await;
    c.ping([9; 8]).await;
    c.ping_ack([9; 8]).await
}

pub async fn unknown_extension_inside_block(c: &mut Conn) -> CaseResult {
    c.handshake().await?;
    let block = c.request("GET");
    c.send(HEADERS, END_STREAM, 1, &block).await;
    c.send(0xff, 0, 1, b"dummy").await;
    let more = c.block(&[("x-dummy", "x")]);
    c.send(CONTINUATION, END_HEADERS, 1, &more).await;
    c.connection_error(&[PROTOCOL_ERROR]).await
}
