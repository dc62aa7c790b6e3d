//! A request's header block, decoded field by field, checked against the
//! rules for HTTP/2 requests (RFC 9113 §8.2, §8.3) and made into the
//! `http::Request` the proxy serves.

use bytes::{Bytes, BytesMut};
use http::uri::{Authority, PathAndQuery};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Uri, Version, header};

use super::hpack::{Field, Name, Pseudo};

/// Why a request head is not served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Malformed (RFC 9113 §8.1.1): the stream is reset with PROTOCOL_ERROR.
    Malformed(&'static str),
    /// Past SETTINGS_MAX_HEADER_LIST_SIZE: answered 431.
    TooLarge,
}

/// A request head being decoded.
#[derive(Debug)]
pub struct RequestHead {
    method: Option<Bytes>,
    scheme: Option<Bytes>,
    authority: Option<Bytes>,
    path: Option<Bytes>,
    headers: HeaderMap,
    size: usize,
    limit: usize,
    cookies: usize,
    has_host: bool,
    content_length: Option<u64>,
    refusal: Option<Refusal>,
}

impl RequestHead {
    /// A head of at most `limit` bytes, as SETTINGS_MAX_HEADER_LIST_SIZE
    /// counts them, decoded into `headers` (an empty map to reuse).
    pub fn new(limit: usize, headers: HeaderMap) -> Self {
        Self {
            method: None,
            scheme: None,
            authority: None,
            path: None,
            headers,
            size: 0,
            limit,
            cookies: 0,
            has_host: false,
            content_length: None,
            refusal: None,
        }
    }

    /// Takes the next field. Every field of a block is decoded even once the
    /// head is refused, so the decoder's table stays in step.
    pub fn add(&mut self, field: Field) {
        self.size += field.size();
        if self.refusal.is_some() {
            return;
        }
        if self.size > self.limit {
            self.refusal = Some(Refusal::TooLarge);
            return;
        }
        if let Err(why) = self.take(field) {
            self.refusal = Some(Refusal::Malformed(why));
        }
    }

    fn take(&mut self, field: Field) -> Result<(), &'static str> {
        match field.name {
            Name::Pseudo(pseudo) => {
                if !self.headers.is_empty() {
                    return Err("pseudo-header after a header field");
                }
                let slot = match pseudo {
                    Pseudo::Method => &mut self.method,
                    Pseudo::Scheme => &mut self.scheme,
                    Pseudo::Authority => &mut self.authority,
                    Pseudo::Path => &mut self.path,
                    Pseudo::Status | Pseudo::Protocol => return Err("pseudo-header not allowed in a request"),
                };
                if slot.replace(field.value.into_bytes()).is_some() {
                    return Err("repeated pseudo-header");
                }
            }
            Name::Header(name) => {
                if is_connection_specific(&name) {
                    return Err("connection-specific header field");
                }
                if name == header::TE && field.value.as_bytes() != b"trailers" {
                    return Err("te other than trailers");
                }
                if name == header::COOKIE {
                    self.cookies += 1;
                }
                self.has_host |= name == header::HOST;
                if name == header::CONTENT_LENGTH {
                    let n =
                        crate::http1::head::content_length(field.value.as_bytes()).ok_or("invalid content-length")?;
                    if self.content_length.replace(n).is_some_and(|old| old != n) {
                        return Err("conflicting content-length");
                    }
                }
                let value = field.value.into_header().ok_or("invalid header value")?;
                self.headers.append(name, value);
            }
            Name::Invalid(_) => return Err("invalid header name"),
        }
        Ok(())
    }

    /// The body length the client declared.
    pub fn content_length(&self) -> Option<u64> {
        self.content_length
    }

    /// The block as a request's trailers: header fields only.
    pub fn into_trailers(self) -> Option<HeaderMap> {
        let pseudo = self.method.is_some() || self.scheme.is_some() || self.authority.is_some() || self.path.is_some();
        (self.refusal.is_none() && !pseudo).then_some(self.headers)
    }

    /// The request, or why it is refused.
    pub fn into_request<B>(self, body: B) -> Result<Request<B>, Refusal> {
        if let Some(refusal) = self.refusal {
            return Err(refusal);
        }
        let malformed = Refusal::Malformed;
        let method = self.method.ok_or(malformed("no :method"))?;
        let method = Method::from_bytes(&method).map_err(|_| malformed("invalid :method"))?;
        let mut headers = self.headers;
        // The authority goes where HTTP/1.1 keeps it, in Host (RFC 9113
        // §8.3.1), and the target stays origin-form, as on HTTP/1.1.
        if let Some(authority) = &self.authority {
            // Most clients send no Host beside :authority: no lookup then.
            let host = if self.has_host { headers.get(header::HOST) } else { None };
            match host {
                Some(host) if host.as_bytes() != &authority[..] => return Err(malformed(":authority and Host differ")),
                Some(_) => {}
                None => {
                    let host = HeaderValue::from_maybe_shared(authority.clone())
                        .map_err(|_| malformed("invalid :authority"))?;
                    headers.insert(header::HOST, host);
                }
            }
        }
        let uri = if method == Method::CONNECT {
            if self.scheme.is_some() || self.path.is_some() {
                return Err(malformed("CONNECT with :scheme or :path"));
            }
            let authority = self.authority.ok_or(malformed("CONNECT without :authority"))?;
            let authority = Authority::from_maybe_shared(authority).map_err(|_| malformed("invalid :authority"))?;
            let mut parts = http::uri::Parts::default();
            parts.authority = Some(authority);
            Uri::from_parts(parts).map_err(|_| malformed("invalid :authority"))?
        } else {
            self.scheme.filter(|s| !s.is_empty()).ok_or(malformed("no :scheme"))?;
            let path = self.path.filter(|p| !p.is_empty()).ok_or(malformed("no :path"))?;
            Uri::from(PathAndQuery::from_maybe_shared(path).map_err(|_| malformed("invalid :path"))?)
        };
        if self.cookies > 1 {
            join_cookies(&mut headers);
        }
        let mut req = Request::new(body);
        *req.method_mut() = method;
        *req.uri_mut() = uri;
        *req.version_mut() = Version::HTTP_2;
        *req.headers_mut() = headers;
        Ok(req)
    }
}

/// Header fields HTTP/2 does not carry (RFC 9113 §8.2.2).
pub fn is_connection_specific(name: &HeaderName) -> bool {
    if name == header::CONNECTION || name == header::TRANSFER_ENCODING || name == header::UPGRADE {
        return true;
    }
    // The other two are no standard names: one look at the text, by length.
    let text = name.as_str();
    match text.len() {
        10 => text == "keep-alive",
        16 => text == "proxy-connection",
        _ => false,
    }
}

/// HTTP/2 clients may split a cookie into several fields; HTTP/1.1
/// backends expect one (RFC 9113 §8.2.3).
fn join_cookies(headers: &mut HeaderMap) {
    let mut joined = BytesMut::new();
    for (i, value) in headers.get_all(header::COOKIE).iter().enumerate() {
        if i > 0 {
            joined.extend_from_slice(b"; ");
        }
        joined.extend_from_slice(value.as_bytes());
    }
    // Each part was a valid value and "; " is too.
    if let Ok(value) = HeaderValue::from_maybe_shared(joined.freeze()) {
        headers.insert(header::COOKIE, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(name: &str, value: &str) -> Field {
        let name = match name {
            ":method" => Name::Pseudo(Pseudo::Method),
            ":scheme" => Name::Pseudo(Pseudo::Scheme),
            ":authority" => Name::Pseudo(Pseudo::Authority),
            ":path" => Name::Pseudo(Pseudo::Path),
            ":status" => Name::Pseudo(Pseudo::Status),
            n if n.starts_with('!') => Name::Invalid(Bytes::copy_from_slice(n.as_bytes())),
            n => Name::Header(HeaderName::from_bytes(n.as_bytes()).unwrap()),
        };
        Field::new(name, Bytes::copy_from_slice(value.as_bytes()))
    }

    fn head(fields: &[(&str, &str)]) -> Result<Request<()>, Refusal> {
        let mut head = RequestHead::new(16 * 1024, HeaderMap::new());
        for (n, v) in fields {
            head.add(field(n, v));
        }
        head.into_request(())
    }

    const GET: [(&str, &str); 4] = [
        (":method", "GET"),
        (":scheme", "http"),
        (":authority", "example.com"),
        (":path", "/a?b"),
    ];

    #[test]
    fn a_plain_request_gets_its_authority_as_host() {
        let req = head(&[&GET[..], &[("accept", "*/*")]].concat()).unwrap();
        assert_eq!(req.method(), Method::GET);
        assert_eq!(req.uri(), "/a?b");
        assert_eq!(req.headers()["host"], "example.com");
        assert_eq!(req.version(), Version::HTTP_2);
        assert_eq!(req.headers()["accept"], "*/*");
        let no_authority = head(&[(":method", "GET"), (":scheme", "https"), (":path", "/x"), ("host", "h")]).unwrap();
        assert_eq!(no_authority.uri(), "/x");
        assert_eq!(no_authority.headers()["host"], "h");
        let same = head(&[&GET[..], &[("host", "example.com")]].concat()).unwrap();
        assert_eq!(same.headers().get_all("host").iter().count(), 1);
        let connect = head(&[(":method", "CONNECT"), (":authority", "example.com:443")]).unwrap();
        assert_eq!(connect.uri(), "example.com:443");
    }

    #[test]
    fn malformed_heads_are_refused() {
        let cases: [&[(&str, &str)]; 11] = [
            &[&GET[..], &[("host", "elsewhere.example")]].concat(),
            &[(":method", "GET"), (":path", "/")],
            &[(":method", "GET"), (":scheme", "http"), (":path", "")],
            &[(":scheme", "http"), (":path", "/")],
            &[
                ("accept", "*/*"),
                (":method", "GET"),
                (":scheme", "http"),
                (":path", "/"),
            ],
            &[
                (":method", "GET"),
                (":method", "GET"),
                (":scheme", "http"),
                (":path", "/"),
            ],
            &[
                (":status", "200"),
                (":method", "GET"),
                (":scheme", "http"),
                (":path", "/"),
            ],
            &[
                (":method", "GET"),
                (":scheme", "http"),
                (":path", "/"),
                ("connection", "close"),
            ],
            &[(":method", "GET"), (":scheme", "http"), (":path", "/"), ("te", "gzip")],
            &[(":method", "GET"), (":scheme", "http"), (":path", "/"), ("!Upper", "x")],
            &[(":method", "CONNECT"), (":authority", "a:1"), (":path", "/")],
        ];
        for case in cases {
            assert!(matches!(head(case), Err(Refusal::Malformed(_))), "{case:?}");
        }
        assert!(head(&[&GET[..], &[("te", "trailers")]].concat()).is_ok());
    }

    #[test]
    fn a_head_past_the_limit_is_too_large() {
        let mut head = RequestHead::new(100, HeaderMap::new());
        for (n, v) in GET {
            head.add(field(n, v));
        }
        head.add(field("x-big", &"a".repeat(100)));
        assert_eq!(head.into_request(()).err(), Some(Refusal::TooLarge));
    }

    #[test]
    fn split_cookies_are_joined() {
        let req = head(&[&GET[..], &[("cookie", "a=1"), ("cookie", "b=2"), ("cookie", "c=3")]].concat()).unwrap();
        let cookies: Vec<_> = req.headers().get_all("cookie").iter().collect();
        assert_eq!(cookies, ["a=1; b=2; c=3"]);
    }
}
