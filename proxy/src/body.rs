//! Body types of the data plane. Both directions stream frame by frame;
//! nothing here buffers a whole body.

use std::future::Future as _;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

use tokio::sync::oneshot;

use crate::grpc::{self, CallTally};
use crate::h1raw::{HeaderLines, RawBody};
use crate::h2::RecvBody;
use crate::table::InFlight;
use crate::upstream::Lease;

/// Why a response body stopped early: hyper's or sluice's own exchange.
pub type BodyError = Box<dyn std::error::Error + Send + Sync>;

/// A response body: either the backend's, streamed, or a short one of our own.
#[derive(Debug)]
pub struct ProxyBody {
    kind: Kind,
}

#[derive(Debug)]
enum Kind {
    Full(Option<Bytes>),
    Upstream {
        body: Incoming,
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
        }
    }

    pub fn empty() -> Self {
        Self { kind: Kind::Full(None) }
    }

    pub fn raw(body: RawBody, in_flight: InFlight) -> Self {
        Self {
            kind: Kind::Raw {
                body,
                _in_flight: in_flight,
            },
        }
    }

    /// The backend's header lines, when its response came through sluice's
    /// own exchange asked for them as lines (see [`crate::h1raw::HeadersAs`]).
    pub fn take_header_lines(&mut self) -> Option<HeaderLines> {
        match &mut self.kind {
            Kind::Raw { body, .. } => body.take_lines(),
            _ => None,
        }
    }

    /// The backend's body; `grpc` counts the call when it ends.
    pub fn upstream(body: Incoming, lease: Lease, in_flight: InFlight, grpc: Option<CallTally>) -> Self {
        Self {
            kind: Kind::Upstream {
                body,
                lease,
                _in_flight: in_flight,
                grpc: grpc.map(Box::new),
            },
        }
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        match &mut self.kind {
            Kind::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            Kind::Upstream { body, lease, grpc, .. } => {
                // A gRPC call past its deadline: DEADLINE_EXCEEDED in the
                // trailers, and the backend's stream dropped (hyper resets
                // it with CANCEL).
                if let Some(tally) = grpc
                    && let Some(deadline) = &mut tally.deadline
                    && deadline.as_mut().poll(cx).is_ready()
                {
                    if let Some(tally) = grpc.take() {
                        tally.finish(grpc::DEADLINE_EXCEEDED);
                    }
                    self.kind = Kind::Full(None);
                    return Poll::Ready(Some(Ok(Frame::trailers(grpc::deadline_trailers()))));
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
                frame.map_err(BodyError::from)
            }
            Kind::Raw { body, .. } => body.poll_frame(cx).map_err(BodyError::from),
        }
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
    }
}

/// A client's request body as it arrives: hyper's, one sluice's own
/// HTTP/1.1 server read whole with the head (none, or a small one), or one
/// arriving on sluice's own HTTP/2 server.
#[derive(Debug)]
pub enum ClientBody {
    Hyper(Incoming),
    Read(Option<Bytes>),
    Stream(RecvBody),
    /// Frames read ahead (see [`RequestBody::read_ready`]), then the rest.
    Ahead(Box<Ahead>),
}

/// What [`RequestBody::read_ready`] read before the body was whole.
#[derive(Debug)]
pub struct Ahead {
    frames: std::collections::VecDeque<Result<Frame<Bytes>, BodyError>>,
    rest: ClientBody,
}

impl Body for ClientBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        match self.get_mut() {
            Self::Hyper(body) => match Pin::new(body).poll_frame(cx) {
                // hyper takes a bare LF after the last chunk as the start
                // of a trailer section and reads on to the next blank line,
                // which may be the next request's end; what it read then
                // parses to no fields. A real trailer section has one at
                // least: an empty one is bytes that were not trailers.
                Poll::Ready(Some(Ok(frame))) if frame.trailers_ref().is_some_and(http::HeaderMap::is_empty) => {
                    Poll::Ready(Some(Err(BodyError::from("a chunked body ended by a bare LF"))))
                }
                other => other.map_err(BodyError::from),
            },
            Self::Read(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            Self::Stream(body) => Pin::new(body).poll_frame(cx).map_err(BodyError::from),
            Self::Ahead(ahead) => match ahead.frames.pop_front() {
                Some(frame) => Poll::Ready(Some(frame)),
                None => Pin::new(&mut ahead.rest).poll_frame(cx),
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::Hyper(body) => body.is_end_stream(),
            Self::Read(bytes) => bytes.is_none(),
            Self::Stream(body) => body.is_end_stream(),
            Self::Ahead(ahead) => ahead.frames.is_empty() && ahead.rest.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::Hyper(body) => body.size_hint(),
            Self::Read(bytes) => SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64)),
            Self::Stream(body) => body.size_hint(),
            Self::Ahead(ahead) => ahead.rest.size_hint(),
        }
    }
}

/// Why reading the client's request body stopped.
#[derive(Debug, thiserror::Error)]
pub enum RequestBodyError {
    #[error("request body exceeds the limit")]
    TooLarge,
    #[error("reading the request body failed: {0}")]
    Client(#[from] BodyError),
}

/// The client's request body on its way upstream, cut off with an error once
/// it passes the configured limit (for bodies without a Content-Length,
/// which are refused up front instead).
#[derive(Debug)]
pub struct RequestBody {
    inner: ClientBody,
    remaining: u64,
    /// Set on the way to HTTP/2 backends (see [`Self::keep_for_replay`]).
    replay: Option<Box<Replay>>,
}

/// The body's frames as sent (shared, not copied), while they fit.
#[derive(Debug)]
struct Replay {
    sent: Vec<Bytes>,
    kept: usize,
    cap: usize,
    give_back: oneshot::Sender<Unsent>,
}

/// A request body handed back whole: what was sent, the rest, the limit.
#[derive(Debug)]
pub struct Unsent {
    sent: Vec<Bytes>,
    rest: ClientBody,
    limit: u64,
}

impl RequestBody {
    pub fn new(inner: ClientBody, limit: u64) -> Self {
        Self {
            inner,
            remaining: limit,
            replay: None,
        }
    }

    /// Keeps a copy of what is sent, up to `cap` bytes, so the request can
    /// be sent again if the backend did not process it: when the body is
    /// dropped (hyper drops it once the stream is refused) it hands back
    /// through `give_back` what it sent and what it had not read yet.
    pub fn keep_for_replay(&mut self, cap: usize, give_back: oneshot::Sender<Unsent>) {
        self.replay = Some(Box::new(Replay {
            sent: Vec::new(),
            kept: 0,
            cap,
            give_back,
        }));
    }

    /// The body again: what was sent, then what was not read yet.
    pub fn resume(unsent: Unsent) -> Self {
        let Unsent { sent, rest, limit } = unsent;
        let inner = if sent.is_empty() {
            rest
        } else {
            let frames = sent.into_iter().map(|data| Ok(Frame::data(data))).collect();
            ClientBody::Ahead(Box::new(Ahead { frames, rest }))
        };
        Self {
            inner,
            remaining: limit,
            replay: None,
        }
    }

    /// Reads the whole body onto the end of `out`: for small bodies of
    /// known length, sent in one write with the request head.
    pub async fn append_to(mut self, out: &mut Vec<u8>) -> Result<(), RequestBodyError> {
        use http_body_util::BodyExt;
        while let Some(frame) = self.frame().await {
            if let Ok(data) = frame?.into_data() {
                out.extend_from_slice(&data);
            }
        }
        Ok(())
    }
}

impl Drop for RequestBody {
    fn drop(&mut self) {
        // Nobody waiting (the exchange went well): nothing to hand back.
        if let Some(replay) = self.replay.take()
            && !replay.give_back.is_closed()
        {
            let Replay {
                sent, kept, give_back, ..
            } = *replay;
            let limit = self.remaining + kept as u64;
            let rest = std::mem::replace(&mut self.inner, ClientBody::Read(None));
            let _ = give_back.send(Unsent { sent, rest, limit });
        }
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = RequestBodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, RequestBodyError>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    let len = data.len() as u64;
                    if len > this.remaining {
                        return Poll::Ready(Some(Err(RequestBodyError::TooLarge)));
                    }
                    this.remaining -= len;
                    if let Some(replay) = &mut this.replay {
                        if replay.kept + data.len() <= replay.cap {
                            replay.kept += data.len();
                            replay.sent.push(data.clone());
                        } else {
                            // Too much to keep: this request cannot be replayed.
                            this.replay = None;
                        }
                    }
                } else {
                    // Trailers are not kept: nor is the request replayed.
                    this.replay = None;
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e.into()))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use std::sync::Arc;

    fn streamed(frames: &[&'static [u8]]) -> (crate::h2::RecvBody, impl FnOnce()) {
        let consumed = Arc::new(crate::h2::recv::Consumed::new(Arc::default()));
        let (sink, body) = crate::h2::RecvBody::channel(consumed, None);
        for f in frames {
            assert!(sink.data(Bytes::from_static(f)));
        }
        (body, move || drop(sink))
    }

    #[tokio::test]
    async fn a_dropped_body_gives_back_what_it_sent_and_the_rest() {
        let (stream, end) = streamed(&[b"hello ", b"wor"]);
        let mut body = RequestBody::new(ClientBody::Stream(stream), 100);
        let (tx, rx) = oneshot::channel();
        body.keep_for_replay(64, tx);
        // hyper sends the first frame, then the stream is refused.
        let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!(&first[..], b"hello ");
        drop(body);
        let again = RequestBody::resume(rx.await.unwrap());
        end();
        let whole = again.collect().await.unwrap().to_bytes();
        assert_eq!(&whole[..], b"hello wor");
    }

    #[tokio::test]
    async fn a_body_past_the_cap_is_not_kept() {
        let (stream, end) = streamed(&[b"0123456789", b"0123456789"]);
        end();
        let mut body = RequestBody::new(ClientBody::Stream(stream), 100);
        let (tx, rx) = oneshot::channel();
        body.keep_for_replay(15, tx);
        while body.frame().await.is_some() {}
        drop(body);
        assert!(rx.await.is_err(), "20 bytes sent, 15 kept: no replay");
    }
}
