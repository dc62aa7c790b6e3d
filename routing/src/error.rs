//! Why a request could not be proxied, and why a routing change was
//! refused. Each request failure knows its status, a short machine-readable
//! code (sent as `x-sluice-error`) and a message for people; the mapping
//! lives here and nowhere else. The data plane turns them into responses
//! (`sluice_proxy::respond`).

use http::StatusCode;

/// Why a request could not be proxied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ProxyError {
    #[error("request has no Host header")]
    MissingHost,
    #[error("request has more than one Host header")]
    DuplicateHost,
    #[error("request has an invalid Host header")]
    BadHost,
    #[error("request target is not valid")]
    BadTarget,
    #[error(
        "request framing is ambiguous: Transfer-Encoding must be exactly `chunked`, without Content-Length, on HTTP/1.1"
    )]
    BadFraming,
    #[error("request uses a transfer coding other than chunked")]
    UnsupportedCoding,
    #[error("request body is larger than the limit")]
    BodyTooLarge,
    #[error("the client's request body could not be read")]
    ClientBodyFailed,
    #[error("x-sluice-pool names no pool")]
    UnknownPoolOverride,
    #[error("no healthy backend in any pool")]
    NoPool,
    #[error("the chosen pool has no available backend")]
    NoBackend,
    #[error("the backend is at its in-flight request limit; retry shortly")]
    BackendOverloaded,
    #[error("too many requests are waiting to connect to the backend; retry shortly")]
    UpstreamOverloaded,
    /// A `[[rate_limits]]` entry refused it; retry after that many seconds.
    #[error("too many requests: rate limited; retry in {retry_after_secs} s")]
    RateLimited { retry_after_secs: u32 },
    #[error("could not connect to the backend")]
    ConnectFailed,
    #[error("connecting to the backend timed out")]
    ConnectTimeout,
    #[error("the backend did not answer in time")]
    UpstreamTimeout,
    #[error("the backend closed or reset the connection")]
    UpstreamReset,
    #[error("the backend sent a malformed response")]
    UpstreamMalformed,
}

impl ProxyError {
    pub fn status(self) -> StatusCode {
        use ProxyError::*;
        match self {
            MissingHost | DuplicateHost | BadHost | BadTarget | BadFraming | UnknownPoolOverride | ClientBodyFailed => {
                StatusCode::BAD_REQUEST
            }
            UnsupportedCoding => StatusCode::NOT_IMPLEMENTED,
            BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            NoPool | NoBackend | BackendOverloaded | UpstreamOverloaded => StatusCode::SERVICE_UNAVAILABLE,
            ConnectFailed | UpstreamReset | UpstreamMalformed => StatusCode::BAD_GATEWAY,
            ConnectTimeout | UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
        }
    }

    /// Stable short code for `x-sluice-error` and logs.
    pub fn code(self) -> &'static str {
        use ProxyError::*;
        match self {
            MissingHost => "missing-host",
            DuplicateHost => "duplicate-host",
            BadHost => "bad-host",
            BadTarget => "bad-target",
            BadFraming => "bad-framing",
            UnsupportedCoding => "unsupported-transfer-coding",
            BodyTooLarge => "body-too-large",
            ClientBodyFailed => "client-body-failed",
            UnknownPoolOverride => "unknown-pool",
            NoPool => "no-pool",
            NoBackend => "no-backend",
            BackendOverloaded => "backend-overloaded",
            UpstreamOverloaded => "upstream-overloaded",
            RateLimited { .. } => "rate-limited",
            ConnectFailed => "upstream-connect-failed",
            ConnectTimeout => "upstream-connect-timeout",
            UpstreamTimeout => "upstream-timeout",
            UpstreamReset => "upstream-reset",
            UpstreamMalformed => "upstream-malformed",
        }
    }

    /// Whether the failure lies with the upstream (counts against a pool).
    pub fn is_upstream(self) -> bool {
        // Load shed by sluice itself says nothing about the version (the
        // connects that hang behind a pending cap fail, and count, on their
        // own), nor does a client's transfer coding.
        self.status().is_server_error()
            && !matches!(
                self,
                ProxyError::BackendOverloaded | ProxyError::UpstreamOverloaded | ProxyError::UnsupportedCoding
            )
    }
}

/// Why a routing change was refused; the table stays as it was.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TableError {
    #[error("at least one pool is required")]
    NoPools,
    /// The sum in hundredths of a percent.
    #[error("weights must sum to 100, they sum to {}", sluice_config::weight_total_text(*.0))]
    WeightSum(u64),
    #[error("pool {0:?} has weight above 0 but no backends")]
    NoBackends(String),
    #[error("pool {0:?} is listed twice")]
    DuplicatePool(String),
    #[error("pool {0:?} lists backend {1:?} twice")]
    DuplicateBackend(String, String),
    #[error("backend {0:?} is not host:port")]
    BadBackend(String),
    #[error("no pool named {0:?}")]
    UnknownPool(String),
    #[error("pool {0:?} is missing from the weights; give every pool a weight")]
    MissingPool(String),
    #[error("the change could not be stored, so it was not applied: {0}")]
    Persist(String),
    /// Another replica changed the routing first; nothing was changed here.
    #[error("{0}")]
    Conflict(String),
    #[error("pool {pool:?} carries {weight}% of traffic; shift its weight away first, or force the change")]
    PoolCarriesTraffic {
        pool: String,
        weight: sluice_config::Weight,
    },
    #[error("pool {0:?}: backend TLS: {1}")]
    BackendTls(String, String),
    /// The text says which version, what contracted it and how to override.
    #[error("{0}")]
    Fenced(String),
    #[error("pool {0:?} already has backend {1:?}")]
    BackendExists(String, String),
    #[error("pool {0:?} has no backend {1:?}")]
    UnknownBackend(String, String),
    #[error(
        "{1:?} is the last backend of pool {0:?}, which carries traffic; shift its weight away first, or force the change"
    )]
    LastBackend(String, String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_follow_the_cause() {
        assert_eq!(ProxyError::ConnectFailed.status(), 502);
        assert_eq!(ProxyError::UpstreamReset.status(), 502);
        assert_eq!(ProxyError::UpstreamMalformed.status(), 502);
        assert_eq!(ProxyError::NoBackend.status(), 503);
        assert_eq!(ProxyError::UpstreamTimeout.status(), 504);
        assert_eq!(ProxyError::BodyTooLarge.status(), 413);
        assert_eq!(ProxyError::DuplicateHost.status(), 400);
        assert!(ProxyError::UpstreamReset.is_upstream());
        assert!(!ProxyError::BodyTooLarge.is_upstream());
    }
}
