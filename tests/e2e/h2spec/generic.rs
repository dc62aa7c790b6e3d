//! h2spec's `generic` groups (what a server must accept and answer) and
//! RFC 7541 cases (h2spec's `hpack` groups, plus the encoder's own duty to
//! acknowledge a smaller table, integer overflow and Huffman padding).

use super::conn::*;

// --- generic/2: streams and multiplexing ---------------------------------------

pub async fn priority_idle(c: &mut Conn) -> CaseResult {
    c.handshake().await?;
    c.priority(1, 0, 255).await;
    c.ping([0; 8]).await;
    c.ping_ack([0; 8]).await
}

pub async fn window_update_half_closed(c: &mut Conn) -> CaseResult {
    c.handshake().await?;
    c.settings(&[(SETTINGS_INITIAL_WINDOW_SIZE, 0)]).await;
    c.get(1).await;
    c.window_update(1, 1).await;
    c.frame_of(DATA).await.map(drop)
}

pub async fn priority_half_closed(c: &mut Conn) -> CaseResult {
    c.handshake().await?;
    c.settings(&[(SETTINGS_INITIAL_WINDOW_SIZE, 0)]).await;
    c.get(1).await;
    c.priority(1, 0, 255).await;
    c.window_update(1, 1).await;
    c.frame_of(DATA).await.map(drop)
}

pub async fn rst_half_closed(c: &mut Conn) -> CaseResult {
    c.handshake().await?;
    c.get(1).await;
    c.rst(1, CANCEL).await;
    c.ping([0; 8]).await;
    c.ping_ack_or_close([0; 8]).await
}

pub async fn priority_closed(c: &mut Conn) -> CaseResult {
    c.handshake().await?;
    c.get(1).await;
    c.stream_close(1).await?;
    c.priority(1, 0, 255).await;
    c.ping([0; 8]).await;
    c.ping_ack([0; 8]).await
}

// --- generic/3: each frame type accepted ------------------------------------

pub async fn data(c: &mut Conn) -> CaseResult {
    c.handshake().await?;
    let block = c.request("POST");
    c.send(HEADERS, END_HEADERS, 1, &block).await;
    c.send(DATA, END_STREAM, 1, b"test").await;
    c.headers(1).await.map(drop)
}

pub async fn data_many(c: &mut Conn) -> CaseResult {
    c.handshake().await?;
    let block = c.request("POST");
    c.send(HEADERS, END_HEADERS, 1, &block).await;
    for i in 0..5 {
        let flags = if i == 4 { END_STREAM } else { 0 };
        c.send(DATA, flags, 1, b"test").await;
    }
    c.headers(1).await.map(drop)
}

pub async fn data_padded(c: &mut Conn) -> CaseResult {
    c.handshake().await?;
    let block = c.request("POST");
    c.send(HEADERS, END_HEADERS, 1, &block).await;
    c.send(DATA, END_STREAM | PADDED, 1, b"\x04test\x00\x00\x00\x00").await;
    c.headers(1).await.map(drop)
}

pub async fn headers(c: &mut Conn) -> CaseResult {
    c.handshake().await?;
    c.get(1).await;
    c.headers(1).await.map(drop)
}

pub async fn headers_padded(c: &mut Conn) -> CaseResult {
    c.handshake().await?;
    let mut payload = vec![8];
    payload.extend(c.request("GET"));
    payload.extend([0; 8]);
    c.send(HEADERS, END_STREAM | END_HEADERS | PADDED, 1, &payload).await;
    c.headers(1).await.map(drop)
}

pub async fn headers_with_priority(c: &mut Conn) -> CaseResult {
    c.handshake().await?;
    let mut payload = 0u32.to_be_bytes().to_vec();
    payload.push(255);
    payload.extend(c.request("GET"));
    c.send(HEADERS, END_STREAM | END_HEADERS | PRIORITY_FLAG, 1, &payload)
        .await;
    c.headers(1).await.map(drop)
}

async fn priority_then_get(c: &mut Conn, dependency: u32, weight: u8) -> CaseResult {
    c.handshake().await?;
    c.priority(1, dependency, weight).await;
    c.get(1).await;
    c.headers(1).await.map(drop)
}

pub async fn priority_weight_1(c: &mut Conn) -> CaseResult {
    priority_then_get(c, 0, 0).await
}

pub async fn priority_weight_256(c: &mut Conn) -> CaseResult {
    priority_then_get(c, 0, 255).await
}

pub async fn priority_dependency(c: &mut Conn) -> CaseResult {
    priority_then_get(c, 3, 255).await
}

pub async fn priority_exclusive(c: &mut Conn) -> CaseResult {
    priority_then_get(c, 0x8000_0003, 255).await
}

pub async fn priority_idle_then_lower_headers(c: &mut Conn) -> CaseResult {
    c.handshake().await?;
    // PRIORITY does not open stream 5; stream 3 may still be opened.
    c.priority(5, 0, 255).await;
    c.get(3).await;
    c.headers(3).await.map(drop)
}

pub async fn rst_stream(c: &mut Conn) -> CaseResult {
    c.handshake().await?;
    let block = c.request("POST");
    c.send(HEADERS, END_HEADERS, 1, &block).await;
    c.rst(1, CANCEL).await;
    c.ping([0; 8]).await;
    c.ping_ack_or_close([0; 8]).await
}

pub async fn settings(c: &mut Conn) -> CaseResult {
    c.handshake().await?;
    c.settings(&[(SETTINGS_INITIAL_WINDOW_SIZE, 65_535)]).await;
    c.settings_ack().await
}

pub async fn goaway(c: &mut Conn) -> CaseResult {
    c.handshake().await?;
    c.send(GOAWAY, 0, 0, &[0, 0, 0, 0, 0, 0, 0, 0]).await;
    c.ping([0; 8]).await;
    c.ping_ack_or_close([0; 8]).await
}

pub async fn window_update_connection(c: &mut Conn) -> CaseResult {
    c.handshake().await?;
    c.window_update(0, 1).await;
    c.ping([0; 8]).await;
    c.ping_ack([0; 8]).await
}

pub async fn window_update_stream(c: &mut Conn) -> CaseResult {
    c.handshake().await?;
    let block = c.request("POST");
    c.send(HEADERS, END_HEADERS, 1, &block).await;
    c.window_update(1, 1).await;
    c.send(DATA, END_STREAM, 1, b"test").await;
    c.headers(1).await.map(drop)
}

pub async fn continuation(c: &mut Conn) -> CaseResult {
    c.handshake().await?;
    let block = c.request("GET");
    c.send(HEADERS, END_STREAM, 1, &block).await;
    let more = c.block(&[("x-dummy", "x")]);
    c.send(CONTINUATION, END_HEADERS, 1, &more).await;
    c.headers(1).await.map(drop)
}

// --- generic/4: HTTP message exchanges ------------------------------------------

pub async fn get(c: &mut Conn) -> CaseResult {
    c.handshake().await?;
    c.get(1).await;
    c.headers(1).await?;
    c.stream_close(1).await
}

pub async fn head(c: &mut Conn) -> CaseResult {
    c.handshake().await?;
    let block = c.request("HEAD");
    c.send(HEADERS, END_STREAM | END_HEADERS, 1, &block).await;
    let head = c.headers(1).await?;
    // No body follows a HEAD response: the HEADERS ends the stream, or an
    // empty DATA does.
    if head.has(END_STREAM) {
        return Ok(());
    }
    match c.frame_of(DATA).await {
        Ok(d) if d.payload.is_empty() && d.has(END_STREAM) => Ok(()),
        Ok(d) => Err(format!("a HEAD response carried {} body bytes", d.payload.len())),
        Err(e) => Err(e),
    }
}

pub async fn post(c: &mut Conn) -> CaseResult {
    c.handshake().await?;
    let block = c.request_with("POST", &[("content-length", "4")]);
    c.send(HEADERS, END_HEADERS, 1, &block).await;
    c.send(DATA, END_STREAM, 1, b"test").await;
    c.headers(1).await.map(drop)
}

pub async fn post_trailers(c: &mut Conn) -> CaseResult {
    c.handshake().await?;
    let block = c.request_with("POST", &[("trailer", "x-test")]);
    c.send(HEADERS, END_HEADERS, 1, &block).await;
    c.send(DATA, 0, 1, b"test").await;
    let trailers = c.block(&[("x-test", "ok")]);
    c.send(HEADERS, END_STREAM | END_HEADERS, 1, &trailers).await;
    c.headers(1).await.map(drop)
}

// --- RFC 7541 ------------------------------------------------------------

async fn bad_block(c: &mut Conn, block: &[u8]) -> CaseResult {
    c.handshake().await?;
    c.send(HEADERS, END_STREAM | END_HEADERS, 1, block).await;
    c.connection_error(&[COMPRESSION_ERROR]).await
}

/// The common request, then `tail`.
fn with_tail(c: &Conn, tail: &[u8]) -> Vec<u8> {
    [c.request("GET"), tail.to_vec()].concat()
}

// §2.3.3: index address space.
pub async fn indexed_invalid(c: &mut Conn) -> CaseResult {
    let block = with_tail(c, b"\xbe"); // index 62: the dynamic table is empty
    bad_block(c, &block).await
}

pub async fn literal_invalid_index(c: &mut Conn) -> CaseResult {
    let block = with_tail(c, b"\x7e\x01x"); // name index 62
    bad_block(c, &block).await
}

// §4.2: maximum table size.
pub async fn size_update_at_end(c: &mut Conn) -> CaseResult {
    let block = with_tail(c, b"\x3f\xe1\x1f"); // size update 4096 after fields
    bad_block(c, &block).await
}

pub async fn size_update_over_setting(c: &mut Conn) -> CaseResult {
    // 4097 > SETTINGS_HEADER_TABLE_SIZE (4096).
    let block = [&b"\x3f\xe2\x1f"[..], &c.request("GET")].concat();
    bad_block(c, &block).await
}

pub async fn size_update_accepted(c: &mut Conn) -> CaseResult {
    c.handshake().await?;
    let block = [&b"\x20"[..], &c.request("GET")].concat();
    c.send(HEADERS, END_STREAM | END_HEADERS, 1, &block).await;
    c.headers(1).await.map(drop)
}

/// RFC 7541 §4.2: after the client lowers SETTINGS_HEADER_TABLE_SIZE, the
/// server's next header block starts with a size update no larger.
pub async fn encoder_acknowledges_smaller_table(c: &mut Conn) -> CaseResult {
    c.handshake().await?;
    c.settings(&[(SETTINGS_HEADER_TABLE_SIZE, 0)]).await;
    c.settings_ack().await?;
    c.get(1).await;
    let head = c.headers(1).await?;
    match head.payload.first() {
        // 001xxxxx with a 5-bit value of 0.
        Some(0x20) => Ok(()),
        other => Err(format!(
            "the response block starts {other:#04x?}, not a size update to 0"
        )),
    }
}

// §5.1: integer representation.
pub async fn integer_overflow(c: &mut Conn) -> CaseResult {
    // A name index whose continuation bytes never end within 64 bits.
    let block = with_tail(c, b"\x0f\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01");
    bad_block(c, &block).await
}

pub async fn string_length_overflow(c: &mut Conn) -> CaseResult {
    let block = with_tail(c, b"\x00\x7f\xff\xff\xff\xff\x0f");
    bad_block(c, &block).await
}

pub async fn string_past_block(c: &mut Conn) -> CaseResult {
    let block = with_tail(c, b"\x00\x05x-te");
    bad_block(c, &block).await
}

// §5.2: Huffman strings.
pub async fn huffman_long_padding(c: &mut Conn) -> CaseResult {
    // "a" (00011) then 11 bits of 1s: more than 7 bits of padding.
    let block = with_tail(c, b"\x00\x81\x1f\x82\x1f\xff");
    bad_block(c, &block).await
}

pub async fn huffman_zero_padding(c: &mut Conn) -> CaseResult {
    // "a" padded with zeros instead of the EOS prefix.
    let block = with_tail(c, b"\x00\x81\x18\x81\x18");
    bad_block(c, &block).await
}

pub async fn huffman_eos(c: &mut Conn) -> CaseResult {
    // The 30-bit EOS symbol inside the string.
    let block = with_tail(c, b"\x00\x81\x1f\x84\xff\xff\xff\xff");
    bad_block(c, &block).await
}

// §6.1: indexed representation.
pub async fn indexed_zero(c: &mut Conn) -> CaseResult {
    let block = with_tail(c, b"\x80");
    bad_block(c, &block).await
}
