//! Token rotation: the secret files are watched (their directories, so a
//! Kubernetes-style symlink swap is seen too) and re-read on any change.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
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
) -> notify::Result<Option<notify::RecommendedWatcher>> {
    let files = tokens.files();
    if files.is_empty() {
        return Ok(None);
    }
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if event.is_ok() {
            let _ = tx.send(());
        }
    })?;
    let dirs: BTreeSet<PathBuf> = files
        .iter()
        .filter_map(|f| f.parent().map(|p| p.to_path_buf()))
        .collect();
    for dir in &dirs {
        watcher.watch(dir, RecursiveMode::NonRecursive)?;
    }
    tokio::spawn(async move {
        while rx.recv().await.is_some() {
            // Editors and mounts write in several steps: let them settle.
            tokio::time::sleep(Duration::from_millis(50)).await;
            while rx.try_recv().is_ok() {}
            match tokens.reload() {
                Ok(changed) => {
                    for name in changed {
                        info!(token = %name, "admin token rotated");
                        let entry = AuditEntry {
                            actor: "token-file".into(),
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
