//! Request ids (`proxy.request_id_header`, default `x-request-id`): a
//! client's single well-formed id (1–128 visible ASCII characters) is
//! kept; otherwise sluice makes one. The id goes to the backend with the
//! request, back to the client with the response (unless the backend's
//! response carries one already), into the access log and into the body
//! of every error sluice answers itself.
//!
//! The id lives in the connection's [`crate::client::Scratch`], not in the
//! request or the answer: a made one is written as one more line into the
//! backend's head and by sluice's own servers into the response, so the
//! common request allocates nothing for it and touches no header map
//! (through header maps, callgrind measured ids at +16% instructions per
//! request).

use http::{HeaderMap, HeaderName, HeaderValue};

use crate::ids::{hex_into, random_u128};

/// Ids longer than this from a client are replaced (they end up in logs).
pub const MAX_LEN: usize = 128;

/// The header ids travel in, as the proxy holds it.
#[derive(Debug)]
pub struct IdHeader {
    pub name: HeaderName,
    /// `name: `, written before each id.
    prefix: Box<[u8]>,
}

impl IdHeader {
    pub fn new(name: HeaderName) -> Self {
        let prefix = format!("{}: ", name.as_str()).into_bytes().into_boxed_slice();
        Self { name, prefix }
    }

    /// Appends `name: id` as a header line.
    pub fn write_line(&self, id: &[u8], out: &mut Vec<u8>) {
        out.reserve(self.prefix.len() + id.len() + 2);
        out.extend_from_slice(&self.prefix);
        out.extend_from_slice(id);
        out.extend_from_slice(b"\r\n");
    }
}

/// One request's id.
#[derive(Debug, Clone, Default)]
pub enum RequestId {
    /// Ids are off.
    #[default]
    None,
    /// The client's, left in the request's header map as it came.
    Kept(HeaderValue),
    /// Made here: 128 random bits as 32 lower-case hex digits; not in the
    /// request's header map.
    Made([u8; 32]),
}

impl RequestId {
    /// The id, if the request has one.
    pub fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            Self::None => None,
            Self::Kept(v) => Some(v.as_bytes()),
            Self::Made(id) => Some(id),
        }
    }

    /// Whether the backend still has to be sent it (the request's header
    /// map does not carry it).
    pub fn is_made(&self) -> bool {
        matches!(self, Self::Made(_))
    }

    /// As a header value, for header maps (hyper's paths, sluice's own
    /// error responses). Marked sensitive: HPACK encoders (h2's, to HTTP/2
    /// backends) then send it as a literal instead of adding a value that
    /// never repeats to the connection's dynamic table, where each one
    /// would push out the entries that do repeat (callgrind: the table's
    /// upkeep was a sixth of the upstream connection's work per call).
    pub fn value(&self) -> Option<HeaderValue> {
        let mut value = match self {
            Self::None => return None,
            Self::Kept(v) => v.clone(),
            Self::Made(id) => HeaderValue::from_bytes(id).ok()?,
        };
        value.set_sensitive(true);
        Some(value)
    }

    pub fn clear(&mut self) {
        *self = Self::None;
    }

    /// The request's id: the client's single, well-formed one in `name`, or
    /// a new one (the client's others are then removed from the request).
    pub fn take_or_make(&mut self, name: &HeaderName, headers: &mut HeaderMap) {
        let noted = crate::noted::note(headers, Some(name), false);
        self.take_noted(noted.id, noted.ids, name, headers);
    }

    /// [`RequestId::take_or_make`] with the headers already looked
    /// through: `found`, the last of `count` values in `name`.
    pub(crate) fn take_noted(
        &mut self,
        found: Option<HeaderValue>,
        count: u32,
        name: &HeaderName,
        headers: &mut HeaderMap,
    ) {
        *self = match found {
            Some(value) if count == 1 && well_formed(value.as_bytes()) => Self::Kept(value),
            Some(_) => {
                headers.remove(name);
                Self::Made(make())
            }
            None => Self::Made(make()),
        };
    }
}

/// 1 to 128 visible ASCII characters.
fn well_formed(id: &[u8]) -> bool {
    !id.is_empty() && id.len() <= MAX_LEN && id.iter().all(u8::is_ascii_graphic)
}

/// 128 random bits as 32 lower-case hex digits: unique across replicas
/// without coordination.
fn make() -> [u8; 32] {
    let mut out = [0u8; 32];
    hex_into(&random_u128().to_be_bytes(), &mut out);
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::ids::hex8;

    fn name() -> HeaderName {
        HeaderName::from_static("x-request-id")
    }

    fn id_for(headers: &mut HeaderMap) -> RequestId {
        let mut id = RequestId::default();
        id.take_or_make(&name(), headers);
        id
    }

    #[test]
    fn a_well_formed_id_is_kept_and_anything_else_replaced() {
        let mut h = HeaderMap::new();
        h.insert(name(), HeaderValue::from_static("abc-123"));
        let id = id_for(&mut h);
        assert_eq!(id.as_bytes(), Some(&b"abc-123"[..]));
        assert!(!id.is_made());
        for bad in ["", "has space", &"x".repeat(129)] {
            let mut h = HeaderMap::new();
            h.insert(name(), HeaderValue::from_str(bad).unwrap());
            let id = id_for(&mut h);
            assert!(id.is_made() && id.as_bytes().unwrap().len() == 32, "{bad:?}");
            assert!(h.get(name()).is_none(), "the client's bad id is not forwarded");
        }
        let mut two = HeaderMap::new();
        two.append(name(), HeaderValue::from_static("a"));
        two.append(name(), HeaderValue::from_static("b"));
        let id = id_for(&mut two);
        assert!(id.is_made() && two.get(name()).is_none());
        assert!(id.as_bytes().unwrap().iter().all(u8::is_ascii_hexdigit));
        let longest = "y".repeat(128);
        let mut h = HeaderMap::new();
        h.insert(name(), HeaderValue::from_str(&longest).unwrap());
        assert_eq!(id_for(&mut h).as_bytes(), Some(longest.as_bytes()));
    }

    #[test]
    fn the_id_is_written_as_one_line() {
        let h = IdHeader::new(name());
        let mut out = Vec::new();
        h.write_line(b"abc", &mut out);
        assert_eq!(out, b"x-request-id: abc\r\n");
    }

    #[test]
    fn hex_digits_are_written_as_format_writes_them() {
        for v in [
            0u32,
            1,
            0x9a,
            0xdead_beef,
            0x0123_4567,
            0x89ab_cdef,
            u32::MAX,
            0x1000_0000,
        ] {
            assert_eq!(hex8(v).to_vec(), format!("{v:08x}").into_bytes(), "{v:x}");
        }
        let id = make();
        assert!(id.iter().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
    }

    #[test]
    fn made_ids_differ() {
        let (mut a, mut b) = (HeaderMap::new(), HeaderMap::new());
        assert_ne!(id_for(&mut a).as_bytes(), id_for(&mut b).as_bytes());
    }
}
