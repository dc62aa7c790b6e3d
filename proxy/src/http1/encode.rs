//! The request head sluice's own exchange writes to a backend.

use http::{HeaderValue, Method, header, request};

use crate::headers::{self, ForwardedFor};
use crate::request_id::IdHeader;

/// Request bodies of known length up to this size take the own exchange,
/// read whole and sent with the head; larger ones stream through hyper.
pub const MAX_BUFFERED_BODY: u64 = 64 * 1024;

/// Writes the request head for a body of `body_len` bytes (sent after
/// it), with the forwarding headers for `fwd` and `host` (see
/// [`headers::write_forwarding`]). Header names are lower-case already
/// (`http` stores them so).
/// `extra`: a line of sluice's own not in the map (a made request id);
/// `trace`: sluice's `traceparent` line, when the map has none.
pub fn encode_head(
    parts: &request::Parts,
    fwd: &ForwardedFor,
    host: &HeaderValue,
    body_len: u64,
    extra: Option<(&IdHeader, &[u8])>,
    trace: Option<&[u8; crate::trace::context::VALUE]>,
    out: &mut Vec<u8>,
) {
    out.extend_from_slice(parts.method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(parts.uri.path_and_query().map_or("/", |p| p.as_str()).as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in &parts.headers {
        if headers::replaced_by_forwarding(name) {
            continue;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if let Some((header, id)) = extra {
        header.write_line(id, out);
    }
    if let Some(value) = trace {
        out.extend_from_slice(b"traceparent: ");
        out.extend_from_slice(value);
        out.extend_from_slice(b"\r\n");
    }
    headers::write_forwarding(&parts.headers, fwd, host, out);
    // The body's length, when the client did not state it: always for a
    // body, and as 0 for a method that normally carries one (as hyper
    // does); GET and friends without a body send no length at all.
    let bodied = !matches!(
        parts.method,
        Method::GET | Method::HEAD | Method::DELETE | Method::OPTIONS | Method::TRACE | Method::CONNECT
    );
    if (bodied || body_len > 0) && !parts.headers.contains_key(header::CONTENT_LENGTH) {
        out.extend_from_slice(b"content-length: ");
        out.extend_from_slice(itoa::Buffer::new().format(body_len).as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
}
