//! An HTTP/2 conformance suite in h2spec's shape (h2spec itself cannot be
//! installed here), run against the real binary over h2c and over TLS
//! (ALPN h2), and against Debian's `nghttpd` as a calibration. Each case
//! sends what h2spec sends and asserts the reaction RFC 9113 / RFC 7541
//! require: a connection error is a GOAWAY with the exact code and then
//! the close; a stream error is a RST_STREAM with the code (or the stronger
//! connection error RFC 9113 §5.4.1 allows). After every case a fresh
//! connection must still be served. Where nghttpd and sluice differ, the
//! case is listed in `NGHTTPD_DIFFERS` with why (and in docs/security.md).

mod conn;
mod generic;
mod rfc9113_a;
mod rfc9113_b;
mod rfc9113_c;

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::time::Duration;

pub use conn::Conn;
use conn::{CaseResult, Io};

use crate::common::running::Running;
use crate::common::*;

type Run = for<'a> fn(&'a mut Conn) -> Pin<Box<dyn Future<Output = CaseResult> + Send + 'a>>;

pub struct Case {
    pub id: &'static str,
    pub desc: &'static str,
    pub run: Run,
}

macro_rules! cases {
    ($($id:literal $desc:literal $f:path;)*) => {
        vec![$(Case {
            id: $id,
            desc: $desc,
            run: {
                fn run(c: &mut Conn) -> Pin<Box<dyn Future<Output = CaseResult> + Send + '_>> {
                    Box::pin($f(c))
                }
                run
            },
        },)*]
    };
}

/// Every case, numbered as in h2spec (sections of RFC 7540 as h2spec
/// names them; the RFC 9113 rule each checks is the same unless noted).
pub fn all() -> Vec<Case> {
    use generic as g;
    use rfc9113_a as a;
    use rfc9113_b as b;
    use rfc9113_c as c;
    cases! {
        "generic/2/1" "PRIORITY frame on idle stream" g::priority_idle;
        "generic/2/2" "WINDOW_UPDATE on half-closed (remote) stream" g::window_update_half_closed;
        "generic/2/3" "PRIORITY on half-closed (remote) stream" g::priority_half_closed;
        "generic/2/4" "RST_STREAM on half-closed (remote) stream" g::rst_half_closed;
        "generic/2/5" "PRIORITY on closed stream" g::priority_closed;
        "generic/3.1/1" "DATA frame" g::data;
        "generic/3.1/2" "multiple DATA frames" g::data_many;
        "generic/3.1/3" "DATA frame with padding" g::data_padded;
        "generic/3.2/1" "HEADERS frame" g::headers;
        "generic/3.2/2" "HEADERS frame with padding" g::headers_padded;
        "generic/3.2/3" "HEADERS frame with priority" g::headers_with_priority;
        "generic/3.3/1" "PRIORITY with weight 1" g::priority_weight_1;
        "generic/3.3/2" "PRIORITY with weight 256" g::priority_weight_256;
        "generic/3.3/3" "PRIORITY with a stream dependency" g::priority_dependency;
        "generic/3.3/4" "PRIORITY exclusive" g::priority_exclusive;
        "generic/3.3/5" "PRIORITY on an idle stream, then HEADERS on a lower id" g::priority_idle_then_lower_headers;
        "generic/3.4/1" "RST_STREAM frame" g::rst_stream;
        "generic/3.5/1" "SETTINGS frame" g::settings;
        "generic/3.7/1" "PING frame" b::ping;
        "generic/3.8/1" "GOAWAY frame" g::goaway;
        "generic/3.9/1" "WINDOW_UPDATE on stream 0" g::window_update_connection;
        "generic/3.9/2" "WINDOW_UPDATE on stream 1" g::window_update_stream;
        "generic/3.10/1" "CONTINUATION frame" g::continuation;
        "generic/3.10/2" "multiple CONTINUATION frames" b::continuations;
        "generic/4/1" "GET request" g::get;
        "generic/4/2" "HEAD request" g::head;
        "generic/4/3" "POST request" g::post;
        "generic/4/4" "POST request with trailers" g::post_trailers;
        "http2/3.5/1" "client connection preface" a::preface_valid;
        "http2/3.5/2" "invalid connection preface" a::preface_invalid;
        "http2/4.1/1" "frame with unknown type" a::unknown_frame_type;
        "http2/4.1/2" "frame with undefined flag" a::undefined_flag;
        "http2/4.1/3" "frame with reserved field bit" a::reserved_bit;
        "http2/4.2/1" "DATA frame of 2^14 octets" a::data_max_frame;
        "http2/4.2/2" "DATA frame over SETTINGS_MAX_FRAME_SIZE" a::data_over_max_frame;
        "http2/4.2/3" "HEADERS frame over SETTINGS_MAX_FRAME_SIZE" a::headers_over_max_frame;
        "http2/4.3/1" "invalid header block fragment" a::invalid_block;
        "http2/4.3/2" "PRIORITY inside a header block" a::priority_inside_block;
        "http2/4.3/3" "HEADERS on another stream inside a header block" a::headers_other_stream_inside_block;
        "http2/5.1/1" "idle: DATA" a::idle_data;
        "http2/5.1/2" "idle: RST_STREAM" a::idle_rst;
        "http2/5.1/3" "idle: WINDOW_UPDATE" a::idle_window_update;
        "http2/5.1/4" "idle: CONTINUATION" a::idle_continuation;
        "http2/5.1/5" "half closed (remote): DATA" a::half_closed_data;
        "http2/5.1/6" "half closed (remote): HEADERS" a::half_closed_headers;
        "http2/5.1/7" "half closed (remote): CONTINUATION" a::half_closed_continuation;
        "http2/5.1/8" "closed: DATA after RST_STREAM" a::closed_rst_data;
        "http2/5.1/9" "closed: HEADERS after RST_STREAM" a::closed_rst_headers;
        "http2/5.1/10" "closed: CONTINUATION after RST_STREAM" a::closed_rst_continuation;
        "http2/5.1/11" "closed: DATA" a::closed_data;
        "http2/5.1/12" "closed: HEADERS" a::closed_headers;
        "http2/5.1/13" "closed: CONTINUATION" a::closed_continuation;
        "http2/5.1.1/1" "even-numbered stream identifier" a::even_stream_id;
        "http2/5.1.1/2" "stream identifier smaller than a previous one" a::smaller_stream_id;
        "http2/5.1.2/1" "streams past SETTINGS_MAX_CONCURRENT_STREAMS" a::over_concurrency;
        "http2/5.3.1/1" "HEADERS depending on itself" a::headers_self_dependent;
        "http2/5.3.1/2" "PRIORITY depending on itself" a::priority_self_dependent;
        "http2/5.3.1/3" "HEADERS depending on itself, block continued" a::headers_self_dependent_continued;
        "http2/5.4.1/1" "connection error closes the connection" a::error_closes;
        "http2/5.4.1/2" "connection error sends GOAWAY" a::error_goaway;
        "http2/5.5/1" "unknown extension frame" a::unknown_extension_frame;
        "http2/5.5/2" "unknown extension frame inside a header block" a::unknown_extension_inside_block;
        "http2/6.1/1" "DATA on stream 0" b::data_stream_zero;
        "http2/6.1/2" "DATA on a stream not open" b::data_not_open;
        "http2/6.1/3" "DATA with invalid pad length" b::data_bad_padding;
        "http2/6.2/1" "HEADERS without END_HEADERS, then PRIORITY" b::headers_then_priority;
        "http2/6.2/2" "HEADERS to another stream inside a header block" b::headers_then_other_headers;
        "http2/6.2/3" "HEADERS on stream 0" b::headers_stream_zero;
        "http2/6.2/4" "HEADERS with invalid pad length" b::headers_bad_padding;
        "http2/6.3/1" "PRIORITY on stream 0" b::priority_stream_zero;
        "http2/6.3/2" "PRIORITY with a length other than 5" b::priority_bad_length;
        "http2/6.4/1" "RST_STREAM on stream 0" b::rst_stream_zero;
        "http2/6.4/2" "RST_STREAM on an idle stream" b::rst_idle;
        "http2/6.4/3" "RST_STREAM with a length other than 4" b::rst_bad_length;
        "http2/6.5/1" "SETTINGS ACK with a payload" b::settings_ack_with_payload;
        "http2/6.5/2" "SETTINGS on a stream" b::settings_on_stream;
        "http2/6.5/3" "SETTINGS with a length not a multiple of 6" b::settings_bad_length;
        "http2/6.5.2/1" "SETTINGS_ENABLE_PUSH other than 0 or 1" b::settings_enable_push_2;
        "http2/6.5.2/2" "SETTINGS_INITIAL_WINDOW_SIZE above 2^31-1" b::settings_window_too_large;
        "http2/6.5.2/3" "SETTINGS_MAX_FRAME_SIZE below 2^14" b::settings_max_frame_too_small;
        "http2/6.5.2/4" "SETTINGS_MAX_FRAME_SIZE above 2^24-1" b::settings_max_frame_too_large;
        "http2/6.5.2/5" "SETTINGS with an unknown identifier" b::settings_unknown_id;
        "http2/6.5.3/1" "several values of SETTINGS_INITIAL_WINDOW_SIZE" b::settings_repeated_window;
        "http2/6.5.3/2" "SETTINGS without ACK is acknowledged" b::settings_is_acked;
        "http2/6.7/1" "PING" b::ping;
        "http2/6.7/2" "PING with ACK is not answered" b::ping_ack_ignored;
        "http2/6.7/3" "PING on a stream" b::ping_on_stream;
        "http2/6.7/4" "PING with a length other than 8" b::ping_bad_length;
        "http2/6.8/1" "GOAWAY on a stream" b::goaway_on_stream;
        "http2/6.9/1" "WINDOW_UPDATE with increment 0" b::window_zero_increment;
        "http2/6.9/2" "WINDOW_UPDATE with increment 0 on a stream" b::window_zero_increment_stream;
        "http2/6.9/3" "WINDOW_UPDATE with a length other than 4" b::window_bad_length;
        "http2/6.9.1/1" "initial window of 1, then HEADERS" b::window_one_byte;
        "http2/6.9.1/2" "connection window past 2^31-1" b::window_overflow;
        "http2/6.9.1/3" "stream window past 2^31-1" b::window_overflow_stream;
        "http2/6.9.2/1" "SETTINGS_INITIAL_WINDOW_SIZE changed after HEADERS" b::window_changed_after_headers;
        "http2/6.9.2/2" "a negative stream window" b::window_negative;
        "http2/6.9.2/3" "SETTINGS_INITIAL_WINDOW_SIZE of 2^31" b::window_setting_too_large;
        "http2/6.10/1" "CONTINUATION frames after HEADERS" b::continuations;
        "http2/6.10/2" "CONTINUATION followed by another frame" b::continuation_then_other;
        "http2/6.10/3" "CONTINUATION on stream 0" b::continuation_stream_zero;
        "http2/6.10/4" "CONTINUATION after HEADERS with END_HEADERS" b::continuation_after_end_headers;
        "http2/6.10/5" "CONTINUATION after CONTINUATION with END_HEADERS" b::continuation_after_ended_continuation;
        "http2/6.10/6" "CONTINUATION after DATA" b::continuation_after_data;
        "http2/7/1" "GOAWAY with an unknown error code" c::goaway_unknown_code;
        "http2/7/2" "RST_STREAM with an unknown error code" c::rst_unknown_code;
        "http2/8.1/1" "second HEADERS without END_STREAM" c::second_headers_without_end_stream;
        "http2/8.1/2" "trailers with a pseudo-header field" c::trailers_with_pseudo_header;
        "http2/8.1.2/1" "field name in upper case" c::uppercase_name;
        "http2/8.1.2.1/1" "unknown pseudo-header field" c::unknown_pseudo;
        "http2/8.1.2.1/2" "response pseudo-header field in a request" c::response_pseudo;
        "http2/8.1.2.1/3" "pseudo-header field after a regular field" c::pseudo_after_regular;
        "http2/8.1.2.2/1" "connection-specific field (connection)" c::connection_field;
        "http2/8.1.2.2/2" "TE other than trailers" c::te_not_trailers;
        "http2/8.1.2.2/3" "connection-specific field (transfer-encoding)" c::transfer_encoding_field;
        "http2/8.1.2.2/4" "connection-specific field (upgrade)" c::upgrade_field;
        "http2/8.1.2.2/5" "connection-specific field (keep-alive)" c::keep_alive_field;
        "http2/8.1.2.2/6" "connection-specific field (proxy-connection)" c::proxy_connection_field;
        "http2/8.1.2.3/1" "empty :path" c::empty_path;
        "http2/8.1.2.3/2" "no :method" c::no_method;
        "http2/8.1.2.3/3" "no :scheme" c::no_scheme;
        "http2/8.1.2.3/4" "no :path" c::no_path;
        "http2/8.1.2.3/5" "duplicated :method" c::duplicate_method;
        "http2/8.1.2.3/6" "duplicated :scheme" c::duplicate_scheme;
        "http2/8.1.2.3/7" "duplicated :path" c::duplicate_path;
        "http2/8.1.2.3/8" "duplicated :authority" c::duplicate_authority;
        "http2/8.1.2.3/9" ":path not in origin-form" c::relative_path;
        "http2/8.1.2.3/10" "CONNECT with :scheme and :path" c::connect_with_path;
        "http2/8.1.2.6/1" "content-length unlike the DATA length" c::length_one_frame;
        "http2/8.1.2.6/2" "content-length unlike the sum of DATA lengths" c::length_many_frames;
        "http2/8.1.2.6/3" "content-length above the body sent" c::length_short_body;
        "http2/8.1.2.6/4" "content-length with END_STREAM on HEADERS" c::length_no_body;
        "http2/8.2/1" "PUSH_PROMISE from a client" c::push_promise_from_client;
        "http2/flood/1" "rapid reset (CVE-2023-44487)" c::rapid_reset;
        "http2/flood/2" "endless CONTINUATION (CVE-2024-27316)" c::endless_continuation;
        "hpack/2.3.3/1" "indexed field with an invalid index" g::indexed_invalid;
        "hpack/2.3.3/2" "literal field with an invalid name index" g::literal_invalid_index;
        "hpack/4.2/1" "table size update at the end of a block" g::size_update_at_end;
        "hpack/4.2/2" "server acknowledges a smaller SETTINGS_HEADER_TABLE_SIZE" g::encoder_acknowledges_smaller_table;
        "hpack/5.1/1" "integer overflow" g::integer_overflow;
        "hpack/5.1/2" "string length past the block" g::string_length_overflow;
        "hpack/5.1/3" "string cut short" g::string_past_block;
        "hpack/5.2/1" "Huffman padding longer than 7 bits" g::huffman_long_padding;
        "hpack/5.2/2" "Huffman padding of zeros" g::huffman_zero_padding;
        "hpack/5.2/3" "Huffman string containing EOS" g::huffman_eos;
        "hpack/6.1/1" "indexed field with index 0" g::indexed_zero;
        "hpack/6.3/1" "table size update above SETTINGS_HEADER_TABLE_SIZE" g::size_update_over_setting;
        "hpack/6.3/2" "table size update at the start is accepted" g::size_update_accepted;
    }
}

/// Where the suite connects.
pub enum Target {
    H2c(SocketAddr),
    Tls(SocketAddr),
}

impl Target {
    async fn connect(&self) -> Conn {
        match self {
            Target::H2c(addr) => {
                let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
                tcp.set_nodelay(true).unwrap();
                Conn::new(Box::new(tcp) as Box<dyn Io>, "http", addr.to_string())
            }
            Target::Tls(addr) => {
                let (_, alpn, tls) = crate::tls_e2e::handshake(*addr, "a.test").await;
                assert_eq!(alpn.as_deref(), Some(&b"h2"[..]), "ALPN did not choose h2");
                Conn::new(Box::new(tls) as Box<dyn Io>, "https", "a.test".to_owned())
            }
        }
    }

    /// A fresh connection's GET is answered.
    async fn serves(&self) -> CaseResult {
        let mut c = self.connect().await;
        c.handshake().await?;
        c.get(1).await;
        c.headers(1)
            .await
            .map(drop)
            .map_err(|e| format!("afterwards, a fresh request: {e}"))
    }
}

/// Runs every case against `target`; the ids and reasons of those that
/// failed. Every line of the report is printed.
pub async fn run_all(target: &Target, name: &str) -> Vec<(&'static str, String)> {
    let mut failed = Vec::new();
    let cases = all();
    for case in &cases {
        let mut c = target.connect().await;
        let mut outcome = tokio::time::timeout(Duration::from_secs(20), (case.run)(&mut c))
            .await
            .unwrap_or_else(|_| Err("the case did not finish in 20 s".into()));
        drop(c);
        if outcome.is_ok() {
            outcome = target.serves().await;
        }
        match outcome {
            Ok(()) => println!("{name} {:<18} ok    {}", case.id, case.desc),
            Err(why) => {
                println!("{name} {:<18} FAIL  {}: {why}", case.id, case.desc);
                failed.push((case.id, why));
            }
        }
    }
    println!("{name}: {} of {} cases passed", cases.len() - failed.len(), cases.len());
    failed
}

pub fn sluice_config(dir: &std::path::Path, blue: SocketAddr, engine: &str) -> String {
    format!(
        "[proxy]\nlisten = \"127.0.0.1:0\"\nengine = \"{engine}\"\n[proxy.tls]\nlisten = \"127.0.0.1:0\"\n[[proxy.tls.certificates]]\n\
         cert = \"file:{d}/a.crt\"\nkey = \"file:{d}/a.key\"\n[admin]\nlisten = \"127.0.0.1:0\"\n\
         [store]\nurl = \"sqlite://{d}/sluice.db\"\n{}",
        pool_toml("blue", 100, &[blue]),
        d = dir.display()
    )
}

/// The binary with `engine`, over h2c and TLS; the cases failed on each.
async fn run_engine(engine: &str) -> (Vec<&'static str>, Vec<&'static str>, String) {
    let blue = spawn_backend("blue", "v1", any_addr()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    crate::tls_e2e::write_pair(dir.path(), "a", "a.test");
    let sluice = Running::start(dir.path(), &sluice_config(dir.path(), blue.addr, engine), &[]);
    let h2c = run_all(&Target::H2c(sluice.addr), &format!("{engine} h2c")).await;
    let tls = run_all(&Target::Tls(sluice.tls.unwrap()), &format!("{engine} tls")).await;
    let why = format!("h2c: {h2c:#?}\ntls: {tls:#?}");
    let ids = |v: Vec<(&'static str, String)>| v.into_iter().map(|(id, _)| id).collect();
    (ids(h2c), ids(tls), why)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sluice_passes_every_case_over_h2c_and_tls() {
    let (h2c, tls, why) = run_engine("sluice").await;
    assert!(h2c.is_empty() && tls.is_empty(), "{why}");
}

/// Cases hyper's HTTP/2 server (the `h2` crate) answers differently from
/// what the case requires, and why; docs/security.md lists the same.
pub const HYPER_DIFFERS: &[(&str, &str)] = &[
    ("http2/4.3/1", COMPRESSION),
    ("http2/5.1/5", CLOSED),
    ("http2/5.1/6", CLOSED),
    ("http2/5.1/9", CLOSED),
    ("http2/5.1/12", CLOSED),
    ("http2/6.1/2", CLOSED),
    ("http2/6.3/2", FRAME_SIZE),
    ("http2/6.4/3", FRAME_SIZE),
    ("http2/6.5/1", FRAME_SIZE),
    ("http2/6.5/3", FRAME_SIZE),
    ("http2/6.5.2/2", FLOW),
    ("http2/6.7/4", FRAME_SIZE),
    ("http2/6.9/3", FRAME_SIZE),
    ("http2/6.9.2/3", FLOW),
    ("http2/8.1/2", TRAILERS),
    ("hpack/2.3.3/1", COMPRESSION),
    ("hpack/2.3.3/2", COMPRESSION),
    ("hpack/4.2/1", COMPRESSION),
    ("hpack/5.1/1", COMPRESSION),
    ("hpack/5.1/2", COMPRESSION),
    ("hpack/5.1/3", COMPRESSION),
    ("hpack/5.2/1", COMPRESSION),
    ("hpack/5.2/2", COMPRESSION),
    ("hpack/5.2/3", COMPRESSION),
    ("hpack/6.1/1", COMPRESSION),
    ("hpack/6.3/1", COMPRESSION),
];
const COMPRESSION: &str =
    "the h2 crate ends the connection with PROTOCOL_ERROR where RFC 9113 §4.3 requires COMPRESSION_ERROR";
const FRAME_SIZE: &str =
    "the h2 crate ends the connection with PROTOCOL_ERROR where RFC 9113 §4.2/§6 require FRAME_SIZE_ERROR";
const FLOW: &str =
    "the h2 crate ends the connection with PROTOCOL_ERROR where RFC 9113 §6.5.2 requires FLOW_CONTROL_ERROR";
const CLOSED: &str = "the h2 crate ends the connection with PROTOCOL_ERROR where RFC 9113 §5.1 requires STREAM_CLOSED";
const TRAILERS: &str =
    "the h2 crate passes trailers carrying a pseudo-header field on instead of resetting the stream (RFC 9113 §8.1)";

/// `proxy.engine = "hyper"`: the same suite, hyper's differences listed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hyper_engine_passes_but_for_the_listed_cases() {
    let (h2c, tls, why) = run_engine("hyper").await;
    let expected: Vec<&str> = HYPER_DIFFERS.iter().map(|(id, _)| *id).collect();
    assert_eq!(h2c, expected, "{why}");
    assert_eq!(tls, expected, "{why}");
}

/// Cases nghttpd (nghttp2) answers differently from what the case
/// requires, and why; docs/security.md lists the same.
pub const NGHTTPD_DIFFERS: &[(&str, &str)] = &[
    (
        "http2/5.1.1/2",
        "nghttp2 takes the skipped id 3 as implicitly closed (RFC 9113 §5.1.1) and ignores HEADERS on it; \
         h2spec and sluice answer PROTOCOL_ERROR, as for any stream id below one already opened",
    ),
    (
        "http2/flood/1",
        "Debian's nghttp2 1.52 predates the rapid-reset limit of nghttp2 1.57: it serves and resets \
         1000 streams without a GOAWAY",
    ),
    (
        "http2/flood/2",
        "nghttp2 closes the connection without the GOAWAY (ENHANCE_YOUR_CALM) RFC 9113 §5.4.1 says \
         it SHOULD send first",
    ),
];

/// The suite run against nghttpd (Debian's nghttp2-server) calibrates it:
/// an independent server passes it, but for the cases listed above.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nghttpd_calibrates_the_suite() {
    let present = runs("nghttpd", "--version");
    if !tool_present(present, "nghttpd (apt install nghttp2-server)") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("index.html"),
        "<p>nghttpd calibration page, long enough for the window cases</p>\n",
    )
    .unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = std::process::Command::new("nghttpd")
        .args(["--no-tls", "-a", "127.0.0.1", "-d"])
        .arg(dir.path())
        .arg(port.to_string())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while tokio::net::TcpStream::connect(addr).await.is_err() {
        assert!(tokio::time::Instant::now() < deadline, "nghttpd did not listen");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let failed = run_all(&Target::H2c(addr), "nghttpd").await;
    let _ = child.kill();
    let _ = child.wait();
    let ids: Vec<&str> = failed.iter().map(|(id, _)| *id).collect();
    let expected: Vec<&str> = NGHTTPD_DIFFERS.iter().map(|(id, _)| *id).collect();
    assert_eq!(ids, expected, "nghttpd's differences changed: {failed:#?}");
}
