//! Live windows: a ring of one-second buckets over the last
//! [`WINDOW_SECONDS`] seconds, each with request, error and upstream-failure
//! counts and a log-linear latency histogram. Recording is a handful of
//! relaxed atomic adds (no lock, no allocation); reading merges the buckets
//! of the last N seconds into a [`WindowSnapshot`].
//!
//! The histogram has 64 linear sub-buckets per power of two of
//! microseconds, so a reported quantile is within 1/64 (< 2%) of the true
//! value. A bucket is tagged with the second it counts; a writer that finds
//! an older tag claims the bucket and zeroes it first (a concurrent writer
//! in that instant may lose a count, never corrupt one).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

/// Seconds of history kept; snapshots may cover up to this much.
pub const WINDOW_SECONDS: usize = 60;

const SUB_BUCKETS: usize = 64;
const SUB_BITS: u32 = 6;
/// Covers 1 µs to about 2^27 µs (134 s); slower requests land in the last bucket.
const OCTAVES: usize = 22;
/// Slots in a latency histogram.
pub const LATENCY_SLOTS: usize = SUB_BUCKETS * OCTAVES;

/// Index of a latency in microseconds: exact below 64 µs, then 64 linear
/// steps per doubling.
fn latency_slot(micros: u64) -> usize {
    if micros < SUB_BUCKETS as u64 {
        return micros as usize;
    }
    let octave = 63 - micros.leading_zeros() - SUB_BITS + 1;
    let sub = (micros >> (octave - 1)) as usize - SUB_BUCKETS;
    (octave as usize * SUB_BUCKETS + sub).min(LATENCY_SLOTS - 1)
}

/// The midpoint (µs) of a slot, for quantile estimates.
fn slot_value(slot: usize) -> f64 {
    if slot < SUB_BUCKETS {
        return slot as f64;
    }
    let octave = (slot / SUB_BUCKETS) as u32;
    let sub = (slot % SUB_BUCKETS) as u64;
    let low = (SUB_BUCKETS as u64 + sub) << (octave - 1);
    let width = 1u64 << (octave - 1);
    low as f64 + width as f64 / 2.0
}

struct Bucket {
    /// Which second (since the window's start) this bucket counts.
    second: AtomicU64,
    requests: AtomicU64,
    errors: AtomicU64,
    upstream_failures: AtomicU64,
    latency: Box<[AtomicU64]>,
}

impl Bucket {
    fn new() -> Self {
        Self {
            second: AtomicU64::new(u64::MAX),
            requests: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            upstream_failures: AtomicU64::new(0),
            latency: (0..LATENCY_SLOTS).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    fn claim(&self, second: u64) {
        let seen = self.second.load(Ordering::Acquire);
        if seen != second
            && self
                .second
                .compare_exchange(seen, second, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            self.requests.store(0, Ordering::Relaxed);
            self.errors.store(0, Ordering::Relaxed);
            self.upstream_failures.store(0, Ordering::Relaxed);
            for slot in self.latency.iter() {
                slot.store(0, Ordering::Relaxed);
            }
        }
    }
}

/// One outcome, as the window sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Success,
    /// A 5xx answer (the backend's or sluice's own for this pool).
    Error,
    /// The exchange with the backend failed (connect, reset, timeout, malformed).
    UpstreamFailure,
}

impl Outcome {
    /// An answer's outcome by its status: a 5xx is an error.
    pub fn of_status(status: u16) -> Self {
        if status >= 500 { Self::Error } else { Self::Success }
    }
}

/// A sliding window of traffic for one pool or backend.
pub struct Window {
    origin: Instant,
    buckets: Box<[Bucket]>,
}

impl std::fmt::Debug for Window {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Window").finish_non_exhaustive()
    }
}

impl Default for Window {
    fn default() -> Self {
        Self::new(Instant::now())
    }
}

impl Window {
    pub fn new(origin: Instant) -> Self {
        Self {
            origin,
            buckets: (0..WINDOW_SECONDS).map(|_| Bucket::new()).collect(),
        }
    }

    /// The second (counted from the window's start) `at` falls in.
    pub fn second_at(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.origin).as_secs()
    }

    /// Records one request that finished at `at` after `latency`.
    #[inline]
    pub fn record(&self, at: Instant, latency: Duration, outcome: Outcome) {
        let second = self.second_at(at);
        let Some(bucket) = self.buckets.get((second % WINDOW_SECONDS as u64) as usize) else {
            return;
        };
        bucket.claim(second);
        bucket.requests.fetch_add(1, Ordering::Relaxed);
        match outcome {
            Outcome::Success => {}
            Outcome::Error => {
                bucket.errors.fetch_add(1, Ordering::Relaxed);
            }
            Outcome::UpstreamFailure => {
                bucket.errors.fetch_add(1, Ordering::Relaxed);
                bucket.upstream_failures.fetch_add(1, Ordering::Relaxed);
            }
        }
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        if let Some(slot) = bucket.latency.get(latency_slot(micros)) {
            slot.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The last `span` (at most [`WINDOW_SECONDS`]) up to `now`, merged.
    pub fn snapshot(&self, now: Instant, span: Duration) -> WindowSnapshot {
        let newest = self.second_at(now);
        let seconds = (span.as_secs().max(1) as usize).min(WINDOW_SECONDS) as u64;
        self.seconds(newest.saturating_sub(seconds - 1), newest)
    }

    /// Seconds `oldest..=newest` (those of the last minute), merged: how
    /// [`crate::totals::Tally`] reads each completed second once.
    pub fn seconds(&self, oldest: u64, newest: u64) -> WindowSnapshot {
        let mut snap = WindowSnapshot {
            span: Duration::from_secs((newest + 1).saturating_sub(oldest)),
            latency: vec![0; LATENCY_SLOTS],
            ..WindowSnapshot::default()
        };
        for bucket in self.buckets.iter() {
            let second = bucket.second.load(Ordering::Acquire);
            if second == u64::MAX || second < oldest || second > newest {
                continue;
            }
            snap.requests += bucket.requests.load(Ordering::Relaxed);
            snap.errors += bucket.errors.load(Ordering::Relaxed);
            snap.upstream_failures += bucket.upstream_failures.load(Ordering::Relaxed);
            for (total, slot) in snap.latency.iter_mut().zip(bucket.latency.iter()) {
                *total += slot.load(Ordering::Relaxed);
            }
        }
        snap
    }
}

/// Merged counts over a span of seconds.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WindowSnapshot {
    pub span: Duration,
    pub requests: u64,
    pub errors: u64,
    pub upstream_failures: u64,
    latency: Vec<u64>,
}

impl WindowSnapshot {
    /// Mann–Whitney's U of this window's latencies against `other`'s, from
    /// the two histograms (pairs in one slot count as ties, a half): the
    /// share of (this, other) request pairs in which this one was slower,
    /// and the z-score of U against "no difference" (the variance without
    /// a tie correction, which only makes z smaller). `None` without data.
    pub fn slower_share(&self, other: &WindowSnapshot) -> Option<(f64, f64)> {
        let n1: u64 = self.latency.iter().sum();
        let n2: u64 = other.latency.iter().sum();
        if n1 == 0 || n2 == 0 {
            return None;
        }
        let mut below = 0u64;
        let mut u = 0.0;
        for (mine, theirs) in self.latency.iter().zip(other.latency.iter()) {
            u += *mine as f64 * (below as f64 + *theirs as f64 / 2.0);
            below += theirs;
        }
        let (n1, n2) = (n1 as f64, n2 as f64);
        let mean = n1 * n2 / 2.0;
        let sd = (n1 * n2 * (n1 + n2 + 1.0) / 12.0).sqrt();
        Some((u / (n1 * n2), (u - mean) / sd))
    }

    /// Requests slower than `limit`: those in the histogram's slots above
    /// the one `limit` falls in (within the histogram's 2%).
    pub fn slower_than(&self, limit: Duration) -> u64 {
        let slot = latency_slot(u64::try_from(limit.as_micros()).unwrap_or(u64::MAX));
        self.latency.get(slot + 1..).unwrap_or_default().iter().sum()
    }

    /// These counts less `base`'s (each at least 0): what came after `base`
    /// was read from the same running counts.
    pub fn saturating_sub(&self, base: &WindowSnapshot) -> WindowSnapshot {
        let mut latency = self.latency.clone();
        for (mine, theirs) in latency.iter_mut().zip(&base.latency) {
            *mine = mine.saturating_sub(*theirs);
        }
        WindowSnapshot {
            span: self.span.saturating_sub(base.span),
            requests: self.requests.saturating_sub(base.requests),
            errors: self.errors.saturating_sub(base.errors),
            upstream_failures: self.upstream_failures.saturating_sub(base.upstream_failures),
            latency,
        }
    }

    /// Errors over requests (0 with no requests).
    pub fn error_ratio(&self) -> f64 {
        if self.requests == 0 {
            0.0
        } else {
            self.errors as f64 / self.requests as f64
        }
    }

    /// Requests per second over the span.
    pub fn rate(&self) -> f64 {
        self.requests as f64 / self.span.as_secs_f64().max(1.0)
    }

    /// Sum of latencies (estimated from the histogram).
    pub fn latency_sum(&self) -> Duration {
        let micros: f64 = self
            .latency
            .iter()
            .enumerate()
            .map(|(slot, n)| slot_value(slot) * *n as f64)
            .sum();
        Duration::from_secs_f64(micros / 1e6)
    }

    /// The latency at quantile `q` (0..=1), `None` without requests.
    pub fn quantile(&self, q: f64) -> Option<Duration> {
        let total: u64 = self.latency.iter().sum();
        if total == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (slot, n) in self.latency.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return Some(Duration::from_nanos((slot_value(slot) * 1000.0) as u64));
            }
        }
        None
    }

    /// The latency histogram's counts, slot by slot (for sharing a window
    /// with other replicas).
    pub fn latency_counts(&self) -> &[u64] {
        &self.latency
    }

    /// A window received from another replica; a histogram of the wrong
    /// length is ignored rather than trusted.
    pub fn from_parts(span: Duration, requests: u64, errors: u64, upstream_failures: u64, latency: Vec<u64>) -> Self {
        let latency = if latency.len() == LATENCY_SLOTS {
            latency
        } else {
            vec![0; LATENCY_SLOTS]
        };
        Self {
            span,
            requests,
            errors,
            upstream_failures,
            latency,
        }
    }

    /// Adds `other`'s counts (the same span on another replica).
    pub fn merge(&mut self, other: &WindowSnapshot) {
        self.span = self.span.max(other.span);
        self.requests += other.requests;
        self.errors += other.errors;
        self.upstream_failures += other.upstream_failures;
        if self.latency.len() < other.latency.len() {
            self.latency.resize(other.latency.len(), 0);
        }
        for (mine, theirs) in self.latency.iter_mut().zip(&other.latency) {
            *mine += theirs;
        }
    }

    /// Counts only, for tests of decisions that do not need latencies.
    pub fn from_counts(requests: u64, errors: u64, span: Duration) -> Self {
        Self {
            span,
            requests,
            errors,
            upstream_failures: 0,
            latency: vec![0; LATENCY_SLOTS],
        }
    }

    /// Counts plus one latency for every request, for decision tests.
    pub fn with_latency(mut self, latency: Duration) -> Self {
        if self.latency.is_empty() {
            self.latency = vec![0; LATENCY_SLOTS];
        }
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        if let Some(slot) = self.latency.get_mut(latency_slot(micros)) {
            *slot += self.requests;
        }
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_monotonic_and_within_two_percent() {
        let mut last = 0;
        for micros in (1..5_000_000u64).step_by(997) {
            let slot = latency_slot(micros);
            assert!(slot >= last, "slot went down at {micros}");
            last = slot;
            let estimate = slot_value(slot);
            let error = (estimate - micros as f64).abs() / micros as f64;
            assert!(
                error <= 0.02 || micros < 64,
                "{micros} µs estimated as {estimate} ({error:.3})"
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_window_counts_the_last_seconds_only() {
        let w = Window::default();
        let t0 = Instant::now();
        for i in 0..100u64 {
            let outcome = if i % 10 == 0 { Outcome::Error } else { Outcome::Success };
            w.record(t0, Duration::from_millis(10 + i), outcome);
        }
        let s = w.snapshot(t0, Duration::from_secs(30));
        assert_eq!((s.requests, s.errors), (100, 10));
        assert!((s.error_ratio() - 0.1).abs() < 1e-9);
        let p50 = s.quantile(0.5).unwrap().as_secs_f64() * 1000.0;
        let p95 = s.quantile(0.95).unwrap().as_secs_f64() * 1000.0;
        assert!((p50 - 59.0).abs() / 59.0 < 0.02, "p50 {p50} ms");
        assert!((p95 - 104.0).abs() / 104.0 < 0.02, "p95 {p95} ms");

        tokio::time::advance(Duration::from_secs(31)).await;
        let later = Instant::now();
        w.record(later, Duration::from_millis(5), Outcome::UpstreamFailure);
        let s = w.snapshot(later, Duration::from_secs(30));
        assert_eq!(
            (s.requests, s.errors, s.upstream_failures),
            (1, 1, 1),
            "old seconds must drop out"
        );
        // The same slot reused 60 s later starts from zero.
        tokio::time::advance(Duration::from_secs(60)).await;
        let again = Instant::now();
        w.record(again, Duration::from_millis(5), Outcome::Success);
        assert_eq!(w.snapshot(again, Duration::from_secs(1)).requests, 1);
    }
}
