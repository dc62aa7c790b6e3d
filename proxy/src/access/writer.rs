//! The access log's writer: a thread of its own (a slow disk never stalls
//! the runtime's workers) that takes finished entries from a bounded
//! lock-free queue in batches, formats them and writes each batch with one
//! call, then hands the emptied entries back for reuse (no allocation per
//! request). Producers never wait and, while the writer is busy or polling
//! (every few milliseconds under traffic), never make a system call; an
//! idle writer sleeps until the next entry wakes it.
//!
//! A log file renamed or removed away (logrotate) is noticed within a
//! second and a new one opened; SIGUSR1 reopens it at once. Lines that
//! cannot be written (no file, a full disk) are dropped and counted, and
//! the file is tried again, so a broken log never fails a request or grows
//! memory.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::sync::atomic::{Ordering, fence};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use sluice_config::AccessLogFormat;
use sluice_routing::stats::ACCESS_LOG_DROPPED;
use sluice_routing::tap::LogTap;
use tokio::time::Instant;
use tracing::warn;

use super::entry::{Entry, Handle, Shared};
use super::format;

/// Lines written per call at most.
const BATCH: u64 = 512;
/// How often the file's path is checked for a rotation (and a failed open
/// retried).
const CHECK_EVERY: Duration = Duration::from_secs(1);
/// Under traffic the writer looks for lines this often…
const POLL_EVERY: Duration = Duration::from_millis(20);
/// …and after this long without any it sleeps until woken.
const SLEEP_AFTER: Duration = Duration::from_secs(1);

/// Where the writer also publishes lines for the admin API, once set.
pub(super) type Tap = Arc<OnceLock<Arc<LogTap>>>;

pub(super) fn start(capacity: usize, path: String, format: AccessLogFormat, tap: Tap) -> Handle {
    Handle::spawn(
        "sluice-access-log",
        capacity,
        &ACCESS_LOG_DROPPED,
        "lines",
        move |shared| {
            run(shared, Output::new(path), format, &tap);
        },
    )
}

fn run(shared: &Shared, mut out: Output, format: AccessLogFormat, tap: &Tap) {
    let mut buf = Vec::with_capacity(64 * 1024);
    let mut json = Vec::new();
    let mut last_line = Instant::now();
    loop {
        buf.clear();
        let mut lines = 0;
        while lines < BATCH {
            let Some(mut entry) = shared.lines.pop() else { break };
            let start = buf.len();
            format::line(format, &entry, &mut buf);
            if let Some(tap) = tap.get() {
                publish(tap, &entry, format, buf.get(start..).unwrap_or_default(), &mut json);
            }
            entry.clear();
            shared.recycle(entry);
            lines += 1;
        }
        if lines > 0 {
            if shared.reopen.swap(false, Ordering::Relaxed) {
                out.reopen();
            }
            out.write(&buf, lines);
            if buf.capacity() > 1024 * 1024 {
                buf = Vec::with_capacity(64 * 1024);
            }
            last_line = Instant::now();
            continue;
        }
        if shared.closed.load(Ordering::SeqCst) {
            if shared.lines.is_empty() {
                break;
            }
            continue;
        }
        if last_line.elapsed() < SLEEP_AFTER {
            std::thread::park_timeout(POLL_EVERY);
            continue;
        }
        shared.sleeping.store(true, Ordering::Relaxed);
        fence(Ordering::SeqCst);
        if shared.lines.is_empty() && !shared.closed.load(Ordering::SeqCst) {
            std::thread::park();
        }
        shared.sleeping.store(false, Ordering::Relaxed);
        last_line = Instant::now();
    }
    out.flush();
}

/// Hands a line to the admin API's tap, as JSON: kept when the request
/// failed, sent when someone follows the feed.
fn publish(tap: &LogTap, entry: &Entry, format: AccessLogFormat, line: &[u8], json: &mut Vec<u8>) {
    let failed = entry.status >= 500 || entry.error.is_some();
    if !failed && !tap.listening() {
        return;
    }
    let line = match format {
        AccessLogFormat::Json => line,
        AccessLogFormat::Combined => {
            json.clear();
            format::line(AccessLogFormat::Json, entry, json);
            json
        }
    };
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    if let Ok(text) = std::str::from_utf8(line) {
        tap.publish(text, failed);
    }
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
