//! Token rotation: the secret files are watched (their directories, so a
//! Kubernetes-style symlink swap is seen too) and re-read on any change.

use std::sync::Arc;

use sluice_store::{AuditEntry, Store};
use tracing::{info, warn};

use crate::TokenSet;

/// Watches the token files and reloads `tokens` when they change; each
/// rotation is audited by token name, never with the value. Returns the
/// watcher, which stops watching when dropped.
pub fn watch_token_files(
    tokens: Arc<TokenSet>,
    store: Store,
    environment: Option<String>,
) -> notify::Result<Option<sluice_transport::files::FileWatcher>> {
    let files = tokens.files();
    if files.is_empty() {
        return Ok(None);
    }
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    let watcher = sluice_transport::files::watch(&files, tx, ())?;
    tokio::spawn(async move {
        while rx.recv().await.is_some() {
            sluice_transport::files::settle(&mut rx).await;
            match tokens.reload() {
                Ok(changed) => {
                    for name in changed {
                        info!(token = %name, "admin token rotated");
                        let entry = AuditEntry {
                            actor: sluice_routing::Actor::TokenFile.as_str().into(),
                            action: "token.rotate".into(),
                            target: format!("tokens/{name}"),
                            result: "ok".into(),
                            environment: environment.clone(),
                            ..Default::default()
                        };
                        if let Err(e) = store.append_audit(&entry).await {
                            warn!(error = %e, "could not audit a token rotation");
                        }
                    }
                }
                Err(e) => {
                    warn!(error = %e, "token files changed but could not be read; the previous tokens stay in force")
                }
            }
        }
    });
    Ok(Some(watcher))
}
