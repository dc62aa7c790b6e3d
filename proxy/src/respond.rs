//! The responses sluice itself answers with when a request fails: the
//! error's status, code and message (from [`ProxyError`]) made into a
//! plain-text response, or a gRPC Trailers-Only one.

use bytes::Bytes;
use http::{HeaderValue, Response};
use sluice_routing::ProxyError;
use sluice_routing::grpc::{GRPC_MESSAGE, GRPC_STATUS, status_value};

use crate::body::ProxyBody;

/// The header naming why sluice, not the backend, produced a response.
pub const ERROR_HEADER: &str = "x-sluice-error";

/// A failure as the client sees it.
pub trait ErrorResponse {
    /// A short plain-text response; client errors also close the
    /// connection, since the rest of the byte stream can no longer be
    /// trusted.
    fn into_response(self, request_id: Option<&[u8]>) -> Response<ProxyBody>;

    /// sluice's own failure of a gRPC call, in gRPC's language: a
    /// Trailers-Only response (HTTP 200, `grpc-status` `code`, and
    /// `grpc-message` naming the error), `x-sluice-error` kept — so the
    /// client's retry policy sees the right code, as with Envoy.
    fn into_grpc_response(self, code: u8) -> Response<ProxyBody>;
}

impl ErrorResponse for ProxyError {
    fn into_response(self, request_id: Option<&[u8]>) -> Response<ProxyBody> {
        let body = Bytes::from(match request_id.and_then(|id| std::str::from_utf8(id).ok()) {
            Some(id) => format!("sluice: {self} (request id {id})\n"),
            None => format!("sluice: {self}\n"),
        });
        let mut res = Response::new(ProxyBody::full(body));
        *res.status_mut() = self.status();
        let h = res.headers_mut();
        h.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        h.insert(ERROR_HEADER, HeaderValue::from_static(self.code()));
        match self {
            // The stream is fine: a limited client may go on (when it waits).
            ProxyError::RateLimited { retry_after_secs } => {
                h.insert(http::header::RETRY_AFTER, HeaderValue::from(retry_after_secs));
            }
            ProxyError::BackendOverloaded | ProxyError::UpstreamOverloaded => {
                h.insert(http::header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            _ if self.status().is_client_error() || self == ProxyError::UnsupportedCoding => {
                h.insert(http::header::CONNECTION, HeaderValue::from_static("close"));
            }
            _ => {}
        }
        res
    }

    fn into_grpc_response(self, code: u8) -> Response<ProxyBody> {
        let mut res = Response::new(ProxyBody::empty());
        let h = res.headers_mut();
        h.insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
        h.insert(GRPC_STATUS, status_value(code));
        // The code is plain ASCII: nothing to percent-encode.
        if let Ok(message) = HeaderValue::from_str(&format!("sluice: {}", self.code())) {
            h.insert(GRPC_MESSAGE, message);
        }
        h.insert(ERROR_HEADER, HeaderValue::from_static(self.code()));
        res
    }
}
