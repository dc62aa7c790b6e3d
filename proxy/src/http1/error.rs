//! Why an exchange on sluice's own HTTP/1.1 connection to a backend failed.

/// Why an exchange on a raw connection failed.
#[derive(Debug, thiserror::Error)]
pub enum RawError {
    /// Nothing came back: on a reused connection, the backend closed it
    /// while idle and an idempotent request can be sent again elsewhere.
    #[error("the backend closed the connection before answering")]
    ClosedBeforeResponse,
    #[error("i/o with the backend failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("malformed response from the backend: {0}")]
    Malformed(&'static str),
    #[error("the backend's response body ended early")]
    Incomplete,
}
