//! A minimal hyper backend for load tests: answers every request with the
//! same 100-byte body (16 KiB on `/16k`) over keep-alive HTTP/1.1, on each
//! port given.
//!
//! `cargo run --release --example bench_backend -- 9101 9102`
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::convert::Infallible;

use bytes::Bytes;
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

static BIG: [u8; 16 * 1024] = [b'x'; 16 * 1024];

const BODY: &[u8; 100] =
    b"0123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456\n\n\n";

fn main() {
    let ports: Vec<u16> = std::env::args().skip(1).map(|p| p.parse().expect("port")).collect();
    assert!(!ports.is_empty(), "usage: bench_backend PORT...");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let mut tasks = Vec::new();
        for port in ports {
            let listener = TcpListener::bind(("127.0.0.1", port)).await.expect("bind");
            tasks.push(tokio::spawn(async move {
                loop {
                    let Ok((stream, _)) = listener.accept().await else {
                        continue;
                    };
                    let _ = stream.set_nodelay(true);
                    tokio::spawn(async move {
                        let svc = service_fn(|req: hyper::Request<hyper::body::Incoming>| async move {
                            let body: &'static [u8] = if req.uri().path() == "/16k" { &BIG } else { BODY };
                            Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from_static(body))))
                        });
                        let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), svc).await;
                    });
                }
            }));
        }
        for t in tasks {
            let _ = t.await;
        }
    });
}
