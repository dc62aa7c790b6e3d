//! Shadow traffic: which live requests are copied to a pool whose answers
//! are read and thrown away (`[[mirror]]`, and a rollout's mirror step),
//! and the counts of those copies.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use http::Method;
use rand::Rng;
use sluice_config::MirrorConfig;

/// Copies of live requests sent to one pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MirrorRule {
    pub to: Arc<str>,
    /// Share of requests copied, per million.
    pub per_million: u32,
    pub max_body_bytes: u64,
    pub timeout: Duration,
    pub allow_non_idempotent: bool,
}

impl MirrorRule {
    pub fn from_config(c: &MirrorConfig) -> Self {
        Self {
            to: c.to.as_str().into(),
            per_million: percent_per_million(c.percent),
            max_body_bytes: c.max_body_bytes,
            timeout: c.timeout,
            allow_non_idempotent: c.allow_non_idempotent,
        }
    }

    /// A rollout's mirror step: `percent` of requests copied to `to`,
    /// bodies up to 64 KiB, idempotent methods only, 5 s each.
    pub fn for_rollout(to: &str, percent: f64) -> Self {
        Self {
            to: to.into(),
            per_million: percent_per_million(percent),
            max_body_bytes: 65_536,
            timeout: Duration::from_secs(5),
            allow_non_idempotent: false,
        }
    }

    /// Whether a request to `pool` with `method` and a body of `body_len`
    /// bytes (`None`: unknown) may be copied: another pool, a method the
    /// rule allows, a body it may hold.
    fn admits(&self, pool: &str, method: &Method, body_len: Option<u64>) -> bool {
        *self.to != *pool
            && (self.allow_non_idempotent || method.is_idempotent())
            && body_len.is_some_and(|n| n <= self.max_body_bytes)
    }
}

fn percent_per_million(percent: f64) -> u32 {
    (percent.clamp(0.0, 100.0) * 10_000.0).round() as u32
}

/// The rule a request to `pool` is copied under this time, if any: the
/// first of `rules` that admits it and whose share the roll falls in.
pub fn pick<'r>(
    rules: impl IntoIterator<Item = &'r MirrorRule>,
    pool: &str,
    method: &Method,
    body_len: Option<u64>,
) -> Option<&'r MirrorRule> {
    let mut rng = rand::rng();
    rules
        .into_iter()
        .find(|r| r.admits(pool, method, body_len) && rng.random_range(0..1_000_000) < r.per_million)
}

/// What became of the copies sent to one pool.
#[derive(Debug, Default)]
pub struct ShadowCounts {
    /// By [`ShadowResult`].
    counts: [AtomicU64; 3],
}

/// How a copy ended, as `sluice_shadow_requests_total{result}` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShadowResult {
    /// The pool answered (any status; its outcome is in the pool's window).
    Answered = 0,
    /// No answer: connect failure, reset, timeout.
    Failed = 1,
    /// Not sent: too many copies already in flight.
    Dropped = 2,
}

impl ShadowResult {
    pub const ALL: [ShadowResult; 3] = [ShadowResult::Answered, ShadowResult::Failed, ShadowResult::Dropped];

    pub fn label(self) -> &'static str {
        match self {
            ShadowResult::Answered => "answered",
            ShadowResult::Failed => "failed",
            ShadowResult::Dropped => "dropped",
        }
    }
}

impl ShadowCounts {
    pub fn count(&self, result: ShadowResult) {
        if let Some(n) = self.counts.get(result as usize) {
            n.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn get(&self, result: ShadowResult) -> u64 {
        self.counts
            .get(result as usize)
            .map_or(0, |n| n.load(Ordering::Relaxed))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn rule(percent: f64) -> MirrorRule {
        MirrorRule::for_rollout("green", percent)
    }

    #[test]
    fn a_copy_goes_to_another_pool_for_a_safe_method_with_a_small_known_body() {
        let all = [rule(100.0)];
        assert!(pick(&all, "blue", &Method::GET, Some(0)).is_some());
        assert!(pick(&all, "green", &Method::GET, Some(0)).is_none(), "not to itself");
        assert!(
            pick(&all, "blue", &Method::POST, Some(10)).is_none(),
            "POST needs allow_non_idempotent"
        );
        assert!(pick(&all, "blue", &Method::PUT, None).is_none(), "unknown length");
        assert!(
            pick(&all, "blue", &Method::PUT, Some(70_000)).is_none(),
            "over max_body_bytes"
        );
        let mut posts = rule(100.0);
        posts.allow_non_idempotent = true;
        assert!(pick(&[posts], "blue", &Method::POST, Some(10)).is_some());
    }

    #[test]
    fn the_share_copied_is_the_percent_asked() {
        let all = [rule(10.0)];
        let copied = (0..200_000)
            .filter(|_| pick(&all, "blue", &Method::GET, Some(0)).is_some())
            .count();
        // 20,000 expected; five standard deviations is ±670.
        assert!((19_300..=20_700).contains(&copied), "{copied}");
        assert!(pick(&[rule(0.0)], "blue", &Method::GET, Some(0)).is_none());
    }
}
