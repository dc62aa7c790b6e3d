//! HPACK decoding (RFC 7541 §3, §5, §6) of the client's header blocks,
//! with the dynamic table the client writes into.

use std::collections::VecDeque;
use std::sync::LazyLock;

use bytes::Bytes;
use http::{HeaderName, HeaderValue};
use thiserror::Error;

use super::super::huffman::{self, HuffmanError};

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
            // Checked before it is handed over, so the bytes move instead of
            // being shared: a clone of a Huffman-decoded value would
            // allocate its shared count.
            Name::Header(_) if value.iter().all(|&b| is_value_byte(b)) => match HeaderValue::from_maybe_shared(value) {
                Ok(checked) => Value::Checked(checked),
                // Not reached (the same rule): refused as an invalid value.
                Err(_) => Value::Raw(Bytes::new()),
            },
            Name::Header(_) => Value::Raw(value),
            Name::Pseudo(_) | Name::Invalid(_) => Value::Raw(value),
        };
        Self { name, value }
    }

    /// The field with bytes of its own. A literal's bytes are a slice of
    /// the frame, and so of the whole read buffer: kept in the table, a
    /// 40-byte entry would pin that buffer (KiBs) for as long as it stays,
    /// each entry a different one.
    fn detached(&self) -> Self {
        let name = match &self.name {
            Name::Invalid(bytes) => Name::Invalid(Bytes::copy_from_slice(bytes)),
            // A header name holds a copy or a static name already.
            other => other.clone(),
        };
        let value = match &self.value {
            Value::Raw(bytes) => Value::Raw(Bytes::copy_from_slice(bytes)),
            Value::Checked(value) => {
                let mut copy = HeaderValue::from_maybe_shared(Bytes::copy_from_slice(value.as_bytes()))
                    .unwrap_or_else(|_| value.clone());
                copy.set_sensitive(value.is_sensitive());
                Value::Checked(copy)
            }
        };
        Self { name, value }
    }

    /// The field's size as HPACK and SETTINGS_MAX_HEADER_LIST_SIZE count it.
    pub fn size(&self) -> usize {
        self.name.len() + self.value.as_bytes().len() + 32
    }
}

/// A byte a `HeaderValue` may hold: `http`'s rule (visible ASCII, space,
/// tab and obs-text; no other control byte, no DEL).
fn is_value_byte(b: u8) -> bool {
    b >= 32 && b != 127 || b == b'\t'
}

pub(super) const STATIC_FIELDS: [(&str, &str); 61] = [
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
    pub(super) dynamic: VecDeque<Field>,
    pub(super) size: usize,
    max_size: usize,
    /// Where Huffman-coded strings decode before their bytes are copied
    /// out at their exact size (one allocation, never grown).
    scratch: Vec<u8>,
}

impl Default for Decoder {
    fn default() -> Self {
        Self {
            dynamic: VecDeque::new(),
            size: 0,
            max_size: TABLE_SIZE,
            scratch: Vec::new(),
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
                self.insert(field.detached());
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
    fn literal(&mut self, block: &Bytes, pos: usize, prefix: u8) -> Result<(Field, usize), HpackError> {
        let (index, mut used) = integer(block.get(pos..).ok_or(HpackError::Truncated)?, prefix)?;
        let name = if index == 0 {
            let (name, n) = string(block, pos + used, &mut self.scratch)?;
            used += n;
            Name::parse(name)
        } else {
            self.get(index)?.name.clone()
        };
        let (value, n) = string(block, pos + used, &mut self.scratch)?;
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
pub(super) fn integer(buf: &[u8], prefix: u8) -> Result<(usize, usize), HpackError> {
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
fn string(block: &Bytes, pos: usize, scratch: &mut Vec<u8>) -> Result<(Bytes, usize), HpackError> {
    let rest = block.get(pos..).ok_or(HpackError::Truncated)?;
    let huffman = rest.first().is_some_and(|b| b & 0x80 != 0);
    let (len, used) = integer(rest, 7)?;
    let end = used
        .checked_add(len)
        .filter(|&end| end <= rest.len())
        .ok_or(HpackError::Truncated)?;
    let value = if huffman {
        scratch.clear();
        if scratch.capacity() > TABLE_SIZE {
            // An unusually long string does not pin its room.
            *scratch = Vec::new();
        }
        huffman::decode(rest.get(used..end).ok_or(HpackError::Truncated)?, scratch)?;
        Bytes::copy_from_slice(scratch)
    } else {
        block.slice(pos + used..pos + end)
    };
    Ok((value, end))
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
