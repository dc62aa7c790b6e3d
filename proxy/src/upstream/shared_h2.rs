//! A backend's shared HTTP/2 connection, whichever engine's client
//! dialled it: sluice's own ([`H2Client`]) or, for the hyper engine, the
//! `h2` crate's ([`H2Conn`]).

use http::request::Parts;
use http::{Request, Response};

use super::body::UpstreamBody;
use super::error::UpstreamError;
use super::h2_exchange::H2Conn;
use crate::h2client::{ExchangeError, H2Client};
use crate::request_body::RequestBody;

/// A backend's shared HTTP/2 connection, of the engine that dialled it.
#[derive(Debug)]
pub enum SharedH2 {
    Own(H2Client),
    Crate(H2Conn),
}

impl SharedH2 {
    pub(super) fn is_closed(&self) -> bool {
        match self {
            Self::Own(c) => c.is_closed(),
            Self::Crate(c) => c.is_closed(),
        }
    }

    pub(super) fn is_own(&self) -> bool {
        matches!(self, Self::Own(_))
    }

    /// Streams here whose responses turned out long; the `h2` crate's
    /// client does not tell (and its connections are not spread).
    pub(super) fn bulk_streams(&self) -> usize {
        match self {
            Self::Own(c) => c.bulk_streams(),
            Self::Crate(_) => 0,
        }
    }

    /// Exchanges under way (not told by the `h2` crate's client).
    pub(super) fn calls(&self) -> usize {
        match self {
            Self::Own(c) => c.calls(),
            Self::Crate(_) => 0,
        }
    }

    /// Whether the connection had no bulk stream at this look and the
    /// last (never, for the `h2` crate's client, which has only one).
    pub(super) fn bulk_free_twice(&self) -> bool {
        match self {
            Self::Own(c) => c.bulk_free_twice(),
            Self::Crate(_) => false,
        }
    }

    /// Sends the head `parts` with `body`. The own client only reads the
    /// head; the `h2` crate's takes it, so it gets a copy when `keep` (the
    /// caller may send it again) and the head itself otherwise.
    pub(super) async fn exchange(
        &self,
        parts: &mut Parts,
        body: RequestBody,
        keep: bool,
    ) -> Result<Response<UpstreamBody>, UpstreamError> {
        match self {
            Self::Own(c) => match c.send(parts, body).await {
                Ok(res) => Ok(res.map(UpstreamBody::Own)),
                Err(ExchangeError::H2(e)) => Err(UpstreamError::H2Client(e)),
                Err(ExchangeError::RequestBody(e)) => Err(UpstreamError::RequestBody(e)),
            },
            Self::Crate(c) => {
                let head = if keep {
                    // (Forward has emptied its extensions: nothing to copy.)
                    parts.clone()
                } else {
                    std::mem::replace(parts, Request::new(()).into_parts().0)
                };
                let req = Request::from_parts(head, body);
                // Boxed: h2's exchange state would otherwise size every
                // exchange's future, the own client's included (1,808
                // bytes, past glibc's per-thread cache of small blocks).
                Box::pin(c.exchange(req)).await.map(|res| res.map(UpstreamBody::H2))
            }
        }
    }
}
