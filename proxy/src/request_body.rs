//! The client's request body on its way upstream: as it arrives (hyper's,
//! read whole with the head by sluice's own HTTP/1.1 loop, or streamed by
//! its HTTP/2 server), cut off past the size limit, and kept for a replay
//! when an HTTP/2 backend refuses the stream. Streams frame by frame;
//! nothing here buffers a whole body beyond the replay cap.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use tokio::sync::oneshot;

use crate::h2::RecvBody;

/// Why a body stopped early: hyper's or sluice's own exchange.
pub type BodyError = Box<dyn std::error::Error + Send + Sync>;

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

impl RequestBodyError {
    /// The failure as the client and the counters see it: too large, or
    /// the client's fault.
    pub fn cause(&self) -> sluice_routing::ProxyError {
        match self {
            Self::TooLarge => sluice_routing::ProxyError::BodyTooLarge,
            Self::Client(_) => sluice_routing::ProxyError::ClientBodyFailed,
        }
    }
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
