//! Why an exchange with a backend failed, and what the client is told.

use sluice_routing::ProxyError;

use crate::http1::RawError;
use crate::request_body::RequestBodyError;

/// Why a request could not be exchanged with a backend.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("connect timed out")]
    ConnectTimeout,
    #[error("connect failed: {0}")]
    Connect(#[source] std::io::Error),
    #[error("TLS handshake with the backend failed: {0}")]
    Tls(#[source] std::io::Error),
    #[error("handshake failed: {0}")]
    Handshake(#[source] hyper::Error),
    #[error("exchange failed: {0}")]
    Exchange(#[source] hyper::Error),
    #[error("exchange failed: {0}")]
    Raw(#[source] RawError),
    #[error("HTTP/2 handshake failed: {0}")]
    H2Handshake(#[source] ::h2::Error),
    #[error("exchange failed: {0}")]
    H2(#[source] ::h2::Error),
    /// sluice's own HTTP/2 client.
    #[error("exchange failed: {0}")]
    H2Client(#[source] crate::h2client::H2Error),
    /// The client's body: read whole before a small request goes out, or
    /// failing while it streamed to an HTTP/2 backend.
    #[error("{0}")]
    RequestBody(#[source] RequestBodyError),
}

impl UpstreamError {
    /// The failure's cause, as the client and the counters see it;
    /// request-body failures travel inside hyper's error as its source.
    pub fn cause(&self) -> ProxyError {
        let hyper_err = match self {
            UpstreamError::Raw(RawError::Malformed(_)) => return ProxyError::UpstreamMalformed,
            UpstreamError::Raw(_) => return ProxyError::UpstreamReset,
            UpstreamError::RequestBody(body) => return body.cause(),
            UpstreamError::ConnectTimeout => return ProxyError::ConnectTimeout,
            UpstreamError::Connect(_) | UpstreamError::Tls(_) => return ProxyError::ConnectFailed,
            UpstreamError::H2Client(crate::h2client::H2Error::Malformed(_)) => return ProxyError::UpstreamMalformed,
            UpstreamError::Handshake(_)
            | UpstreamError::H2Handshake(_)
            | UpstreamError::H2(_)
            | UpstreamError::H2Client(_) => {
                return ProxyError::UpstreamReset;
            }
            UpstreamError::Exchange(e) => e,
        };
        let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(hyper_err);
        while let Some(e) = source {
            if let Some(body) = e.downcast_ref::<RequestBodyError>() {
                return body.cause();
            }
            source = e.source();
        }
        if hyper_err.is_parse() || hyper_err.is_parse_status() || hyper_err.is_parse_too_large() {
            ProxyError::UpstreamMalformed
        } else {
            ProxyError::UpstreamReset
        }
    }
}

impl UpstreamError {
    /// Whether the backend did not process the HTTP/2 exchange that failed
    /// (RFC 9113 §8.7): `Some(false)` for a refused stream, `Some(true)`
    /// for one beyond a GOAWAY (the connection is going away).
    pub(super) fn unprocessed(&self) -> Option<bool> {
        let e = match self {
            UpstreamError::H2(e) => e,
            UpstreamError::H2Client(e) => return e.unprocessed(),
            _ => return None,
        };
        if e.is_go_away() && e.is_remote() {
            Some(true)
        } else if e.reason() == Some(::h2::Reason::REFUSED_STREAM) {
            Some(false)
        } else {
            None
        }
    }
}
