//! The backend exchange's head parser, body decoder and response lines.

use bytes::BytesMut;
use http::{HeaderValue, Method, header};

use super::decode::*;
use super::encode::*;
use super::error::*;
use super::response::*;
use super::whole::*;
use crate::headers::ForwardedFor;

fn parse(text: &[u8], method: &Method) -> Result<Option<Parsed>, RawError> {
    parse_head(&mut BytesMut::from(text), method, HeadersAs::Map, None)
}

fn framing_of(text: &[u8]) -> (Framing, bool) {
    let (_, framing, keep_alive, _) = parse(text, &Method::GET).unwrap().unwrap();
    (framing, keep_alive)
}

#[test]
fn a_partial_head_asks_for_more() {
    assert!(
        parse(b"HTTP/1.1 200 OK\r\ncontent-len", &Method::GET)
            .unwrap()
            .is_none()
    );
}

#[test]
fn framing_follows_rfc_9112() {
    assert_eq!(
        framing_of(b"HTTP/1.1 200 OK\r\ncontent-length: 12\r\n\r\n"),
        (Framing::Length(12), true)
    );
    assert_eq!(
        framing_of(b"HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, chunked\r\n\r\n"),
        (Framing::Chunked(Chunk::Size), true)
    );
    // No length: the body runs to the close, and the connection ends.
    assert_eq!(framing_of(b"HTTP/1.1 200 OK\r\n\r\n"), (Framing::UntilClose, false));
    assert_eq!(
        framing_of(b"HTTP/1.1 200 OK\r\ntransfer-encoding: gzip\r\n\r\n"),
        (Framing::UntilClose, false)
    );
    assert_eq!(
        framing_of(b"HTTP/1.1 204 No Content\r\n\r\n"),
        (Framing::Length(0), true)
    );
    assert_eq!(
        framing_of(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\nconnection: close\r\n\r\n"),
        (Framing::Length(5), false)
    );
    // HTTP/1.0 keeps the connection only when asked to.
    assert_eq!(
        framing_of(b"HTTP/1.0 200 OK\r\ncontent-length: 5\r\n\r\n"),
        (Framing::Length(5), false)
    );
    assert_eq!(
        framing_of(b"HTTP/1.0 200 OK\r\ncontent-length: 5\r\nconnection: keep-alive\r\n\r\n"),
        (Framing::Length(5), true)
    );
}

#[test]
fn a_head_response_has_no_body_whatever_its_length_says() {
    let (res, framing, keep_alive, _) = parse(b"HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\n", &Method::HEAD)
        .unwrap()
        .unwrap();
    assert_eq!((framing, keep_alive), (Framing::Length(0), true));
    assert_eq!(res.headers()[header::CONTENT_LENGTH], "1000");
}

#[test]
fn a_length_beside_chunked_is_dropped_and_the_connection_not_reused() {
    let (res, framing, keep_alive, _) = parse(
        b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\ntransfer-encoding: chunked\r\n\r\n",
        &Method::GET,
    )
    .unwrap()
    .unwrap();
    assert_eq!((framing, keep_alive), (Framing::Chunked(Chunk::Size), false));
    assert!(!res.headers().contains_key(header::CONTENT_LENGTH));
}

#[test]
fn headers_and_status_arrive_intact_and_the_head_is_consumed() {
    let mut buf =
        BytesMut::from(&b"HTTP/1.1 404 Not Found\r\nX-Tag: a\r\nx-tag: b\r\ncontent-length: 2\r\n\r\nhiNEXT"[..]);
    let (res, ..) = parse_head(&mut buf, &Method::GET, HeadersAs::Map, None)
        .unwrap()
        .unwrap();
    assert_eq!(res.status(), 404);
    let tags: Vec<_> = res.headers().get_all("x-tag").iter().collect();
    assert_eq!(tags, ["a", "b"]);
    assert_eq!(&buf[..], b"hiNEXT");
}

fn lines_of(text: &[u8], method: &Method) -> (String, bool) {
    let (map, lines) = head_both_ways(text, method).unwrap().unwrap();
    // The map the hyper path writes says the same, framing aside.
    let mut from_map = String::new();
    let mut pairs = Vec::new();
    for (name, value) in &map {
        if *name != header::CONTENT_LENGTH || *method == Method::HEAD {
            from_map.push_str(&format!("{name}: {}\r\n", value.to_str().unwrap()));
            pairs.push((name.as_str().as_bytes(), value.as_bytes()));
        }
    }
    // And the lines, field by field, as the HTTP/2 server reads them.
    assert_eq!(lines.fields().collect::<Vec<_>>(), pairs);
    let text = String::from_utf8(lines.bytes).unwrap();
    assert_eq!(text, from_map);
    (text, lines.has_date)
}

#[test]
fn header_lines_leave_out_hop_by_hop_and_framing_headers() {
    let head = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: keep-alive, X-Drop\r\n\
        x-drop: 1\r\nKeep-Alive: timeout=5\r\nProxy-Authenticate: Basic\r\nx-sluice-pool: blue\r\n\
        Content-Length: 2\r\nDate: Thu, 26 Nov 2026 10:00:00 GMT\r\nX-App: a\r\nLocation: http://x:80/\r\n\r\nhi";
    let (text, has_date) = lines_of(head, &Method::GET);
    assert_eq!(
        text,
        "content-type: text/plain\r\ndate: Thu, 26 Nov 2026 10:00:00 GMT\r\nx-app: a\r\nlocation: http://x:80/\r\n"
    );
    assert!(has_date);
    // No body follows a HEAD response: its length describes the
    // representation and stays.
    let (text, has_date) = lines_of(b"HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\n", &Method::HEAD);
    assert_eq!(text, "content-length: 1000\r\n");
    assert!(!has_date);
    // Beside a transfer coding a length never stays, HEAD or not.
    let (text, _) = lines_of(
        b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\ntransfer-encoding: chunked\r\nx-a: 1\r\n\r\n",
        &Method::HEAD,
    );
    assert_eq!(text, "x-a: 1\r\n");
}

#[test]
fn broken_heads_are_malformed() {
    for bad in [
        &b"HTTP/1.1 2000 OK\r\n\r\n"[..],
        b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\ncontent-length: 4\r\n\r\n",
        b"HTTP/1.1 200 OK\r\ncontent-length: -1\r\n\r\n",
        b"HTTP/1.1 200 OK\r\ncontent-length: +5\r\n\r\nhello",
        b"SSH-2.0-OpenSSH\r\n\r\n",
    ] {
        assert!(
            matches!(parse(bad, &Method::GET), Err(RawError::Malformed(_))),
            "{}",
            String::from_utf8_lossy(bad)
        );
    }
}

/// Feeds `wire` to the chunked decoder `step` bytes at a time.
fn decode_all(wire: &[u8], step: usize) -> Result<Vec<u8>, RawError> {
    let (mut buf, mut state, mut out) = (BytesMut::new(), Chunk::Size, Vec::new());
    let mut fed = 0;
    loop {
        match decode_chunk(&mut buf, &mut state)? {
            Step::Data(d) => out.extend_from_slice(&d),
            Step::Continue => {}
            Step::End => return Ok(out),
            Step::Read(_) => {
                let next = (fed + step).min(wire.len());
                if fed == next {
                    return Err(RawError::Incomplete);
                }
                buf.extend_from_slice(&wire[fed..next]);
                fed = next;
            }
        }
    }
}

#[test]
fn chunked_bodies_decode_whatever_the_segmentation() {
    let wire = b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nx-trailer: t\r\n\r\n";
    for step in [1, 2, 3, 7, wire.len()] {
        assert_eq!(decode_all(wire, step).unwrap(), b"hello world", "step {step}");
    }
}

#[test]
fn broken_chunked_bodies_are_errors() {
    assert!(matches!(
        decode_all(b"zz\r\nhello\r\n0\r\n\r\n", 4),
        Err(RawError::Malformed(_))
    ));
    assert!(matches!(
        decode_all(b"5\r\nhelloXX0\r\n\r\n", 4),
        Err(RawError::Malformed(_))
    ));
    // A sign is no hex digit (a differential fuzzing finding).
    for signed in [&b"+5\r\nhello\r\n0\r\n\r\n"[..], b"5\r\nhello\r\n+0\r\n\r\n"] {
        assert!(matches!(decode_all(signed, 4), Err(RawError::Malformed(_))));
    }
    assert!(matches!(decode_all(b"5\r\nhel", 4), Err(RawError::Incomplete)));
    let endless = vec![b'1'; 2 * MAX_CHUNK_LINE];
    assert!(matches!(decode_all(&endless, 64), Err(RawError::Malformed(_))));
}

#[test]
fn bodyless_requests_say_so_only_where_a_body_is_expected() {
    let encode = |method: Method| {
        let (mut parts, ()) = http::Request::builder()
            .method(method)
            .uri("/a?b=c")
            .header("host", "example")
            .body(())
            .unwrap()
            .into_parts();
        parts.headers.append("x-multi", HeaderValue::from_static("1"));
        parts.headers.append("x-multi", HeaderValue::from_static("2"));
        let mut out = Vec::new();
        let fwd = ForwardedFor::new("10.0.0.1".parse().unwrap(), false);
        encode_head(
            &parts,
            &fwd,
            &HeaderValue::from_static("example"),
            0,
            None,
            None,
            &mut out,
        );
        String::from_utf8(out).unwrap()
    };
    assert_eq!(
        encode(Method::GET),
        "GET /a?b=c HTTP/1.1\r\nhost: example\r\nx-multi: 1\r\nx-multi: 2\r\n\
         x-forwarded-for: 10.0.0.1\r\nx-forwarded-proto: http\r\nx-forwarded-host: example\r\n\
         forwarded: for=10.0.0.1;proto=http\r\n\r\n"
    );
    assert!(encode(Method::POST).ends_with("content-length: 0\r\n\r\n"));
}
