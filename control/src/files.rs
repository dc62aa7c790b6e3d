//! Watching files that are replaced while sluice runs (config, certificates,
//! token secrets): the watch is on their directories, so a file swapped in
//! by rename (Kubernetes ConfigMap and Secret mounts) is seen too, and any
//! event there is reported; callers re-read and compare, so unrelated
//! events cost one read.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc;

/// Keeps the watch alive; dropping it stops watching.
pub type FileWatcher = notify::RecommendedWatcher;

/// Sends `message` on `tx` for every change in the directories of `files`.
pub fn watch<T: Clone + Send + 'static>(
    files: &[PathBuf],
    tx: mpsc::UnboundedSender<T>,
    message: T,
) -> notify::Result<FileWatcher> {
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if event.is_ok() {
            let _ = tx.send(message.clone());
        }
    })?;
    let dirs: BTreeSet<PathBuf> = files.iter().map(|f| directory_of(f)).collect();
    for dir in &dirs {
        watcher.watch(dir, RecursiveMode::NonRecursive)?;
    }
    Ok(watcher)
}

fn directory_of(file: &Path) -> PathBuf {
    match file.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Writers and mounts change files in several steps: waits a moment and
/// drops the events that arrived meanwhile.
pub async fn settle<T>(rx: &mut mpsc::UnboundedReceiver<T>) {
    tokio::time::sleep(Duration::from_millis(200)).await;
    while rx.try_recv().is_ok() {}
}
