//! A backend's response body as the data plane reads it: hyper's (HTTP/1.1
//! backends), or an HTTP/2 backend's from sluice's own client or from an
//! `h2` stream (the hyper engine).

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

use super::h2_exchange::H2Body;
use crate::request_body::BodyError;

#[derive(Debug)]
pub enum UpstreamBody {
    Hyper(Incoming),
    H2(H2Body),
    Own(crate::h2client::ResponseBody),
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        match self.get_mut() {
            Self::Hyper(body) => Pin::new(body).poll_frame(cx).map_err(BodyError::from),
            Self::H2(body) => Pin::new(body).poll_frame(cx).map_err(BodyError::from),
            Self::Own(body) => Pin::new(body).poll_frame(cx).map_err(BodyError::from),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::Hyper(body) => body.is_end_stream(),
            Self::H2(body) => body.is_end_stream(),
            Self::Own(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::Hyper(body) => body.size_hint(),
            Self::H2(body) => body.size_hint(),
            Self::Own(body) => body.size_hint(),
        }
    }
}
