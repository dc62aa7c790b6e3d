//! HTTP/2 backends for the unit tests of both clients to HTTP/2 backends
//! (sluice's own, `h2client`, and the `h2` crate's, `upstream::h2_exchange`):
//! an `h2` server on an in-memory pipe, and the answers the tests share;
//! also the helpers the future-size tests share.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{HeaderValue, Request, Response};
use tokio::io::DuplexStream;
use tokio::sync::oneshot;

use crate::request_body::{ClientBody, RequestBody};

/// The client's end of a pipe to an `h2` server (configured by
/// `settings`) that answers each request with `answer`.
pub(crate) fn h2_backend<F, Fut>(settings: fn(&mut h2::server::Builder), answer: F) -> DuplexStream
where
    F: Fn(Request<h2::RecvStream>, h2::server::SendResponse<Bytes>) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let (client, server) = tokio::io::duplex(64 * 1024);
    tokio::spawn(async move {
        let mut builder = h2::server::Builder::new();
        settings(&mut builder);
        let mut conn = builder.handshake(server).await.unwrap();
        while let Some(Ok((req, respond))) = conn.accept().await {
            tokio::spawn(answer(req, respond));
        }
    });
    client
}

pub(crate) fn defaults(_: &mut h2::server::Builder) {}

/// A gRPC call's POST with `body`, cut off past `limit`.
pub(crate) fn post(body: ClientBody, limit: u64) -> Request<RequestBody> {
    Request::post("http://backend.test/pkg.Service/Call")
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(RequestBody::new(body, limit))
        .unwrap()
}

/// Reads a request body to its end, giving back its window.
pub(crate) async fn read_all(body: &mut h2::RecvStream) -> Vec<u8> {
    let mut got = Vec::new();
    while let Some(Ok(data)) = body.data().await {
        let _ = body.flow_control().release_capacity(data.len());
        got.extend_from_slice(&data);
    }
    got
}

/// Echoes the request body (and, as `x-method`, `x-uri` and `x-got-NAME`
/// fields, its head) and ends with `grpc-status: 0` in trailers.
pub(crate) async fn echo(req: Request<h2::RecvStream>, mut respond: h2::server::SendResponse<Bytes>) {
    let (parts, mut body) = req.into_parts();
    let got = read_all(&mut body).await;
    let mut res = Response::builder()
        .header("x-method", parts.method.as_str())
        .header("x-uri", parts.uri.to_string());
    for (name, value) in &parts.headers {
        res = res.header(format!("x-got-{name}"), value);
    }
    let mut send = respond.send_response(res.body(()).unwrap(), false).unwrap();
    send.send_data(Bytes::from(got), false).unwrap();
    let mut trailers = http::HeaderMap::new();
    trailers.insert("grpc-status", HeaderValue::from_static("0"));
    send.send_trailers(trailers).unwrap();
}

/// An answer that reads the request body and reports how it ended: the
/// reset's reason (`None` for a body that ended whole).
#[allow(clippy::type_complexity)]
pub(crate) fn body_end_reporter() -> (
    impl Fn(Request<h2::RecvStream>, h2::server::SendResponse<Bytes>) -> std::pin::Pin<Box<dyn Future<Output = ()> + Send>>
    + Send
    + 'static,
    oneshot::Receiver<Option<h2::Reason>>,
) {
    let (tx, rx) = oneshot::channel();
    let tx = Arc::new(Mutex::new(Some(tx)));
    let answer = move |req: Request<h2::RecvStream>, _respond: h2::server::SendResponse<Bytes>| {
        let tx = Arc::clone(&tx);
        Box::pin(async move {
            let mut body = req.into_body();
            let mut end = None;
            while let Some(data) = body.data().await {
                if let Err(e) = data {
                    end = e.reason();
                    break;
                }
            }
            if let Some(tx) = tx.lock().unwrap().take() {
                let _ = tx.send(end);
            }
        }) as std::pin::Pin<Box<dyn Future<Output = ()> + Send>>
    };
    (answer, rx)
}

/// The client's side of a pipe, keeping a copy of each write.
pub(crate) struct Recorded {
    pub(crate) io: DuplexStream,
    pub(crate) writes: Arc<Mutex<Vec<Vec<u8>>>>,
}

impl tokio::io::AsyncRead for Recorded {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for Recorded {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        let n = std::task::ready!(Pin::new(&mut self.io).poll_write(cx, buf))?;
        self.writes.lock().unwrap().push(buf[..n].to_vec());
        Poll::Ready(Ok(n))
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// The size of the future `f` would return (for tests that hold a request
/// path's future to a size).
pub(crate) fn future_size<F: FnOnce() -> Fut, Fut>(_: &F) -> usize {
    std::mem::size_of::<Fut>()
}

/// A value for a closure that is never called.
pub(crate) fn never<T>() -> T {
    panic!("only the closure's type is used")
}
