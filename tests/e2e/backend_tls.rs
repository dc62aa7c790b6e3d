//! TLS from sluice to backends through the real binary: a backend behind
//! its own CA that requires a client certificate (mutual TLS) is reached
//! with the pool's CA, server name and client pair; a wrong server name or
//! a missing client certificate fails the health check and the request
//! (502), never falling back to plain text.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use rustls::RootCertStore;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::common::running::Running;
use crate::common::*;

struct Pki {
    ca_pem: String,
    server: (CertificateDer<'static>, PrivateKeyDer<'static>),
    client_pem: (String, String),
    ca_der: CertificateDer<'static>,
}

/// A CA, a server certificate for `backend.test` and a client pair.
fn pki() -> Pki {
    let ca = test_ca();
    let server = leaf(&ca, &["backend.test"]);
    let client = leaf(&ca, &["sluice.test"]);
    Pki {
        ca_pem: ca.pem(),
        ca_der: ca.der().clone(),
        server: (server.cert, server.key),
        client_pem: (client.cert_pem, client.key_pem),
    }
}

/// A backend that speaks only TLS and requires a client certificate from
/// `pki`'s CA; counts the requests it answered.
async fn mtls_backend(pki: &Pki) -> (SocketAddr, Arc<AtomicU64>) {
    let mut roots = RootCertStore::empty();
    roots.add(pki.ca_der.clone()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), Arc::clone(&provider))
        .build()
        .unwrap();
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(vec![pki.server.0.clone()], pki.server.1.clone_key())
        .unwrap();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let answered = Arc::new(AtomicU64::new(0));
    let count = Arc::clone(&answered);
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else { return };
            let (acceptor, count) = (acceptor.clone(), Arc::clone(&count));
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else { return };
                let service = service_fn(move |_req| {
                    count.fetch_add(1, Ordering::Relaxed);
                    async {
                        Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from_static(
                            br#"{"pool":"secure","tls":true}"#,
                        ))))
                    }
                });
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    (addr, answered)
}

fn config(dir: &Path, backend: SocketAddr, tls: &str) -> String {
    format!(
        "[proxy]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\n[store]\nurl = \"sqlite://{d}/sluice.db\"\n\
         [health]\ninterval = \"300ms\"\ntimeout = \"300ms\"\n\
         [pools.secure]\nversion = \"v1\"\nweight = 100\nbackends = [\"{backend}\"]\n[pools.secure.tls]\n{tls}",
        d = dir.display()
    )
}

/// `pki`'s CA and client pair as files in `dir`: their paths.
fn write_pki(dir: &Path, pki: &Pki) -> (String, String, String) {
    let write = |name: &str, text: &str| {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    };
    (
        write("ca.pem", &pki.ca_pem),
        write("client.pem", &pki.client_pem.0),
        write("client.key", &pki.client_pem.1),
    )
}

async fn pool_healthy(c: &TestClient, sluice: &Running) -> bool {
    let (_, _, pools) = get(c, &format!("http://{}/api/v1/pools", sluice.admin), &[]).await;
    pools.contains("\"healthy\":true")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_reaches_its_backends_over_mutual_tls() {
    let pki = pki();
    let (backend, answered) = mtls_backend(&pki).await;
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = write_pki(dir.path(), &pki);
    let good =
        format!("ca = \"file:{ca}\"\nserver_name = \"backend.test\"\ncert = \"file:{cert}\"\nkey = \"file:{key}\"\n");
    let sluice = Running::start(dir.path(), &config(dir.path(), backend, &good), &[]);
    let c = client();
    let url = format!("http://{}/", sluice.addr);
    let (status, _, body) = get(&c, &url, &[]).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"tls\":true"), "{body}");
    for _ in 0..20 {
        assert_eq!(get(&c, &url, &[]).await.0, 200);
    }
    assert!(pool_healthy(&c, &sluice).await, "the TLS health probe passes");
    assert!(answered.load(Ordering::Relaxed) >= 21);
    drop(sluice);

    // Without the client certificate the backend refuses the handshake.
    let dir2 = tempfile::tempdir().unwrap();
    let no_client = format!("ca = \"file:{ca}\"\nserver_name = \"backend.test\"\n");
    let sluice = Running::start(dir2.path(), &config(dir2.path(), backend, &no_client), &[]);
    let before = answered.load(Ordering::Relaxed);
    let (status, headers, _) = get(&c, &format!("http://{}/", sluice.addr), &[]).await;
    assert!(status == 502 || status == 503, "{status}");
    assert!(headers.get("x-sluice-error").is_some());
    drop(sluice);

    // A server name the certificate does not carry is refused by sluice.
    let dir3 = tempfile::tempdir().unwrap();
    let wrong_name = good.replace("backend.test", "other.test");
    let sluice = Running::start(dir3.path(), &config(dir3.path(), backend, &wrong_name), &[]);
    let (status, _, _) = get(&c, &format!("http://{}/", sluice.addr), &[]).await;
    assert!(status == 502 || status == 503, "{status}");
    // The probes fail too: the backend is marked down after the fall count.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while pool_healthy(&c, &sluice).await {
        assert!(tokio::time::Instant::now() < deadline, "the TLS probe never failed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(answered.load(Ordering::Relaxed), before, "no request got through");
}

#[test]
fn a_bad_backend_ca_is_a_config_error_naming_the_pool() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("ca.pem");
    std::fs::write(&bad, "not a certificate").unwrap();
    let text = config(
        dir.path(),
        "127.0.0.1:9".parse().unwrap(),
        &format!("ca = \"file:{}\"\n", bad.display()),
    );
    let path = dir.path().join("sluice.toml");
    std::fs::write(&path, text).unwrap();
    let out = std::process::Command::new(crate::common::running::SLUICE)
        .args(["run", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("pool \"secure\"") && err.contains("backend CA"), "{err}");
}

/// A backend found by DNS name and reached over TLS with no `server_name`:
/// requests and health probes check its certificate against the name it
/// was found under (`backend.test`), not its address (127.0.0.1, which
/// the certificate does not carry).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_discovered_backend_is_checked_against_its_dns_name() {
    let pki = pki();
    let (backend, answered) = mtls_backend(&pki).await;
    let dir = tempfile::tempdir().unwrap();
    let dns = crate::discovery::Dns::start(dir.path(), crate::discovery::free_udp_port());
    dns.set("backend.test", &["127.0.0.1"]);
    let (ca, cert, key) = write_pki(dir.path(), &pki);
    let tls = format!("ca = \"file:{ca}\"\ncert = \"file:{cert}\"\nkey = \"file:{key}\"\n");
    let text = config(dir.path(), backend, &tls)
        .replace(
            &format!("backends = [\"{backend}\"]"),
            &format!("backends = [\"backend.test:{}\"]", backend.port()),
        )
        .replace(
            "[pools.secure]",
            &format!(
                "[discovery]\nnameservers = [\"127.0.0.1:{}\"]\n[pools.secure]",
                dns.port
            ),
        );
    let sluice = Running::start(dir.path(), &text, &[]);
    let c = client();
    let (status, _, body) = get(&c, &format!("http://{}/", sluice.addr), &[]).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"tls\":true"), "{body}");
    // The backend answers the probes too (three after the request), so
    // their handshakes pass, and the pool stays up.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while answered.load(Ordering::Relaxed) < 4 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the TLS health probes never got through"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(pool_healthy(&c, &sluice).await, "the TLS health probe failed");
}
