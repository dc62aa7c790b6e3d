//! One exchange on a backend's HTTP/2 connection, driven with the `h2`
//! crate from the request's own task: the head (and a body that has all
//! arrived) goes out from here, the response is awaited here, and only a
//! body still arriving gets a task of its own, which feeds it to the
//! backend within its flow-control window.
//!
//! Why not hyper's HTTP/2 client: it hands each request to the
//! connection's task over a channel and spawns two tasks per exchange (one
//! to pipe the body, one to await the response), each copying its future
//! into a new task cell; callgrind put that at about a tenth of a unary
//! gRPC call's instructions (see docs/performance.md).

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use h2::RecvStream;
use http::header::CONTENT_LENGTH;
use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::oneshot;
use tracing::debug;

use super::error::UpstreamError;
use super::h2_pipe::{Start, declare_length, pipe, start};
use crate::request_body::RequestBody;

/// A backend's HTTP/2 connection as the requests share it.
#[derive(Debug)]
pub struct H2Conn {
    sender: h2::client::SendRequest<Bytes>,
    state: Arc<ConnState>,
}

/// What the connection's driver and its exchanges both see.
#[derive(Debug, Default)]
struct ConnState {
    /// Exchanges whose response is still awaited or read: keep-alive
    /// pings go out only while there are some, since gRPC servers count
    /// pings on a connection without calls against it ("too_many_pings").
    open: AtomicUsize,
    /// The connection ended (the backend closed it, an error, no pong).
    closed: AtomicBool,
}

/// Counts one exchange as open on its connection until dropped.
#[derive(Debug)]
struct Open(Arc<ConnState>);

impl Open {
    fn new(state: &Arc<ConnState>) -> Self {
        state.open.fetch_add(1, Ordering::Relaxed);
        Self(Arc::clone(state))
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// How often a connection with exchanges open is pinged, and how long the
/// pong may take before the connection is given up: as rarely as gRPC
/// servers allow by default (one ping in 5 minutes without data).
const KEEP_ALIVE: Duration = Duration::from_secs(300);
const KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(20);

/// Windows as hyper's client had them (2 MiB a stream, 5 MiB the
/// connection): ample for backends near the proxy, and no BDP pings.
const STREAM_WINDOW: u32 = 2 * 1024 * 1024;
const CONN_WINDOW: u32 = 5 * 1024 * 1024;
/// A request body's bytes buffered per stream beyond the backend's window.
const SEND_BUFFER: usize = 1024 * 1024;
/// The largest response header section accepted from a backend.
const MAX_HEADER_LIST: u32 = 64 * 1024;

impl H2Conn {
    /// An HTTP/2 connection over `io`, driven by its own task.
    pub async fn handshake<IO>(io: IO) -> Result<Self, UpstreamError>
    where
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (sender, conn) = h2::client::Builder::new()
            .initial_window_size(STREAM_WINDOW)
            .initial_connection_window_size(CONN_WINDOW)
            .max_send_buffer_size(SEND_BUFFER)
            .max_header_list_size(MAX_HEADER_LIST)
            .enable_push(false)
            .handshake::<_, Bytes>(io)
            .await
            .map_err(UpstreamError::H2Handshake)?;
        let state = Arc::new(ConnState::default());
        tokio::spawn(drive(conn, Arc::clone(&state)));
        Ok(Self { sender, state })
    }

    /// Whether the connection has ended: the next request dials anew.
    pub fn is_closed(&self) -> bool {
        self.state.closed.load(Ordering::Relaxed)
    }

    /// Sends `req` and waits for the response head.
    pub async fn exchange(&self, req: Request<RequestBody>) -> Result<Response<H2Body>, UpstreamError> {
        let mut sender = self.sender.clone().ready().await.map_err(UpstreamError::H2)?;
        let (mut parts, mut body) = req.into_parts();
        // Before `start` reads from the body, which lowers its hint.
        let length = body.size_hint().exact();
        let start = start(&mut body).map_err(UpstreamError::RequestBody)?;
        declare_length(&mut parts, length);
        let eos = matches!(start, Start::Empty);
        let (response, mut send) = sender
            .send_request(Request::from_parts(parts, ()), eos)
            .map_err(UpstreamError::H2)?;
        let open = Open::new(&self.state);
        let mut failed = None;
        match start {
            Start::Empty => {}
            Start::Whole(data) => {
                // Fails only once the stream is gone; the response says why.
                let _ = send.send_data(data, true);
            }
            Start::Stream(ahead) => {
                let (tx, rx) = oneshot::channel();
                failed = Some(rx);
                tokio::spawn(pipe(body, ahead, send, tx));
            }
        }
        let res = match failed {
            None => response.await,
            Some(mut failed) => {
                let mut response = std::pin::pin!(response);
                // The body's failure first: the stream's reset that
                // follows it would hide why.
                tokio::select! {
                    biased;
                    Ok(e) = &mut failed => return Err(UpstreamError::RequestBody(e)),
                    res = &mut response => res,
                }
            }
        }
        .map_err(UpstreamError::H2)?;
        let (parts, recv) = res.into_parts();
        // h2 holds the DATA to the declared length (a stream error if not).
        let length = parts
            .headers
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        Ok(Response::from_parts(parts, H2Body::new(recv, open, length)))
    }
}

/// Drives the connection until it ends, pinging it while exchanges are
/// open; a connection whose pong does not come in time is dropped, which
/// fails its streams.
async fn drive<IO>(mut conn: h2::client::Connection<IO, Bytes>, state: Arc<ConnState>)
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let mut ping = conn.ping_pong();
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + KEEP_ALIVE, KEEP_ALIVE);
    loop {
        tokio::select! {
            end = &mut conn => {
                if let Err(e) = end {
                    debug!(error = %e, "upstream h2 connection ended with an error");
                }
                break;
            }
            _ = tick.tick(), if ping.is_some() => {
                let Some(pinger) = ping.as_mut().filter(|_| state.open.load(Ordering::Relaxed) > 0) else {
                    continue;
                };
                let pong = tokio::time::timeout(KEEP_ALIVE_TIMEOUT, pinger.ping(h2::Ping::opaque()));
                tokio::select! {
                    end = &mut conn => {
                        if let Err(e) = end {
                            debug!(error = %e, "upstream h2 connection ended with an error");
                        }
                        break;
                    }
                    answered = pong => if !matches!(answered, Ok(Ok(_))) {
                        debug!("upstream h2 connection did not answer a keep-alive ping; closed");
                        break;
                    }
                }
            }
        }
    }
    state.closed.store(true, Ordering::Relaxed);
}

/// A backend's HTTP/2 response body: DATA as it comes (its window given
/// back as it is passed on), then the trailers.
#[derive(Debug)]
pub struct H2Body {
    recv: RecvStream,
    data_done: bool,
    done: bool,
    length: Option<u64>,
    _open: Open,
}

impl H2Body {
    fn new(recv: RecvStream, open: Open, length: Option<u64>) -> Self {
        let done = recv.is_end_stream();
        Self {
            length: if done { Some(0) } else { length },
            recv,
            data_done: false,
            done,
            _open: open,
        }
    }
}

impl Body for H2Body {
    type Data = Bytes;
    type Error = h2::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, h2::Error>>> {
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(None);
        }
        if !this.data_done {
            match ready!(this.recv.poll_data(cx)) {
                Some(Ok(data)) => {
                    let _ = this.recv.flow_control().release_capacity(data.len());
                    if let Some(left) = &mut this.length {
                        *left = left.saturating_sub(data.len() as u64);
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Some(Err(e)) => {
                    this.done = true;
                    return Poll::Ready(Some(Err(e)));
                }
                None => this.data_done = true,
            }
        }
        let trailers = ready!(this.recv.poll_trailers(cx));
        this.done = true;
        match trailers {
            Ok(Some(trailers)) => Poll::Ready(Some(Ok(Frame::trailers(trailers)))),
            Ok(None) => Poll::Ready(None),
            Err(e) => Poll::Ready(Some(Err(e))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done || self.recv.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        match self.length {
            Some(length) => SizeHint::with_exact(length),
            None => SizeHint::default(),
        }
    }
}

#[cfg(test)]
#[path = "h2_exchange_tests.rs"]
mod tests;
