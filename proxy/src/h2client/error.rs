//! Why an exchange on a backend's HTTP/2 connection failed.

/// How a stream (or its connection) ended without a whole response.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum H2Error {
    /// RST_STREAM from the backend, with its error code.
    #[error("the backend reset the stream (HTTP/2 error code {0:#x})")]
    Reset(u32),
    /// RST_STREAM REFUSED_STREAM: the backend did not process the request.
    #[error("the backend refused the stream")]
    Refused,
    /// The stream is above the last one the backend's GOAWAY names, or the
    /// connection ended before the stream was opened: not processed.
    #[error("the backend's connection is going away; the request was not processed")]
    GoAway,
    /// The connection ended (closed, failed, or no answer to a ping).
    #[error("the backend's HTTP/2 connection ended: {0}")]
    Lost(&'static str),
    /// The backend broke the protocol: sluice closed the connection.
    #[error("the backend broke the HTTP/2 protocol ({0})")]
    Protocol(&'static str),
    /// A response sluice cannot pass on (RFC 9113 §8.1.1): the stream was
    /// reset.
    #[error("malformed HTTP/2 response: {0}")]
    Malformed(&'static str),
    /// sluice reset the stream (its client went away, or the request body
    /// failed).
    #[error("stream cancelled")]
    Cancelled,
}

impl H2Error {
    /// Whether the backend did not process the request (RFC 9113 §8.7):
    /// `Some(false)` for a refused stream, `Some(true)` for one the
    /// connection will not take (GOAWAY).
    pub fn unprocessed(self) -> Option<bool> {
        match self {
            Self::Refused => Some(false),
            Self::GoAway => Some(true),
            _ => None,
        }
    }
}
