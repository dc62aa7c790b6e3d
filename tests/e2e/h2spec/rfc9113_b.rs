//! RFC 9113 §6 cases (h2spec's `http2` groups 6.1 to 6.10): each frame
//! type's rules, SETTINGS synchronisation and flow control.

use super::conn::*;

// --- §6.1: DATA -----------------------------------------------------------

pub async fn data_stream_zero(c: &mut Conn) -> CaseResult {
    c.handshake().await?;
    c.send(DATA, END_STREAM, 0, b"test").await;
    c.connection_error(&[PROTOCOL_ERROR]).await
}

pub async fn data_not_open(c: &mut Conn) -> CaseResult {
    c.handshake().await?;
    c.settings(&[(SETTINGS_INITIAL_WINDOW_SIZE, 0)]).await;
    c.settings_ack().await?;
    c.get(1).await;
    c.send(DATA, END_STREAM, 1, b"test").await;
    c.stream_error(1, &[STREAM_CLOSED]).await
}

pub async fn data_bad_padding(c: &mut Conn) -> CaseResult {
    c.handshake().await?;
    let block = c.request("POST");
    c.send(HEADERS, END_HEADERS, 1, &block).await;
    // Pad length 6 in a 5-byte payload.
    c.send(DATA, END_STREAM | PADDED, 1, b"\x06test").await;
    c.connection_error(&[PROTOCOL_ERROR]).await
}

// --- §6.2: HEADERS --------------------------------------------------------

pub async fn headers_then_priority(c: &mut Conn) -> CaseResult {
    c.handshake().await?;
    let block = c.request("GET");
    c.send(HEADERS, 0, 1, &block).await;
    c.priority(1, 0, 255).await;
    let more = c.block(&[("x-dummy", "x")]);
    c.send(CONTINUATION, END_HEADERS | END_STREAM, 1, &more).await;
    c.connection_error(&[PROTOCOL_ERROR]).await
}

pub async fn headers_then_other_headers(c: &mut Conn) -> CaseResult {
    c.handshake().await?;
    let block = c.request("GET");
    c.send(HEADERS, 0, 1, &block).await;
    c.send(HEADERS, END_STREAM | END_HEADERS, 3, &block).await;
    let more = c.block(&[("x-dummy", "x")]);
    c.send(CONTINUATION, END_HEADERS, 1, &more).await;
    c.connection_error(&[PROTOCOL_ERROR]).await
}

pub async fn headers_stream_zero(c: &mut Conn) -> CaseResult {
    c.handshake().await?;
    c.get(0).await;
    c.connection_error(&[PROTOCOL_ERROR]).await
}

pub async fn headers_bad_padding(c: &mut Conn) -> CaseResult {
    c.handshake().await?;
    let block = c.request("GET");
    // Pad length past the payload.
    let mut payload = vec![(block.len() + 2) as u8];
    payload.extend_from_slice(&block);
    c.send(HEADERS, END_STREAM | END_HEADERS | PADDED, 1, &payload).await;
    c.stream_error(1, &[PROTOCOL_ERROR]).await
}

// --- §6.3: PRIORITY ---------------------------------------------------------

pub async fn priority_stream_zero(c: &mut Conn) -> CaseResult {
    c.handshake().await?;
    c.priority(0, 0, 255).await;
    c.connection_error(&[PROTOCOL_ERROR]).await
}

pub async fn priority_bad_length(c: &mut Conn) -> CaseResult {
    c.handshake().await?;
    let block = c.request("POST");
    c.send(HEADERS, END_HEADERS, 1, &block).await;
    c.send(PRIORITY, 0, 1, &[0x80, 0, 0, 1]).await;
    c.stream_error(1, &[FRAME_SIZE_ERROR]).await
}

// --- §6.4: RST_STREAM ---------------------------------------------------------

pub async fn rst_stream_zero(c: &mut Conn) -> CaseResult {
    c.handshake().await?;
    c.rst(0, CANCEL).await;
    c.connection_error(&[PROTOCOL_ERROR]).await
}

pub async fn rst_idle(c: &mut Conn) -> CaseResult {
    c.handshake().await?;
    c.rst(1, CANCEL).await;
    c.connection_error(&[PROTOCOL_ERROR]).await
}

pub async fn rst_bad_length(c: &mut Conn) -> CaseResult {
    c.handshake().await?;
    let block = c.request("POST");
    c.send(HEADERS, END_HEADERS, 1, &block).await;
    c.send(RST_STREAM, 0, 1, &[0, 0, 0, 8, 0]).await;
    c.stream_error(1, &[FRAME_SIZE_ERROR]).await
}

// --- §6.5: SETTINGS -----------------------------------------------------------

pub async fn settings_ack_with_payload(c: &mut Conn) -> CaseResult {
    c.handshake().await?;
    c.send(SETTINGS, ACK, 0, &[0, 4, 0, 0, 0, 1]).await;
    c.connection_error(&[FRAME_SIZE_ERROR]).await
}

pub async fn settings_on_stream(c: &mut Conn) -> CaseResult {
    c.handshake().await?;
    c.send(SETTINGS, 0, 1, &[0, 4, 0, 0, 0, 1]).await;
    c.connection_error(&[PROTOCOL_ERROR]).await
}

pub async fn settings_bad_length(c: &mut Conn) -> CaseResult {
    c.handshake().await?;
    c.send(SETTINGS, 0, 0, &[0, 4, 0, 0]).await;
    c.connection_error(&[FRAME_SIZE_ERROR]).await
}

pub async fn settings_enable_push_2(c: &mut Conn) -> CaseResult {
    c.handshake().await?;
    c.settings(&[(SETTINGS_ENABLE_PUSH, 2)]).await;
    c.connection_error(&[PROTOCOL_ERROR]).await
}

pub async fn settings_window_too_large(c: &mut Conn) -> CaseResult {
    c.handshake().await?;
    c.settings(&[(SETTINGS_INITIAL_WINDOW_SIZE, 1 << 31)]).await;
    c.connection_error(&[FLOW_CONTROL_ERROR]).await
}

pub async fn settings_max_frame_too_small(c: &mut Conn) -> CaseResult {
    c.handshake().await?;
    c.settings(&[(SETTINGS_MAX_FRAME_SIZE, 16_383)]).await;
    c.connection_error(&[PROTOCOL_ERROR]).await
}

pub async fn settings_max_frame_too_large(c: &mut Conn) -> CaseResult {
    c.handshake().await?;
    c.settings(&[(SETTINGS_MAX_FRAME_SIZE, 1 << 24)]).await;
    c.connection_error(&[PROTOCOL_ERROR]).await
}

pub async fn settings_unknown_id(c: &mut Conn) -> CaseResult {
    c.handshake().await?;
    c.settings(&[(0xff, 1)]).await;
    c.ping([7; 8]).await;
    c.ping_ack([7; 8]).await
}

pub async fn settings_repeated_window(c: &mut Conn) -> CaseResult {
    c.handshake().await?;
    // The last value counts: a window of 1 byte.
    c.settings(&[(SETTINGS_INITIAL_WINDOW_SIZE, 100), (SETTINGS_INITIAL_WINDOW_SIZE, 1)])
        .await;
    c.settings_ack().await?;
    c.get(1).await;
    one_byte_of_data(c).await
}

pub async fn settings_is_acked(c: &mut Conn) -> CaseResult {
    c.handshake().await?;
    c.settings(&[(SETTINGS_ENABLE_PUSH, 0)]).await;
    c.settings_ack().await
}

/// The next DATA frame carries exactly one byte (a window of 1 let out).
async fn one_byte_of_data(c: &mut Conn) -> CaseResult {
    let data = c.frame_of(DATA).await?;
    if data.payload.len() == 1 {
        Ok(())
    } else {
        Err(format!(
            "expected a 1-byte DATA frame, got {} bytes",
            data.payload.len()
        ))
    }
}

// --- §6.7: PING -----------------------------------------------------------

pub async fn ping(c: &mut Conn) -> CaseResult {
    c.handshake().await?;
    c.ping(*b"h2specok").await;
    c.ping_ack(*b"h2specok").await
}

pub async fn ping_ack_ignored(c: &mut Conn) -> CaseResult {
    c.handshake().await?;
    c.send(PING, ACK, 0, b"invalid!").await;
    c.ping(*b"h2specok").await;
    c.ping_ack(*b"h2specok").await
}

pub async fn ping_on_stream(c: &mut Conn) -> CaseResult {
    c.handshake().await?;
    c.send(PING, 0, 1, &[0; 8]).await;
    c.connection_error(&[PROTOCOL_ERROR]).await
}

pub async fn ping_bad_length(c: &mut Conn) -> CaseResult {
    c.handshake().await?;
    c.send(PING, 0, 0, &[0; 6]).await;
    c.connection_error(&[FRAME_SIZE_ERROR]).await
}

// --- §6.8: GOAWAY -----------------------------------------------------------

pub async fn goaway_on_stream(c: &mut Conn) -> CaseResult {
    c.handshake().await?;
    c.send(GOAWAY, 0, 1, &[0, 0, 0, 0, 0, 0, 0, 0]).await;
    c.connection_error(&[PROTOCOL_ERROR]).await
}

// --- §6.9: WINDOW_UPDATE and flow control ------------------------------------

pub async fn window_zero_increment(c: &mut Conn) -> CaseResult {
    c.handshake().await?;
    c.window_update(0, 0).await;
    c.connection_error(&[PROTOCOL_ERROR]).await
}

pub async fn window_zero_increment_stream(c: &mut Conn) -> CaseResult {
    c.handshake().await?;
    let block = c.request("POST");
    c.send(HEADERS, END_HEADERS, 1, &block).await;
    c.window_update(1, 0).await;
    c.stream_error(1, &[PROTOCOL_ERROR]).await
}

pub async fn window_bad_length(c: &mut Conn) -> CaseResult {
    c.handshake().await?;
    c.send(WINDOW_UPDATE, 0, 0, &[0, 0, 1]).await;
    c.connection_error(&[FRAME_SIZE_ERROR]).await
}

pub async fn window_one_byte(c: &mut Conn) -> CaseResult {
    c.handshake().await?;
    c.settings(&[(SETTINGS_INITIAL_WINDOW_SIZE, 1)]).await;
    c.settings_ack().await?;
    c.get(1).await;
    one_byte_of_data(c).await
}

pub async fn window_overflow(c: &mut Conn) -> CaseResult {
    c.handshake().await?;
    c.window_update(0, 0x7fff_ffff).await;
    c.window_update(0, 0x7fff_ffff).await;
    c.connection_error(&[FLOW_CONTROL_ERROR]).await
}

pub async fn window_overflow_stream(c: &mut Conn) -> CaseResult {
    c.handshake().await?;
    let block = c.request("POST");
    c.send(HEADERS, END_HEADERS, 1, &block).await;
    c.window_update(1, 0x7fff_ffff).await;
    c.window_update(1, 0x7fff_ffff).await;
    c.stream_error(1, &[FLOW_CONTROL_ERROR]).await
}

pub async fn window_changed_after_headers(c: &mut Conn) -> CaseResult {
    c.handshake().await?;
    c.settings(&[(SETTINGS_INITIAL_WINDOW_SIZE, 0)]).await;
    c.settings_ack().await?;
    c.get(1).await;
    c.settings(&[(SETTINGS_INITIAL_WINDOW_SIZE, 1)]).await;
    one_byte_of_data(c).await
}

pub async fn window_negative(c: &mut Conn) -> CaseResult {
    c.handshake().await?;
    c.settings(&[(SETTINGS_INITIAL_WINDOW_SIZE, 3)]).await;
    c.settings_ack().await?;
    c.get(1).await;
    c.frame_of(DATA).await?;
    // 3 bytes sent; a window of 2 makes it -1; 2 more make it 1.
    c.settings(&[(SETTINGS_INITIAL_WINDOW_SIZE, 2)]).await;
    c.settings_ack().await?;
    c.window_update(1, 2).await;
    one_byte_of_data(c).await
}

pub async fn window_setting_too_large(c: &mut Conn) -> CaseResult {
    c.handshake().await?;
    c.send_raw(b"\x00\x00\x06\x04\x00\x00\x00\x00\x00\x00\x04\x80\x00\x00\x00")
        .await;
    c.connection_error(&[FLOW_CONTROL_ERROR]).await
}

// --- §6.10: CONTINUATION --------------------------------------------------

pub async fn continuations(c: &mut Conn) -> CaseResult {
    c.handshake().await?;
    let block = c.request("GET");
    c.send(HEADERS, END_STREAM, 1, &block).await;
    for i in 0..4 {
        let more = c.block(&[(&format!("x-dummy{i}"), "x")]);
        let flags = if i == 3 { END_HEADERS } else { 0 };
        c.send(CONTINUATION, flags, 1, &more).await;
    }
    c.headers(1).await.map(drop)
}

pub async fn continuation_then_other(c: &mut Conn) -> CaseResult {
    c.handshake().await?;
    let block = c.request("GET");
    c.send(HEADERS, END_STREAM, 1, &block).await;
    let more = c.block(&[("x-dummy", "x")]);
    c.send(CONTINUATION, 0, 1, &more).await;
    c.send(DATA, END_STREAM, 1, b"test").await;
    c.connection_error(&[PROTOCOL_ERROR]).await
}

pub async fn continuation_stream_zero(c: &mut Conn) -> CaseResult {
    c.handshake().await?;
    let block = c.request("GET");
    c.send(HEADERS, END_STREAM, 1, &block).await;
    let more = c.block(&[("x-dummy", "x")]);
    c.send(CONTINUATION, END_HEADERS, 0, &more).await;
    c.connection_error(&[PROTOCOL_ERROR]).await
}

pub async fn continuation_after_end_headers(c: &mut Conn) -> CaseResult {
    c.handshake().await?;
    let block = c.request("POST");
    c.send(HEADERS, END_HEADERS, 1, &block).await;
    let more = c.block(&[("x-dummy", "x")]);
    c.send(CONTINUATION, END_HEADERS, 1, &more).await;
    c.connection_error(&[PROTOCOL_ERROR]).await
}

pub async fn continuation_after_ended_continuation(c: &mut Conn) -> CaseResult {
    c.handshake().await?;
    let block = c.request("POST");
    c.send(HEADERS, 0, 1, &block).await;
    let more = c.block(&[("x-dummy", "x")]);
    c.send(CONTINUATION, END_HEADERS, 1, &more).await;
    c.send(CONTINUATION, END_HEADERS, 1, &more).await;
    c.connection_error(&[PROTOCOL_ERROR]).await
}

pub async fn continuation_after_data(c: &mut Conn) -> CaseResult {
    c.handshake().await?;
    let block = c.request("POST");
    c.send(HEADERS, END_HEADERS, 1, &block).await;
    c.send(DATA, 0, 1, b"test").await;
    let more = c.block(&[("x-dummy", "x")]);
    c.send(CONTINUATION, END_HEADERS, 1, &more).await;
    c.connection_error(&[PROTOCOL_ERROR]).await
}
