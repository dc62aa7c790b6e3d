//! The request body's side of an HTTP/2 exchange: what of it has arrived
//! when the head goes out, and the task that feeds the rest to the
//! backend's stream within its flow-control window.

use std::pin::Pin;
use std::task::{Context, Poll, Waker, ready};

use bytes::Bytes;
use h2::SendStream;
use http_body::{Body, Frame};
use tokio::sync::oneshot;

use crate::request_body::{RequestBody, RequestBodyError};

/// What of the request body is there when the head goes out.
pub(crate) enum Start {
    /// No body: the HEADERS frame ends the stream.
    Empty,
    /// All of it, in one piece: sent with the head from this task.
    Whole(Bytes),
    /// More to come: these frames first, then the rest as it arrives.
    Stream(Vec<Frame<Bytes>>),
}

/// Declares a request body's known `length` (read before [`start`] reads
/// from the body, which lowers its hint), as hyper's client did; an empty
/// body only where the method defines one (RFC 9110 §8.6).
pub(crate) fn declare_length(parts: &mut http::request::Parts, length: Option<u64>) {
    if let Some(len) = length
        && (len != 0 || matches!(parts.method.as_str(), "POST" | "PUT" | "PATCH"))
        && !parts.headers.contains_key(http::header::CONTENT_LENGTH)
    {
        parts
            .headers
            .insert(http::header::CONTENT_LENGTH, http::HeaderValue::from(len));
    }
}

/// Takes what of `body` has already arrived, without waiting.
pub(crate) fn start(body: &mut RequestBody) -> Result<Start, RequestBodyError> {
    if body.is_end_stream() {
        return Ok(Start::Empty);
    }
    let mut cx = Context::from_waker(Waker::noop());
    let first = match Pin::new(&mut *body).poll_frame(&mut cx) {
        Poll::Ready(None) => return Ok(Start::Empty),
        Poll::Ready(Some(frame)) => frame?,
        Poll::Pending => return Ok(Start::Stream(Vec::new())),
    };
    if !first.is_data() {
        return Ok(Start::Stream(vec![first]));
    }
    // The last frame may be in, its end not yet seen: one more look.
    if !body.is_end_stream()
        && let Poll::Ready(next) = Pin::new(&mut *body).poll_frame(&mut cx)
    {
        match next {
            None => {}
            Some(next) => return Ok(Start::Stream(vec![first, next?])),
        }
    }
    if body.is_end_stream() {
        return Ok(match first.into_data() {
            Ok(data) => Start::Whole(data),
            Err(frame) => Start::Stream(vec![frame]),
        });
    }
    Ok(Start::Stream(vec![first]))
}

/// Feeds the rest of a request body to the backend's stream, reading the
/// client's next frame only once the stream has window for it (so a slow
/// backend slows the client instead of filling sluice's memory). A body
/// that fails resets the stream and tells the waiting exchange why.
pub(super) async fn pipe(
    mut body: RequestBody,
    ahead: Vec<Frame<Bytes>>,
    mut send: SendStream<Bytes>,
    failed: oneshot::Sender<RequestBodyError>,
) {
    for frame in ahead {
        if !send_frame(&mut send, frame, body.is_end_stream()) {
            return;
        }
    }
    loop {
        let next = std::future::poll_fn(|cx| poll_next(&mut send, &mut body, cx)).await;
        match next {
            Ok(Some(frame)) => {
                if !send_frame(&mut send, frame, body.is_end_stream()) {
                    return;
                }
            }
            Ok(None) => {
                let _ = send.send_data(Bytes::new(), true);
                return;
            }
            Err(Some(e)) => {
                send.send_reset(h2::Reason::CANCEL);
                let _ = failed.send(e);
                return;
            }
            // The backend reset the stream: its response tells the rest.
            Err(None) => return,
        }
    }
}

/// The body's next frame once the stream can take it; `Err(None)` when
/// the backend reset the stream.
fn poll_next(
    send: &mut SendStream<Bytes>,
    body: &mut RequestBody,
    cx: &mut Context<'_>,
) -> Poll<Result<Option<Frame<Bytes>>, Option<RequestBodyError>>> {
    send.reserve_capacity(1);
    if send.capacity() == 0 {
        loop {
            match ready!(send.poll_capacity(cx)) {
                Some(Ok(0)) => {}
                Some(Ok(_)) => break,
                Some(Err(_)) | None => return Poll::Ready(Err(None)),
            }
        }
    } else if send.poll_reset(cx).is_ready() {
        return Poll::Ready(Err(None));
    }
    match ready!(Pin::new(body).poll_frame(cx)) {
        Some(Ok(frame)) => Poll::Ready(Ok(Some(frame))),
        Some(Err(e)) => Poll::Ready(Err(Some(e))),
        None => Poll::Ready(Ok(None)),
    }
}

/// Sends one frame of the body; false when the body is done or the stream
/// is gone.
fn send_frame(send: &mut SendStream<Bytes>, frame: Frame<Bytes>, last: bool) -> bool {
    match frame.into_data() {
        Ok(data) => send.send_data(data, last).is_ok() && !last,
        Err(frame) => {
            if let Ok(trailers) = frame.into_trailers() {
                // No more DATA: the window reserved for it is given back.
                send.reserve_capacity(0);
                let _ = send.send_trailers(trailers);
            }
            false
        }
    }
}
