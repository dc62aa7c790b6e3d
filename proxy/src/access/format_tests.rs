use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::header::HeaderValue;
use http::{Method, Version};
use sluice_config::AccessLogFormat;

use super::super::entry::Entry;
use super::*;

fn id(text: &'static [u8]) -> crate::request_id::RequestId {
    crate::request_id::RequestId::Kept(HeaderValue::from_bytes(text).unwrap())
}

fn entry() -> Entry {
    Entry {
        // 2026-12-07T01:40:12.345Z
        at: UNIX_EPOCH + Duration::from_millis(1_796_607_612_345),
        started: tokio::time::Instant::now(),
        client: "192.0.2.7".parse().unwrap(),
        method: Method::GET,
        uri: "/search?q=a%20b".parse().unwrap(),
        version: Version::HTTP_11,
        referer: None,
        user_agent: Some(HeaderValue::from_static("curl/8.5 \"quoted\"")),
        request_id: id(b"abc-123"),
        trace: Default::default(),
        host: None,
        status: 502,
        grpc_status: None,
        pool: Some(Arc::from("green")),
        pool_version: Some(Arc::from("v2")),
        backend: None,
        upstream: Some(Duration::from_micros(1500)),
        duration: Duration::from_micros(2250),
        bytes_in: Some(0),
        bytes_out: 17,
        error: Some("upstream-connect-failed"),
        retries: 0,
        sink: None,
        spans: None,
    }
}

fn text(format: AccessLogFormat, e: &Entry) -> String {
    let mut out = Vec::new();
    line(format, e, &mut out);
    String::from_utf8(out).unwrap()
}

#[test]
fn json_lines_carry_every_field_by_its_documented_name() {
    let text = text(AccessLogFormat::Json, &entry());
    assert!(text.ends_with("}\n") && text.matches('\n').count() == 1, "{text}");
    assert_eq!(
        text.trim_end(),
        r#"{"ts":"2026-12-07T01:40:12.345Z","client":"192.0.2.7","method":"GET","path":"/search?q=a%20b","protocol":"HTTP/1.1","status":502,"pool":"green","version":"v2","backend":null,"duration_ms":2.25,"upstream_ms":1.5,"bytes_in":0,"bytes_out":17,"request_id":"abc-123","trace_id":null,"error":"upstream-connect-failed","retries":0}"#
    );
}

#[test]
fn json_escapes_what_clients_send_and_keeps_lines_valid() {
    let mut e = entry();
    e.uri = "/a%22b".parse().unwrap();
    e.method = Method::from_bytes(b"PURGE").unwrap();
    e.user_agent = Some(HeaderValue::from_bytes(b"id\"\\\xff").unwrap());
    e.request_id = id(b"id\"\\");
    e.grpc_status = Some(14);
    let text = text(AccessLogFormat::Json, &e);
    assert!(text.contains(r#""request_id":"id\"\\""#), "{text}");
    assert!(text.contains(r#""method":"PURGE""#), "{text}");
    assert!(text.trim_end().ends_with(r#","grpc_status":14}"#), "{text}");
}

#[test]
fn combined_lines_start_as_nginx_writes_them() {
    let text = text(AccessLogFormat::Combined, &entry());
    assert_eq!(
        text.trim_end(),
        r#"192.0.2.7 - - [07/Dec/2026:01:40:12 +0000] "GET /search?q=a%20b HTTP/1.1" 502 17 "-" "curl/8.5 \x22quoted\x22" pool="green" version="v2" backend="-" upstream_ms=1.5 duration_ms=2.25 request_id="abc-123" error="upstream-connect-failed" retries=0"#
    );
}

#[test]
fn dates_are_the_calendar_s() {
    let at = |secs: u64| {
        let mut out = Vec::new();
        rfc3339(UNIX_EPOCH + Duration::from_secs(secs), &mut out);
        String::from_utf8(out).unwrap()
    };
    assert_eq!(at(0), "1970-01-01T00:00:00.000Z");
    assert_eq!(at(951_782_400), "2000-02-29T00:00:00.000Z");
    assert_eq!(at(4_107_542_399), "2100-02-28T23:59:59.000Z");
    let now = SystemTime::now();
    let mut out = Vec::new();
    rfc3339(now, &mut out);
    assert_eq!(out.len(), 24);
}

#[test]
fn milliseconds_are_written_as_json_numbers_to_the_microsecond() {
    for (micros, text) in [
        (0, "0"),
        (1, "0.001"),
        (17_000, "17"),
        (10_010, "10.01"),
        (1_500, "1.5"),
        (123_456_789, "123456.789"),
    ] {
        let mut out = Vec::new();
        ms(Duration::from_micros(micros), &mut out);
        assert_eq!(String::from_utf8(out).unwrap(), text);
    }
}
