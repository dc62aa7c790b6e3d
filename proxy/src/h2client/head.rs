//! A backend's header blocks as a response head or trailers, checked as
//! RFC 9113 §8.1.1 and §8.3.2 ask: a malformed one resets the stream.

use http::{HeaderMap, StatusCode};

use super::MAX_HEADER_LIST;
use crate::h2::hpack::{Field, Name, Pseudo};
use crate::h2::is_connection_specific;

/// What a whole header block was.
pub(super) enum Block {
    Informational,
    Head(StatusCode, HeaderMap, Option<u64>),
    Trailers(HeaderMap),
}

fn regular_fields(fields: impl Iterator<Item = Field>, headers: &mut HeaderMap) -> Result<(), &'static str> {
    for f in fields {
        let Name::Header(name) = f.name else {
            return Err(match f.name {
                Name::Pseudo(_) => "pseudo-header after a regular field or in trailers",
                _ => "invalid field name",
            });
        };
        if is_connection_specific(&name) {
            return Err("connection-specific field");
        }
        let value = f.value.into_header().ok_or("invalid field value")?;
        headers.append(name, value);
    }
    Ok(())
}

pub(super) fn response_head(fields: &mut Vec<Field>, end_stream: bool) -> Result<Block, &'static str> {
    if fields.iter().map(Field::size).sum::<usize>() > MAX_HEADER_LIST {
        return Err("response head too large");
    }
    let mut fields = fields.drain(..);
    let status = match fields.next() {
        Some(Field {
            name: Name::Pseudo(Pseudo::Status),
            value,
        }) => value.as_bytes().to_vec(),
        _ => return Err(":status missing or not first"),
    };
    let status = match status.as_slice() {
        [a, b, c] if [a, b, c].iter().all(|d| d.is_ascii_digit()) => {
            StatusCode::from_bytes(&status).map_err(|_| "invalid :status")?
        }
        _ => return Err("invalid :status"),
    };
    // Room for the request id sluice may add before the head goes on.
    let mut headers = crate::spare_maps::take(fields.len() + 1);
    regular_fields(fields, &mut headers)?;
    if status.is_informational() {
        // 101 has no place in HTTP/2 (§8.6); a 1xx head ends nothing.
        if status == StatusCode::SWITCHING_PROTOCOLS || end_stream {
            return Err("invalid informational response");
        }
        return Ok(Block::Informational);
    }
    let mut lengths = headers.get_all(http::header::CONTENT_LENGTH).iter();
    let length = match lengths.next() {
        None => None,
        Some(v) => {
            let n = std::str::from_utf8(v.as_bytes())
                .ok()
                .and_then(|v| v.parse::<u64>().ok())
                .ok_or("invalid content-length")?;
            if lengths.any(|other| other != v) {
                return Err("conflicting content-length");
            }
            Some(n)
        }
    };
    if end_stream && length.is_some_and(|n| n != 0) {
        return Err("content-length does not match the body");
    }
    Ok(Block::Head(status, headers, length))
}

pub(super) fn trailers(fields: &mut Vec<Field>, end_stream: bool, length: Option<u64>) -> Result<Block, &'static str> {
    if !end_stream {
        return Err("trailers without END_STREAM");
    }
    if length.is_some_and(|n| n != 0) {
        return Err("content-length does not match the body");
    }
    if fields.iter().map(Field::size).sum::<usize>() > MAX_HEADER_LIST {
        return Err("trailers too large");
    }
    let mut headers = crate::spare_maps::take(fields.len());
    regular_fields(fields.drain(..), &mut headers)?;
    Ok(Block::Trailers(headers))
}
