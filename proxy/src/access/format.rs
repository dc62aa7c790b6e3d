//! An entry as a line: JSON (the field names in docs/operations.md) or
//! nginx's and Apache's combined format followed by sluice's fields as
//! `key=value`, so existing log tooling parses the start of each line.

use std::io::Write as _;
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

fn ms(d: Duration) -> f64 {
    (d.as_micros() as f64) / 1000.0
}

fn json(e: &Entry, out: &mut Vec<u8>) {
    out.extend_from_slice(b"{\"ts\":\"");
    rfc3339(e.at, out);
    out.extend_from_slice(b"\",\"client\":\"");
    let _ = write!(out, "{}", e.client);
    out.extend_from_slice(b"\",\"method\":");
    json_str(e.method.as_str(), out);
    out.extend_from_slice(b",\"path\":");
    json_str(path(e), out);
    let _ = write!(out, ",\"protocol\":\"{}\",\"status\":{}", protocol(e.version), e.status);
    out.extend_from_slice(b",\"pool\":");
    json_opt(e.pool.as_deref(), out);
    out.extend_from_slice(b",\"version\":");
    json_opt(e.pool_version.as_deref(), out);
    out.extend_from_slice(b",\"backend\":");
    json_opt(e.backend.as_ref().map(|b| b.addr()), out);
    let _ = write!(out, ",\"duration_ms\":{}", ms(e.duration));
    out.extend_from_slice(b",\"upstream_ms\":");
    match e.upstream {
        Some(d) => {
            let _ = write!(out, "{}", ms(d));
        }
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"bytes_in\":");
    match e.bytes_in {
        Some(n) => {
            let _ = write!(out, "{n}");
        }
        None => out.extend_from_slice(b"null"),
    }
    let _ = write!(out, ",\"bytes_out\":{}", e.bytes_out);
    out.extend_from_slice(b",\"request_id\":");
    json_value(e.request_id.as_ref(), out);
    out.extend_from_slice(b",\"trace_id\":");
    json_value(e.trace_id.as_ref(), out);
    out.extend_from_slice(b",\"error\":");
    json_opt(e.error, out);
    out.extend_from_slice(b",\"retries\":0");
    if let Some(code) = e.grpc_status {
        let _ = write!(out, ",\"grpc_status\":{code}");
    }
    out.push(b'}');
}

fn json_str(s: &str, out: &mut Vec<u8>) {
    // serde_json escapes quotes, backslashes and control characters.
    if serde_json::to_writer(&mut *out, s).is_err() {
        out.extend_from_slice(b"null");
    }
}

fn json_opt(s: Option<&str>, out: &mut Vec<u8>) {
    match s {
        Some(s) => json_str(s, out),
        None => out.extend_from_slice(b"null"),
    }
}

/// A header value may hold bytes that are not UTF-8 (obs-text): they are
/// written as U+FFFD so every line stays valid JSON.
fn json_value(v: Option<&HeaderValue>, out: &mut Vec<u8>) {
    match v {
        Some(v) => json_str(&String::from_utf8_lossy(v.as_bytes()), out),
        None => out.extend_from_slice(b"null"),
    }
}

fn combined(e: &Entry, out: &mut Vec<u8>) {
    let _ = write!(out, "{} - - [", e.client);
    clf_time(e.at, out);
    out.extend_from_slice(b"] \"");
    escaped(e.method.as_str().as_bytes(), out);
    out.push(b' ');
    escaped(path(e).as_bytes(), out);
    let _ = write!(out, " {}\" {} ", protocol(e.version), e.status);
    // As nginx's $body_bytes_sent: 0 when nothing was sent.
    let _ = write!(out, "{} \"", e.bytes_out);
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
        Some(d) => {
            let _ = write!(out, "{}", ms(d));
        }
        None => out.push(b'-'),
    }
    let _ = write!(out, " duration_ms={} request_id=\"", ms(e.duration));
    quoted_value(e.request_id.as_ref(), out);
    out.extend_from_slice(b"\" error=\"");
    escaped(e.error.unwrap_or("-").as_bytes(), out);
    out.push(b'"');
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
    for &b in bytes {
        if b == b'"' || b == b'\\' || !(0x20..0x7f).contains(&b) {
            let _ = write!(out, "\\x{b:02X}");
        } else {
            out.push(b);
        }
    }
}

/// Days since 1970-01-01 → (year, month, day), after Howard Hinnant's
/// `civil_from_days`.
fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// (date, seconds into the day, milliseconds) of a wall-clock time in UTC.
fn utc(at: SystemTime) -> ((i64, u32, u32), u64, u32) {
    let since = at.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    (civil((secs / 86_400) as i64), secs % 86_400, since.subsec_millis())
}

/// `2026-12-07T01:40:12.345Z`.
fn rfc3339(at: SystemTime, out: &mut Vec<u8>) {
    let ((y, mo, d), s, ms) = utc(at);
    let _ = write!(
        out,
        "{y:04}-{mo:02}-{d:02}T{:02}:{:02}:{:02}.{ms:03}Z",
        s / 3600,
        s / 60 % 60,
        s % 60
    );
}

/// `07/Dec/2026:01:40:12 +0000`, as nginx's `$time_local` in UTC.
fn clf_time(at: SystemTime, out: &mut Vec<u8>) {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let ((y, mo, d), s, _) = utc(at);
    let month = MONTHS.get(mo.saturating_sub(1) as usize).copied().unwrap_or("Jan");
    let _ = write!(
        out,
        "{d:02}/{month}/{y:04}:{:02}:{:02}:{:02} +0000",
        s / 3600,
        s / 60 % 60,
        s % 60
    );
}

#[cfg(test)]
#[path = "format_tests.rs"]
mod tests;
