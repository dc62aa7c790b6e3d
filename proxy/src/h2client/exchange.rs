//! One exchange on a backend's HTTP/2 connection, from the request's own
//! task: the head is encoded before the lock is taken, the stream opened
//! and the head (with a body that has all arrived) queued under it; the
//! response head and body are read from the stream's state as the
//! connection's task fills it.

use std::future::poll_fn;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response};
use http_body::Body;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::oneshot;

use super::body::{ResponseBody, StreamRef};
use super::driver::drive;
use super::error::H2Error;
use super::send::{SendRef, pipe};
use super::state::{Shared, State};
use crate::h2::frame;
use crate::h2::{hpack, is_connection_specific};
use crate::request_body::{RequestBody, RequestBodyError};
use crate::upstream::{Start, declare_length, start};

/// A backend's HTTP/2 connection as the requests share it; dropping it
/// lets the connection close once its last stream is done.
#[derive(Debug)]
pub struct H2Client {
    shared: Arc<Shared>,
}

impl Drop for H2Client {
    fn drop(&mut self) {
        self.shared.lock().handle_gone = true;
        self.shared.driver.wake();
    }
}

/// Why an exchange failed: the stream's end, or the request body's.
#[derive(Debug)]
pub enum ExchangeError {
    H2(H2Error),
    RequestBody(RequestBodyError),
}

impl H2Client {
    /// A connection over `io` (the preface and SETTINGS go out first),
    /// driven by its own task.
    pub fn start<IO>(io: IO) -> Self
    where
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let shared = Arc::new(Shared::new(State::new()));
        tokio::spawn(drive(io, Arc::clone(&shared)));
        Self { shared }
    }

    /// Whether new streams can no longer open here: the next request dials.
    pub fn is_closed(&self) -> bool {
        self.shared.closed.load(Ordering::Relaxed)
    }

    /// Streams here whose responses have turned out long (a server
    /// stream, a download) and are still being read.
    pub fn bulk_streams(&self) -> usize {
        self.shared.bulk.load(Ordering::Relaxed)
    }

    /// Exchanges under way here.
    pub fn calls(&self) -> usize {
        self.shared.calls.load(Ordering::Relaxed)
    }

    /// Whether no bulk stream was open here at this call and the last:
    /// the pool lets go of a spare connection that long without one.
    pub fn bulk_free_twice(&self) -> bool {
        let free = self.bulk_streams() == 0;
        let before = self.shared.bulk_free_seen.swap(free, Ordering::Relaxed);
        free && before
    }

    /// Sends `req` and waits for the response head.
    pub async fn exchange(&self, req: Request<RequestBody>) -> Result<Response<ResponseBody>, ExchangeError> {
        let (mut parts, body) = req.into_parts();
        self.send(&mut parts, body).await
    }

    /// Sends the request `parts` head with `body` and waits for the
    /// response head. The head is only read (and given its length): a
    /// caller that may send it again keeps it, no copy needed.
    pub async fn send(
        &self,
        parts: &mut http::request::Parts,
        mut body: RequestBody,
    ) -> Result<Response<ResponseBody>, ExchangeError> {
        // Before `start` reads from the body, which lowers its hint.
        let length = body.size_hint().exact();
        let start = start(&mut body).map_err(ExchangeError::RequestBody)?;
        declare_length(parts, length);
        let mut block = Vec::with_capacity(256 + parts.headers.len() * 32);
        encode_head(parts, &mut block);
        let streamed = matches!(start, Start::Stream(_));
        let (mut whole, ahead) = match start {
            Start::Empty => (None, Vec::new()),
            Start::Whole(data) => (Some(data), Vec::new()),
            Start::Stream(ahead) => (None, ahead),
        };
        let eos = !streamed && whole.is_none();
        let id = poll_fn(|cx| self.open(cx, &block, eos, &mut whole, streamed))
            .await
            .map_err(ExchangeError::H2)?;
        let mut stream = StreamRef::new(&self.shared, id);
        let mut failed = None;
        if streamed {
            let (tx, rx) = oneshot::channel();
            failed = Some(rx);
            let send = SendRef {
                shared: Arc::clone(&self.shared),
                id,
            };
            tokio::spawn(pipe(body, ahead, send, tx));
        }
        let (status, headers, length, ended) = match failed {
            None => poll_fn(|cx| stream.poll_head(cx)).await,
            Some(mut failed) => {
                let mut head = std::pin::pin!(poll_fn(|cx| stream.poll_head(cx)));
                // The body's failure first: the reset that follows it would
                // hide why.
                tokio::select! {
                    biased;
                    Ok(e) = &mut failed => return Err(ExchangeError::RequestBody(e)),
                    head = &mut head => head,
                }
            }
        }
        .map_err(ExchangeError::H2)?;
        // A head that ends the stream (Trailers-Only in gRPC) must reach
        // the client as one: the body says it is over before it is polled.
        let mut res = Response::new(ResponseBody {
            stream,
            length,
            done: ended,
            passed: 0,
        });
        *res.status_mut() = status;
        *res.headers_mut() = headers;
        *res.version_mut() = http::Version::HTTP_2;
        Ok(res)
    }

    /// Opens a stream and queues its head (and whole body) under the
    /// backend's concurrency limit.
    fn open(
        &self,
        cx: &mut Context<'_>,
        block: &[u8],
        eos: bool,
        whole: &mut Option<Bytes>,
        streamed: bool,
    ) -> Poll<Result<u32, H2Error>> {
        let mut st = self.shared.lock();
        if !st.usable(&self.shared) {
            // Never sent: it may go on another connection.
            return Poll::Ready(Err(match st.ended {
                Some(H2Error::Protocol(why)) => H2Error::Protocol(why),
                _ => H2Error::GoAway,
            }));
        }
        if st.open >= st.max_streams {
            st.waiting.push(cx.waker().clone());
            return Poll::Pending;
        }
        let was_empty = st.wbuf.is_empty();
        let Some(id) = st.open_stream(streamed) else {
            self.shared.closed.store(true, Ordering::Relaxed);
            return Poll::Ready(Err(H2Error::GoAway));
        };
        let max_frame = st.max_frame;
        frame::write_headers(&mut st.wbuf, id, block, eos, max_frame);
        if eos {
            if let Some(s) = st.streams.last_mut() {
                s.local_end = true;
            }
        } else if let Some(data) = whole.take() {
            let idx = st.streams.len() - 1;
            if let Some(s) = st.streams.get_mut(idx) {
                s.pending_bytes = data.len();
                s.pending.push_back(data);
                s.pending_end = true;
            }
            st.send_pending(idx);
        }
        drop(st);
        self.shared.kick(was_empty);
        Poll::Ready(Ok(id))
    }
}

/// Encodes the request head: pseudo-headers from the URI, then the fields
/// HTTP/2 allows (forward has stripped the hop-by-hop ones already; these
/// are dropped here too, since a backend must reject them, §8.2.2).
fn encode_head(parts: &http::request::Parts, out: &mut Vec<u8>) {
    let uri = &parts.uri;
    let authority = uri.authority().map_or(&b""[..], |a| a.as_str().as_bytes());
    let path = uri.path_and_query().map_or(&b"/"[..], |p| p.as_str().as_bytes());
    let scheme = uri.scheme_str().unwrap_or("http").as_bytes();
    hpack::encode_request_line(parts.method.as_str().as_bytes(), scheme, authority, path, out);
    for (name, value) in &parts.headers {
        if is_connection_specific(name) || (name == http::header::TE && value.as_bytes() != b"trailers") {
            continue;
        }
        hpack::encode_header(name, value, out);
    }
}
