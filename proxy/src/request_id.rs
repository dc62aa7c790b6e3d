//! Request ids (`proxy.request_id_header`, default `x-request-id`): a
//! well-formed id from the client is kept; otherwise sluice makes one. The
//! id goes to the backend with the request, back to the client with the
//! response, and into the body of every error sluice answers itself.

use http::{HeaderMap, HeaderName, HeaderValue};
use rand::Rng;

/// Ids longer than this from a client are replaced (they end up in logs).
const MAX_LEN: usize = 128;

/// The request's id: the client's single, well-formed one, or a new one
/// written over whatever the client sent.
pub fn take_or_make(name: &HeaderName, headers: &mut HeaderMap) -> HeaderValue {
    let mut sent = headers.get_all(name).iter();
    if let (Some(value), None) = (sent.next(), sent.next())
        && well_formed(value.as_bytes())
    {
        return value.clone();
    }
    let id = make();
    headers.insert(name.clone(), id.clone());
    id
}

/// 1 to 128 visible ASCII characters.
fn well_formed(id: &[u8]) -> bool {
    !id.is_empty() && id.len() <= MAX_LEN && id.iter().all(|b| b.is_ascii_graphic())
}

/// 128 random bits as 32 lower-case hex digits: unique across replicas
/// without coordination (the thread's generator, no lock).
fn make() -> HeaderValue {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let bits: u128 = rand::rng().random();
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        let nibble = (bits >> (124 - 4 * i)) & 0xf;
        *byte = HEX.get(nibble as usize).copied().unwrap_or(b'0');
    }
    // Hex digits are always a valid header value.
    HeaderValue::from_bytes(&out).unwrap_or(HeaderValue::from_static("0"))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn name() -> HeaderName {
        HeaderName::from_static("x-request-id")
    }

    #[test]
    fn a_well_formed_id_is_kept_and_anything_else_replaced() {
        let mut h = HeaderMap::new();
        h.insert(name(), HeaderValue::from_static("abc-123"));
        assert_eq!(take_or_make(&name(), &mut h), "abc-123");
        for bad in ["", "has space", &"x".repeat(129)] {
            let mut h = HeaderMap::new();
            h.insert(name(), HeaderValue::from_str(bad).unwrap());
            let id = take_or_make(&name(), &mut h);
            assert_eq!(id.len(), 32, "{bad:?}");
            assert_eq!(h.get_all(name()).iter().collect::<Vec<_>>(), vec![&id]);
        }
        let mut two = HeaderMap::new();
        two.append(name(), HeaderValue::from_static("a"));
        two.append(name(), HeaderValue::from_static("b"));
        let id = take_or_make(&name(), &mut two);
        assert_eq!(two.get_all(name()).iter().count(), 1);
        assert!(id.as_bytes().iter().all(u8::is_ascii_hexdigit));
    }

    #[test]
    fn made_ids_differ() {
        let (mut a, mut b) = (HeaderMap::new(), HeaderMap::new());
        assert_ne!(take_or_make(&name(), &mut a), take_or_make(&name(), &mut b));
    }
}
