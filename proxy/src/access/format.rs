//! An entry as a line: JSON (the field names in docs/operations.md) or
//! nginx's and Apache's combined format followed by sluice's fields as
//! `key=value`, so existing log tooling parses the start of each line.
//!
//! Written with `itoa` and byte copies rather than `core::fmt`, and the
//! time of day formatted once a second: callgrind put `write!` at more
//! than half the cost of a logged request.

use std::cell::RefCell;
use std::net::IpAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::Version;
use http::header::HeaderValue;
use sluice_config::AccessLogFormat;

use super::entry::Entry;

/// Appends `entry` as one line (ending in `\n`) to `out`.
pub(crate) fn line(format: AccessLogFormat, entry: &Entry, out: &mut Vec<u8>) {
    match format {
        AccessLogFormat::Json => json(entry, out),
        AccessLogFormat::Combined => combined(entry, out),
    }
    out.push(b'\n');
}

fn protocol(version: Version) -> &'static str {
    match version {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_2 => "HTTP/2.0",
        Version::HTTP_3 => "HTTP/3.0",
        _ => "HTTP/1.1",
    }
}

fn path(entry: &Entry) -> &str {
    entry.uri.path_and_query().map_or("/", |p| p.as_str())
}

fn int(n: impl itoa::Integer, out: &mut Vec<u8>) {
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

/// Milliseconds with microsecond precision and no trailing zeros:
/// `2.25`, `0.001`, `17`.
fn ms(d: Duration, out: &mut Vec<u8>) {
    let micros = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
    int(micros / 1000, out);
    let mut frac = (micros % 1000) as u32;
    if frac == 0 {
        return;
    }
    let mut digits = 3;
    while frac.is_multiple_of(10) {
        frac /= 10;
        digits -= 1;
    }
    out.push(b'.');
    let text = itoa::Buffer::new().format(frac).len();
    out.extend(std::iter::repeat_n(b'0', digits - text));
    int(frac, out);
}

fn ip(addr: IpAddr, out: &mut Vec<u8>) {
    match addr {
        IpAddr::V4(v4) => {
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    out.push(b'.');
                }
                int(octet, out);
            }
        }
        IpAddr::V6(v6) => out.extend_from_slice(v6.to_string().as_bytes()),
    }
}

fn json(e: &Entry, out: &mut Vec<u8>) {
    out.extend_from_slice(b"{\"ts\":\"");
    rfc3339(e.at, out);
    out.extend_from_slice(b"\",\"client\":\"");
    ip(e.client, out);
    out.extend_from_slice(b"\",\"method\":");
    json_str(e.method.as_str().as_bytes(), out);
    out.extend_from_slice(b",\"path\":");
    json_str(path(e).as_bytes(), out);
    out.extend_from_slice(b",\"protocol\":\"");
    out.extend_from_slice(protocol(e.version).as_bytes());
    out.extend_from_slice(b"\",\"status\":");
    int(e.status, out);
    out.extend_from_slice(b",\"pool\":");
    json_opt(e.pool.as_deref().map(str::as_bytes), out);
    out.extend_from_slice(b",\"version\":");
    json_opt(e.pool_version.as_deref().map(str::as_bytes), out);
    out.extend_from_slice(b",\"backend\":");
    json_opt(e.backend.as_ref().map(|b| b.addr().as_bytes()), out);
    out.extend_from_slice(b",\"duration_ms\":");
    ms(e.duration, out);
    out.extend_from_slice(b",\"upstream_ms\":");
    match e.upstream {
        Some(d) => ms(d, out),
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"bytes_in\":");
    match e.bytes_in {
        Some(n) => int(n, out),
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"bytes_out\":");
    int(e.bytes_out, out);
    out.extend_from_slice(b",\"request_id\":");
    json_opt(e.request_id.as_bytes(), out);
    out.extend_from_slice(b",\"trace_id\":");
    json_opt(e.trace.trace_id_hex(), out);
    out.extend_from_slice(b",\"error\":");
    json_opt(e.error.map(str::as_bytes), out);
    out.extend_from_slice(b",\"retries\":");
    int(e.retries, out);
    if let Some(code) = e.grpc_status {
        out.extend_from_slice(b",\"grpc_status\":");
        int(code, out);
    }
    out.push(b'}');
}

/// A JSON string. Printable ASCII without quotes or backslashes (nearly
/// every path, id and address) is copied as it is; anything else goes
/// through serde_json's escaping, with bytes that are not UTF-8 (obs-text
/// in a header) as U+FFFD, so every line stays valid JSON.
fn json_str(bytes: &[u8], out: &mut Vec<u8>) {
    if bytes
        .iter()
        .all(|&b| PLAIN.get(usize::from(b)).copied().unwrap_or(false))
    {
        out.reserve(bytes.len() + 2);
        out.push(b'"');
        out.extend_from_slice(bytes);
        out.push(b'"');
        return;
    }
    let text = String::from_utf8_lossy(bytes);
    if serde_json::to_writer(&mut *out, text.as_ref()).is_err() {
        out.extend_from_slice(b"null");
    }
}

/// Bytes a JSON string holds as they are: printable ASCII but `"` and `\\`.
// Evaluated at compile time: an index out of range fails the build.
#[allow(clippy::indexing_slicing)]
static PLAIN: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0x20;
    while b < 0x7f {
        table[b] = b != b'"' as usize && b != b'\\' as usize;
        b += 1;
    }
    table
};

fn json_opt(bytes: Option<&[u8]>, out: &mut Vec<u8>) {
    match bytes {
        Some(b) => json_str(b, out),
        None => out.extend_from_slice(b"null"),
    }
}

fn combined(e: &Entry, out: &mut Vec<u8>) {
    ip(e.client, out);
    out.extend_from_slice(b" - - [");
    clf_time(e.at, out);
    out.extend_from_slice(b"] \"");
    escaped(e.method.as_str().as_bytes(), out);
    out.push(b' ');
    escaped(path(e).as_bytes(), out);
    out.push(b' ');
    out.extend_from_slice(protocol(e.version).as_bytes());
    out.extend_from_slice(b"\" ");
    int(e.status, out);
    // As nginx's $body_bytes_sent: 0 when nothing was sent.
    out.push(b' ');
    int(e.bytes_out, out);
    out.extend_from_slice(b" \"");
    quoted_value(e.referer.as_ref(), out);
    out.extend_from_slice(b"\" \"");
    quoted_value(e.user_agent.as_ref(), out);
    out.extend_from_slice(b"\" pool=\"");
    escaped(e.pool.as_deref().unwrap_or("-").as_bytes(), out);
    out.extend_from_slice(b"\" version=\"");
    escaped(e.pool_version.as_deref().unwrap_or("-").as_bytes(), out);
    out.extend_from_slice(b"\" backend=\"");
    escaped(e.backend.as_ref().map_or("-", |b| b.addr()).as_bytes(), out);
    out.extend_from_slice(b"\" upstream_ms=");
    match e.upstream {
        Some(d) => ms(d, out),
        None => out.push(b'-'),
    }
    out.extend_from_slice(b" duration_ms=");
    ms(e.duration, out);
    out.extend_from_slice(b" request_id=\"");
    escaped(e.request_id.as_bytes().unwrap_or(b"-"), out);
    out.extend_from_slice(b"\" error=\"");
    escaped(e.error.unwrap_or("-").as_bytes(), out);
    out.extend_from_slice(b"\" retries=");
    int(e.retries, out);
}

fn quoted_value(v: Option<&HeaderValue>, out: &mut Vec<u8>) {
    match v {
        Some(v) => escaped(v.as_bytes(), out),
        None => out.push(b'-'),
    }
}

/// As nginx escapes variables in its log: `"`, `\`, control bytes and
/// bytes past ASCII as `\xHH`, so a line is one line and its quotes close.
fn escaped(bytes: &[u8], out: &mut Vec<u8>) {
    let hex = |n: u8| if n < 10 { b'0' + n } else { b'A' + n - 10 };
    for &b in bytes {
        if b == b'"' || b == b'\\' || !(0x20..0x7f).contains(&b) {
            out.extend_from_slice(&[b'\\', b'x', hex(b >> 4), hex(b & 0xf)]);
        } else {
            out.push(b);
        }
    }
}

/// The second last formatted on this thread, in both layouts.
struct Second {
    at: u64,
    /// `2026-12-07T01:40:12.`
    rfc3339: Vec<u8>,
    /// `07/Dec/2026:01:40:12 +0000`
    clf: Vec<u8>,
}

thread_local! {
    static SECOND: RefCell<Second> = const {
        RefCell::new(Second { at: u64::MAX, rfc3339: Vec::new(), clf: Vec::new() })
    };
}

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// Appends the second of `at` in one of its layouts (formatted when the
/// second changes: humantime writes the calendar date, the combined
/// layout is cut from it) and returns its milliseconds.
fn with_second(at: SystemTime, clf: bool, out: &mut Vec<u8>) -> u32 {
    let since = at.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    SECOND.with_borrow_mut(|second| {
        if second.at != secs {
            second.at = secs;
            // `2026-12-07T01:40:12Z`
            let text = humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(secs)).to_string();
            let part = |range: std::ops::Range<usize>| text.get(range).unwrap_or("00");
            second.rfc3339.clear();
            second.rfc3339.extend_from_slice(text.trim_end_matches('Z').as_bytes());
            second.rfc3339.push(b'.');
            let month = part(5..7)
                .parse::<usize>()
                .ok()
                .and_then(|m| MONTHS.get(m.wrapping_sub(1)));
            let c = &mut second.clf;
            c.clear();
            c.extend_from_slice(part(8..10).as_bytes());
            c.push(b'/');
            c.extend_from_slice(month.copied().unwrap_or("Jan").as_bytes());
            c.push(b'/');
            c.extend_from_slice(part(0..4).as_bytes());
            c.push(b':');
            c.extend_from_slice(part(11..19).as_bytes());
            c.extend_from_slice(b" +0000");
        }
        out.extend_from_slice(if clf { &second.clf } else { &second.rfc3339 });
    });
    since.subsec_millis()
}

/// `2026-12-07T01:40:12.345Z`.
fn rfc3339(at: SystemTime, out: &mut Vec<u8>) {
    let ms = with_second(at, false, out);
    out.extend_from_slice(&[
        b'0' + (ms / 100 % 10) as u8,
        b'0' + (ms / 10 % 10) as u8,
        b'0' + (ms % 10) as u8,
        b'Z',
    ]);
}

/// `07/Dec/2026:01:40:12 +0000`, as nginx's `$time_local` in UTC.
fn clf_time(at: SystemTime, out: &mut Vec<u8>) {
    with_second(at, true, out);
}

#[cfg(test)]
#[path = "format_tests.rs"]
mod tests;
