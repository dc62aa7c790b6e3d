//! One request straight to a backend, bypassing the weights (health
//! probes, smoke checks), in the backend pool's protocol: HTTP/1.1, or
//! HTTP/2 (h2c by prior knowledge, h2 over TLS).

use bytes::Bytes;
use http::{Request, Response, Uri};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use sluice_config::UpstreamProtocol;
use sluice_transport::{UpstreamTls, dial};

/// The target of a request to `host` for `path`: origin-form for HTTP/1.1
/// (with a `Host` header added by [`send`]), absolute for HTTP/2, whose
/// `:authority` and `:scheme` come from it.
pub fn target(protocol: UpstreamProtocol, tls: bool, host: &str, path: &str) -> Result<Uri, String> {
    let text = match protocol {
        UpstreamProtocol::Http1 => path.to_owned(),
        UpstreamProtocol::Http2 => format!("{}://{host}{path}", if tls { "https" } else { "http" }),
    };
    text.parse().map_err(|e| format!("bad target {text:?}: {e}"))
}

/// Sends `req` on a new connection to `addr`; the connection lives as
/// long as the response (its body included).
pub async fn send(
    addr: &str,
    tls: Option<&UpstreamTls>,
    protocol: UpstreamProtocol,
    req: Request<Full<Bytes>>,
) -> Result<Response<Incoming>, String> {
    let stream = dial(addr, tls, protocol).await.map_err(|e| format!("connect: {e}"))?;
    let io = TokioIo::new(stream);
    match protocol {
        UpstreamProtocol::Http1 => {
            let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
                .await
                .map_err(|e| format!("handshake: {e}"))?;
            tokio::spawn(conn);
            sender.send_request(req).await
        }
        UpstreamProtocol::Http2 => {
            let (mut sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
                .await
                .map_err(|e| format!("handshake: {e}"))?;
            tokio::spawn(conn);
            sender.send_request(req).await
        }
    }
    .map_err(|e| format!("request: {e}"))
}
