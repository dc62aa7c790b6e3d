//! Access-log lines for the admin API (`/api/v1/logs`, `sluice ctl logs`):
//! the last lines of failed requests, kept, and a live feed of every line
//! while someone listens. The data plane's log writer publishes them (JSON,
//! the access log's fields), off the request path; nothing is kept or sent
//! for successes while nobody listens.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::broadcast;

/// Failed requests' lines kept for a late reader.
pub const RECENT_ERRORS: usize = 100;
/// Lines a slow listener may fall behind before it misses some.
const LIVE_BACKLOG: usize = 1024;

#[derive(Debug)]
pub struct LogTap {
    live: broadcast::Sender<Arc<str>>,
    recent: Mutex<VecDeque<Arc<str>>>,
}

impl Default for LogTap {
    fn default() -> Self {
        Self {
            live: broadcast::channel(LIVE_BACKLOG).0,
            recent: Mutex::new(VecDeque::with_capacity(RECENT_ERRORS)),
        }
    }
}

impl LogTap {
    /// Whether a listener is following the live feed.
    pub fn listening(&self) -> bool {
        self.live.receiver_count() > 0
    }

    /// Publishes one line (a JSON object); `failed`: the request failed
    /// (5xx, or an error of sluice's own), so the line is kept too.
    pub fn publish(&self, line: &str, failed: bool) {
        let listening = self.listening();
        if !failed && !listening {
            return;
        }
        let line: Arc<str> = Arc::from(line);
        if failed {
            let mut recent = self.recent.lock().unwrap_or_else(PoisonError::into_inner);
            if recent.len() == RECENT_ERRORS {
                recent.pop_front();
            }
            recent.push_back(Arc::clone(&line));
        }
        if listening {
            let _ = self.live.send(line);
        }
    }

    /// The kept lines of failed requests, oldest first.
    pub fn recent_errors(&self) -> Vec<Arc<str>> {
        let recent = self.recent.lock().unwrap_or_else(PoisonError::into_inner);
        recent.iter().cloned().collect()
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<str>> {
        self.live.subscribe()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn failures_are_kept_and_successes_only_sent_to_listeners() {
        let tap = LogTap::default();
        tap.publish("{\"status\":200}", false);
        assert!(tap.recent_errors().is_empty());
        let mut rx = tap.subscribe();
        tap.publish("{\"status\":200}", false);
        tap.publish("{\"status\":502}", true);
        assert_eq!(&*rx.try_recv().unwrap(), "{\"status\":200}");
        assert_eq!(&*rx.try_recv().unwrap(), "{\"status\":502}");
        for i in 0..RECENT_ERRORS + 5 {
            tap.publish(&format!("{{\"n\":{i}}}"), true);
        }
        let recent = tap.recent_errors();
        assert_eq!(recent.len(), RECENT_ERRORS);
        assert_eq!(&*recent[RECENT_ERRORS - 1], format!("{{\"n\":{}}}", RECENT_ERRORS + 4));
    }
}
