//! Watching files that are replaced while sluice runs (config, certificates,
//! token secrets): the watch is on their directories, so a file swapped in
//! by rename (Kubernetes ConfigMap and Secret mounts) is seen too. Only
//! events that can change a watched file are reported: ones naming it or a
//! Kubernetes `..data` swap, never mere opens and reads, since sluice's own
//! re-read of a file would otherwise report itself, and a reload would
//! trigger the next one forever. Callers re-read and compare.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::event::{AccessKind, AccessMode};
use notify::{Event, EventKind, RecursiveMode, Watcher};
use tokio::sync::mpsc;

/// Keeps the watch alive; dropping it stops watching.
pub type FileWatcher = notify::RecommendedWatcher;

/// Sends `message` on `tx` for every change that may concern `files`.
pub fn watch<T: Clone + Send + 'static>(
    files: &[PathBuf],
    tx: mpsc::UnboundedSender<T>,
    message: T,
) -> notify::Result<FileWatcher> {
    let names: BTreeSet<OsString> = files.iter().filter_map(|f| f.file_name()).map(OsString::from).collect();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<Event>| {
        if event.is_ok_and(|e| may_change(&e, &names)) {
            let _ = tx.send(message.clone());
        }
    })?;
    let dirs: BTreeSet<PathBuf> = files.iter().map(|f| directory_of(f)).collect();
    for dir in &dirs {
        watcher.watch(dir, RecursiveMode::NonRecursive)?;
    }
    Ok(watcher)
}

/// Whether `event` may have changed a file named in `names`: a write, a
/// creation, a rename or a removal of it, or of a Kubernetes mount's
/// `..data` link (or its `..`-prefixed siblings) that it points through.
/// Opening and reading change nothing; a writer closing it does.
fn may_change(event: &Event, names: &BTreeSet<OsString>) -> bool {
    match event.kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => {}
        EventKind::Access(_) => return false,
        _ => {}
    }
    // No paths: the watcher lost track (a rescan); anything may have changed.
    event.paths.is_empty()
        || event
            .paths
            .iter()
            .filter_map(|p| p.file_name())
            .any(|name| names.contains(name) || name.as_encoded_bytes().starts_with(b".."))
}

fn directory_of(file: &Path) -> PathBuf {
    match file.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Writers and mounts change files in several steps: waits a moment and
/// drops the events that arrived meanwhile. (A Kubernetes mount's swap is
/// one rename after its files are written; 100 ms leaves a rotation most
/// of its one-second promise on a loaded machine.)
pub async fn settle<T>(rx: &mut mpsc::UnboundedReceiver<T>) {
    tokio::time::sleep(Duration::from_millis(100)).await;
    while rx.try_recv().is_ok() {}
}

#[cfg(test)]
mod tests {
    use notify::event::{CreateKind, ModifyKind, RemoveKind, RenameMode};

    use super::*;

    fn event(kind: EventKind, path: &str) -> Event {
        Event::new(kind).add_path(PathBuf::from(path))
    }

    fn watched() -> BTreeSet<OsString> {
        [OsString::from("sluice.toml"), OsString::from("tls.crt")].into()
    }

    #[test]
    fn reading_a_watched_file_is_not_a_change() {
        let names = watched();
        for kind in [
            EventKind::Access(AccessKind::Open(AccessMode::Any)),
            EventKind::Access(AccessKind::Read),
            EventKind::Access(AccessKind::Close(AccessMode::Read)),
        ] {
            assert!(!may_change(&event(kind, "/etc/sluice/sluice.toml"), &names), "{kind:?}");
        }
    }

    #[test]
    fn writing_renaming_or_removing_a_watched_file_is_a_change() {
        let names = watched();
        for kind in [
            EventKind::Access(AccessKind::Close(AccessMode::Write)),
            EventKind::Modify(ModifyKind::Any),
            EventKind::Modify(ModifyKind::Name(RenameMode::To)),
            EventKind::Create(CreateKind::File),
            EventKind::Remove(RemoveKind::File),
        ] {
            assert!(may_change(&event(kind, "/etc/sluice/tls.crt"), &names), "{kind:?}");
        }
    }

    #[test]
    fn other_files_in_the_directory_are_ignored() {
        let names = watched();
        let wal = event(EventKind::Modify(ModifyKind::Any), "/etc/sluice/sluice.db-wal");
        assert!(!may_change(&wal, &names));
        let editor = event(EventKind::Create(CreateKind::File), "/etc/sluice/.sluice.toml.swp");
        assert!(!may_change(&editor, &names));
    }

    #[test]
    fn a_kubernetes_mount_swap_and_a_rescan_are_changes() {
        let names = watched();
        let swap = event(
            EventKind::Modify(ModifyKind::Name(RenameMode::To)),
            "/etc/sluice/..data",
        );
        assert!(may_change(&swap, &names));
        let staged = event(
            EventKind::Create(CreateKind::Folder),
            "/etc/sluice/..2026_11_26_10_00_00.1",
        );
        assert!(may_change(&staged, &names));
        assert!(may_change(&Event::new(EventKind::Other), &names));
    }
}
