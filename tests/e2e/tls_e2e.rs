//! TLS termination through the real binary: SNI picks the certificate, ALPN
//! negotiates h2, a rotated pair is served to new connections within a
//! second, a mismatched pair keeps the old one, and old protocol versions
//! are refused.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::common::running::Running;
use crate::common::*;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::DigitallySignedStruct;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use tokio::time::Instant;

/// Accepts any certificate: the tests look at which one was served.
#[derive(Debug)]
struct AnyCert;

impl ServerCertVerifier for AnyCert {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }
    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        rustls::crypto::ring::default_provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Writes a fresh self-signed pair for `name` as `dir/name.crt` / `.key`;
/// returns the certificate's DER.
pub(crate) fn write_pair(dir: &Path, file: &str, name: &str) -> Vec<u8> {
    let cert = rcgen::generate_simple_self_signed(vec![name.to_owned()]).unwrap();
    // Written beside and renamed in, the way mounted secrets change.
    for (ext, pem) in [("crt", cert.cert.pem()), ("key", cert.signing_key.serialize_pem())] {
        let tmp = dir.join(format!("{file}.{ext}.tmp"));
        std::fs::write(&tmp, pem).unwrap();
        std::fs::rename(&tmp, dir.join(format!("{file}.{ext}"))).unwrap();
    }
    cert.cert.der().to_vec()
}

/// [`handshake`] offering HTTP/1.1 only.
pub(crate) async fn handshake_http1(
    addr: SocketAddr,
    name: &str,
) -> (
    Vec<u8>,
    Option<Vec<u8>>,
    tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
) {
    connect(addr, name, &[b"http/1.1"]).await
}

/// Connects with SNI `name`; returns the served certificate and the ALPN protocol.
pub(crate) async fn handshake(
    addr: SocketAddr,
    name: &str,
) -> (
    Vec<u8>,
    Option<Vec<u8>>,
    tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
) {
    connect(addr, name, &[b"h2", b"http/1.1"]).await
}

async fn connect(
    addr: SocketAddr,
    name: &str,
    alpn: &[&[u8]],
) -> (
    Vec<u8>,
    Option<Vec<u8>>,
    tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
) {
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCert))
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let stream = connector
        .connect(ServerName::try_from(name.to_owned()).unwrap(), tcp)
        .await
        .unwrap();
    let (_, session) = stream.get_ref();
    let served = session.peer_certificates().unwrap()[0].to_vec();
    let alpn = session.alpn_protocol().map(<[u8]>::to_vec);
    (served, alpn, stream)
}

fn config(dir: &Path, blue: SocketAddr) -> String {
    format!(
        r#"[proxy]
listen = "127.0.0.1:0"
[proxy.tls]
listen = "127.0.0.1:0"
[[proxy.tls.certificates]]
cert = "file:{d}/a.crt"
key = "file:{d}/a.key"
[[proxy.tls.certificates]]
cert = "file:{d}/b.crt"
key = "file:{d}/b.key"
[admin]
listen = "127.0.0.1:0"
[store]
url = "sqlite://{d}/sluice.db"
{}"#,
        pool_toml("blue", 100, &[blue]),
        d = dir.display()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sni_alpn_rotation_and_protocol_versions() {
    let blue = spawn_backend("blue", "v1", any_addr()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let a = write_pair(dir.path(), "a", "a.test");
    let b = write_pair(dir.path(), "b", "b.test");
    let sluice = Running::start(dir.path(), &config(dir.path(), blue.addr), &[]);
    let tls = sluice.tls.expect("no TLS listener reported");

    // SNI picks the certificate; an unknown name gets the first (default).
    assert_eq!(handshake(tls, "b.test").await.0, b);
    assert_eq!(handshake(tls, "a.test").await.0, a);
    assert_eq!(handshake(tls, "other.test").await.0, a);

    // ALPN h2, and a request over it reaches the backend.
    let (_, alpn, stream) = handshake(tls, "a.test").await;
    assert_eq!(alpn.as_deref(), Some(&b"h2"[..]));
    let (mut sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = http::Request::get("https://a.test/secure")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let res = sender.send_request(req).await.unwrap();
    assert_eq!(res.status(), 200);
    let body = res.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(pool_of(&String::from_utf8_lossy(&body)), "blue");

    // Rotation: a new pair for a.test is served to new connections within a second.
    let rotated = write_pair(dir.path(), "a", "a.test");
    let changed = Instant::now();
    while handshake(tls, "a.test").await.0 != rotated {
        assert!(
            changed.elapsed() < Duration::from_secs(1),
            "rotated certificate not served after 1 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    sluice.wait_log("TLS certificates reloaded", Duration::from_secs(5));

    // Re-reading the files is not a change: touching the config beside
    // them (sluice re-reads both) must not set off reloads. Before the fix
    // each re-read reported itself and reloaded, logged and audited the
    // certificates five times a second, forever.
    let config = std::fs::read(&sluice.config).unwrap();
    std::fs::write(&sluice.config, config).unwrap();
    let quiet = sluice.logs_until_exit(Duration::from_millis(1500));
    let reloads: Vec<_> = quiet
        .iter()
        .filter(|l| l.contains("reloaded") || l.contains("reload failed"))
        .collect();
    assert!(reloads.is_empty(), "re-reading unchanged files reloaded: {reloads:?}");

    // A key that does not fit its certificate keeps the previous pair.
    let other = rcgen::generate_simple_self_signed(vec!["b.test".to_owned()]).unwrap();
    std::fs::write(dir.path().join("b.key"), other.signing_key.serialize_pem()).unwrap();
    sluice.wait_log("TLS certificate reload failed", Duration::from_secs(5));
    assert_eq!(
        handshake(tls, "b.test").await.0,
        b,
        "a mismatched pair replaced the served one"
    );

    // TLS 1.1 is refused (openssl ships with Debian; the check never skips).
    let out = std::process::Command::new("openssl")
        .args([
            "s_client",
            "-tls1_1",
            "-connect",
            &tls.to_string(),
            "-servername",
            "a.test",
        ])
        .stdin(std::process::Stdio::null())
        .output()
        .expect("openssl is needed for the protocol-version check");
    assert!(!out.status.success(), "TLS 1.1 handshake succeeded");
}

/// Over TLS too, a keep-alive connection that freed its buffers after a
/// quiet second reads what comes next whole: the first bytes come through
/// a small read while the rest waits in the TLS session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_connection_that_freed_its_buffers_while_idle_reads_the_next_requests_whole() {
    use tokio::io::AsyncWriteExt;
    let blue = spawn_backend("blue", "v1", any_addr()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    write_pair(dir.path(), "a", "a.test");
    write_pair(dir.path(), "b", "b.test");
    let sluice = Running::start(dir.path(), &config(dir.path(), blue.addr), &[]);
    let (_, _, mut tls) = handshake_http1(sluice.tls.expect("no TLS listener reported"), "a.test").await;
    let pad = "p".repeat(3000);
    let requests = [
        "GET /first HTTP/1.1\r\nhost: a.test\r\n\r\n".to_owned(),
        format!("GET /big HTTP/1.1\r\nhost: a.test\r\nx-pad: {pad}\r\n\r\n"),
        "GET /a HTTP/1.1\r\nhost: a.test\r\n\r\nGET /b HTTP/1.1\r\nhost: a.test\r\n\r\n".to_owned(),
    ];
    let mut expected = vec![vec!["/first"], vec!["/big"], vec!["/a", "/b"]].into_iter();
    for (i, request) in requests.iter().enumerate() {
        if i > 0 {
            // The client's pace: quiet past the second after which buffers go.
            tokio::time::sleep(Duration::from_millis(1300)).await;
        }
        tls.write_all(request.as_bytes()).await.unwrap();
        for path in expected.next().unwrap() {
            expect_served(&mut tls, path).await;
        }
    }
}

/// A pair the way a real site has one: issued by a CA (written as
/// `ca.pem`), valid for under a year (Mozilla's lifespan limit), for
/// `localhost` and 127.0.0.1.
fn write_site_pair(dir: &Path) {
    let year: i32 = humantime::format_rfc3339(std::time::SystemTime::now()).to_string()[..4]
        .parse()
        .unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign, rcgen::KeyUsagePurpose::CrlSign];
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "sluice test CA");
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, rcgen::KeyPair::generate().unwrap()).unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
    params.not_before = rcgen::date_time_ymd(year, 1, 1);
    params.not_after = rcgen::date_time_ymd(year, 12, 31);
    params.use_authority_key_identifier_extension = true;
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &ca).unwrap();
    std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
    std::fs::write(dir.join("a.crt"), cert.pem()).unwrap();
    std::fs::write(dir.join("a.key"), key.serialize_pem()).unwrap();
    std::fs::copy(dir.join("a.crt"), dir.join("b.crt")).unwrap();
    std::fs::copy(dir.join("a.key"), dir.join("b.key")).unwrap();
}

/// sslyze's check against Mozilla's "intermediate" TLS configuration.
/// `scripts/test` installs sslyze; without it the test fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sslyze_finds_the_listener_compliant_with_mozilla_intermediate() {
    if !tool_present(runs("sslyze", "--help"), "sslyze (pip install sslyze)") {
        return;
    }
    let blue = spawn_backend("blue", "v1", any_addr()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    write_site_pair(dir.path());
    let sluice = Running::start(dir.path(), &config(dir.path(), blue.addr), &[]);
    let tls = sluice.tls.expect("no TLS listener reported");
    let ca = dir.path().join("ca.pem");
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("sslyze")
            .arg("--mozilla_config=intermediate")
            .arg("--certinfo_ca_file")
            .arg(ca)
            .arg(format!("localhost:{}{{127.0.0.1}}", tls.port()))
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{report}{}", String::from_utf8_lossy(&out.stderr));
    assert!(report.contains("OK - Compliant"), "{report}");
}
