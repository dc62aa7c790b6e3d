//! A backend's shared HTTP/2 connection, whichever engine's client
//! dialled it: sluice's own ([`H2Client`]) or, for the hyper engine, the
//! `h2` crate's ([`H2Conn`]).

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

    pub(super) async fn exchange(&self, req: Request<RequestBody>) -> Result<Response<UpstreamBody>, UpstreamError> {
        match self {
            Self::Own(c) => match c.exchange(req).await {
                Ok(res) => Ok(res.map(UpstreamBody::Own)),
                Err(ExchangeError::H2(e)) => Err(UpstreamError::H2Client(e)),
                Err(ExchangeError::RequestBody(e)) => Err(UpstreamError::RequestBody(e)),
            },
            Self::Crate(c) => c.exchange(req).await.map(|res| res.map(UpstreamBody::H2)),
        }
    }
}
