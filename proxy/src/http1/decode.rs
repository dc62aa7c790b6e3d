//! A response body's framing and its decoder (length, chunked, until
//! close) over the buffered bytes.

use bytes::{Buf, Bytes, BytesMut};

use super::conn::{READ_CHUNK, READ_MAX};
use super::error::RawError;

/// A chunk-size line or the trailer section longer than this is malformed.
pub(super) const MAX_CHUNK_LINE: usize = 1024;
pub(super) const MAX_TRAILERS: usize = 16 * 1024;

/// How the response body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Framing {
    Length(u64),
    Chunked(Chunk),
    UntilClose,
    Done,
}

/// Where a chunked body's decoder stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Chunk {
    Size,
    Data(u64),
    DataEnd,
    Trailers(usize),
}

/// The body decoder's next step over the buffered bytes: the live body
/// ([`RawBody::poll_frame`]) and [`decode_whole`] both go through it.
pub(super) fn next_step(framing: &mut Framing, buf: &mut BytesMut, read_size: usize) -> Result<Step, RawError> {
    Ok(match framing {
        Framing::Done | Framing::Length(0) => Step::End,
        Framing::Length(left) => match take(buf, left) {
            Some(data) => Step::Data(data),
            None => Step::Read(usize::try_from(*left).unwrap_or(READ_MAX).min(READ_MAX)),
        },
        Framing::Chunked(state) => decode_chunk(buf, state)?,
        Framing::UntilClose if buf.is_empty() => Step::Read(read_size),
        Framing::UntilClose => Step::Data(buf.split().freeze()),
    })
}

/// What the body decoder does next.
pub(super) enum Step {
    Data(Bytes),
    Read(usize),
    Continue,
    End,
}

/// Up to `left` buffered bytes of a body of known length.
pub(super) fn take(buf: &mut BytesMut, left: &mut u64) -> Option<Bytes> {
    if buf.is_empty() {
        return None;
    }
    let n = usize::try_from(*left).unwrap_or(usize::MAX).min(buf.len());
    *left -= n as u64;
    Some(buf.split_to(n).freeze())
}

/// One step of chunked decoding over the buffered bytes.
/// A chunk size: hex digits only, as hyper reads it (`u64::from_str_radix`
/// would also take a leading `+`, which a backend could use to make
/// `+0` end a body for sluice and not for the next hop).
pub(super) fn chunk_size(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || digits.len() > 16 {
        return None;
    }
    digits
        .iter()
        .try_fold(0u64, |n, &b| Some((n << 4) | u64::from(char::from(b).to_digit(16)?)))
}

pub(super) fn decode_chunk(buf: &mut BytesMut, state: &mut Chunk) -> Result<Step, RawError> {
    let need_more = |limit: usize, buf: &BytesMut, what: &'static str| {
        if buf.len() > limit {
            Err(RawError::Malformed(what))
        } else {
            Ok(Step::Read(READ_CHUNK))
        }
    };
    match state {
        Chunk::Size => {
            let Some(end) = find_crlf(buf) else {
                return need_more(MAX_CHUNK_LINE, buf, "chunk-size line too long");
            };
            let line = buf.get(..end).unwrap_or_default();
            // As hyper's client reads it (never looser): hex digits from the
            // start of the line, then spaces or tabs, an extension, or the
            // end; no bare LF anywhere in the line.
            if line.iter().any(|&b| b == b'\n' || b == b'\r') {
                return Err(RawError::Malformed("bare CR or LF in a chunk-size line"));
            }
            let size = line.split(|&b| b == b';').next().unwrap_or_default();
            let blanks = size.iter().rev().take_while(|&&b| b == b' ' || b == b'\t').count();
            let digits = size.get(..size.len() - blanks).unwrap_or_default();
            let size = chunk_size(digits).ok_or(RawError::Malformed("invalid chunk size"))?;
            buf.advance(end + 2);
            *state = if size == 0 {
                Chunk::Trailers(0)
            } else {
                Chunk::Data(size)
            };
            Ok(Step::Continue)
        }
        Chunk::Data(left) => match take(buf, left) {
            Some(data) => {
                if *left == 0 {
                    *state = Chunk::DataEnd;
                }
                Ok(Step::Data(data))
            }
            None => Ok(Step::Read(READ_CHUNK)),
        },
        Chunk::DataEnd => {
            let Some(crlf) = buf.get(..2) else {
                return Ok(Step::Read(READ_CHUNK));
            };
            if crlf != b"\r\n" {
                return Err(RawError::Malformed("chunk data not followed by CRLF"));
            }
            buf.advance(2);
            *state = Chunk::Size;
            Ok(Step::Continue)
        }
        Chunk::Trailers(seen) => {
            // Trailer fields are read past and dropped: hyper's HTTP/1
            // server would not send them on either.
            let Some(end) = find_crlf(buf) else {
                return need_more(MAX_TRAILERS.saturating_sub(*seen), buf, "trailers too long");
            };
            // Dropped, but read as field lines, as hyper's client reads them:
            // a token name, a colon, a value without control bytes.
            if end > 0 && !is_field_line(buf.get(..end).unwrap_or_default()) {
                return Err(RawError::Malformed("invalid trailer field"));
            }
            buf.advance(end + 2);
            if end == 0 {
                return Ok(Step::End);
            }
            *seen += end + 2;
            if *seen > MAX_TRAILERS {
                return Err(RawError::Malformed("trailers too long"));
            }
            Ok(Step::Continue)
        }
    }
}

/// `name: value` with a token name and a value without control bytes but
/// HTAB (obs-text allowed), as httparse reads a field line.
pub(super) fn is_field_line(line: &[u8]) -> bool {
    let Some(colon) = line.iter().position(|&b| b == b':') else {
        return false;
    };
    let (name, value) = line.split_at(colon);
    !name.is_empty()
        && name
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
        && value.iter().all(|&b| b == b'\t' || (b >= 0x20 && b != 0x7f))
}

pub(super) fn find_crlf(buf: &[u8]) -> Option<usize> {
    buf.windows(2).position(|w| w == b"\r\n")
}
