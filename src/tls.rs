//! The TLS listener's set-up and certificate rotation: the certificate and
//! key files are watched (through their directories, so renamed-in files are
//! seen) and reloaded; a pair that does not load keeps the old set serving,
//! and every attempt is logged and audited.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use sluice_config::{SecretRef, TlsConfig};
use sluice_proxy::tls::{CertStore, server_config};
use sluice_store::{AuditEntry, Store};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tracing::{error, info, warn};

use crate::app::AppError;

/// A bound TLS listener, ready to serve.
pub struct TlsListener {
    pub listener: TcpListener,
    pub acceptor: TlsAcceptor,
    /// Keeps the certificate files watched.
    pub _watcher: Option<notify::RecommendedWatcher>,
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

fn watch(
    cfg: TlsConfig,
    certs: Arc<CertStore>,
    store: Store,
    environment: Option<String>,
) -> Option<notify::RecommendedWatcher> {
    let dirs: BTreeSet<PathBuf> = cfg
        .certificates
        .iter()
        .flat_map(|c| [&c.cert, &c.key])
        .filter_map(|r| match r {
            SecretRef::File(p) => p.parent().map(|d| d.to_path_buf()),
            SecretRef::Env(_) => None,
        })
        .collect();
    if dirs.is_empty() {
        return None;
    }
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    let mut watcher = match notify::recommended_watcher(move |e: notify::Result<notify::Event>| {
        if e.is_ok() {
            let _ = tx.send(());
        }
    }) {
        Ok(w) => w,
        Err(e) => {
            warn!(error = %e, "cannot watch certificate files; rotation needs a restart");
            return None;
        }
    };
    for dir in &dirs {
        if let Err(e) = watcher.watch(dir, RecursiveMode::NonRecursive) {
            warn!(dir = %dir.display(), error = %e, "cannot watch a certificate directory");
        }
    }
    tokio::spawn(async move {
        while rx.recv().await.is_some() {
            // Certificate and key are usually written one after the other.
            tokio::time::sleep(Duration::from_millis(200)).await;
            while rx.try_recv().is_ok() {}
            let (result, message) = match certs.reload(&cfg.certificates) {
                Ok(()) => {
                    info!("TLS certificates reloaded");
                    ("ok".to_owned(), "reloaded")
                }
                Err(e) => {
                    error!(error = %e, "TLS certificate reload failed; the previous certificates keep serving");
                    (format!("rejected: {e}"), "failed")
                }
            };
            let entry = AuditEntry {
                actor: "certificate-file".into(),
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
