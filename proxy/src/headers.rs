//! Header rules between client and backend: request checks that hyper does
//! not make, hop-by-hop removal (RFC 9110 §7.6.1), and the forwarding headers.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Version};

use sluice_routing::error::ProxyError;

/// Headers that describe one connection and never cross the proxy.
const HOP_BY_HOP: [&[u8]; 7] = [
    b"connection",
    b"keep-alive",
    b"te",
    b"trailer",
    b"transfer-encoding",
    b"upgrade",
    b"http2-settings",
];

pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
pub const FORWARDED: HeaderName = header::FORWARDED;

/// Rejects requests whose framing or addressing is ambiguous, and bodies
/// declared larger than the limit, before anything is sent upstream.
///
/// `framing_checked`: sluice's own HTTP/1.1 loop read the head and took it
/// only with no Transfer-Encoding and at most one Content-Length, so the
/// framing checks (two map lookups) are skipped for it.
pub fn check_request<B>(req: &Request<B>, max_body: u64, framing_checked: bool) -> Result<(), ProxyError> {
    let headers = req.headers();
    let mut lengths = headers.get_all(header::CONTENT_LENGTH).iter();
    let length = lengths.next();
    if req.version() <= Version::HTTP_11 {
        let mut hosts = headers.get_all(header::HOST).iter();
        match (hosts.next(), hosts.next()) {
            (None, _) if req.version() == Version::HTTP_11 => return Err(ProxyError::MissingHost),
            (Some(_), Some(_)) => return Err(ProxyError::DuplicateHost),
            // RFC 9112 §3.2: an invalid Host value is answered 400.
            (Some(host), None) if !is_host(host.as_bytes()) => return Err(ProxyError::BadHost),
            _ => {}
        }
        // Two lengths (even equal ones) are refused (RFC 9110 §8.6 allows
        // it): forwarded as they came, a strict backend may refuse them or
        // read them differently.
        if !framing_checked {
            if lengths.next().is_some() {
                return Err(ProxyError::BadFraming);
            }
            check_transfer_encoding(req)?;
        }
    }
    // The asterisk-form is for OPTIONS only (RFC 9112 §3.2.4).
    if (req.uri().path_and_query().is_none() || req.uri().path() == "*") && req.method() != http::Method::OPTIONS {
        return Err(ProxyError::BadTarget);
    }
    // An absolute-form target names the host sent upstream: only an http(s)
    // one without userinfo (RFC 9110 §4.2.4: its presence is an error).
    if let Some(scheme) = req.uri().scheme_str()
        && !(scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("https"))
    {
        return Err(ProxyError::BadTarget);
    }
    if req.uri().authority().is_some_and(|a| a.as_str().contains('@')) {
        return Err(ProxyError::BadTarget);
    }
    if let Some(len) = length {
        // hyper has already refused malformed or conflicting values.
        let len: u64 = len
            .to_str()
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or(ProxyError::BadTarget)?;
        if len > max_body {
            return Err(ProxyError::BodyTooLarge);
        }
    }
    Ok(())
}

/// A request body's framing that every recipient reads the same way, or a
/// refusal (the answer closes the connection: the bytes after the head
/// cannot be trusted). Transfer-Encoding must be exactly one `chunked`
/// across all its lines (RFC 9112 §6.1: chunked at most once, and last), on
/// HTTP/1.1 only, and never with Content-Length (§6.3: "ought to be handled
/// as an error"); nginx and HAProxy refuse the same.
fn check_transfer_encoding<B>(req: &Request<B>) -> Result<(), ProxyError> {
    let mut codings = req
        .headers()
        .get_all(header::TRANSFER_ENCODING)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b','))
        .map(<[u8]>::trim_ascii)
        .peekable();
    if codings.peek().is_none() {
        return Ok(());
    }
    if req.version() != Version::HTTP_11 || req.headers().contains_key(header::CONTENT_LENGTH) {
        return Err(ProxyError::BadFraming);
    }
    let mut chunked = 0;
    let mut other = false;
    for coding in codings {
        if coding.eq_ignore_ascii_case(b"chunked") {
            chunked += 1;
        } else if coding.is_empty() || chunked > 0 || !coding.iter().all(|&b| is_tchar(b)) {
            // Empty elements, codings after chunked, odd bytes: read
            // differently by different parsers.
            return Err(ProxyError::BadFraming);
        } else {
            other = true;
        }
    }
    match (chunked, other) {
        (1, false) => Ok(()),
        (1, true) => Err(ProxyError::UnsupportedCoding),
        _ => Err(ProxyError::BadFraming),
    }
}

/// A Host value: `uri-host [ ":" port ]` (RFC 9110 §7.2, RFC 3986 §3.2.2),
/// or empty. No userinfo, path, spaces or other bytes a backend could read
/// differently; an IP literal in brackets.
fn is_host(value: &[u8]) -> bool {
    let (host, port) = match value.strip_prefix(b"[") {
        Some(rest) => match rest.iter().position(|&b| b == b']') {
            Some(end) => {
                let (literal, after) = rest.split_at(end);
                if !literal.iter().all(|&b| b.is_ascii_hexdigit() || b == b':' || b == b'.') {
                    return false;
                }
                (&b""[..], after.get(1..).unwrap_or_default())
            }
            None => return false,
        },
        None => match value.iter().position(|&b| b == b':') {
            Some(colon) => (
                value.get(..colon).unwrap_or_default(),
                value.get(colon..).unwrap_or_default(),
            ),
            None => (value, &b""[..]),
        },
    };
    let reg_name = host
        .iter()
        .all(|&b| REG_NAME.get(usize::from(b)).copied().unwrap_or(false));
    let port = match port.strip_prefix(b":") {
        Some(digits) => digits.iter().all(u8::is_ascii_digit),
        None => port.is_empty(),
    };
    reg_name && port
}

/// The bytes of a reg-name (RFC 3986 §3.2.2: unreserved, pct-encoded,
/// sub-delims), as a table: a Host value is checked on every request.
// Built at compile time: an index out of range fails the build.
#[allow(clippy::indexing_slicing)]
static REG_NAME: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        table[b] = c.is_ascii_alphanumeric();
        b += 1;
    }
    let others = b"-._~%!$&'()*+,;=";
    let mut i = 0;
    while i < others.len() {
        table[others[i] as usize] = true;
        i += 1;
    }
    table
};

/// A token character (RFC 9110 §5.6.2).
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// The `Upgrade` value of a genuine HTTP/1.1 protocol upgrade (e.g.
/// WebSocket). `h2c` is never honoured: sluice speaks h2c itself, by prior
/// knowledge, and must not hand a backend a half-negotiated connection.
pub fn upgrade_request<B>(req: &Request<B>) -> Option<HeaderValue> {
    if req.version() != Version::HTTP_11 {
        return None;
    }
    let upgrade = req.headers().get(header::UPGRADE)?;
    if upgrade.as_bytes().eq_ignore_ascii_case(b"h2c") || !connection_has(req.headers(), "upgrade") {
        return None;
    }
    Some(upgrade.clone())
}

fn connection_has(headers: &HeaderMap, token: &str) -> bool {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// Whether a header is hop-by-hop (or sluice's own routing header), by a
/// cheap comparison rather than a map lookup.
fn is_hop_by_hop(name: &HeaderName) -> bool {
    is_hop_by_hop_name(name.as_str().as_bytes())
}

/// [`is_hop_by_hop`] for a lower-case name as bytes (sluice's own
/// exchange writes a backend's header lines without a header map).
pub fn is_hop_by_hop_name(lower: &[u8]) -> bool {
    HOP_BY_HOP.contains(&lower)
        || lower == sluice_routing::select::POOL_OVERRIDE_HEADER.as_str().as_bytes()
        || lower.starts_with(b"proxy-")
}

/// The tokens of a `Connection` value: the header names it lists, and
/// the keywords `close` and `keep-alive` (which name no header).
pub fn connection_tokens(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|&b| b == b',')
        .map(<[u8]>::trim_ascii)
        .filter(|t| !t.is_empty())
}

/// Whether the client's `TE` lists `trailers`: the one `TE` value that
/// crosses to an HTTP/2 backend (RFC 9113 §8.2.2), which gRPC servers
/// require.
pub fn accepts_trailers(headers: &HeaderMap) -> bool {
    headers.get_all(header::TE).iter().any(|value| {
        connection_tokens(value.as_bytes()).any(|t| {
            let name = t.split(|&b| b == b';').next().unwrap_or_default();
            name.trim_ascii().eq_ignore_ascii_case(b"trailers")
        })
    })
}

/// Removes hop-by-hop headers: the fixed list, every header named in
/// `Connection`, every `Proxy-*` header, and `x-sluice-pool`.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Most messages carry none of these: one scan over the names, no hashing.
    if !headers.keys().any(is_hop_by_hop) {
        return;
    }
    if headers.contains_key(header::CONNECTION) {
        // Collected first because the names borrow from `headers`.
        let mut named: Vec<HeaderName> = Vec::new();
        for value in headers.get_all(header::CONNECTION) {
            named.extend(connection_tokens(value.as_bytes()).filter_map(|t| HeaderName::from_bytes(t).ok()));
        }
        for name in named {
            headers.remove(name);
        }
    }
    // One name at a time, no list to allocate: a request usually has one
    // (a gRPC call's `te`), and a clone of a standard name is a copy.
    while let Some(name) = headers.keys().find(|k| is_hop_by_hop(k)).cloned() {
        headers.remove(name);
    }
}

/// [`strip_hop_by_hop`] for a request on its way to a backend: to an
/// HTTP/2 one, `te: trailers` still goes (RFC 9113 §8.2.2 allows that one
/// value, and gRPC servers require it) when the client's `TE` lists
/// `trailers`.
pub fn strip_for_backend(headers: &mut HeaderMap, http2: bool) {
    // One pass over the fields, no hashing: most requests carry none of
    // these, and a gRPC call only the `te: trailers` that stays.
    let (mut te, mut te_trailers_only, mut others) = (0, true, false);
    for (name, value) in headers.iter() {
        if name == header::TE {
            te += 1;
            te_trailers_only &= value.as_bytes() == b"trailers";
        } else if is_hop_by_hop(name) {
            others = true;
        }
    }
    if !others && (te == 0 || (http2 && te == 1 && te_trailers_only)) {
        return;
    }
    let trailers = http2 && accepts_trailers(headers);
    strip_hop_by_hop(headers);
    if trailers {
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
    }
}

/// Per-connection forwarding values, computed once when the connection is
/// accepted so requests only clone them (a reference-count bump).
#[derive(Debug, Clone)]
pub struct ForwardedFor {
    /// The client's IP as text, for `X-Forwarded-For`.
    pub client_ip: HeaderValue,
    /// `for=...;proto=...` for `Forwarded`.
    pub forwarded: HeaderValue,
    /// `http` or `https`.
    pub proto: HeaderValue,
}

impl ForwardedFor {
    pub fn new(peer: std::net::IpAddr, tls: bool) -> Self {
        let proto = if tls { "https" } else { "http" };
        let ip = peer.to_string();
        let node = match peer {
            std::net::IpAddr::V4(_) => ip.clone(),
            std::net::IpAddr::V6(_) => format!("\"[{ip}]\""),
        };
        Self {
            // An IP's text is always a valid header value.
            client_ip: HeaderValue::from_str(&ip).unwrap_or(HeaderValue::from_static("unknown")),
            forwarded: HeaderValue::from_str(&format!("for={node};proto={proto}"))
                .unwrap_or(HeaderValue::from_static("for=unknown")),
            proto: HeaderValue::from_static(proto),
        }
    }
}

/// Sets `X-Forwarded-For` (appended to what earlier proxies said),
/// `X-Forwarded-Proto`, `X-Forwarded-Host` and `Forwarded`.
pub fn add_forwarding(headers: &mut HeaderMap, fwd: &ForwardedFor, host: &HeaderValue) {
    let mut chain = Vec::new();
    if prior_hops(headers, &mut chain) {
        chain.extend_from_slice(fwd.client_ip.as_bytes());
        // Made of valid values and ", ": always valid.
        if let Ok(merged) = HeaderValue::from_bytes(&chain) {
            headers.insert(X_FORWARDED_FOR, merged);
        }
    } else {
        headers.insert(X_FORWARDED_FOR, fwd.client_ip.clone());
    }
    headers.insert(X_FORWARDED_PROTO, fwd.proto.clone());
    headers.insert(X_FORWARDED_HOST, host.clone());
    headers.append(FORWARDED, fwd.forwarded.clone());
}

/// Appends every earlier `X-Forwarded-For` value to `out`, each followed
/// by ", "; whether there was any.
fn prior_hops(headers: &HeaderMap, out: &mut Vec<u8>) -> bool {
    let before = out.len();
    for prior in headers.get_all(X_FORWARDED_FOR) {
        out.extend_from_slice(prior.as_bytes());
        out.extend_from_slice(b", ");
    }
    out.len() > before
}

/// Whether [`add_forwarding`] replaces the client's value of this header.
pub fn replaced_by_forwarding(name: &HeaderName) -> bool {
    // Most names fail the prefix test, which is cheaper than three
    // comparisons.
    name.as_str().starts_with("x-forwarded-")
        && (name == X_FORWARDED_FOR || name == X_FORWARDED_PROTO || name == X_FORWARDED_HOST)
}

/// Writes, as header lines of an HTTP/1.1 head, what [`add_forwarding`]
/// would have put in `headers`; the caller leaves out the client's headers
/// for which [`replaced_by_forwarding`] holds. Used where the head is
/// written directly: inserting four headers into the client's map would
/// grow and rehash it on every request (callgrind: ~10% of the proxy's
/// instructions per small request).
pub fn write_forwarding(headers: &HeaderMap, fwd: &ForwardedFor, host: &HeaderValue, out: &mut Vec<u8>) {
    out.extend_from_slice(b"x-forwarded-for: ");
    prior_hops(headers, out);
    out.extend_from_slice(fwd.client_ip.as_bytes());
    out.extend_from_slice(b"\r\nx-forwarded-proto: ");
    out.extend_from_slice(fwd.proto.as_bytes());
    out.extend_from_slice(b"\r\nx-forwarded-host: ");
    out.extend_from_slice(host.as_bytes());
    // `Forwarded` is appended to, not replaced: the client's lines were
    // written with the other headers, and this one follows them.
    out.extend_from_slice(b"\r\nforwarded: ");
    out.extend_from_slice(fwd.forwarded.as_bytes());
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_values_are_uri_hosts_with_an_optional_port() {
        for ok in [
            "x",
            "x:80",
            "example.com",
            "127.0.0.1:8080",
            "[::1]:443",
            "[::1]",
            "",
            "a-b.c_d~e",
            "x%41",
        ] {
            assert!(is_host(ok.as_bytes()), "{ok:?}");
        }
        for bad in [
            "x y", "u@x", "x/../y", "x:8o", "[::1", "x\t", "x:80:90", "[::1]x", "x?y", "x#y",
        ] {
            assert!(!is_host(bad.as_bytes()), "{bad:?}");
        }
    }

    fn framing(version: Version, fields: &[(&str, &str)], checked: bool) -> Result<(), ProxyError> {
        let mut req = Request::post("/p").version(version).header("host", "x");
        for (name, value) in fields {
            req = req.header(*name, *value);
        }
        check_request(&req.body(()).unwrap(), 1 << 20, checked)
    }

    #[test]
    fn transfer_encoding_is_one_chunked_on_http_1_1_without_a_length() {
        let te = |v: &str| framing(Version::HTTP_11, &[("transfer-encoding", v)], false);
        assert_eq!(te("chunked"), Ok(()));
        assert_eq!(te(" Chunked "), Ok(()));
        for bad in [
            "chunked, chunked",
            "chunked,chunked",
            "identity",
            "chunked, gzip",
            ", chunked",
            "chunked;q=1",
            "gzip",
            "",
        ] {
            assert_eq!(te(bad), Err(ProxyError::BadFraming), "{bad:?}");
        }
        assert_eq!(te("gzip, chunked"), Err(ProxyError::UnsupportedCoding));
        let two_lines = [("transfer-encoding", "chunked"), ("transfer-encoding", "chunked")];
        assert_eq!(
            framing(Version::HTTP_11, &two_lines, false),
            Err(ProxyError::BadFraming)
        );
        let with_length = [("transfer-encoding", "chunked"), ("content-length", "5")];
        assert_eq!(
            framing(Version::HTTP_11, &with_length, false),
            Err(ProxyError::BadFraming)
        );
        let old = [("transfer-encoding", "chunked")];
        assert_eq!(framing(Version::HTTP_10, &old, false), Err(ProxyError::BadFraming));
        let lengths = [("content-length", "5"), ("content-length", "5")];
        assert_eq!(framing(Version::HTTP_11, &lengths, false), Err(ProxyError::BadFraming));
        // Heads sluice's own loop read were checked there.
        assert_eq!(framing(Version::HTTP_11, &[("content-length", "5")], true), Ok(()));
    }

    #[test]
    fn trailers_is_found_among_te_codings() {
        let te = |values: &[&'static str]| {
            let mut h = HeaderMap::new();
            for v in values {
                h.append(header::TE, HeaderValue::from_static(v));
            }
            accepts_trailers(&h)
        };
        assert!(te(&["trailers"]));
        assert!(te(&["gzip;q=0.5, Trailers"]));
        assert!(te(&["gzip", "trailers"]));
        assert!(!te(&[]));
        assert!(!te(&["gzip, deflate"]));
        assert!(!te(&["trailersx"]));
    }

    #[test]
    fn only_te_trailers_crosses_to_an_http2_backend() {
        let strip = |fields: &[(&'static str, &'static str)], http2: bool| {
            let mut h = HeaderMap::new();
            for (n, v) in fields {
                h.append(*n, HeaderValue::from_static(v));
            }
            strip_for_backend(&mut h, http2);
            let mut left: Vec<String> = h.iter().map(|(n, v)| format!("{n}: {}", v.to_str().unwrap())).collect();
            left.sort();
            left
        };
        let grpc = [("content-type", "application/grpc"), ("te", "trailers")];
        assert_eq!(strip(&grpc, true), ["content-type: application/grpc", "te: trailers"]);
        assert_eq!(strip(&grpc, false), ["content-type: application/grpc"]);
        // Other codings go; trailers is what is left of them.
        assert_eq!(strip(&[("te", "gzip, trailers")], true), ["te: trailers"]);
        assert_eq!(strip(&[("te", "trailers"), ("te", "gzip")], true), ["te: trailers"]);
        assert!(strip(&[("te", "gzip")], true).is_empty());
        // With other hop-by-hop fields, all of them go and trailers stays.
        let mixed = [
            ("te", "trailers"),
            ("connection", "x-secret"),
            ("x-secret", "1"),
            ("upgrade", "h2c"),
        ];
        assert_eq!(strip(&mixed, true), ["te: trailers"]);
        assert!(strip(&mixed, false).is_empty());
    }

    #[test]
    fn strips_connection_named_and_proxy_headers() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, HeaderValue::from_static("keep-alive, x-secret"));
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("proxy-authorization", HeaderValue::from_static("x"));
        h.insert(header::TE, HeaderValue::from_static("trailers"));
        h.insert(header::TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
        h.insert(header::UPGRADE, HeaderValue::from_static("h2c"));
        h.insert("http2-settings", HeaderValue::from_static("AAA"));
        h.insert("x-kept", HeaderValue::from_static("yes"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1, "{h:?}");
        assert!(h.contains_key("x-kept"));
    }

    #[test]
    fn forwarded_for_appends_to_prior_hops() {
        let fwd = ForwardedFor::new("10.1.2.3".parse().unwrap(), false);
        let mut h = HeaderMap::new();
        h.insert(X_FORWARDED_FOR, HeaderValue::from_static("203.0.113.9"));
        add_forwarding(&mut h, &fwd, &HeaderValue::from_static("example.com"));
        assert_eq!(h[X_FORWARDED_FOR], "203.0.113.9, 10.1.2.3");
        assert_eq!(h[X_FORWARDED_PROTO], "http");
        assert_eq!(h[X_FORWARDED_HOST], "example.com");
        assert_eq!(h[FORWARDED], "for=10.1.2.3;proto=http");
    }

    #[test]
    fn every_prior_forwarded_for_line_is_kept() {
        let fwd = ForwardedFor::new("10.1.2.3".parse().unwrap(), false);
        let mut h = HeaderMap::new();
        h.append(X_FORWARDED_FOR, HeaderValue::from_static("203.0.113.9"));
        h.append(X_FORWARDED_FOR, HeaderValue::from_static("198.51.100.4"));
        add_forwarding(&mut h, &fwd, &HeaderValue::from_static("example.com"));
        let all: Vec<_> = h.get_all(X_FORWARDED_FOR).iter().collect();
        assert_eq!(all, ["203.0.113.9, 198.51.100.4, 10.1.2.3"]);
    }

    /// The head written directly says what the map would have said.
    #[test]
    fn written_forwarding_matches_the_map() {
        let fwd = ForwardedFor::new("10.1.2.3".parse().unwrap(), true);
        let host = HeaderValue::from_static("shop.example");
        let mut client = HeaderMap::new();
        client.append(X_FORWARDED_FOR, HeaderValue::from_static("203.0.113.9"));
        client.append(X_FORWARDED_PROTO, HeaderValue::from_static("gopher"));
        client.append(X_FORWARDED_HOST, HeaderValue::from_static("evil.example"));
        client.append(FORWARDED, HeaderValue::from_static("for=203.0.113.9"));
        client.append("x-app", HeaderValue::from_static("1"));
        let mut written = Vec::new();
        for (name, value) in &client {
            if !replaced_by_forwarding(name) {
                written.extend_from_slice(format!("{name}: {}\r\n", value.to_str().unwrap()).as_bytes());
            }
        }
        write_forwarding(&client, &fwd, &host, &mut written);
        let mut parsed: Vec<(String, String)> = String::from_utf8(written)
            .unwrap()
            .lines()
            .map(|l| {
                let (n, v) = l.split_once(": ").unwrap();
                (n.to_owned(), v.to_owned())
            })
            .collect();
        let mut mapped = client.clone();
        add_forwarding(&mut mapped, &fwd, &host);
        let mut expected: Vec<(String, String)> = mapped
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_str().unwrap().to_owned()))
            .collect();
        parsed.sort();
        expected.sort();
        assert_eq!(parsed, expected);
    }

    #[test]
    fn h2c_upgrade_is_not_an_upgrade() {
        let req = Request::builder()
            .header(header::CONNECTION, "Upgrade, HTTP2-Settings")
            .header(header::UPGRADE, "h2c")
            .body(())
            .unwrap();
        assert!(upgrade_request(&req).is_none());
        let ws = Request::builder()
            .header(header::CONNECTION, "keep-alive, Upgrade")
            .header(header::UPGRADE, "websocket")
            .body(())
            .unwrap();
        assert_eq!(upgrade_request(&ws).unwrap(), "websocket");
    }
}
