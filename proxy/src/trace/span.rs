//! A finished request's entry as an OpenTelemetry span: kind SERVER, named
//! by its method, with the HTTP semantic-convention attributes
//! (`http.request.method`, `url.path`, `http.response.status_code`,
//! `server.address`, …) and sluice's own (`sluice.pool`,
//! `sluice.version`, `sluice.backend`, `sluice.request_id`).

use std::borrow::Cow;

use http::{Method, Version};
use opentelemetry::trace::{SpanContext, SpanKind, Status, TraceState};
use opentelemetry::{InstrumentationScope, KeyValue, SpanId, TraceFlags, TraceId};
use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanLinks};

use super::context::parse;
use crate::access::entry::Entry;

pub(super) fn of(e: &Entry, scope: &InstrumentationScope) -> SpanData {
    let method = known_method(&e.method);
    let mut attributes = Vec::with_capacity(16);
    let mut put = |key: &'static str, value: opentelemetry::Value| attributes.push(KeyValue::new(key, value));
    put(
        "http.request.method",
        method.map_or_else(|| "_OTHER".into(), Into::into),
    );
    if method.is_none() {
        put("http.request.method_original", e.method.as_str().to_owned().into());
    }
    put("url.path", e.uri.path().to_owned().into());
    if let Some(query) = e.uri.query() {
        put("url.query", query.to_owned().into());
    }
    put("url.scheme", e.uri.scheme_str().unwrap_or("http").to_owned().into());
    put("network.protocol.version", protocol(e.version).into());
    if let Some((host, port)) = e.host.as_ref().and_then(|h| h.to_str().ok()).map(split_host) {
        put("server.address", host.to_owned().into());
        if let Some(port) = port {
            put("server.port", port.into());
        }
    }
    put("client.address", e.client.to_string().into());
    if let Some(agent) = e.user_agent.as_ref().and_then(|v| v.to_str().ok()) {
        put("user_agent.original", agent.to_owned().into());
    }
    put("http.response.status_code", i64::from(e.status).into());
    if let Some(code) = e.grpc_status {
        put("rpc.grpc.status_code", i64::from(code).into());
    }
    if let Some(pool) = &e.pool {
        put("sluice.pool", pool.to_string().into());
    }
    if let Some(version) = &e.pool_version {
        put("sluice.version", version.to_string().into());
    }
    if let Some(backend) = &e.backend {
        put("sluice.backend", backend.addr().to_string().into());
    }
    if let Some(id) = e.request_id.as_bytes() {
        put("sluice.request_id", String::from_utf8_lossy(id).into_owned().into());
    }
    if let Some(upstream) = e.upstream {
        put("sluice.upstream_ms", (upstream.as_secs_f64() * 1000.0).into());
    }
    // A server span is an error for a 5xx or sluice's own failure; a 4xx
    // is the client's (semantic conventions, HTTP server spans).
    let error = e
        .error
        .map(Cow::Borrowed)
        .or_else(|| (e.status >= 500).then(|| Cow::Owned(e.status.to_string())));
    let status = match &error {
        Some(kind) => Status::error(kind.clone()),
        None => Status::Unset,
    };
    if let Some(kind) = error {
        put("error.type", kind.into());
    }
    let trace = &e.trace;
    // sluice's own traceparent, written when the request came in.
    let own = parse(trace.value());
    SpanData {
        span_context: SpanContext::new(
            own.map_or(TraceId::INVALID, |p| TraceId::from_bytes(p.trace_id)),
            own.map_or(SpanId::INVALID, |p| SpanId::from_bytes(p.span_id)),
            TraceFlags::SAMPLED,
            false,
            TraceState::NONE,
        ),
        parent_span_id: SpanId::from_bytes(trace.parent),
        parent_span_is_remote: trace.parent != [0; 8],
        span_kind: SpanKind::Server,
        name: Cow::Borrowed(method.unwrap_or("HTTP")),
        start_time: e.at,
        end_time: e.at + e.duration,
        attributes,
        dropped_attributes_count: 0,
        events: SpanEvents::default(),
        links: SpanLinks::default(),
        status,
        instrumentation_scope: scope.clone(),
    }
}

/// The methods the semantic conventions know; others are `_OTHER`.
fn known_method(method: &Method) -> Option<&'static str> {
    Some(match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::PATCH => "PATCH",
        Method::CONNECT => "CONNECT",
        Method::TRACE => "TRACE",
        _ => return None,
    })
}

fn protocol(version: Version) -> &'static str {
    match version {
        Version::HTTP_09 => "0.9",
        Version::HTTP_10 => "1.0",
        Version::HTTP_2 => "2",
        Version::HTTP_3 => "3",
        _ => "1.1",
    }
}

/// `host[:port]` (an IPv6 literal in brackets) into its parts.
fn split_host(authority: &str) -> (&str, Option<i64>) {
    let (host, port) = match authority.rsplit_once(':') {
        Some((host, port)) if !port.contains(']') => (host, port.parse().ok()),
        _ => (authority, None),
    };
    (host.trim_start_matches('[').trim_end_matches(']'), port)
}

#[cfg(test)]
mod tests {
    use crate::trace::span::split_host;

    #[test]
    fn authorities_split_into_host_and_port() {
        assert_eq!(split_host("example.com"), ("example.com", None));
        assert_eq!(split_host("example.com:8080"), ("example.com", Some(8080)));
        assert_eq!(split_host("[::1]:443"), ("::1", Some(443)));
        assert_eq!(split_host("[::1]"), ("::1", None));
    }
}
