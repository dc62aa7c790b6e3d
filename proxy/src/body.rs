//! The response body of the data plane: a backend's, streamed frame by
//! frame (nothing here buffers a whole body), or a short one of sluice's
//! own. The request's way up: [`crate::request_body`].

use std::future::Future as _;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

use sluice_routing::grpc;
use sluice_routing::table::InFlight;

use crate::access::Entry;
use crate::grpc::CallTally;
use crate::http1::RawBody;
use crate::upstream::{Lease, UpstreamBody};

pub use crate::request_body::BodyError;

/// A response body: either the backend's, streamed, or a short one of our own.
#[derive(Debug)]
pub struct ProxyBody {
    kind: Kind,
    /// The request's access-log entry, written when the body ends.
    log: Option<Box<Entry>>,
}

#[derive(Debug)]
enum Kind {
    Full(Option<Bytes>),
    Upstream {
        body: UpstreamBody,
        /// Hands the connection back once `body` has been read to its end.
        lease: Lease,
        /// Released when the body ends or the client goes away.
        _in_flight: InFlight,
        /// A gRPC call whose status is in the trailers still to come.
        grpc: Option<Box<CallTally>>,
    },
    /// From sluice's own exchange; hands its connection back by itself.
    Raw {
        body: RawBody,
        _in_flight: InFlight,
    },
}

impl ProxyBody {
    pub fn full(bytes: impl Into<Bytes>) -> Self {
        let bytes = bytes.into();
        Self {
            kind: Kind::Full((!bytes.is_empty()).then_some(bytes)),
            log: None,
        }
    }

    pub fn empty() -> Self {
        Self {
            kind: Kind::Full(None),
            log: None,
        }
    }

    pub fn raw(body: RawBody, in_flight: InFlight) -> Self {
        Self {
            kind: Kind::Raw {
                body,
                _in_flight: in_flight,
            },
            log: None,
        }
    }

    /// The backend's body; `grpc` counts the call when it ends.
    pub fn upstream(body: UpstreamBody, lease: Lease, in_flight: InFlight, grpc: Option<CallTally>) -> Self {
        Self {
            kind: Kind::Upstream {
                body,
                lease,
                _in_flight: in_flight,
                grpc: grpc.map(Box::new),
            },
            log: None,
        }
    }

    /// Writes `entry` to the access log when this body ends.
    pub(crate) fn log_to(&mut self, entry: Box<Entry>) {
        self.log = Some(entry);
    }

    fn poll_kind(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        match &mut self.kind {
            Kind::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            Kind::Upstream { body, lease, grpc, .. } => {
                // A gRPC call past its deadline: DEADLINE_EXCEEDED in the
                // trailers, and the backend's stream dropped (h2 resets it
                // with CANCEL).
                if let Some(tally) = grpc
                    && let Some(deadline) = &mut tally.deadline
                    && deadline.as_mut().poll(cx).is_ready()
                {
                    if let Some(tally) = grpc.take() {
                        tally.finish(grpc::DEADLINE_EXCEEDED);
                    }
                    self.kind = Kind::Full(None);
                    return Poll::Ready(Some(Ok(Frame::trailers(crate::grpc::deadline_trailers()))));
                }
                // A stream whose backend has been silent for `stream_idle`:
                // UNAVAILABLE, and the backend's stream dropped.
                if let Some(tally) = grpc
                    && let Some(silence) = &mut tally.idle
                    && silence.is_over(cx)
                {
                    if let Some(tally) = grpc.take() {
                        tally.finish(grpc::UNAVAILABLE);
                    }
                    self.kind = Kind::Full(None);
                    return Poll::Ready(Some(Ok(Frame::trailers(crate::grpc::idle_trailers()))));
                }
                let frame = Pin::new(body).poll_frame(cx);
                match &frame {
                    Poll::Ready(None) => {
                        lease.release();
                        // Ended without trailers: clients read UNKNOWN.
                        if let Some(tally) = grpc.take() {
                            tally.finish(grpc::UNKNOWN);
                        }
                    }
                    Poll::Ready(Some(Ok(f))) if grpc.is_some() => {
                        // Anything from the backend restarts its silence.
                        if let Some(silence) = grpc.as_mut().and_then(|t| t.idle.as_mut()) {
                            silence.heard();
                        }
                        if let Some(trailers) = f.trailers_ref() {
                            let code = grpc::status_of(trailers).unwrap_or(grpc::UNKNOWN);
                            if let Some(tally) = grpc.take() {
                                tally.finish(code);
                            }
                        }
                    }
                    Poll::Ready(Some(Err(_))) => {
                        // The backend's stream broke: clients read UNAVAILABLE.
                        if let Some(tally) = grpc.take() {
                            tally.finish(grpc::UNAVAILABLE);
                        }
                    }
                    _ => {}
                }
                frame
            }
            Kind::Raw { body, .. } => body.poll_frame(cx).map_err(BodyError::from),
        }
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.get_mut();
        let frame = this.poll_kind(cx);
        if let Some(entry) = &mut this.log {
            match &frame {
                Poll::Ready(Some(Ok(f))) => entry.saw(f),
                Poll::Ready(Some(Err(_))) => {
                    entry.error = entry.error.or(Some(sluice_routing::ProxyError::UpstreamReset.code()));
                }
                _ => {}
            }
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Full(bytes) => bytes.is_none(),
            Kind::Upstream { body, .. } => body.is_end_stream(),
            Kind::Raw { body, .. } => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Full(bytes) => SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64)),
            Kind::Upstream { body, .. } => body.size_hint(),
            Kind::Raw { body, .. } => body.size_hint(),
        }
    }
}

impl Drop for ProxyBody {
    fn drop(&mut self) {
        // hyper stops polling once `is_end_stream` says so, so the end of a
        // body is often seen here rather than as a final `None` frame.
        if let Kind::Upstream { body, lease, grpc, .. } = &mut self.kind {
            let ended = body.is_end_stream();
            if ended {
                lease.release();
            }
            // Dropped before its status came: the client gave up, or the
            // body ended where hyper stopped polling.
            if let Some(tally) = grpc.take() {
                tally.finish(if ended { grpc::UNKNOWN } else { grpc::CANCELLED });
            }
        }
        if let Some(entry) = self.log.take() {
            entry.finish();
        }
    }
}
