//! The client loop's request parser and response writer.

use bytes::BytesMut;
use http::{HeaderMap, HeaderValue, StatusCode, header};

use super::request::*;
use super::write::*;
use crate::client::Scratch;
use crate::request_body::ClientBody;

fn parse(bytes: &[u8]) -> (Parsed, BytesMut) {
    let mut buf = BytesMut::from(bytes);
    (parse_request(&mut buf, MAX_HEADERS, &mut Scratch::default()), buf)
}

#[test]
fn a_plain_request_is_taken_and_split_off() {
    let (parsed, rest) = parse(b"GET /a?b HTTP/1.1\r\nHost: x\r\nX-Many: 1\r\nx-many: 2\r\n\r\nGET /next");
    let Parsed::Request(req, keep_alive) = parsed else {
        panic!("not taken")
    };
    assert!(keep_alive);
    assert_eq!(req.uri(), "/a?b");
    assert_eq!(req.headers()["host"], "x");
    assert_eq!(req.headers().get_all("x-many").iter().count(), 2);
    assert_eq!(&rest[..], b"GET /next");
}

#[test]
fn connection_close_ends_keep_alive() {
    let (parsed, _) = parse(b"GET / HTTP/1.1\r\nhost: x\r\nconnection: keep-alive, Close\r\n\r\n");
    assert!(matches!(parsed, Parsed::Request(_, false)));
}

#[test]
fn what_hyper_should_answer_is_left_whole() {
    for head in [
        &b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 5\r\n\r\nhell"[..],
        b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 5\r\ncontent-length: 6\r\n\r\nhello!",
        b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: +5\r\n\r\nhello",
        b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 99999999\r\n\r\n",
        b"POST / HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n",
        b"GET / HTTP/1.1\r\nhost: x\r\nupgrade: websocket\r\nconnection: upgrade\r\n\r\n",
        b"PUT / HTTP/1.1\r\nhost: x\r\nexpect: 100-continue\r\ncontent-length: 0\r\n\r\n",
        b"GET / HTTP/1.0\r\n\r\n",
        b"CONNECT x:443 HTTP/1.1\r\nhost: x:443\r\n\r\n",
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
        b"GET / HTTP/1.1\r\nbad header\r\n\r\n",
        b"GET /\xff HTTP/1.1\r\nhost: x\r\n\r\n",
    ] {
        let (parsed, rest) = parse(head);
        assert!(matches!(parsed, Parsed::Unusual), "{}", String::from_utf8_lossy(head));
        assert_eq!(&rest[..], head, "bytes must reach hyper as they came");
    }
    let (parsed, _) = parse(b"GET / HTTP/1.1\r\nhost: x\r\ncontent-length: 0\r\n\r\n");
    assert!(matches!(parsed, Parsed::Request(..)));
}

#[test]
fn a_small_body_that_came_with_its_head_is_read_here() {
    let (parsed, rest) = parse(b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 5\r\n\r\nhelloGET");
    let Parsed::Request(req, _) = parsed else {
        panic!("not taken")
    };
    let ClientBody::Read(Some(body)) = req.into_body() else {
        panic!("no body")
    };
    assert_eq!(&body[..], b"hello");
    assert_eq!(&rest[..], b"GET");
}

#[test]
fn a_map_given_back_starts_the_next_request_empty() {
    let mut scratch = Scratch::default();
    let mut buf = BytesMut::from(&b"GET /a HTTP/1.1\r\nhost: x\r\nx-first: 1\r\nx-first: 2\r\n\r\n"[..]);
    let Parsed::Request(first, _) = parse_request(&mut buf, MAX_HEADERS, &mut scratch) else {
        panic!("the first request is taken");
    };
    assert_eq!(first.headers().len(), 3);
    scratch.give_back(first.into_parts().0.headers);
    let mut buf = BytesMut::from(&b"GET /b HTTP/1.1\r\nhost: y\r\n\r\n"[..]);
    let Parsed::Request(second, _) = parse_request(&mut buf, MAX_HEADERS, &mut scratch) else {
        panic!("the second request is taken");
    };
    assert_eq!(second.headers().len(), 1);
    assert_eq!(second.headers()["host"], "y");
    assert!(scratch.take_headers().is_none(), "the map went to the request");
}

#[test]
fn too_many_headers_go_to_hyper() {
    let mut head = b"GET / HTTP/1.1\r\n".to_vec();
    for i in 0..11 {
        head.extend_from_slice(format!("x-h{i}: v\r\n").as_bytes());
    }
    head.extend_from_slice(b"\r\n");
    let mut buf = BytesMut::from(&head[..]);
    assert!(matches!(
        parse_request(&mut buf, 10, &mut Scratch::default()),
        Parsed::Unusual
    ));
    assert!(matches!(parse(b"GET / HTTP/1.1\r\nhost: x\r\n"), (Parsed::Partial, _)));
}

#[test]
fn response_heads_state_their_framing() {
    let mut headers = HeaderMap::new();
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from_static("999"));
    headers.insert("x-app", HeaderValue::from_static("1"));
    let mut out = Vec::new();
    encode_head(StatusCode::OK, None, None, &headers, Framing::Length(5), true, &mut out);
    let text = String::from_utf8(out).unwrap();
    assert!(
        text.starts_with("HTTP/1.1 200 OK\r\nx-app: 1\r\ncontent-length: 5\r\n"),
        "{text}"
    );
    assert!(
        text.contains("connection: close\r\n") && text.contains("date: "),
        "{text}"
    );
    let mut out = Vec::new();
    encode_head(
        StatusCode::OK,
        None,
        None,
        &HeaderMap::new(),
        Framing::Chunked,
        false,
        &mut out,
    );
    let text = String::from_utf8(out).unwrap();
    assert!(
        text.contains("transfer-encoding: chunked\r\n") && !text.contains("connection"),
        "{text}"
    );
    // HEAD: the backend's length describes the representation.
    let mut out = Vec::new();
    encode_head(StatusCode::OK, None, None, &headers, Framing::None, false, &mut out);
    assert!(String::from_utf8(out).unwrap().contains("content-length: 999\r\n"));
}
