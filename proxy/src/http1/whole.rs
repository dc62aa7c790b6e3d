//! A whole backend response held in memory, read the way an exchange
//! would: for the fuzz targets (`fuzz/checks.rs`) and the tests.

use bytes::BytesMut;
use http::{HeaderMap, Method, Response, StatusCode};

use crate::headers::{self};

use super::conn::READ_CHUNK;
use super::decode::{Framing, Step, next_step};
use super::error::RawError;
use super::response::{HeaderLines, HeadersAs, parse_head};

/// Reads a whole backend response held in memory the way an exchange
/// would: the response with its decoded body, and whether the connection
/// could be reused. For the fuzz target (`fuzz/checks.rs`, replayed by the
/// tests).
#[doc(hidden)]
pub fn decode_whole(bytes: &[u8], method: &Method) -> Result<(Response<Vec<u8>>, bool), RawError> {
    let mut buf = BytesMut::from(bytes);
    let (res, mut framing, keep_alive, _) = loop {
        match parse_head(&mut buf, method, HeadersAs::Map, None)? {
            None => return Err(RawError::Incomplete),
            Some((res, ..)) if res.status() == StatusCode::SWITCHING_PROTOCOLS => {
                return Err(RawError::Malformed("101 to a request that asked for no upgrade"));
            }
            Some((res, ..)) if res.status().is_informational() => {}
            Some(parsed) => break parsed,
        }
    };
    let mut body = Vec::new();
    loop {
        match next_step(&mut framing, &mut buf, READ_CHUNK)? {
            Step::Data(data) => body.extend_from_slice(&data),
            Step::Continue => {}
            Step::End => return Ok((res.map(|()| body), keep_alive)),
            // Past the held bytes the connection has closed: the end of a
            // body that runs to the close, a truncated one otherwise.
            Step::Read(_) if framing == Framing::UntilClose => return Ok((res.map(|()| body), keep_alive)),
            Step::Read(_) => return Err(RawError::Incomplete),
        }
    }
}

/// A response head read both ways: the header map as a hyper connection's
/// client gets it (hop-by-hop headers stripped), and the [`HeaderLines`]
/// sluice's own loop writes. For the fuzz target (`fuzz/checks.rs`) and
/// the tests, which check that the two say the same.
#[doc(hidden)]
pub fn head_both_ways(bytes: &[u8], method: &Method) -> Result<Option<(HeaderMap, HeaderLines)>, RawError> {
    let as_map = parse_head(&mut BytesMut::from(bytes), method, HeadersAs::Map, None)?;
    let as_lines = parse_head(&mut BytesMut::from(bytes), method, HeadersAs::Lines, None)?;
    Ok(match (as_map, as_lines) {
        (Some((mut res, ..)), Some((.., Some(lines)))) => {
            headers::strip_hop_by_hop(res.headers_mut());
            Some((std::mem::take(res.headers_mut()), lines))
        }
        _ => None,
    })
}
