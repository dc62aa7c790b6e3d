//! HPACK (RFC 7541) for sluice's HTTP/2 server: a decoder for the client's
//! header blocks, with the dynamic table the client writes into, and an
//! encoder for response heads that uses only the static table (no state to
//! keep in step, and no Huffman coding: both are the encoder's choice).

use std::collections::VecDeque;
use std::sync::LazyLock;

use bytes::Bytes;
use http::{HeaderName, HeaderValue, StatusCode};
use thiserror::Error;

use super::huffman::{self, HuffmanError};

/// Why a header block does not decode: a connection error
/// (COMPRESSION_ERROR), since the table can no longer be trusted.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum HpackError {
    #[error("header block ends inside a field")]
    Truncated,
    #[error("integer too large")]
    Integer,
    #[error("index {0} is not in the table")]
    Index(usize),
    #[error("{0}")]
    Huffman(#[from] HuffmanError),
    #[error("table size update past the limit or after a field")]
    TableSize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pseudo {
    Method,
    Scheme,
    Authority,
    Path,
    Status,
    Protocol,
}

/// A field's name as a request can use it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Name {
    Pseudo(Pseudo),
    Header(HeaderName),
    /// A name no request may carry (an unknown pseudo-header, upper case,
    /// bytes no header name has): kept so the table stays in step with the
    /// client's, refused where a request uses it.
    Invalid(Bytes),
}

impl Name {
    fn parse(bytes: Bytes) -> Self {
        if bytes.first() == Some(&b':') {
            let pseudo = match &bytes[..] {
                b":method" => Pseudo::Method,
                b":scheme" => Pseudo::Scheme,
                b":authority" => Pseudo::Authority,
                b":path" => Pseudo::Path,
                b":status" => Pseudo::Status,
                b":protocol" => Pseudo::Protocol,
                _ => return Self::Invalid(bytes),
            };
            return Self::Pseudo(pseudo);
        }
        // HTTP/2 names are lower case; `HeaderName` would quietly fold them.
        if bytes.iter().any(u8::is_ascii_uppercase) {
            return Self::Invalid(bytes);
        }
        match HeaderName::from_bytes(&bytes) {
            Ok(name) => Self::Header(name),
            Err(_) => Self::Invalid(bytes),
        }
    }

    /// The name as it came.
    fn as_bytes(&self) -> &[u8] {
        match self {
            Self::Pseudo(Pseudo::Method) => b":method",
            Self::Pseudo(Pseudo::Scheme) => b":scheme",
            Self::Pseudo(Pseudo::Status) => b":status",
            Self::Pseudo(Pseudo::Authority) => b":authority",
            Self::Pseudo(Pseudo::Path) => b":path",
            Self::Pseudo(Pseudo::Protocol) => b":protocol",
            Self::Header(name) => name.as_str().as_bytes(),
            Self::Invalid(bytes) => bytes,
        }
    }

    fn len(&self) -> usize {
        match self {
            Self::Pseudo(Pseudo::Method) => 7,
            Self::Pseudo(Pseudo::Scheme | Pseudo::Status) => 7,
            Self::Pseudo(Pseudo::Authority) => 10,
            Self::Pseudo(Pseudo::Path) => 5,
            Self::Pseudo(Pseudo::Protocol) => 9,
            Self::Header(name) => name.as_str().len(),
            Self::Invalid(bytes) => bytes.len(),
        }
    }
}

/// One decoded header field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    pub name: Name,
    pub value: Value,
}

/// A field's value. A header field's is checked as a `HeaderValue` once,
/// when decoded: a field the client indexes in the table is not checked
/// again on every request that refers to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// A pseudo-header's, or a header's that is no valid `HeaderValue`.
    Raw(Bytes),
    Checked(HeaderValue),
}

impl Value {
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            Self::Raw(bytes) => bytes,
            Self::Checked(value) => value.as_bytes(),
        }
    }

    pub fn into_bytes(self) -> Bytes {
        match self {
            Self::Raw(bytes) => bytes,
            // Pseudo-headers' values stay raw: not reached.
            Self::Checked(value) => Bytes::copy_from_slice(value.as_bytes()),
        }
    }

    /// The valid header value, if it is one.
    pub fn into_header(self) -> Option<HeaderValue> {
        match self {
            Self::Raw(_) => None,
            Self::Checked(value) => Some(value),
        }
    }
}

impl Field {
    pub fn new(name: Name, value: Bytes) -> Self {
        let value = match name {
            // The clone shares the bytes: a count's increment for bytes in
            // the frame; for Huffman-decoded ones it allocates their shared
            // count (which a copy into the table would have anyway).
            Name::Header(_) => match HeaderValue::from_maybe_shared(value.clone()) {
                Ok(checked) => Value::Checked(checked),
                Err(_) => Value::Raw(value),
            },
            Name::Pseudo(_) | Name::Invalid(_) => Value::Raw(value),
        };
        Self { name, value }
    }

    /// The field's size as HPACK and SETTINGS_MAX_HEADER_LIST_SIZE count it.
    pub fn size(&self) -> usize {
        self.name.len() + self.value.as_bytes().len() + 32
    }
}

const STATIC_FIELDS: [(&str, &str); 61] = [
    (":authority", ""),
    (":method", "GET"),
    (":method", "POST"),
    (":path", "/"),
    (":path", "/index.html"),
    (":scheme", "http"),
    (":scheme", "https"),
    (":status", "200"),
    (":status", "204"),
    (":status", "206"),
    (":status", "304"),
    (":status", "400"),
    (":status", "404"),
    (":status", "500"),
    ("accept-charset", ""),
    ("accept-encoding", "gzip, deflate"),
    ("accept-language", ""),
    ("accept-ranges", ""),
    ("accept", ""),
    ("access-control-allow-origin", ""),
    ("age", ""),
    ("allow", ""),
    ("authorization", ""),
    ("cache-control", ""),
    ("content-disposition", ""),
    ("content-encoding", ""),
    ("content-language", ""),
    ("content-length", ""),
    ("content-location", ""),
    ("content-range", ""),
    ("content-type", ""),
    ("cookie", ""),
    ("date", ""),
    ("etag", ""),
    ("expect", ""),
    ("expires", ""),
    ("from", ""),
    ("host", ""),
    ("if-match", ""),
    ("if-modified-since", ""),
    ("if-none-match", ""),
    ("if-range", ""),
    ("if-unmodified-since", ""),
    ("last-modified", ""),
    ("link", ""),
    ("location", ""),
    ("max-forwards", ""),
    ("proxy-authenticate", ""),
    ("proxy-authorization", ""),
    ("range", ""),
    ("referer", ""),
    ("refresh", ""),
    ("retry-after", ""),
    ("server", ""),
    ("set-cookie", ""),
    ("strict-transport-security", ""),
    ("transfer-encoding", ""),
    ("user-agent", ""),
    ("vary", ""),
    ("via", ""),
    ("www-authenticate", ""),
];

static STATIC_TABLE: LazyLock<Vec<Field>> = LazyLock::new(|| {
    STATIC_FIELDS
        .iter()
        .map(|(name, value)| {
            Field::new(
                Name::parse(Bytes::from_static(name.as_bytes())),
                Bytes::from_static(value.as_bytes()),
            )
        })
        .collect()
});

/// The default and largest dynamic table sluice lets a client use
/// (SETTINGS_HEADER_TABLE_SIZE, which sluice does not change).
pub const TABLE_SIZE: usize = 4096;

/// Decodes one connection's header blocks, in order.
#[derive(Debug)]
pub struct Decoder {
    dynamic: VecDeque<Field>,
    size: usize,
    max_size: usize,
}

impl Default for Decoder {
    fn default() -> Self {
        Self {
            dynamic: VecDeque::new(),
            size: 0,
            max_size: TABLE_SIZE,
        }
    }
}

impl Decoder {
    /// Decodes `block`, giving each field to `each` in order.
    pub fn decode(&mut self, block: &Bytes, mut each: impl FnMut(Field)) -> Result<(), HpackError> {
        let mut pos = 0;
        let mut fields_seen = false;
        while let Some(&first) = block.get(pos) {
            let rest = block.get(pos..).unwrap_or_default();
            if first & 0x80 != 0 {
                let (index, used) = integer(rest, 7)?;
                pos += used;
                each(self.get(index)?.clone());
            } else if first & 0xc0 == 0x40 {
                let (field, used) = self.literal(block, pos, 6)?;
                pos += used;
                self.insert(field.clone());
                each(field);
            } else if first & 0xe0 == 0x20 {
                // Only at the start of a block (RFC 7541 §4.2).
                let (size, used) = integer(rest, 5)?;
                if fields_seen || size > TABLE_SIZE {
                    return Err(HpackError::TableSize);
                }
                pos += used;
                self.max_size = size;
                self.evict_to(size);
                continue;
            } else {
                // Without indexing (0000) or never indexed (0001).
                let (field, used) = self.literal(block, pos, 4)?;
                pos += used;
                each(field);
            }
            fields_seen = true;
        }
        Ok(())
    }

    fn get(&self, index: usize) -> Result<&Field, HpackError> {
        match index {
            0 => Err(HpackError::Index(0)),
            1..=61 => STATIC_TABLE.get(index - 1).ok_or(HpackError::Index(index)),
            _ => self.dynamic.get(index - 62).ok_or(HpackError::Index(index)),
        }
    }

    /// A literal field at `pos`, whose name index has `prefix` bits.
    fn literal(&self, block: &Bytes, pos: usize, prefix: u8) -> Result<(Field, usize), HpackError> {
        let (index, mut used) = integer(block.get(pos..).ok_or(HpackError::Truncated)?, prefix)?;
        let name = if index == 0 {
            let (name, n) = string(block, pos + used)?;
            used += n;
            Name::parse(name)
        } else {
            self.get(index)?.name.clone()
        };
        let (value, n) = string(block, pos + used)?;
        Ok((Field::new(name, value), used + n))
    }

    fn insert(&mut self, field: Field) {
        let size = field.size();
        if size > self.max_size {
            // Too large for the table: it empties it (RFC 7541 §4.4).
            self.dynamic.clear();
            self.size = 0;
            return;
        }
        self.evict_to(self.max_size - size);
        self.size += size;
        self.dynamic.push_front(field);
    }

    fn evict_to(&mut self, size: usize) {
        while self.size > size {
            match self.dynamic.pop_back() {
                Some(old) => self.size -= old.size(),
                None => self.size = 0,
            }
        }
    }
}

/// An integer with a `prefix`-bit first octet (RFC 7541 §5.1) and the
/// number of octets it took.
fn integer(buf: &[u8], prefix: u8) -> Result<(usize, usize), HpackError> {
    let mask = (1usize << prefix) - 1;
    let first = usize::from(*buf.first().ok_or(HpackError::Truncated)?);
    let mut value = first & mask;
    if value < mask {
        return Ok((value, 1));
    }
    // Four continuation octets reach 2^28: more than any size sluice allows.
    for (i, &byte) in buf.iter().enumerate().skip(1).take(4) {
        value += usize::from(byte & 0x7f) << (7 * (i - 1));
        if byte & 0x80 == 0 {
            return Ok((value, i + 1));
        }
    }
    if buf.len() <= 5 {
        Err(HpackError::Truncated)
    } else {
        Err(HpackError::Integer)
    }
}

/// A string literal at `pos` (RFC 7541 §5.2): shared with `block` when
/// raw, decoded when Huffman-coded.
fn string(block: &Bytes, pos: usize) -> Result<(Bytes, usize), HpackError> {
    let rest = block.get(pos..).ok_or(HpackError::Truncated)?;
    let huffman = rest.first().is_some_and(|b| b & 0x80 != 0);
    let (len, used) = integer(rest, 7)?;
    let end = used
        .checked_add(len)
        .filter(|&end| end <= rest.len())
        .ok_or(HpackError::Truncated)?;
    let value = if huffman {
        let mut out = Vec::new();
        huffman::decode(rest.get(used..end).ok_or(HpackError::Truncated)?, &mut out)?;
        Bytes::from(out)
    } else {
        block.slice(pos + used..pos + end)
    };
    Ok((value, end))
}

fn write_integer(out: &mut Vec<u8>, prefix: u8, flags: u8, value: usize) {
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

/// The static table's index for the response header names it lists (a
/// match on bytes compiles to a switch on the length, then a compare).
fn static_name_index(name: &[u8]) -> Option<usize> {
    Some(match name {
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

/// Fields as name and value bytes.
#[doc(hidden)]
pub type HeaderList = Vec<(Vec<u8>, Vec<u8>)>;

/// One decoder over `blocks`, in order, as one connection decodes them:
/// each block's fields as name and value bytes, up to the first block that
/// does not decode (a connection error: nothing after it is decoded). For
/// the differential fuzz target against an independent decoder
/// (`fuzz/checks.rs`, replayed by the tests).
#[doc(hidden)]
pub fn decode_blocks(blocks: &[&[u8]]) -> Vec<Result<HeaderList, String>> {
    let mut decoder = Decoder::default();
    let mut out = Vec::new();
    for block in blocks {
        let mut fields = Vec::new();
        let decoded = decoder.decode(&Bytes::copy_from_slice(block), |f| {
            fields.push((f.name.as_bytes().to_vec(), f.value.as_bytes().to_vec()));
        });
        match decoded {
            Ok(()) => out.push(Ok(fields)),
            Err(e) => {
                out.push(Err(e.to_string()));
                break;
            }
        }
    }
    out
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

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(decoder: &mut Decoder, block: &[u8]) -> Result<Vec<(String, String)>, HpackError> {
        let mut fields = Vec::new();
        decoder.decode(&Bytes::copy_from_slice(block), |f| {
            let name = match f.name {
                Name::Pseudo(p) => format!("{p:?}"),
                Name::Header(n) => n.to_string(),
                Name::Invalid(b) => format!("invalid:{}", String::from_utf8_lossy(&b)),
            };
            fields.push((name, String::from_utf8_lossy(f.value.as_bytes()).into_owned()));
        })?;
        Ok(fields)
    }

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect()
    }

    #[test]
    fn rfc_7541_c3_requests_without_huffman_share_the_table() {
        let mut d = Decoder::default();
        let start = [
            ("Method", "GET"),
            ("Scheme", "http"),
            ("Path", "/"),
            ("Authority", "www.example.com"),
        ];
        let first = b"\x82\x86\x84\x41\x0fwww.example.com";
        assert_eq!(decode_all(&mut d, first).unwrap(), pairs(&start));
        assert_eq!(d.size, 57);
        let second = b"\x82\x86\x84\xbe\x58\x08no-cache";
        let expected = [&start[..], &[("cache-control", "no-cache")]].concat();
        assert_eq!(decode_all(&mut d, second).unwrap(), pairs(&expected));
        assert_eq!(d.size, 110);
        let third = b"\x82\x87\x85\xbf\x40\x0acustom-key\x0ccustom-value";
        let expected = [
            ("Method", "GET"),
            ("Scheme", "https"),
            ("Path", "/index.html"),
            ("Authority", "www.example.com"),
            ("custom-key", "custom-value"),
        ];
        assert_eq!(decode_all(&mut d, third).unwrap(), pairs(&expected));
        assert_eq!(d.size, 164);
    }

    #[test]
    fn rfc_7541_c4_requests_with_huffman() {
        let mut d = Decoder::default();
        let first = b"\x82\x86\x84\x41\x8c\xf1\xe3\xc2\xe5\xf2\x3a\x6b\xa0\xab\x90\xf4\xff";
        assert_eq!(
            decode_all(&mut d, first).unwrap(),
            pairs(&[
                ("Method", "GET"),
                ("Scheme", "http"),
                ("Path", "/"),
                ("Authority", "www.example.com")
            ])
        );
        let second = b"\x82\x86\x84\xbe\x58\x86\xa8\xeb\x10\x64\x9c\xbf";
        assert_eq!(
            decode_all(&mut d, second).unwrap().last(),
            Some(&("cache-control".into(), "no-cache".into()))
        );
    }

    #[test]
    fn the_table_evicts_oldest_first_and_obeys_size_updates() {
        let mut d = Decoder::default();
        // Size update to 60: room for one 57-byte entry at a time.
        decode_all(&mut d, b"\x3f\x1d\x41\x0fwww.example.com").unwrap();
        assert_eq!((d.dynamic.len(), d.size), (1, 57));
        decode_all(&mut d, b"\x41\x0fwww.example.org").unwrap();
        assert_eq!(d.dynamic.len(), 1);
        assert_eq!(
            decode_all(&mut d, b"\xbe").unwrap(),
            pairs(&[("Authority", "www.example.org")])
        );
        assert_eq!(decode_all(&mut d, b"\xbf"), Err(HpackError::Index(63)));
        // Past the allowed size, or after a field: refused.
        assert_eq!(decode_all(&mut d, b"\x3f\xe2\x1f"), Err(HpackError::TableSize));
        assert_eq!(decode_all(&mut d, b"\x82\x20"), Err(HpackError::TableSize));
    }

    #[test]
    fn broken_blocks_are_errors_not_panics() {
        let mut d = Decoder::default();
        for block in [
            &b"\x80"[..],
            b"\x41",
            b"\x41\x0fwww",
            b"\x7f",
            b"\x7f\xff\xff\xff\xff\xff\x01",
            b"\x41\x85\xff\xff\xff\xff\xff",
            b"\x00\x03ab",
        ] {
            assert!(decode_all(&mut d, block).is_err(), "{block:?}");
        }
    }

    #[test]
    fn odd_names_are_kept_but_marked() {
        let mut d = Decoder::default();
        let fields = decode_all(&mut d, b"\x40\x03Abc\x01x\x40\x04:foo\x01y\x40\x01a\x01z").unwrap();
        assert_eq!(
            fields,
            pairs(&[("invalid:Abc", "x"), ("invalid::foo", "y"), ("a", "z")])
        );
        // Each went into the table all the same.
        assert_eq!(d.dynamic.len(), 3);
    }

    #[test]
    fn encoded_heads_decode_to_what_was_written() {
        let mut block = Vec::new();
        encode_status(StatusCode::OK, &mut block);
        encode_status(StatusCode::IM_A_TEAPOT, &mut block);
        encode_header(
            &http::header::CONTENT_TYPE,
            &HeaderValue::from_static("text/plain"),
            &mut block,
        );
        let mut secret = HeaderValue::from_static("sid=1");
        secret.set_sensitive(true);
        encode_header(&http::header::SET_COOKIE, &secret, &mut block);
        let long = "v".repeat(300);
        encode_header(
            &HeaderName::from_static("x-long"),
            &HeaderValue::from_str(&long).unwrap(),
            &mut block,
        );
        encode_line(b"etag", b"\"v1\"", &mut block);
        encode_line(b"x-app", b"kept", &mut block);
        encode_length(1234, &mut block);
        encode_date(&mut block);
        assert_eq!(block[0], 0x88);
        let mut fields = decode_all(&mut Decoder::default(), &block).unwrap();
        let (name, date) = fields.pop().unwrap();
        assert_eq!(name, "date");
        assert!(httpdate::parse_http_date(&date).is_ok(), "{date}");
        assert_eq!(
            fields,
            pairs(&[
                ("Status", "200"),
                ("Status", "418"),
                ("content-type", "text/plain"),
                ("set-cookie", "sid=1"),
                ("x-long", &long),
                ("etag", "\"v1\""),
                ("x-app", "kept"),
                ("content-length", "1234")
            ])
        );
    }

    #[test]
    fn response_names_point_at_their_static_entries() {
        // Every name the lookup knows is in the table, so this reaches
        // every one of its arms.
        let mut known = 0;
        for (name, _) in &STATIC_FIELDS {
            if let Some(index) = static_name_index(name.as_bytes()) {
                assert_eq!(STATIC_FIELDS[index - 1].0, *name);
                known += 1;
            }
        }
        assert_eq!(known, 27);
        assert_eq!(static_name_index(b"x-app"), None);
        assert_eq!(static_name_index(b"Content-Type"), None);
    }

    #[test]
    fn integers_follow_rfc_7541_c1() {
        assert_eq!(integer(&[0x0a], 5), Ok((10, 1)));
        assert_eq!(integer(&[0x1f, 0x9a, 0x0a], 5), Ok((1337, 3)));
        let mut out = Vec::new();
        write_integer(&mut out, 5, 0, 1337);
        assert_eq!(out, [0x1f, 0x9a, 0x0a]);
    }
}
