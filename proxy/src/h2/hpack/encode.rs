//! HPACK encoding of response heads (the server's) and request heads (the
//! client's to backends) from the static table only: no state to keep in
//! step, so a head can be encoded anywhere, in any order, and no Huffman
//! coding (both are the encoder's choice).

use http::{HeaderName, HeaderValue, StatusCode};

pub(super) fn write_integer(out: &mut Vec<u8>, prefix: u8, flags: u8, value: usize) {
    let max = (1usize << prefix) - 1;
    if value < max {
        out.push(flags | value as u8);
        return;
    }
    out.push(flags | max as u8);
    let mut rest = value - max;
    while rest >= 0x80 {
        out.push((rest & 0x7f) as u8 | 0x80);
        rest >>= 7;
    }
    out.push(rest as u8);
}

fn write_string(out: &mut Vec<u8>, bytes: &[u8]) {
    write_integer(out, 7, 0, bytes.len());
    out.extend_from_slice(bytes);
}

/// Appends a dynamic table size update to 0 (RFC 7541 §6.3): sluice's
/// encoder uses no dynamic table, and says so at the start of the first
/// block after a client lowers SETTINGS_HEADER_TABLE_SIZE (§4.2).
pub fn encode_table_size_zero(out: &mut Vec<u8>) {
    write_integer(out, 5, 0x20, 0);
}

/// Appends `:status`.
pub fn encode_status(status: StatusCode, out: &mut Vec<u8>) {
    let indexed = match status.as_u16() {
        200 => 8,
        204 => 9,
        206 => 10,
        304 => 11,
        400 => 12,
        404 => 13,
        500 => 14,
        _ => 0,
    };
    if indexed > 0 {
        out.push(0x80 | indexed);
    } else {
        // Literal without indexing, name :status (index 8).
        out.push(0x08);
        write_string(out, status.as_str().as_bytes());
    }
}

/// Appends one header field, not indexed; never indexed when the value is
/// marked sensitive, so later hops do not index it either.
pub fn encode_header(name: &HeaderName, value: &HeaderValue, out: &mut Vec<u8>) {
    let flags = if value.is_sensitive() { 0x10 } else { 0x00 };
    encode_field(name.as_str().as_bytes(), value.as_bytes(), flags, out);
}

/// Appends a backend's header line as it came (see
/// [`crate::http1::HeaderLines`]): a lower-case token name and a value
/// httparse has checked.
pub fn encode_line(name: &[u8], value: &[u8], out: &mut Vec<u8>) {
    encode_field(name, value, 0x00, out);
}

/// Appends `content-length`.
pub fn encode_length(length: u64, out: &mut Vec<u8>) {
    encode_field(
        b"content-length",
        itoa::Buffer::new().format(length).as_bytes(),
        0x00,
        out,
    );
}

fn encode_field(name: &[u8], value: &[u8], flags: u8, out: &mut Vec<u8>) {
    match static_name_index(name) {
        Some(index) => write_integer(out, 4, flags, index),
        None => {
            out.push(flags);
            write_string(out, name);
        }
    }
    write_string(out, value);
}

/// Appends `date` with the current date, formatted once a second.
pub fn encode_date(out: &mut Vec<u8>) {
    // Without indexing, name index 33 (date); an HTTP date is 29 bytes.
    out.extend_from_slice(&[0x0f, 33 - 15, 29]);
    crate::date::append(out);
}

/// Appends a request's pseudo-header fields (RFC 9113 §8.3.1).
pub fn encode_request_line(method: &[u8], scheme: &[u8], authority: &[u8], path: &[u8], out: &mut Vec<u8>) {
    match method {
        b"GET" => out.push(0x82),
        b"POST" => out.push(0x83),
        _ => {
            write_integer(out, 4, 0, 2);
            write_string(out, method);
        }
    }
    match scheme {
        b"https" => out.push(0x87),
        _ => out.push(0x86),
    }
    if !authority.is_empty() {
        write_integer(out, 4, 0, 1);
        write_string(out, authority);
    }
    match path {
        b"/" | b"" => out.push(0x84),
        _ => {
            write_integer(out, 4, 0, 4);
            write_string(out, path);
        }
    }
}

/// The static table's index for the header names it lists (a match on
/// bytes compiles to a switch on the length, then a compare).
pub(super) fn static_name_index(name: &[u8]) -> Option<usize> {
    Some(match name {
        b"user-agent" => 58,
        b"accept" => 19,
        b"accept-encoding" => 16,
        b"accept-language" => 17,
        b"accept-charset" => 15,
        b"authorization" => 23,
        b"cookie" => 32,
        b"referer" => 51,
        b"if-none-match" => 41,
        b"if-modified-since" => 40,
        b"if-match" => 39,
        b"if-range" => 42,
        b"if-unmodified-since" => 43,
        b"range" => 50,
        b"expect" => 35,
        b"from" => 37,
        b"max-forwards" => 47,
        b"proxy-authorization" => 49,
        b"content-length" => 28,
        b"content-type" => 31,
        b"date" => 33,
        b"cache-control" => 24,
        b"server" => 54,
        b"etag" => 34,
        b"last-modified" => 44,
        b"set-cookie" => 55,
        b"vary" => 59,
        b"content-encoding" => 26,
        b"location" => 46,
        b"expires" => 36,
        b"accept-ranges" => 18,
        b"access-control-allow-origin" => 20,
        b"age" => 21,
        b"allow" => 22,
        b"content-disposition" => 25,
        b"content-language" => 27,
        b"content-location" => 29,
        b"content-range" => 30,
        b"link" => 45,
        b"proxy-authenticate" => 48,
        b"refresh" => 52,
        b"retry-after" => 53,
        b"strict-transport-security" => 56,
        b"via" => 60,
        b"www-authenticate" => 61,
        _ => return None,
    })
}

/// A response head as sluice's encoder writes it (`:status`, then each
/// field; after a lowered SETTINGS_HEADER_TABLE_SIZE, a size update
/// first), for the round trip through an independent decoder.
#[doc(hidden)]
pub fn encode_response(status: StatusCode, fields: &[(HeaderName, HeaderValue)], size_update: bool) -> Vec<u8> {
    let mut out = Vec::new();
    if size_update {
        encode_table_size_zero(&mut out);
    }
    encode_status(status, &mut out);
    for (name, value) in fields {
        encode_header(name, value, &mut out);
    }
    out
}
