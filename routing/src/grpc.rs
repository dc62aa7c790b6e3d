//! gRPC status codes and the headers that carry them. A gRPC call's HTTP
//! status is 200 for almost every failure; its outcome is `grpc-status`, in
//! the trailers (or in the head of a Trailers-Only response). Calls are
//! counted with the HTTP status their code maps to — the mapping Envoy
//! uses — so windows, the guard, outlier detection and
//! `sluice_requests_total{code}` see gRPC failures.

use std::time::Duration;

use http::HeaderMap;
use http::header::{CONTENT_TYPE, HeaderName, HeaderValue};

pub const GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");
pub const GRPC_MESSAGE: HeaderName = HeaderName::from_static("grpc-message");

/// The status codes' names (the index is the code), as gRPC spells them.
pub const CODE_NAMES: [&str; 17] = [
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];

/// Codes a client sees for sluice's own failures.
pub const UNKNOWN: u8 = 2;
pub const DEADLINE_EXCEEDED: u8 = 4;
pub const RESOURCE_EXHAUSTED: u8 = 8;
pub const INTERNAL: u8 = 13;
pub const UNAVAILABLE: u8 = 14;
/// A call the client gave up on.
pub const CANCELLED: u8 = 1;

/// Whether a message is gRPC: `application/grpc`, `application/grpc+proto`
/// and the like (not gRPC-Web, whose status travels in the body).
pub fn is_grpc(headers: &HeaderMap) -> bool {
    headers.get(CONTENT_TYPE).is_some_and(|v| {
        let v = v.as_bytes();
        v.get(..16).is_some_and(|p| p.eq_ignore_ascii_case(b"application/grpc"))
            && matches!(v.get(16), None | Some(b'+' | b';'))
    })
}

/// The `grpc-status` in `headers`: `None` when absent; an unknown or
/// malformed value reads as UNKNOWN, as gRPC clients read it.
pub fn status_of(headers: &HeaderMap) -> Option<u8> {
    let value = headers.get(GRPC_STATUS)?;
    Some(
        std::str::from_utf8(value.as_bytes())
            .ok()
            .and_then(|s| s.parse::<u8>().ok())
            .filter(|&c| usize::from(c) < CODE_NAMES.len())
            .unwrap_or(UNKNOWN),
    )
}

/// The HTTP status a gRPC code counts as (Envoy's `grpcToHttpStatus`).
pub fn http_status(code: u8) -> u16 {
    match code {
        0 => 200,
        1 => 499,
        3 | 9 | 11 => 400,
        4 => 504,
        5 => 404,
        6 | 10 => 409,
        7 => 403,
        8 => 429,
        12 => 501,
        14 => 503,
        16 => 401,
        _ => 500,
    }
}

/// The code a client gets when sluice itself fails a gRPC call with
/// `status`.
pub fn code_for_status(status: u16) -> u8 {
    match status {
        504 => DEADLINE_EXCEEDED,
        429 => RESOURCE_EXHAUSTED,
        502 | 503 => UNAVAILABLE,
        _ => INTERNAL,
    }
}

/// A header value for code `code`.
pub fn status_value(code: u8) -> HeaderValue {
    HeaderValue::from(u16::from(code))
}

pub const GRPC_TIMEOUT: HeaderName = HeaderName::from_static("grpc-timeout");

/// A call's `grpc-timeout`: at most 8 digits and a unit (`H`, `M`, `S`,
/// `m`, `u`, `n`), per the gRPC HTTP/2 protocol; anything else is no
/// deadline (as gRPC servers read it).
pub fn timeout_of(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(GRPC_TIMEOUT)?.as_bytes();
    let (unit, digits) = value.split_last()?;
    if digits.is_empty() || digits.len() > 8 {
        return None;
    }
    let n = digits.iter().try_fold(0u64, |n, &b| {
        let d = b.checked_sub(b'0').filter(|d| *d <= 9)?;
        Some(n * 10 + u64::from(d))
    })?;
    Some(match unit {
        b'H' => Duration::from_secs(n * 3600),
        b'M' => Duration::from_secs(n * 60),
        b'S' => Duration::from_secs(n),
        b'm' => Duration::from_millis(n),
        b'u' => Duration::from_micros(n),
        b'n' => Duration::from_nanos(n),
        _ => return None,
    })
}

/// `timeout` as a `grpc-timeout` value: milliseconds (rounded up, so a
/// deadline is never shortened by the encoding), or whole seconds when
/// that needs more than the protocol's 8 digits.
pub fn timeout_value(timeout: Duration) -> HeaderValue {
    let ms = timeout.as_nanos().div_ceil(1_000_000);
    let text = if ms <= 99_999_999 {
        format!("{ms}m")
    } else {
        format!("{}S", timeout.as_secs().min(99_999_999))
    };
    HeaderValue::from_str(&text).unwrap_or(HeaderValue::from_static("99999999S"))
}

/// Whether code `code` is the server's failure (what the guard and
/// outlier detection count): a 5xx by the mapping. Client-side codes
/// (INVALID_ARGUMENT, NOT_FOUND, CANCELLED, …) never are.
pub fn server_failed(code: u8) -> bool {
    http_status(code) >= 500
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_content_types_are_recognised() {
        let ct = |v: &'static str| {
            let mut h = HeaderMap::new();
            h.insert(CONTENT_TYPE, HeaderValue::from_static(v));
            is_grpc(&h)
        };
        assert!(ct("application/grpc"));
        assert!(ct("application/grpc+proto"));
        assert!(ct("Application/GRPC;charset=x"));
        assert!(!ct("application/grpc-web"));
        assert!(!ct("application/grpcx"));
        assert!(!ct("application/json"));
        assert!(!is_grpc(&HeaderMap::new()));
    }

    #[test]
    fn timeouts_are_read_as_the_protocol_writes_them() {
        let t = |v: &'static str| {
            let mut h = HeaderMap::new();
            h.insert(GRPC_TIMEOUT, HeaderValue::from_static(v));
            timeout_of(&h)
        };
        assert_eq!(t("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(t("2M"), Some(Duration::from_secs(120)));
        assert_eq!(t("30S"), Some(Duration::from_secs(30)));
        assert_eq!(t("250m"), Some(Duration::from_millis(250)));
        assert_eq!(t("99999999u"), Some(Duration::from_micros(99_999_999)));
        assert_eq!(t("5n"), Some(Duration::from_nanos(5)));
        for bad in ["", "S", "123456789S", "10s", "1.5S", "-1S", "10"] {
            assert_eq!(t(bad), None, "{bad}");
        }
    }

    #[test]
    fn statuses_map_as_envoy_maps_them() {
        let status = |v: &'static str| {
            let mut h = HeaderMap::new();
            h.insert(GRPC_STATUS, HeaderValue::from_static(v));
            status_of(&h)
        };
        assert_eq!(status("0"), Some(0));
        assert_eq!(status("14"), Some(14));
        assert_eq!(status("17"), Some(UNKNOWN));
        assert_eq!(status("x"), Some(UNKNOWN));
        assert_eq!(status_of(&HeaderMap::new()), None);
        assert_eq!(http_status(14), 503);
        assert_eq!(http_status(13), 500);
        assert_eq!(http_status(4), 504);
        assert_eq!(http_status(5), 404);
        assert_eq!(http_status(3), 400);
        assert_eq!(http_status(8), 429);
        assert_eq!(http_status(12), 501);
        assert_eq!(code_for_status(503), UNAVAILABLE);
        assert_eq!(code_for_status(504), DEADLINE_EXCEEDED);
    }

    #[test]
    fn timeouts_are_written_as_the_protocol_reads_them() {
        let read = |v: HeaderValue| {
            let mut h = HeaderMap::new();
            h.insert(GRPC_TIMEOUT, v);
            timeout_of(&h)
        };
        assert_eq!(timeout_value(Duration::from_millis(400)), "400m");
        assert_eq!(timeout_value(Duration::from_micros(1500)), "2m", "rounded up");
        assert_eq!(timeout_value(Duration::from_secs(30)), "30000m");
        assert_eq!(timeout_value(Duration::from_secs(200_000)), "200000S");
        for d in [
            Duration::from_millis(1),
            Duration::from_secs(3600),
            Duration::from_secs(1_000_000),
        ] {
            assert_eq!(read(timeout_value(d)), Some(d));
        }
    }
}
