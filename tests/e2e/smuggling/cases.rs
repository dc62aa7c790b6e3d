//! The mutations, after the public request-smuggling catalogues (James
//! Kettle's desync research, the "funky chunks" chunk-size and extension
//! cases, HAProxy's and nginx's CVE regressions): Transfer-Encoding and
//! Content-Length, chunk sizes and extensions, trailers, obs-fold, bare
//! LF/CR, NUL and other controls, Host, request-target forms, pipelining,
//! `Expect` and `Upgrade`. Each says what a strict RFC 9112 reading of the
//! bytes means; refusing (and closing) is always allowed.

use super::backend::Req;

/// Sent after each case's bytes on the same connection.
pub const AFTER: &[u8] = b"GET /after HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";

pub struct Case {
    pub name: &'static str,
    pub bytes: Vec<u8>,
    /// The requests a strict reading yields, in order; after the last one
    /// the connection is refused or closed.
    pub intended: Vec<Req>,
    /// Well-formed traffic every proxy must pass (the calibration's check
    /// that the suite itself is sound).
    pub control: bool,
}

pub fn req(method: &str, target: &str, body: &str) -> Req {
    Req {
        method: method.into(),
        target: target.into(),
        host: "x".into(),
        body: body.as_bytes().to_vec(),
    }
}

fn get(target: &str) -> Req {
    req("GET", target, "")
}

fn with_host(mut r: Req, host: &str) -> Req {
    r.host = host.into();
    r
}

fn bytes(text: &str) -> Vec<u8> {
    [text.as_bytes(), AFTER].concat()
}

/// A case whose messages are valid: `reqs`, then the follow-up.
fn valid(name: &'static str, text: &str, reqs: Vec<Req>) -> Case {
    let mut intended = reqs;
    intended.push(get("/after"));
    Case {
        name,
        bytes: bytes(text),
        intended,
        control: false,
    }
}

fn control(name: &'static str, text: &str, reqs: Vec<Req>) -> Case {
    Case {
        control: true,
        ..valid(name, text, reqs)
    }
}

/// A case whose first message must be refused.
fn invalid(name: &'static str, text: &str) -> Case {
    Case {
        name,
        bytes: bytes(text),
        intended: Vec::new(),
        control: false,
    }
}

/// `reqs` are valid, and what follows them is not (or the connection must
/// close after them).
fn then_stop(name: &'static str, text: &str, reqs: Vec<Req>) -> Case {
    Case {
        name,
        bytes: bytes(text),
        intended: reqs,
        control: false,
    }
}

/// A POST with `head_lines` (each ending CRLF) and then `body`.
fn post(head_lines: &str, body: &str) -> String {
    format!("POST /p HTTP/1.1\r\nHost: x\r\n{head_lines}\r\n{body}")
}

fn chunked(body: &str) -> String {
    post("Transfer-Encoding: chunked\r\n", body)
}

fn te(value: &str) -> String {
    post(&format!("Transfer-Encoding: {value}\r\n"), "5\r\nhello\r\n0\r\n\r\n")
}

fn cl(value: &str) -> String {
    post(&format!("Content-Length: {value}\r\n"), "hello")
}

fn header(line: &str) -> String {
    format!("GET /h HTTP/1.1\r\nHost: x\r\n{line}\r\n\r\n")
}

pub fn all() -> Vec<Case> {
    let hello = || req("POST", "/p", "hello");
    let empty_post = || req("POST", "/p", "");
    let h = || get("/h");
    let smuggled = "GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n";
    let te_cl = "GPOST / HTTP/1.1\r\nContent-Type: text/plain\r\nContent-Length: 15\r\n\r\nx=1";
    vec![
        // --- Well-formed traffic --------------------------------------
        control("plain GET", "GET /a HTTP/1.1\r\nHost: x\r\n\r\n", vec![get("/a")]),
        control(
            "GET with a query",
            "GET /a?b=c&d HTTP/1.1\r\nHost: x\r\n\r\n",
            vec![get("/a?b=c&d")],
        ),
        control("POST with Content-Length", &cl("5"), vec![hello()]),
        control(
            "POST with Content-Length 0",
            &post("Content-Length: 0\r\n", ""),
            vec![empty_post()],
        ),
        control("POST chunked", &te("chunked"), vec![hello()]),
        control(
            "chunked, two chunks",
            &chunked("2\r\nhe\r\n3\r\nllo\r\n0\r\n\r\n"),
            vec![hello()],
        ),
        control(
            "chunked, upper-case hex size",
            &chunked("A\r\n0123456789\r\n0\r\n\r\n"),
            vec![req("POST", "/p", "0123456789")],
        ),
        control(
            "chunked, leading zeros in the size",
            &chunked("0005\r\nhello\r\n0\r\n\r\n"),
            vec![hello()],
        ),
        control(
            "chunked, an extension",
            &chunked("5;name=value\r\nhello\r\n0\r\n\r\n"),
            vec![hello()],
        ),
        control(
            "chunked, a quoted extension",
            &chunked("5;a=\"b c\"\r\nhello\r\n0\r\n\r\n"),
            vec![hello()],
        ),
        control(
            "chunked, a trailer",
            &chunked("5\r\nhello\r\n0\r\nX-Trailer: 1\r\n\r\n"),
            vec![hello()],
        ),
        control("Transfer-Encoding in upper case", &te("CHUNKED"), vec![hello()]),
        control(
            "Transfer-Encoding with spaces around",
            &te("  chunked  "),
            vec![hello()],
        ),
        control(
            "Transfer-Encoding after a tab",
            &post("Transfer-Encoding:\tchunked\r\n", "5\r\nhello\r\n0\r\n\r\n"),
            vec![hello()],
        ),
        control("Content-Length with trailing space", &cl("5 "), vec![hello()]),
        control("Content-Length with a leading zero", &cl("05"), vec![hello()]),
        control(
            "GET with a Content-Length body",
            "GET /g HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello",
            vec![req("GET", "/g", "hello")],
        ),
        control(
            "HEAD",
            "HEAD /a HTTP/1.1\r\nHost: x\r\n\r\n",
            vec![req("HEAD", "/a", "")],
        ),
        control(
            "three pipelined requests",
            "GET /1 HTTP/1.1\r\nHost: x\r\n\r\nPOST /2 HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhiGET /3 HTTP/1.1\r\nHost: x\r\n\r\n",
            vec![get("/1"), req("POST", "/2", "hi"), get("/3")],
        ),
        control(
            "Host with a port",
            "GET /a HTTP/1.1\r\nHost: x:8080\r\n\r\n",
            vec![with_host(get("/a"), "x:8080")],
        ),
        control(
            "Connection: keep-alive",
            "GET /a HTTP/1.1\r\nHost: x\r\nConnection: keep-alive\r\n\r\n",
            vec![get("/a")],
        ),
        control(
            "Expect: 100-continue",
            &post("Expect: 100-continue\r\nContent-Length: 5\r\n", "hello"),
            vec![hello()],
        ),
        control(
            "a non-ASCII (obs-text) field value",
            "GET /a HTTP/1.1\r\nHost: x\r\nX-Name: caf\u{e9}\r\n\r\n",
            vec![get("/a")],
        ),
        control(
            "a chunked body holding a request",
            &chunked(&format!("{:x}\r\n{smuggled}\r\n0\r\n\r\n", smuggled.len())),
            vec![req("POST", "/p", smuggled)],
        ),
        control(
            "a request pipelined after a chunked body",
            &format!("{}{smuggled}", te("chunked")),
            vec![hello(), get("/smuggled")],
        ),
        control(
            "a request pipelined after a length",
            &format!("{}{smuggled}", cl("5")),
            vec![hello(), get("/smuggled")],
        ),
        // --- Transfer-Encoding mutations -------------------------------
        invalid("TE chunked, chunked", &te("chunked, chunked")),
        invalid("TE chunked,chunked", &te("chunked,chunked")),
        invalid(
            "TE twice",
            &post(
                "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
                "5\r\nhello\r\n0\r\n\r\n",
            ),
        ),
        invalid(
            "TE chunked then identity lines",
            &post(
                "Transfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n",
                "5\r\nhello\r\n0\r\n\r\n",
            ),
        ),
        invalid("TE identity", &te("identity")),
        invalid("TE identity, chunked", &te("identity, chunked")),
        invalid(
            "TE gzip, chunked (a coding sluice does not decode)",
            &te("gzip, chunked"),
        ),
        invalid("TE chunked, gzip", &te("chunked, gzip")),
        invalid("TE gzip", &te("gzip")),
        invalid("TE xchunked", &te("xchunked")),
        invalid("TE chunkedx", &te("chunkedx")),
        invalid("TE chunked with a parameter", &te("chunked;q=1")),
        invalid("TE quoted", &te("\"chunked\"")),
        invalid("TE with a vertical tab", &te("chunked\x0b")),
        invalid("TE with a NUL", &te("chunked\x00")),
        invalid(
            "TE name with a space before the colon",
            &post("Transfer-Encoding : chunked\r\n", "5\r\nhello\r\n0\r\n\r\n"),
        ),
        invalid(
            "TE name with a tab before the colon",
            &post("Transfer-Encoding\t: chunked\r\n", "5\r\nhello\r\n0\r\n\r\n"),
        ),
        invalid("TE with an empty element", &te(", chunked")),
        invalid(
            "TE on HTTP/1.0",
            "POST /p HTTP/1.0\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        ),
        // Transfer-Encoding overrides Content-Length and the connection
        // closes after the answer (RFC 9112 §6.3); refusing is better.
        then_stop(
            "TE and Content-Length (CL.TE)",
            &post("Content-Length: 6\r\nTransfer-Encoding: chunked\r\n", "0\r\n\r\nG"),
            vec![empty_post()],
        ),
        then_stop(
            "Content-Length and TE (TE.CL)",
            &post(
                "Transfer-Encoding: chunked\r\nContent-Length: 4\r\n",
                &format!("{:x}\r\n{te_cl}\r\n0\r\n\r\n", te_cl.len()),
            ),
            vec![req("POST", "/p", te_cl)],
        ),
        then_stop(
            "Transfer_Encoding (not a framing field)",
            &post("Transfer_Encoding: chunked\r\n", "5\r\nhello\r\n0\r\n\r\n"),
            vec![empty_post()],
        ),
        then_stop(
            "TE hidden in an obs-fold",
            &post(
                "X-Folded: a\r\n Transfer-Encoding: chunked\r\n",
                "5\r\nhello\r\n0\r\n\r\n",
            ),
            vec![empty_post()],
        ),
        valid(
            "TE value in an obs-fold",
            &post("Transfer-Encoding:\r\n chunked\r\n", "5\r\nhello\r\n0\r\n\r\n"),
            vec![hello()],
        ),
        then_stop(
            "TE after whitespace before the first field",
            "POST /p HTTP/1.1\r\n Transfer-Encoding: chunked\r\nHost: x\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
            vec![empty_post()],
        ),
        // --- Content-Length mutations ----------------------------------
        valid("Content-Length 5, 5", &cl("5, 5"), vec![hello()]),
        valid(
            "Content-Length twice, equal",
            &post("Content-Length: 5\r\nContent-Length: 5\r\n", "hello"),
            vec![hello()],
        ),
        invalid(
            "Content-Length twice, different",
            &post("Content-Length: 5\r\nContent-Length: 6\r\n", "hello!"),
        ),
        invalid("Content-Length 5, 6", &cl("5, 6")),
        invalid("Content-Length +5", &cl("+5")),
        invalid("Content-Length -5", &cl("-5")),
        invalid("Content-Length 5 5", &cl("5 5")),
        invalid("Content-Length 0x5", &cl("0x5")),
        invalid("Content-Length 5.0", &cl("5.0")),
        invalid("Content-Length empty", &cl("")),
        invalid("Content-Length 1_0", &cl("1_0")),
        invalid("Content-Length with a NUL", &cl("5\x00")),
        invalid("Content-Length past 2^64", &cl("18446744073709551616")),
        invalid("Content-Length above the body limit", &cl("99999999999")),
        invalid(
            "Content-Length with a space before the colon",
            &post("Content-Length : 5\r\n", "hello"),
        ),
        invalid(
            "Content-Length with a tab before the colon",
            &post("Content-Length\t: 5\r\n", "hello"),
        ),
        // "loGET" is a valid method: the rest is a second request.
        then_stop(
            "Content-Length shorter than the body",
            &cl("3"),
            vec![req("POST", "/p", "hel"), req("loGET", "/after", "")],
        ),
        // --- Chunk sizes, data and extensions ---------------------------
        invalid("chunk size 0x5", &chunked("0x5\r\nhello\r\n0\r\n\r\n")),
        invalid("chunk size -5", &chunked("-5\r\nhello\r\n0\r\n\r\n")),
        invalid("chunk size +5", &chunked("+5\r\nhello\r\n0\r\n\r\n")),
        invalid("chunk size after a space", &chunked(" 5\r\nhello\r\n0\r\n\r\n")),
        valid(
            "chunk size before a space",
            &chunked("5 \r\nhello\r\n0\r\n\r\n"),
            vec![hello()],
        ),
        valid(
            "chunk size before a tab and an extension",
            &chunked("5\t;a=b\r\nhello\r\n0\r\n\r\n"),
            vec![hello()],
        ),
        invalid(
            "chunk size past 2^64",
            &chunked("fffffffffffffffff5\r\nhello\r\n0\r\n\r\n"),
        ),
        invalid("chunk size line ended by a bare LF", &chunked("5\nhello\r\n0\r\n\r\n")),
        invalid("chunk data ended by a bare LF", &chunked("5\r\nhello\n0\r\n\r\n")),
        invalid("chunk data without its CRLF", &chunked("5\r\nhelloX0\r\n\r\n")),
        invalid("chunk data longer than its size", &chunked("3\r\nhello\r\n0\r\n\r\n")),
        invalid("last chunk line ended by a bare LF", &chunked("5\r\nhello\r\n0\n\r\n")),
        invalid("last chunk ended by a bare LF", &chunked("5\r\nhello\r\n0\r\n\n")),
        invalid(
            "chunk extension with a bare CR",
            &chunked("5;a\rb\r\nhello\r\n0\r\n\r\n"),
        ),
        invalid(
            "chunk extension with a bare LF",
            &chunked("5;a\nb\r\nhello\r\n0\r\n\r\n"),
        ),
        // Not in the grammar, but it leaves the framing as clear as any
        // extension: the size, then the line's CRLF.
        valid(
            "chunk extension with a NUL",
            &chunked("5;a\x00b\r\nhello\r\n0\r\n\r\n"),
            vec![hello()],
        ),
        valid(
            "chunk extension without a name",
            &chunked("5;\r\nhello\r\n0\r\n\r\n"),
            vec![hello()],
        ),
        valid(
            "a long chunk extension",
            &chunked(&format!("5;a={}\r\nhello\r\n0\r\n\r\n", "b".repeat(8000))),
            vec![hello()],
        ),
        valid(
            "a Content-Length trailer",
            &chunked("5\r\nhello\r\n0\r\nContent-Length: 50\r\n\r\n"),
            vec![hello()],
        ),
        valid(
            "a Transfer-Encoding trailer",
            &chunked("5\r\nhello\r\n0\r\nTransfer-Encoding: chunked\r\n\r\n"),
            vec![hello()],
        ),
        invalid(
            "a trailer without a colon",
            &chunked("5\r\nhello\r\n0\r\nnocolon\r\n\r\n"),
        ),
        invalid("a trailer with a NUL", &chunked("5\r\nhello\r\n0\r\nX: a\x00b\r\n\r\n")),
        // --- Line endings and control bytes in the head -----------------
        valid("a head in bare LFs", "GET /a HTTP/1.1\nHost: x\n\n", vec![get("/a")]),
        valid(
            "a head ended by a bare LF",
            "GET /a HTTP/1.1\r\nHost: x\r\n\n",
            vec![get("/a")],
        ),
        valid("a bare CR in a field value", &header("X: a\rb"), vec![h()]),
        valid("a bare CR before CRLF", &header("X: a\r"), vec![h()]),
        valid("a NUL in a field value", &header("X: a\x00b"), vec![h()]),
        valid("a DEL in a field value", &header("X: a\x7fb"), vec![h()]),
        valid("a 0x01 in a field value", &header("X: a\x01b"), vec![h()]),
        valid("an ordinary obs-fold", &header("X: a\r\n b"), vec![h()]),
        invalid("a NUL in a field name", &header("X\x00Y: a")),
        invalid("a space in a field name", &header("X Y: a")),
        invalid("an empty field name", &header(": a")),
        invalid("a field line without a colon", &header("nocolon")),
        invalid("a non-ASCII field name", &header("X\u{e9}: a")),
        invalid("a NUL in the target", "GET /a\x00b HTTP/1.1\r\nHost: x\r\n\r\n"),
        invalid(
            "a control byte in the target",
            "GET /a\x01b HTTP/1.1\r\nHost: x\r\n\r\n",
        ),
        // --- Request line ------------------------------------------------
        valid(
            "an empty line before the request",
            "\r\nGET /a HTTP/1.1\r\nHost: x\r\n\r\n",
            vec![get("/a")],
        ),
        valid(
            "a lower-case method",
            "get /a HTTP/1.1\r\nHost: x\r\n\r\n",
            vec![req("get", "/a", "")],
        ),
        valid("HTTP/1.2", "GET /a HTTP/1.2\r\nHost: x\r\n\r\n", vec![get("/a")]),
        valid(
            "two spaces after the method",
            "GET  /a HTTP/1.1\r\nHost: x\r\n\r\n",
            vec![get("/a")],
        ),
        valid(
            "a tab after the method",
            "GET\t/a HTTP/1.1\r\nHost: x\r\n\r\n",
            vec![get("/a")],
        ),
        invalid("a method with a bracket", "G(T /a HTTP/1.1\r\nHost: x\r\n\r\n"),
        invalid("HTTP/1.10", "GET /a HTTP/1.10\r\nHost: x\r\n\r\n"),
        invalid(
            "HTTP/2.0 in an HTTP/1 request line",
            "GET /a HTTP/2.0\r\nHost: x\r\n\r\n",
        ),
        invalid("a lower-case protocol name", "GET /a http/1.1\r\nHost: x\r\n\r\n"),
        invalid("no protocol version", "GET /a\r\nHost: x\r\n\r\n"),
        invalid(
            "a 100 KB target",
            &format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(100_000)),
        ),
        invalid("authority-form for GET", "GET x:80 HTTP/1.1\r\nHost: x\r\n\r\n"),
        invalid("asterisk-form for GET", "GET * HTTP/1.1\r\nHost: x\r\n\r\n"),
        // --- Host and absolute-form --------------------------------------
        invalid("two Host fields", "GET /a HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n"),
        invalid("two equal Host fields", "GET /a HTTP/1.1\r\nHost: x\r\nHost: x\r\n\r\n"),
        invalid("no Host", "GET /a HTTP/1.1\r\n\r\n"),
        invalid("a Host with a space", "GET /a HTTP/1.1\r\nHost: x y\r\n\r\n"),
        invalid("a Host with userinfo", "GET /a HTTP/1.1\r\nHost: u@x\r\n\r\n"),
        invalid("a Host with a path", "GET /a HTTP/1.1\r\nHost: x/../y\r\n\r\n"),
        valid(
            "absolute-form, same host",
            "GET http://x/a HTTP/1.1\r\nHost: x\r\n\r\n",
            vec![get("/a")],
        ),
        valid(
            "absolute-form naming another host",
            "GET http://other/a HTTP/1.1\r\nHost: x\r\n\r\n",
            vec![with_host(get("/a"), "other")],
        ),
        valid(
            "absolute-form with a port",
            "GET http://other:8080/a?q HTTP/1.1\r\nHost: x\r\n\r\n",
            vec![with_host(get("/a?q"), "other:8080")],
        ),
        invalid(
            "absolute-form with userinfo",
            "GET http://u@other/a HTTP/1.1\r\nHost: x\r\n\r\n",
        ),
        invalid(
            "absolute-form with another scheme",
            "GET ftp://other/a HTTP/1.1\r\nHost: x\r\n\r\n",
        ),
        // --- Connection, Expect, Upgrade ----------------------------------
        then_stop(
            "Connection: close ends the connection",
            "GET /a HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            vec![get("/a")],
        ),
        then_stop(
            "an HTTP/1.0 request ends the connection",
            "GET /a HTTP/1.0\r\nHost: x\r\n\r\n",
            vec![get("/a")],
        ),
        valid(
            "Expect: 100-continue without a body",
            &post("Expect: 100-continue\r\nContent-Length: 0\r\n", ""),
            vec![empty_post()],
        ),
        valid(
            "Upgrade: h2c is not honoured",
            "GET /a HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n",
            vec![get("/a")],
        ),
        valid(
            "Upgrade without Connection: upgrade",
            "GET /a HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\r\n",
            vec![get("/a")],
        ),
        valid(
            "a WebSocket upgrade the backend declines stays HTTP",
            "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
            vec![get("/ws")],
        ),
        invalid(
            "131 fields",
            &format!("GET /a HTTP/1.1\r\nHost: x\r\n{}\r\n", "X-Many: 1\r\n".repeat(130)),
        ),
        invalid("a 70 KB field", &header(&format!("X-Big: {}", "a".repeat(70_000)))),
    ]
}
