//! TLS from sluice to a pool's backends: the backends' certificates must
//! chain to the pool's CA and match the server name (SNI), and a client
//! certificate is presented when the pool has one (mutual TLS). ALPN
//! offers only the pool's protocol, so an h2 pool never falls back silently.

use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use sluice_config::{UpstreamProtocol, UpstreamTlsConfig};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use crate::server_tls::{TlsError, describe, provider, read};

/// A pool's ready-to-use TLS client, built once per config.
pub struct UpstreamTls {
    config: UpstreamTlsConfig,
    connector: TlsConnector,
    /// The same, offering only HTTP/1.1: health probes and smoke checks.
    http1_connector: TlsConnector,
    server_name: Option<ServerName<'static>>,
}

impl std::fmt::Debug for UpstreamTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamTls").field("config", &self.config).finish()
    }
}

/// Two pools' TLS are the same when their configs are.
impl PartialEq for UpstreamTls {
    fn eq(&self, other: &Self) -> bool {
        self.config == other.config
    }
}

impl Eq for UpstreamTls {}

fn invalid(what: &'static str, source_ref: String, reason: impl ToString) -> TlsError {
    TlsError::Invalid {
        what,
        source_ref,
        reason: reason.to_string(),
    }
}

impl UpstreamTls {
    /// Reads the CA (and client pair) and builds the client config.
    pub fn load(config: &UpstreamTlsConfig, protocol: UpstreamProtocol) -> Result<Self, TlsError> {
        let ca_pem = read("backend CA", &config.ca)?;
        let mut roots = RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(&ca_pem) {
            let cert = cert.map_err(|e| invalid("backend CA", describe(&config.ca), e))?;
            roots
                .add(cert)
                .map_err(|e| invalid("backend CA", describe(&config.ca), e))?;
        }
        if roots.is_empty() {
            return Err(invalid("backend CA", describe(&config.ca), "holds no PEM certificate"));
        }
        let builder = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| invalid("backend TLS", describe(&config.ca), e))?
            .with_root_certificates(roots);
        let mut client = match &config.client_cert {
            None => builder.with_no_client_auth(),
            Some(pair) => {
                let cert_pem = read("client certificate", &pair.cert)?;
                let certs = CertificateDer::pem_slice_iter(&cert_pem)
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| invalid("client certificate", describe(&pair.cert), e))?;
                let key_pem = read("client key", &pair.key)?;
                let key = PrivateKeyDer::from_pem_slice(&key_pem)
                    .map_err(|e| invalid("client key", describe(&pair.key), e))?;
                builder
                    .with_client_auth_cert(certs, key)
                    .map_err(|e| invalid("client certificate", describe(&pair.cert), e))?
            }
        };
        let mut http1 = client.clone();
        http1.alpn_protocols = vec![b"http/1.1".to_vec()];
        client.alpn_protocols = vec![match protocol {
            UpstreamProtocol::Http1 => b"http/1.1".to_vec(),
            UpstreamProtocol::Http2 => b"h2".to_vec(),
        }];
        let server_name = config
            .server_name
            .as_deref()
            .map(|n| ServerName::try_from(n.to_owned()))
            .transpose()
            .map_err(|e| invalid("backend TLS server_name", describe(&config.ca), e))?;
        Ok(Self {
            config: config.clone(),
            connector: TlsConnector::from(Arc::new(client)),
            http1_connector: TlsConnector::from(Arc::new(http1)),
            server_name,
        })
    }

    /// The same client checking `host` when no `server_name` is set: a
    /// backend found under a DNS name (its address is an IP) is checked
    /// against that name, as on the request path.
    pub fn named(&self, host: &str) -> std::io::Result<UpstreamTls> {
        let server_name = match &self.server_name {
            Some(name) => Some(name.clone()),
            None => Some(ServerName::try_from(host.to_owned()).map_err(std::io::Error::other)?),
        };
        Ok(UpstreamTls {
            config: self.config.clone(),
            connector: self.connector.clone(),
            http1_connector: self.http1_connector.clone(),
            server_name,
        })
    }

    /// The TLS handshake over `tcp` to the backend at `addr` (`host:port`).
    pub async fn connect(&self, addr: &str, tcp: TcpStream) -> std::io::Result<TlsStream<TcpStream>> {
        self.connector.connect(self.name_for(addr)?, tcp).await
    }

    fn name_for(&self, addr: &str) -> std::io::Result<ServerName<'static>> {
        Ok(match &self.server_name {
            Some(name) => name.clone(),
            None => {
                let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
                let host = host.trim_start_matches('[').trim_end_matches(']');
                ServerName::try_from(host.to_owned()).map_err(std::io::Error::other)?
            }
        })
    }
}

/// A byte stream to a backend, plain or TLS.
pub trait BackendIo: AsyncRead + AsyncWrite + Unpin + Send {}

impl<T: AsyncRead + AsyncWrite + Unpin + Send> BackendIo for T {}

/// A connection for one HTTP/1.1 exchange outside the request path (health
/// probes, smoke checks): TLS when the pool has it, ALPN `http/1.1`.
pub async fn dial_http1(addr: &str, tls: Option<&UpstreamTls>) -> std::io::Result<Box<dyn BackendIo>> {
    dial(addr, tls, UpstreamProtocol::Http1).await
}

/// A connection outside the request path that speaks `protocol`: TLS
/// when the pool has it, with that protocol's ALPN (HTTP/2 without TLS is
/// h2c by prior knowledge).
pub async fn dial(
    addr: &str,
    tls: Option<&UpstreamTls>,
    protocol: UpstreamProtocol,
) -> std::io::Result<Box<dyn BackendIo>> {
    let tcp = TcpStream::connect(addr).await?;
    let _ = tcp.set_nodelay(true);
    Ok(match (tls, protocol) {
        (None, _) => Box::new(tcp),
        (Some(tls), UpstreamProtocol::Http1) => Box::new(tls.http1_connector.connect(tls.name_for(addr)?, tcp).await?),
        // The pool's own connector asks for its protocol (h2).
        (Some(tls), UpstreamProtocol::Http2) => Box::new(tls.connector.connect(tls.name_for(addr)?, tcp).await?),
    })
}
