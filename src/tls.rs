//! The TLS listener's set-up and certificate rotation: the certificate and
//! key files are watched (through their directories, so renamed-in files are
//! seen) and reloaded; a pair that does not load keeps the old set serving,
//! and every attempt is logged and audited.

use std::path::PathBuf;
use std::sync::Arc;

use sluice_config::{SecretRef, TlsConfig};
use sluice_store::{AuditEntry, Store};
use sluice_transport::files::{self, FileWatcher};
use sluice_transport::{CertStore, server_config};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tracing::{error, info, warn};

use crate::error::AppError;

/// A bound TLS listener, ready to serve.
pub struct TlsListener {
    pub listener: TcpListener,
    pub acceptor: TlsAcceptor,
    /// Keeps the certificate files watched.
    pub _watcher: Option<FileWatcher>,
}

/// Loads the certificates, binds the TLS listener and starts rotation.
pub async fn start(
    cfg: &TlsConfig,
    store: &Store,
    environment: Option<String>,
    inherited: Option<std::net::TcpListener>,
) -> Result<TlsListener, AppError> {
    let certs = Arc::new(CertStore::load(&cfg.certificates)?);
    let server = server_config(Arc::clone(&certs)).map_err(|e| AppError::Other(format!("TLS: {e}")))?;
    let listener = match inherited {
        Some(l) => crate::upgrade::adopt(l)?,
        None => TcpListener::bind(cfg.listen).await.map_err(|source| AppError::Bind {
            addr: cfg.listen,
            source,
        })?,
    };
    let bound = listener.local_addr().unwrap_or(cfg.listen);
    info!(listen = %bound, certificates = cfg.certificates.len(), "sluice TLS listening");
    let watcher = watch(cfg.clone(), certs, store.clone(), environment);
    Ok(TlsListener {
        listener,
        acceptor: TlsAcceptor::from(server),
        _watcher: watcher,
    })
}

fn watch(cfg: TlsConfig, certs: Arc<CertStore>, store: Store, environment: Option<String>) -> Option<FileWatcher> {
    let files: Vec<PathBuf> = cfg
        .certificates
        .iter()
        .flat_map(|c| [&c.cert, &c.key])
        .filter_map(|r| match r {
            SecretRef::File(p) => Some(p.clone()),
            SecretRef::Env(_) => None,
        })
        .collect();
    if files.is_empty() {
        return None;
    }
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    let watcher = match files::watch(&files, tx, ()) {
        Ok(w) => w,
        Err(e) => {
            warn!(error = %e, "cannot watch certificate files; rotation needs a restart");
            return None;
        }
    };
    tokio::spawn(async move {
        while rx.recv().await.is_some() {
            // Certificate and key are usually written one after the other.
            files::settle(&mut rx).await;
            let (result, message) = match certs.reload(&cfg.certificates) {
                Ok(false) => continue,
                Ok(true) => {
                    info!("TLS certificates reloaded");
                    ("ok".to_owned(), "reloaded")
                }
                Err(e) => {
                    error!(error = %e, "TLS certificate reload failed; the previous certificates keep serving");
                    (format!("rejected: {e}"), "failed")
                }
            };
            let entry = AuditEntry {
                actor: sluice_routing::Actor::CertificateFile.as_str().into(),
                action: "tls.reload".into(),
                target: "proxy.tls.certificates".into(),
                result,
                environment: environment.clone(),
                ..Default::default()
            };
            if let Err(e) = store.append_audit(&entry).await {
                warn!(error = %e, message, "could not audit a certificate reload");
            }
        }
    });
    Some(watcher)
}
