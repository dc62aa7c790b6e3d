//! The access log's writer: a thread of its own (a slow disk never stalls
//! the runtime's workers) that takes lines in batches, formats them and
//! writes each batch with one call. A log file renamed or removed away
//! (logrotate) is noticed within a second and a new one opened; SIGUSR1
//! reopens it at once. Lines that cannot be written (no file, a full disk)
//! are dropped and counted, and the file is tried again, so a broken log
//! never fails a request or grows memory.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use sluice_config::AccessLogFormat;
use sluice_routing::stats::ACCESS_LOG_DROPPED;
use tokio::sync::mpsc;
use tracing::warn;

use super::entry::Entry;
use super::format;

/// Lines written per call at most.
const BATCH: u64 = 512;
/// How often the file's path is checked for a rotation (and a failed open
/// retried).
const CHECK_EVERY: Duration = Duration::from_secs(1);

/// The running writer, as its owner holds it.
#[derive(Debug)]
pub(super) struct Handle {
    reopen: Arc<AtomicBool>,
    done: std::sync::mpsc::Receiver<()>,
}

impl Handle {
    pub(super) fn reopen(&self) {
        self.reopen.store(true, Ordering::Relaxed);
    }

    /// Waits until the writer has ended (its channel closed and drained).
    pub(super) fn wait(&self, within: Duration) {
        let _ = self.done.recv_timeout(within);
    }
}

pub(super) fn start(rx: mpsc::Receiver<Box<Entry>>, path: String, format: AccessLogFormat) -> Handle {
    let reopen = Arc::new(AtomicBool::new(false));
    let (done_tx, done) = std::sync::mpsc::channel();
    let flag = Arc::clone(&reopen);
    let spawned = std::thread::Builder::new()
        .name("sluice-access-log".into())
        .spawn(move || {
            run(rx, Output::new(path), format, &flag);
            let _ = done_tx.send(());
        });
    if let Err(e) = spawned {
        warn!(error = %e, "cannot start the access-log writer; lines are dropped and counted");
    }
    Handle { reopen, done }
}

fn run(mut rx: mpsc::Receiver<Box<Entry>>, mut out: Output, format: AccessLogFormat, reopen: &AtomicBool) {
    let mut buf = Vec::with_capacity(64 * 1024);
    while let Some(first) = rx.blocking_recv() {
        buf.clear();
        format::line(format, &first, &mut buf);
        drop(first);
        let mut lines = 1;
        while lines < BATCH {
            let Ok(entry) = rx.try_recv() else { break };
            format::line(format, &entry, &mut buf);
            lines += 1;
        }
        if reopen.swap(false, Ordering::Relaxed) {
            out.reopen();
        }
        out.write(&buf, lines);
        if buf.capacity() > 1024 * 1024 {
            buf = Vec::with_capacity(64 * 1024);
        }
    }
    out.flush();
}

/// Where lines go: standard output, or a file found by its path.
struct Output {
    /// `None` for standard output.
    path: Option<String>,
    file: Option<File>,
    /// The open file's (device, inode), to notice a rotation.
    id: Option<(u64, u64)>,
    checked: Instant,
    /// A failure is logged once until writing works again.
    failing: bool,
}

impl Output {
    fn new(path: String) -> Self {
        let mut out = Self {
            path: (path != "-").then_some(path),
            file: None,
            id: None,
            checked: Instant::now(),
            failing: false,
        };
        out.reopen();
        out
    }

    fn reopen(&mut self) {
        self.checked = Instant::now();
        let Some(path) = &self.path else { return };
        self.file = None;
        self.id = None;
        let mut options = OpenOptions::new();
        options.append(true).create(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o640);
        match options.open(path) {
            Ok(file) => {
                self.id = file_id(&file.metadata().ok());
                self.file = Some(file);
            }
            Err(e) => self.failed(&e),
        }
    }

    /// Reopens when the path no longer names the open file (renamed or
    /// removed by a rotation), or when it could not be opened before.
    fn check(&mut self) {
        if self.path.is_none() || self.checked.elapsed() < CHECK_EVERY {
            return;
        }
        self.checked = Instant::now();
        let now = self.path.as_deref().and_then(|p| file_id(&std::fs::metadata(p).ok()));
        if self.file.is_none() || now.is_none() || now != self.id {
            self.reopen();
        }
    }

    fn write(&mut self, bytes: &[u8], lines: u64) {
        self.check();
        let written = match (&self.path, &mut self.file) {
            (None, _) => std::io::stdout().lock().write_all(bytes),
            (Some(_), Some(file)) => file.write_all(bytes),
            (Some(_), None) => {
                ACCESS_LOG_DROPPED.fetch_add(lines, Ordering::Relaxed);
                return;
            }
        };
        match written {
            Ok(()) => self.failing = false,
            Err(e) => {
                // Part of the batch may be written; all of it is counted.
                ACCESS_LOG_DROPPED.fetch_add(lines, Ordering::Relaxed);
                self.failed(&e);
            }
        }
    }

    fn flush(&mut self) {
        if self.path.is_none() {
            let _ = std::io::stdout().lock().flush();
        }
    }

    fn failed(&mut self, e: &std::io::Error) {
        if !self.failing {
            let path = self.path.as_deref().unwrap_or("-");
            warn!(path, error = %e, "cannot write the access log; lines are dropped and counted until it works again");
            self.failing = true;
        }
    }
}

#[cfg(unix)]
fn file_id(meta: &Option<std::fs::Metadata>) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    meta.as_ref().map(|m| (m.dev(), m.ino()))
}

#[cfg(not(unix))]
fn file_id(meta: &Option<std::fs::Metadata>) -> Option<(u64, u64)> {
    meta.as_ref().map(|m| (m.len(), 0))
}
