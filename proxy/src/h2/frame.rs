//! HTTP/2 frames (RFC 9113 §4, §6): the 9-byte frame header, the constants
//! sluice's server and its client to backends use, and writers for the
//! frames they send.

use bytes::Bytes;

/// What every HTTP/2 connection starts with (RFC 9113 §3.4).
pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
pub const HEAD_LEN: usize = 9;
/// The largest frame payload sluice accepts: the protocol's default, which
/// it does not raise.
pub const MAX_FRAME: usize = 16_384;
/// The largest frame payload a peer may allow (RFC 9113 §6.5.2).
pub const MAX_FRAME_LIMIT: u32 = (1 << 24) - 1;
/// The HPACK dynamic table's size until SETTINGS say otherwise.
pub const DEFAULT_TABLE_SIZE: u32 = 4096;
/// Every window starts at this size until SETTINGS say otherwise.
pub const DEFAULT_WINDOW: i64 = 65_535;
pub const MAX_WINDOW: i64 = (1 << 31) - 1;
pub const MAX_STREAM_ID: u32 = (1 << 31) - 1;

pub const DATA: u8 = 0x0;
pub const HEADERS: u8 = 0x1;
pub const PRIORITY: u8 = 0x2;
pub const RST_STREAM: u8 = 0x3;
pub const SETTINGS: u8 = 0x4;
pub const PUSH_PROMISE: u8 = 0x5;
pub const PING: u8 = 0x6;
pub const GOAWAY: u8 = 0x7;
pub const WINDOW_UPDATE: u8 = 0x8;
pub const CONTINUATION: u8 = 0x9;

pub const END_STREAM: u8 = 0x1;
pub const ACK: u8 = 0x1;
pub const END_HEADERS: u8 = 0x4;
pub const PADDED: u8 = 0x8;
pub const PRIORITY_FLAG: u8 = 0x20;

pub const SETTINGS_HEADER_TABLE_SIZE: u16 = 0x1;
pub const SETTINGS_ENABLE_PUSH: u16 = 0x2;
pub const SETTINGS_MAX_CONCURRENT_STREAMS: u16 = 0x3;
pub const SETTINGS_INITIAL_WINDOW_SIZE: u16 = 0x4;
pub const SETTINGS_MAX_FRAME_SIZE: u16 = 0x5;
pub const SETTINGS_MAX_HEADER_LIST_SIZE: u16 = 0x6;

/// Error codes (RFC 9113 §7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    NoError = 0x0,
    Protocol = 0x1,
    Internal = 0x2,
    FlowControl = 0x3,
    StreamClosed = 0x5,
    FrameSize = 0x6,
    RefusedStream = 0x7,
    Cancel = 0x8,
    Compression = 0x9,
    EnhanceYourCalm = 0xb,
}

/// A frame's header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    pub len: usize,
    pub kind: u8,
    pub flags: u8,
    pub stream: u32,
}

impl Head {
    pub fn parse(bytes: &[u8]) -> Option<Self> {
        let b: &[u8; HEAD_LEN] = bytes.get(..HEAD_LEN)?.try_into().ok()?;
        Some(Self {
            len: (usize::from(b[0]) << 16) | (usize::from(b[1]) << 8) | usize::from(b[2]),
            kind: b[3],
            flags: b[4],
            // The reserved high bit is ignored on receipt.
            stream: u32::from_be_bytes([b[5], b[6], b[7], b[8]]) & 0x7fff_ffff,
        })
    }

    pub fn has(&self, flag: u8) -> bool {
        self.flags & flag != 0
    }
}

/// A frame's payload without its padding (DATA and HEADERS); `None` when
/// the padding is longer than the payload.
pub fn unpad(head: &Head, payload: Bytes) -> Option<Bytes> {
    if !head.has(PADDED) {
        return Some(payload);
    }
    let pad = usize::from(*payload.first()?);
    let end = payload.len().checked_sub(pad)?;
    (end >= 1).then(|| payload.slice(1..end))
}

pub fn write_head(out: &mut Vec<u8>, len: usize, kind: u8, flags: u8, stream: u32) {
    let len = len.to_be_bytes();
    let [.., a, b, c] = len;
    out.extend_from_slice(&[a, b, c, kind, flags]);
    out.extend_from_slice(&stream.to_be_bytes());
}

pub fn write_settings(out: &mut Vec<u8>, settings: &[(u16, u32)]) {
    write_head(out, settings.len() * 6, SETTINGS, 0, 0);
    for (id, value) in settings {
        out.extend_from_slice(&id.to_be_bytes());
        out.extend_from_slice(&value.to_be_bytes());
    }
}

pub fn write_settings_ack(out: &mut Vec<u8>) {
    write_head(out, 0, SETTINGS, ACK, 0);
}

pub fn write_ping(out: &mut Vec<u8>, payload: [u8; 8]) {
    write_head(out, 8, PING, 0, 0);
    out.extend_from_slice(&payload);
}

pub fn write_ping_ack(out: &mut Vec<u8>, payload: &[u8]) {
    write_head(out, payload.len(), PING, ACK, 0);
    out.extend_from_slice(payload);
}

pub fn write_window_update(out: &mut Vec<u8>, stream: u32, increment: u32) {
    write_head(out, 4, WINDOW_UPDATE, 0, stream);
    out.extend_from_slice(&increment.to_be_bytes());
}

pub fn write_rst(out: &mut Vec<u8>, stream: u32, reason: Reason) {
    write_head(out, 4, RST_STREAM, 0, stream);
    out.extend_from_slice(&(reason as u32).to_be_bytes());
}

pub fn write_goaway(out: &mut Vec<u8>, last_stream: u32, reason: Reason) {
    write_head(out, 8, GOAWAY, 0, 0);
    out.extend_from_slice(&last_stream.to_be_bytes());
    out.extend_from_slice(&(reason as u32).to_be_bytes());
}

pub fn write_data(out: &mut Vec<u8>, stream: u32, data: &[u8], end_stream: bool) {
    write_head(out, data.len(), DATA, if end_stream { END_STREAM } else { 0 }, stream);
    out.extend_from_slice(data);
}

/// A header block as HEADERS, then CONTINUATION frames where it is larger
/// than the peer's frame size.
pub fn write_headers(out: &mut Vec<u8>, stream: u32, block: &[u8], end_stream: bool, max_frame: usize) {
    let mut chunks = block.chunks(max_frame.max(1));
    let first = chunks.next().unwrap_or_default();
    let mut rest = chunks.peekable();
    let end_headers = if rest.peek().is_none() { END_HEADERS } else { 0 };
    let end_stream = if end_stream { END_STREAM } else { 0 };
    write_head(out, first.len(), HEADERS, end_headers | end_stream, stream);
    out.extend_from_slice(first);
    while let Some(chunk) = rest.next() {
        let end_headers = if rest.peek().is_none() { END_HEADERS } else { 0 };
        write_head(out, chunk.len(), CONTINUATION, end_headers, stream);
        out.extend_from_slice(chunk);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_round_trip_and_ignore_the_reserved_bit() {
        let mut out = Vec::new();
        write_head(&mut out, 70_000, HEADERS, END_HEADERS, 0x7fff_fffe);
        assert_eq!(
            Head::parse(&out),
            Some(Head {
                len: 70_000,
                kind: HEADERS,
                flags: END_HEADERS,
                stream: 0x7fff_fffe
            })
        );
        out[5] |= 0x80;
        assert_eq!(Head::parse(&out).map(|h| h.stream), Some(0x7fff_fffe));
        assert_eq!(Head::parse(&out[..8]), None);
    }

    #[test]
    fn padding_is_removed_or_refused() {
        let padded = Head {
            len: 0,
            kind: DATA,
            flags: PADDED,
            stream: 1,
        };
        assert_eq!(
            unpad(&padded, Bytes::from_static(b"\x02abc\0\0")).as_deref(),
            Some(&b"abc"[..])
        );
        assert_eq!(unpad(&padded, Bytes::from_static(b"\x00")).as_deref(), Some(&b""[..]));
        assert_eq!(unpad(&padded, Bytes::from_static(b"\x05ab")), None);
        assert_eq!(unpad(&padded, Bytes::new()), None);
    }

    #[test]
    fn large_header_blocks_continue_in_continuation_frames() {
        let block = vec![7u8; 40_000];
        let mut out = Vec::new();
        write_headers(&mut out, 3, &block, true, MAX_FRAME);
        let first = Head::parse(&out).unwrap();
        assert_eq!((first.kind, first.len, first.flags), (HEADERS, MAX_FRAME, END_STREAM));
        let second = Head::parse(&out[HEAD_LEN + MAX_FRAME..]).unwrap();
        assert_eq!((second.kind, second.len, second.flags), (CONTINUATION, MAX_FRAME, 0));
        let third = Head::parse(&out[2 * (HEAD_LEN + MAX_FRAME)..]).unwrap();
        assert_eq!(
            (third.kind, third.len, third.flags),
            (CONTINUATION, 40_000 - 2 * MAX_FRAME, END_HEADERS)
        );
        assert_eq!(out.len(), 3 * HEAD_LEN + 40_000);
    }
}
