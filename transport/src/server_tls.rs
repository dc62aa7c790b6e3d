//! TLS termination: rustls with TLS 1.2 and 1.3 only, ALPN `h2` and
//! `http/1.1`, and certificates chosen by SNI from a [`CertStore`] that can
//! be reloaded while running. A reload builds every pair first and swaps the
//! whole set at once; a pair that does not parse, or whose key does not
//! match its certificate, leaves the previous set serving.

use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use sluice_config::{CertificateConfig, SecretRef};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{what}: cannot read {source_ref}: {reason}")]
    Read {
        what: &'static str,
        source_ref: String,
        reason: String,
    },
    #[error("{what} {source_ref}: {reason}")]
    Invalid {
        what: &'static str,
        source_ref: String,
        reason: String,
    },
    #[error("no certificates configured")]
    Empty,
}

pub(crate) fn describe(r: &SecretRef) -> String {
    match r {
        SecretRef::File(p) => format!("file:{}", p.display()),
        SecretRef::Env(n) => format!("env:{n}"),
    }
}

pub(crate) fn read(what: &'static str, r: &SecretRef) -> Result<Vec<u8>, TlsError> {
    let fail = |reason: String| TlsError::Read {
        what,
        source_ref: describe(r),
        reason,
    };
    match r {
        SecretRef::File(p) => std::fs::read(p).map_err(|e| fail(e.kind().to_string())),
        SecretRef::Env(n) => std::env::var(n)
            .map(String::into_bytes)
            .map_err(|_| fail("variable not set".into())),
    }
}

pub(crate) fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// One loaded certificate with its key, and the PEM text they came from
/// (to tell a real change from a re-read of the same files).
#[derive(Debug)]
struct Loaded {
    key: Arc<CertifiedKey>,
    pem: (Vec<u8>, Vec<u8>),
}

impl Loaded {
    fn serves(&self, name: &ServerName<'_>) -> bool {
        let Some(leaf) = self.key.cert.first() else {
            return false;
        };
        webpki::EndEntityCert::try_from(leaf).is_ok_and(|ee| ee.verify_is_valid_for_subject_name(name).is_ok())
    }
}

fn load(pair: &CertificateConfig) -> Result<Loaded, TlsError> {
    let cert_pem = read("certificate", &pair.cert)?;
    let key_pem = read("key", &pair.key)?;
    let invalid = |what: &'static str, r: &SecretRef, reason: String| TlsError::Invalid {
        what,
        source_ref: describe(r),
        reason,
    };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| invalid("certificate", &pair.cert, e.to_string()))?;
    if chain.is_empty() {
        return Err(invalid("certificate", &pair.cert, "no PEM certificate found".into()));
    }
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| invalid("key", &pair.key, e.to_string()))?;
    let certified = CertifiedKey::from_der(chain, key, &provider())
        .map_err(|e| invalid("key", &pair.key, format!("does not fit its certificate: {e}")))?;
    Ok(Loaded {
        key: Arc::new(certified),
        pem: (cert_pem, key_pem),
    })
}

/// The served certificates; the first is the default when SNI matches none.
#[derive(Debug)]
pub struct CertStore {
    loaded: ArcSwap<Vec<Loaded>>,
}

impl CertStore {
    pub fn load(pairs: &[CertificateConfig]) -> Result<Self, TlsError> {
        Ok(Self {
            loaded: ArcSwap::from_pointee(load_all(pairs)?),
        })
    }

    /// Loads every pair again; on any error the current set keeps serving.
    /// Returns whether anything changed: the same files read again leave
    /// the served set (and the audit trail) alone.
    pub fn reload(&self, pairs: &[CertificateConfig]) -> Result<bool, TlsError> {
        let fresh = load_all(pairs)?;
        let same = fresh
            .iter()
            .map(|l| &l.pem)
            .eq(self.loaded.load().iter().map(|l| &l.pem));
        if !same {
            self.loaded.store(Arc::new(fresh));
        }
        Ok(!same)
    }
}

fn load_all(pairs: &[CertificateConfig]) -> Result<Vec<Loaded>, TlsError> {
    if pairs.is_empty() {
        return Err(TlsError::Empty);
    }
    pairs.iter().map(load).collect()
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let loaded = self.loaded.load();
        let by_name = hello
            .server_name()
            .and_then(|n| ServerName::try_from(n.to_owned()).ok())
            .and_then(|name| loaded.iter().find(|c| c.serves(&name)));
        by_name.or_else(|| loaded.first()).map(|c| Arc::clone(&c.key))
    }
}

/// The server side: TLS 1.2/1.3, ALPN h2 then http/1.1, certificates from `store`.
pub fn server_config(store: Arc<CertStore>) -> Result<Arc<rustls::ServerConfig>, rustls::Error> {
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_cert_resolver(store);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
