//! A client's request head off the front of the connection's buffer,
//! parsed with httparse into a request whose header values share the
//! buffer.

use std::mem::MaybeUninit;

use bytes::{Bytes, BytesMut};
use http::{HeaderName, HeaderValue, Method, Request, Uri};

use super::head::{HeaderSpan, content_length, record_spans, span_in};
use crate::client::Scratch;
use crate::request_body::ClientBody;

/// Headers parsed on the fast path; a request with more goes to hyper,
/// which applies the configured limit.
pub(super) const MAX_HEADERS: usize = 100;
/// Bodies up to this size that arrive with their head are served here
/// (sent upstream in the head's write, see `forward`); larger ones stream
/// through hyper.
pub(super) const MAX_READ_BODY: usize = super::encode::MAX_BUFFERED_BODY as usize;

#[allow(clippy::large_enum_variant)]
pub(super) enum Parsed {
    Request(Request<ClientBody>, bool),
    Partial,
    Unusual,
}

/// Parses a complete HTTP/1.1 request off the front of `buf`: its head
/// and its body, if it has a small one that is in `buf` already. Anything
/// else is `Partial` or `Unusual`, and `buf` is untouched.
pub(super) fn parse_request(buf: &mut BytesMut, max_headers: usize, scratch: &mut Scratch) -> Parsed {
    if buf.is_empty() {
        return Parsed::Partial;
    }
    // Offsets of each header's name and value, so the values can share the
    // head's bytes once the parser's borrow ends.
    let mut spans: [HeaderSpan; MAX_HEADERS] = [(0, 0, 0, 0); MAX_HEADERS];
    let (len, method, target, count) = {
        let mut headers = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
        let mut req = httparse::Request::new(&mut []);
        let parsed = httparse::ParserConfig::default().parse_request_with_uninit_headers(
            &mut req,
            buf,
            headers.get_mut(..max_headers).unwrap_or_default(),
        );
        let len = match parsed {
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) => return Parsed::Partial,
            Err(_) => return Parsed::Unusual,
        };
        if req.version != Some(1) {
            return Parsed::Unusual;
        }
        let count = record_spans(buf, req.headers, &mut spans);
        let (Some(method), Some(path)) = (req.method, req.path) else {
            return Parsed::Unusual;
        };
        let Ok(method) = Method::from_bytes(method.as_bytes()) else {
            return Parsed::Unusual;
        };
        (len, method, span_in(buf, path.as_bytes()), count)
    };
    if method == Method::CONNECT {
        return Parsed::Unusual;
    }
    let head = buf.as_ref();
    let in_head = |(s, e): (u32, u32)| head.get(s as usize..e as usize);
    let mut keep_alive = true;
    let mut body_len: Option<usize> = None;
    let spans = spans.get(..count).unwrap_or_default();
    for &(ns, ne, vs, ve) in spans {
        let (Some(name), Some(value)) = (in_head((ns, ne)), in_head((vs, ve))) else {
            return Parsed::Unusual;
        };
        // Checked on the raw bytes first, so the common request builds its
        // map in one pass and anything unusual leaves `buf` as it was.
        if name.eq_ignore_ascii_case(b"content-length") {
            // Two values must agree.
            let n = content_length(value).and_then(|n| usize::try_from(n).ok());
            // One length; a second, equal or not, is answered by hyper
            // and refused (`headers::check_request`).
            match (n, body_len) {
                (Some(n), None) if n <= MAX_READ_BODY => body_len = Some(n),
                _ => return Parsed::Unusual,
            }
        } else if name.eq_ignore_ascii_case(b"transfer-encoding")
            || name.eq_ignore_ascii_case(b"upgrade")
            || name.eq_ignore_ascii_case(b"expect")
        {
            return Parsed::Unusual;
        } else if name.eq_ignore_ascii_case(b"connection") {
            for token in value.split(|&b| b == b',') {
                let token = token.trim_ascii();
                if token.eq_ignore_ascii_case(b"close") {
                    keep_alive = false;
                } else if token.eq_ignore_ascii_case(b"upgrade") {
                    return Parsed::Unusual;
                }
            }
        }
    }
    let body_len = body_len.unwrap_or(0);
    if buf.len() - len < body_len {
        // The body did not come with the head: hyper streams it.
        return Parsed::Unusual;
    }
    // The connection's last map, emptied, when it has one.
    let mut headers = scratch.take_headers().unwrap_or_default();
    headers.reserve(count);
    let head = buf.split_to(len).freeze();
    let Ok(uri) = Uri::from_maybe_shared(head.slice(target.0 as usize..target.1 as usize)) else {
        // A target httparse takes and `http` does not: hyper answers it.
        unsplit(buf, &head);
        return Parsed::Unusual;
    };
    for &(ns, ne, vs, ve) in spans {
        // httparse allows the bytes `http` allows in names and values;
        // checked anyway, and hyper answers the head if they disagree. The
        // spans lie within the head httparse parsed (and were checked
        // against the buffer above), so the slice is in range; an empty
        // name is refused by `from_bytes`.
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(head.get(ns as usize..ne as usize).unwrap_or_default()),
            HeaderValue::from_maybe_shared(head.slice(vs as usize..ve as usize)),
        ) else {
            unsplit(buf, &head);
            return Parsed::Unusual;
        };
        headers.append(name, value);
    }
    let body = (body_len > 0).then(|| buf.split_to(body_len).freeze());
    let mut req = Request::new(ClientBody::Read(body));
    *req.method_mut() = method;
    *req.uri_mut() = uri;
    *req.headers_mut() = headers;
    Parsed::Request(req, keep_alive)
}

/// How [`parse_request`] reads `bytes` held in memory: the request it
/// takes (with its body, if any) and the bytes it consumed, or `None` when
/// the bytes stay whole for hyper or need more. For the fuzz target
/// (`fuzz/checks.rs`, replayed by the tests), which checks that the
/// bytes hyper gets are exactly the bytes that came.
#[doc(hidden)]
// The fuzz target's harness: its asserts are the checks.
#[allow(clippy::indexing_slicing)]
pub fn parse_whole(bytes: &[u8], max_headers: usize) -> Option<(Request<Option<Bytes>>, usize)> {
    let mut buf = BytesMut::from(bytes);
    match parse_request(&mut buf, max_headers.clamp(1, MAX_HEADERS), &mut Scratch::default()) {
        Parsed::Request(req, _) => {
            let consumed = bytes.len() - buf.len();
            assert_eq!(&buf[..], &bytes[consumed..], "the rest must stay as it came");
            Some((
                req.map(|body| match body {
                    ClientBody::Read(bytes) => bytes,
                    ClientBody::Hyper(_) | ClientBody::Stream(_) | ClientBody::Ahead(_) => None,
                }),
                consumed,
            ))
        }
        Parsed::Partial | Parsed::Unusual => {
            assert_eq!(&buf[..], bytes, "what hyper gets must be what came");
            None
        }
    }
}

/// Puts a head split off `buf` back in front of it (rare: a head only
/// hyper can answer).
pub(super) fn unsplit(buf: &mut BytesMut, head: &[u8]) {
    let mut whole = BytesMut::with_capacity(head.len() + buf.len());
    whole.extend_from_slice(head);
    whole.extend_from_slice(buf);
    *buf = whole;
}
