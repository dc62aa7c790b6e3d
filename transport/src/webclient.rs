//! POSTs to webhooks (alerts, rollout hooks) and to other replicas over
//! `http://` or `https://`. HTTPS checks the server against the system's trusted roots
//! (`rustls-native-certs`: the OS store, or the bundle `SSL_CERT_FILE`
//! names). One connection per call: webhooks are rare, and a fresh
//! connection never carries state from an earlier failure.

use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Request, StatusCode, Uri, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tracing::debug;

/// The trusted roots, loaded once (reading the store takes milliseconds).
fn tls_config() -> Result<Arc<rustls::ClientConfig>, String> {
    static CONFIG: OnceLock<Result<Arc<rustls::ClientConfig>, String>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let loaded = rustls_native_certs::load_native_certs();
            for e in &loaded.errors {
                debug!(error = %e, "a trusted root could not be read");
            }
            let mut roots = rustls::RootCertStore::empty();
            let (added, _) = roots.add_parsable_certificates(loaded.certs);
            if added == 0 {
                return Err(
                    "no trusted root certificates found (install ca-certificates, or set SSL_CERT_FILE)".into(),
                );
            }
            let config =
                rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                    .with_safe_default_protocol_versions()
                    .map_err(|e| e.to_string())?
                    .with_root_certificates(roots)
                    .with_no_client_auth();
            Ok(Arc::new(config))
        })
        .clone()
}

/// POSTs `body` as JSON to `url`; the answer's status and up to `max_body`
/// bytes of its body. Every failure is a sentence for a log or an audit row.
pub async fn post_json(url: &str, body: Bytes, max_body: usize) -> Result<(StatusCode, Bytes), String> {
    let json = [(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))];
    match post(url, &json, body, max_body).await {
        Ok(answer) => Ok((answer.status, answer.body)),
        Err(e) => Err(format!("webhook {e}")),
    }
}

/// What a server answered.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    /// Up to the `max_body` bytes asked for.
    pub body: Bytes,
}

/// POSTs `body` to `url` with `headers` (plus Host and User-Agent).
pub async fn post(
    url: &str,
    headers: &[(HeaderName, HeaderValue)],
    body: Bytes,
    max_body: usize,
) -> Result<Answer, String> {
    let uri: Uri = url.parse().map_err(|_| format!("invalid URL {url:?}"))?;
    let https = match uri.scheme_str() {
        Some("https") => true,
        Some("http") => false,
        _ => return Err(format!("URL {url:?} is not http:// or https://")),
    };
    let host = uri.host().ok_or_else(|| format!("URL {url:?} has no host"))?;
    let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
    // IPv6 literals come bracketed in URLs; connect and SNI want them bare.
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let tcp = TcpStream::connect((bare, port))
        .await
        .map_err(|e| format!("unreachable: {e}"))?;
    let _ = tcp.set_nodelay(true);
    let authority = uri.authority().map_or(host, |a| a.as_str()).to_owned();
    let path = uri.path_and_query().map_or("/", |p| p.as_str()).to_owned();
    let mut req = Request::post(path)
        .header(header::HOST, authority)
        .header(header::USER_AGENT, concat!("sluice/", env!("CARGO_PKG_VERSION")));
    for (name, value) in headers {
        req = req.header(name, value);
    }
    let req = req.body(Full::new(body)).map_err(|e| format!("bad request: {e}"))?;
    if https {
        let name = ServerName::try_from(bare.to_owned()).map_err(|_| format!("{host:?} is not a TLS server name"))?;
        let tls = tokio_rustls::TlsConnector::from(tls_config()?)
            .connect(name, tcp)
            .await
            .map_err(|e| format!("TLS handshake failed: {e}"))?;
        exchange(tls, req, max_body).await
    } else {
        exchange(tcp, req, max_body).await
    }
}

async fn exchange<IO>(io: IO, req: Request<Full<Bytes>>, max_body: usize) -> Result<Answer, String>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| format!("handshake failed: {e}"))?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            debug!(error = %e, "web client connection ended with an error");
        }
    });
    let res = sender
        .send_request(req)
        .await
        .map_err(|e| format!("unreachable: {e}"))?;
    let (parts, body) = res.into_parts();
    let body = Limited::new(body, max_body)
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    Ok(Answer {
        status: parts.status,
        headers: parts.headers,
        body,
    })
}
