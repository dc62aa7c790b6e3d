//! A minimal hyper backend for load tests: answers every request with the
//! same 100-byte body (16 KiB on `/16k`) over keep-alive HTTP/1.1, on each
//! port given; a port written `gPORT` serves gRPC instead (HTTP/2 by prior
//! knowledge): every call is answered with a 100-byte message and
//! `grpc-status: 0` in the trailers, except `/bench.Echo/Stream`: a server
//! stream of 2,000 messages of 1 KiB (2 MiB) before the trailers.
//!
//! `cargo run --release --example bench_backend -- 9101 9102 g9103`
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Frame};
use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

static BIG: [u8; 16 * 1024] = [b'x'; 16 * 1024];

const BODY: &[u8; 100] =
    b"0123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456\n\n\n";

/// A unary gRPC answer: one framed message (`SERVING` to a health check),
/// then the trailers.
struct GrpcAnswer(u8, &'static [u8]);

impl Body for GrpcAnswer {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0 += 1;
        Poll::Ready(match self.0 {
            1 => {
                let mut framed = vec![0, 0, 0, 0, self.1.len() as u8];
                framed.extend_from_slice(self.1);
                Some(Ok(Frame::data(Bytes::from(framed))))
            }
            2 => {
                let mut trailers = http::HeaderMap::new();
                trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
                Some(Ok(Frame::trailers(trailers)))
            }
            _ => None,
        })
    }
}

/// Messages in a `/bench.Echo/Stream` call.
const STREAM_MESSAGES: u32 = 2_000;

/// One framed 1 KiB gRPC message: the 5-byte prefix (uncompressed, length
/// 1,019) and its payload.
static STREAM_MESSAGE: [u8; 1024] = {
    let mut m = [b'y'; 1024];
    m[0] = 0;
    m[1] = 0;
    m[2] = 0;
    m[3] = 0x03;
    m[4] = 0xfb;
    m
};

/// A long server stream: `STREAM_MESSAGES` messages, then the trailers.
struct GrpcStream(u32);

impl Body for GrpcStream {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0 += 1;
        Poll::Ready(match self.0 {
            n if n <= STREAM_MESSAGES => Some(Ok(Frame::data(Bytes::from_static(&STREAM_MESSAGE)))),
            n if n == STREAM_MESSAGES + 1 => {
                let mut trailers = http::HeaderMap::new();
                trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
                Some(Ok(Frame::trailers(trailers)))
            }
            _ => None,
        })
    }
}

/// The gRPC answer a path gets: a long stream, or one message.
enum Answer {
    Unary(GrpcAnswer),
    Stream(GrpcStream),
}

impl Body for Answer {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.get_mut() {
            Answer::Unary(a) => Pin::new(a).poll_frame(cx),
            Answer::Stream(s) => Pin::new(s).poll_frame(cx),
        }
    }
}

fn main() {
    let ports: Vec<String> = std::env::args().skip(1).collect();
    assert!(!ports.is_empty(), "usage: bench_backend [g]PORT...");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let mut tasks = Vec::new();
        for port in ports {
            let grpc = port.starts_with('g');
            let port: u16 = port.trim_start_matches('g').parse().expect("port");
            let listener = TcpListener::bind(("127.0.0.1", port)).await.expect("bind");
            tasks.push(tokio::spawn(async move {
                loop {
                    let Ok((stream, _)) = listener.accept().await else {
                        continue;
                    };
                    let _ = stream.set_nodelay(true);
                    let io = TokioIo::new(stream);
                    if grpc {
                        tokio::spawn(async move {
                            let svc = service_fn(|req: hyper::Request<hyper::body::Incoming>| async move {
                                // grpc.health.v1.HealthCheckResponse { status: SERVING }.
                                let answer = match req.uri().path() {
                                    "/grpc.health.v1.Health/Check" => Answer::Unary(GrpcAnswer(0, &[0x08, 0x01])),
                                    "/bench.Echo/Stream" => Answer::Stream(GrpcStream(0)),
                                    _ => Answer::Unary(GrpcAnswer(0, BODY)),
                                };
                                // The request message is read, as a server would.
                                let _ = req.into_body().collect().await;
                                let mut res = hyper::Response::new(answer);
                                res.headers_mut()
                                    .insert("content-type", http::HeaderValue::from_static("application/grpc"));
                                Ok::<_, Infallible>(res)
                            });
                            let _ = http2::Builder::new(TokioExecutor::new())
                                .serve_connection(io, svc)
                                .await;
                        });
                        continue;
                    }
                    tokio::spawn(async move {
                        let svc = service_fn(|req: hyper::Request<hyper::body::Incoming>| async move {
                            let body: &'static [u8] = if req.uri().path() == "/16k" { &BIG } else { BODY };
                            Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from_static(body))))
                        });
                        let _ = http1::Builder::new().serve_connection(io, svc).await;
                    });
                }
            }));
        }
        for t in tasks {
            let _ = t.await;
        }
    });
}
