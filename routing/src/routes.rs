//! Per-route windows (`[[analysis.routes]]`): a pool's requests and errors
//! counted apart for each named path prefix, second by second over the
//! last minute, so the guard and rollouts judge every route and a route
//! that breaks is seen even when the pool's average is fine. Counts only
//! (no latency histogram: a pool's 60 s window holds a 64-slot histogram
//! per octave per second, too large to keep per route); latency is judged
//! per pool.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use crate::window::{Outcome, WINDOW_SECONDS, WindowSnapshot};

/// At most this many routes: each request looks at every prefix.
pub const MAX_ROUTES: usize = 16;

/// A named path prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteRule {
    pub name: Arc<str>,
    pub prefix: String,
}

/// The route a request path belongs to: the first rule whose prefix it
/// starts with, in config order.
#[inline]
pub fn route_of(rules: &[RouteRule], path: &str) -> Option<usize> {
    rules.iter().position(|r| path.starts_with(r.prefix.as_str()))
}

/// One pool's counts for each route, by index in the rules.
#[derive(Debug)]
pub struct RouteWindows {
    origin: Instant,
    /// `routes × WINDOW_SECONDS` seconds, each: which second, requests,
    /// errors.
    seconds: Box<[[AtomicU64; 3]]>,
    routes: usize,
}

impl RouteWindows {
    pub fn new(routes: usize) -> Self {
        Self {
            origin: Instant::now(),
            seconds: (0..routes * WINDOW_SECONDS)
                .map(|_| [AtomicU64::new(u64::MAX), AtomicU64::new(0), AtomicU64::new(0)])
                .collect(),
            routes,
        }
    }

    pub fn routes(&self) -> usize {
        self.routes
    }

    /// The second (counted from these windows' start) `at` falls in.
    pub fn second_at(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.origin).as_secs()
    }

    /// Counts one answer on route `route` at `at`.
    pub fn record(&self, route: usize, at: Instant, outcome: Outcome) {
        let second = self.second_at(at);
        let Some(slot) = self.seconds.get(
            route
                .saturating_mul(WINDOW_SECONDS)
                .saturating_add((second % WINDOW_SECONDS as u64) as usize),
        ) else {
            return;
        };
        let [at_second, requests, errors] = slot;
        let seen = at_second.load(Ordering::Acquire);
        if seen != second
            && at_second
                .compare_exchange(seen, second, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            // One thread turns the second over; a count racing it may be
            // lost, which a window of counts can afford.
            requests.store(0, Ordering::Relaxed);
            errors.store(0, Ordering::Relaxed);
        }
        requests.fetch_add(1, Ordering::Relaxed);
        if !matches!(outcome, Outcome::Success) {
            errors.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Route `route`'s last `span` (at most a minute) up to `now`: requests
    /// and errors, no latency.
    pub fn snapshot(&self, route: usize, now: Instant, span: Duration) -> WindowSnapshot {
        let newest = self.second_at(now);
        let seconds = (span.as_secs().max(1) as usize).min(WINDOW_SECONDS) as u64;
        self.seconds(route, newest.saturating_sub(seconds - 1), newest)
    }

    /// Route `route`'s seconds `oldest..=newest` (of the last minute),
    /// merged: requests and errors.
    pub fn seconds(&self, route: usize, oldest: u64, newest: u64) -> WindowSnapshot {
        let mut snap = WindowSnapshot::default();
        snap.span = Duration::from_secs((newest + 1).saturating_sub(oldest));
        let start = route.saturating_mul(WINDOW_SECONDS);
        let seconds = self
            .seconds
            .get(start..start.saturating_add(WINDOW_SECONDS))
            .unwrap_or_default();
        for [at_second, requests, errors] in seconds {
            let second = at_second.load(Ordering::Acquire);
            if second == u64::MAX || second < oldest || second > newest {
                continue;
            }
            snap.requests += requests.load(Ordering::Relaxed);
            snap.errors += errors.load(Ordering::Relaxed);
        }
        snap
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn rules() -> Vec<RouteRule> {
        ["/predict", "/api/", "/"]
            .iter()
            .enumerate()
            .map(|(i, p)| RouteRule {
                name: format!("r{i}").into(),
                prefix: (*p).to_owned(),
            })
            .collect()
    }

    #[test]
    fn the_first_matching_prefix_names_the_route() {
        let r = rules();
        assert_eq!(route_of(&r, "/predict?x=1"), Some(0));
        assert_eq!(route_of(&r, "/api/v1"), Some(1));
        assert_eq!(route_of(&r, "/other"), Some(2));
        assert_eq!(route_of(&r[..2], "/other"), None);
    }

    #[tokio::test(start_paused = true)]
    async fn each_route_counts_its_own_requests_and_errors_over_the_span() {
        let w = RouteWindows::new(2);
        let t0 = Instant::now();
        for i in 0..10 {
            w.record(0, t0, if i % 2 == 0 { Outcome::Error } else { Outcome::Success });
        }
        w.record(1, t0, Outcome::Success);
        let now = t0 + Duration::from_secs(5);
        let predict = w.snapshot(0, now, Duration::from_secs(30));
        assert_eq!((predict.requests, predict.errors), (10, 5));
        assert_eq!(w.snapshot(1, now, Duration::from_secs(30)).requests, 1);
        // Out of a 2 s span five seconds later.
        assert_eq!(w.snapshot(0, now, Duration::from_secs(2)).requests, 0);
        assert_eq!(predict.quantile(0.95), None, "counts only");
        // A route past the last is nothing, not a panic.
        w.record(7, t0, Outcome::Error);
        assert_eq!(w.snapshot(7, now, Duration::from_secs(30)).requests, 0);
    }
}
