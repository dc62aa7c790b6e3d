//! A backend's response head: parsed with httparse into a header map or
//! into the header lines sluice's own servers pass on, with the body's
//! framing.

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Response, StatusCode, Version, header};

use super::head::{HeaderSpan, content_length, record_spans};
use crate::headers::{self};

use super::decode::{Chunk, Framing};
use super::error::RawError;

/// Response heads larger than this are refused (hyper's client default).
pub(super) const MAX_HEAD_BYTES: usize = 8192 + 4096 * 100;
/// Response header lines beyond this are refused (hyper's limit too).
pub(super) const MAX_HEADERS: usize = 100;

/// Where a response's headers go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadersAs {
    /// Into the response's header map (for hyper's connections).
    Map,
    /// Into [`HeaderLines`], written as they are by sluice's own
    /// HTTP/1.1 loop and encoded line by line by its HTTP/2 server: no
    /// header map built and read back per response.
    Lines,
}

/// A backend's response header lines as a client on sluice's own HTTP/1.1
/// loop gets them (and its HTTP/2 server encodes them): names lower-cased,
/// in the backend's order, without the hop-by-hop headers (RFC 9110
/// §7.6.1, as [`headers::strip_hop_by_hop`]) and without the framing
/// ones, which the client side states itself (a length stays where no
/// body follows: HEAD, 204, 304).
#[derive(Debug)]
pub struct HeaderLines {
    /// `name: value\r\n` lines. A `Vec`, not `Bytes`: written once and
    /// dropped, it needs no shared count (`Bytes` from a `Vec` with spare
    /// capacity allocates one).
    pub bytes: Vec<u8>,
    pub has_date: bool,
    /// A line carries the request id header asked about (the backend sent
    /// its own id).
    pub has_id: bool,
}

impl HeaderLines {
    /// Each line's name and value, for a client that does not take them
    /// as they are (the HTTP/2 server).
    pub fn fields(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.bytes.split(|&b| b == b'\n').filter_map(|line| {
            // Names are tokens: the first colon ends them, and ": " was
            // written after them.
            let colon = line.iter().position(|&b| b == b':')?;
            let value = line.get(colon + 2..)?;
            Some((line.get(..colon)?, value.strip_suffix(b"\r").unwrap_or(value)))
        })
    }
}

pub(super) type Parsed = (Response<()>, Framing, bool, Option<HeaderLines>);

/// Parses a complete response head off the front of `buf`, or `None` when
/// more bytes are needed.
/// `id_name`: the request id header (lower-case), noted in the lines when
/// the backend sends one.
pub(super) fn parse_head(
    buf: &mut BytesMut,
    method: &Method,
    headers_as: HeadersAs,
    id_name: Option<&[u8]>,
) -> Result<Option<Parsed>, RawError> {
    if buf.is_empty() {
        return Ok(None);
    }
    // Where each header's name and value sit in the head, so the values
    // can share the head's bytes once the parser's borrow ends.
    let mut spans: [HeaderSpan; MAX_HEADERS] = [(0, 0, 0, 0); MAX_HEADERS];
    let (len, code, minor, count) = {
        // Not zeroed: httparse writes each header before it reads it.
        let mut headers = [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
        let mut res = httparse::Response::new(&mut []);
        let parsed = httparse::ParserConfig::default().parse_response_with_uninit_headers(&mut res, buf, &mut headers);
        let len = match parsed {
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(httparse::Error::TooManyHeaders) => return Err(RawError::Malformed("too many headers")),
            Err(_) => return Err(RawError::Malformed("unparsable response head")),
        };
        let count = record_spans(buf, res.headers, &mut spans);
        (len, res.code.unwrap_or(0), res.version.unwrap_or(1), count)
    };
    let head = buf.split_to(len).freeze();
    let status = StatusCode::from_u16(code).map_err(|_| RawError::Malformed("invalid status code"))?;
    let spans = spans.get(..count).unwrap_or_default();
    let (mut chunked, mut length, mut close, mut keep_alive_token, mut other_coding, mut listed) =
        (false, None, false, false, false, false);
    for &(ns, ne, vs, ve) in spans {
        let (name, value) = name_value(&head, (ns, ne, vs, ve))?;
        if name.eq_ignore_ascii_case(b"transfer-encoding") {
            // On HTTP/1.0 the framing is faulty (RFC 9112 §6.1), as hyper's
            // client also reads it.
            if minor == 0 {
                return Err(RawError::Malformed("transfer-encoding on an HTTP/1.0 response"));
            }
            // Codings are tokens; anything else leaves the framing unclear
            // (hyper's client reads such a value as not chunked).
            let tokens = value.split(|&b| b == b',').map(<[u8]>::trim_ascii);
            if tokens.clone().any(|t| {
                t.is_empty()
                    || !t
                        .iter()
                        .all(|&b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
            }) {
                return Err(RawError::Malformed("invalid transfer-encoding"));
            }
            // The last coding decides: chunked, or read until close.
            let last = value.rsplit(|&b| b == b',').next().unwrap_or_default();
            chunked = last.trim_ascii().eq_ignore_ascii_case(b"chunked");
            other_coding = !chunked;
        } else if name.eq_ignore_ascii_case(b"content-length") {
            let n = content_length(value).ok_or(RawError::Malformed("invalid content-length"))?;
            if length.is_some_and(|l| l != n) {
                return Err(RawError::Malformed("conflicting content-length values"));
            }
            length = Some(n);
        } else if name.eq_ignore_ascii_case(b"connection") {
            for token in headers::connection_tokens(value) {
                let (is_close, is_keep_alive) = (
                    token.eq_ignore_ascii_case(b"close"),
                    token.eq_ignore_ascii_case(b"keep-alive"),
                );
                close |= is_close;
                keep_alive_token |= is_keep_alive;
                listed |= !(is_close || is_keep_alive);
            }
        }
    }
    let no_body = *method == Method::HEAD
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    let framing = if no_body {
        Framing::Length(0)
    } else if chunked {
        Framing::Chunked(Chunk::Size)
    } else if other_coding {
        Framing::UntilClose
    } else {
        length.map_or(Framing::UntilClose, Framing::Length)
    };
    let keep_alive = match minor {
        1 => !close,
        _ => keep_alive_token && !close,
    } && framing != Framing::UntilClose
        && !(length.is_some() && (chunked || other_coding));
    // A length beside a transfer coding is ignored (RFC 9112 §6.3), and
    // must not reach the client next to a body it does not describe.
    let drop_length = chunked || other_coding;
    let mut res = Response::new(());
    *res.status_mut() = status;
    *res.version_mut() = Version::HTTP_11;
    let lines = match headers_as {
        HeadersAs::Map => {
            *res.headers_mut() = header_map(&head, spans, drop_length)?;
            None
        }
        HeadersAs::Lines => {
            let keep_length = no_body && !drop_length;
            Some(header_lines(&head, spans, keep_length, listed, id_name))
        }
    };
    Ok(Some((res, framing, keep_alive, lines)))
}

/// A header's name and value in `head`. httparse has checked both: names
/// are tokens, values only HTAB, SP, visible characters and obs-text (what
/// `http`'s `HeaderValue` admits).
pub(super) fn name_value(head: &[u8], (ns, ne, vs, ve): HeaderSpan) -> Result<(&[u8], &[u8]), RawError> {
    match (head.get(ns as usize..ne as usize), head.get(vs as usize..ve as usize)) {
        (Some(name), Some(value)) => Ok((name, value)),
        _ => Err(RawError::Malformed("header outside the head")),
    }
}

pub(super) fn header_map(head: &Bytes, spans: &[HeaderSpan], drop_length: bool) -> Result<HeaderMap, RawError> {
    let mut headers = HeaderMap::with_capacity(spans.len());
    for &(ns, ne, vs, ve) in spans {
        let name = HeaderName::from_bytes(head.get(ns as usize..ne as usize).unwrap_or_default())
            .map_err(|_| RawError::Malformed("invalid header name"))?;
        let value = HeaderValue::from_maybe_shared(head.slice(vs as usize..ve as usize))
            .map_err(|_| RawError::Malformed("invalid header value"))?;
        headers.append(name, value);
    }
    if drop_length {
        headers.remove(header::CONTENT_LENGTH);
    }
    Ok(headers)
}

/// See [`HeaderLines`]. `listed`: a `Connection` header names other
/// headers, which go too. Names are tokens already (httparse checks).
pub(super) fn header_lines(
    head: &[u8],
    spans: &[HeaderSpan],
    keep_length: bool,
    listed: bool,
    id_name: Option<&[u8]>,
) -> HeaderLines {
    let mut out = Vec::with_capacity(head.len());
    let (mut has_date, mut has_id) = (false, false);
    for &(ns, ne, vs, ve) in spans {
        let name = head.get(ns as usize..ne as usize).unwrap_or_default();
        let start = out.len();
        out.extend(name.iter().map(u8::to_ascii_lowercase));
        let lower = out.get(start..).unwrap_or_default();
        let dropped = headers::is_hop_by_hop_name(lower)
            || (lower == b"content-length" && !keep_length)
            || (listed && named_by_connection(head, spans, lower));
        if dropped {
            out.truncate(start);
            continue;
        }
        has_date |= lower == b"date";
        has_id |= id_name.is_some_and(|name| lower == name);
        out.extend_from_slice(b": ");
        out.extend_from_slice(head.get(vs as usize..ve as usize).unwrap_or_default());
        out.extend_from_slice(b"\r\n");
    }
    HeaderLines {
        bytes: out,
        has_date,
        has_id,
    }
}

/// Whether a `Connection` header in `head` lists `lower`.
pub(super) fn named_by_connection(head: &[u8], spans: &[HeaderSpan], lower: &[u8]) -> bool {
    spans.iter().any(|&(ns, ne, vs, ve)| {
        let name = head.get(ns as usize..ne as usize).unwrap_or_default();
        name.eq_ignore_ascii_case(b"connection")
            && headers::connection_tokens(head.get(vs as usize..ve as usize).unwrap_or_default())
                .any(|t| t.eq_ignore_ascii_case(lower))
    })
}
