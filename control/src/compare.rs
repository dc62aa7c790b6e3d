//! The comparison of a new pool (`to`, the guard's candidate) with the one
//! it replaces (`from`, the stable pool) over the same window: a pure
//! decision, on top of the absolute thresholds. In rollouts the latency
//! distributions are compared by default (Mann–Whitney, with its effect
//! size: the share of request pairs in which `to` was slower); the
//! error-ratio and P95-ratio limits, and all three in `[rollback]`, are
//! opt-in.

use sluice_config::RollbackConfig;
use sluice_routing::window::WindowSnapshot;

use crate::verdict::{BreachKind, Verdict};

/// One-sided z above which a difference is significant (α = 0.001).
const SIGNIFICANT_Z: f64 = 3.09;

/// How `to` may differ from `from`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Comparison {
    /// Most of the request pairs in which `to` may be slower than `from`
    /// (Mann–Whitney's effect size; 0.5 is no difference, 1 turns it off),
    /// when the difference is significant and `to`'s P95 is the higher.
    pub max_slower_share: f64,
    /// Most `to`'s error ratio may exceed `from`'s (0.005: half a point).
    pub max_error_ratio_increase: Option<f64>,
    /// Most `to`'s P95 may be as a multiple of `from`'s.
    pub max_p95_ratio: Option<f64>,
}

impl Default for Comparison {
    fn default() -> Self {
        Self {
            max_slower_share: 0.75,
            max_error_ratio_increase: None,
            max_p95_ratio: None,
        }
    }
}

impl Comparison {
    /// `[rollback]`'s comparison for the guard: off unless a key is set
    /// (then the latency comparison too only when `max_slower_share` is).
    pub fn of_guard(policy: &RollbackConfig) -> Option<Comparison> {
        (policy.max_slower_share.is_some()
            || policy.max_error_ratio_increase.is_some()
            || policy.max_p95_ratio.is_some())
        .then(|| Comparison {
            max_slower_share: policy.max_slower_share.unwrap_or(1.0),
            max_error_ratio_increase: policy.max_error_ratio_increase,
            max_p95_ratio: policy.max_p95_ratio,
        })
    }
}

/// The two pools compared: names for the reasons, and the least requests
/// each needs in the window.
pub struct Pair<'a> {
    pub to: &'a str,
    pub from: &'a str,
    pub min_requests: u64,
}

/// The comparison of `to` with `from` over the same window.
pub fn compare(pair: &Pair<'_>, c: &Comparison, to: &WindowSnapshot, from: Option<&WindowSnapshot>) -> Verdict {
    let min = pair.min_requests.max(1);
    let Some(from) = from.filter(|f| f.requests >= min && to.requests >= min) else {
        return Verdict::Healthy;
    };
    if let Some(max) = c.max_error_ratio_increase {
        let (t, f) = (to.error_ratio(), from.error_ratio());
        if t - f > max {
            return Verdict::Breach {
                kind: BreachKind::ErrorRatio,
                reason: format!(
                    "{} error ratio {:.2}% is {:.2} points above {}'s {:.2}% (max increase {:.2} points)",
                    pair.to,
                    t * 100.0,
                    (t - f) * 100.0,
                    pair.from,
                    f * 100.0,
                    max * 100.0
                ),
            };
        }
    }
    if let Some((share, z)) = to.slower_share(from)
        && share > c.max_slower_share
        && z > SIGNIFICANT_Z
        && let (Some(t), Some(f)) = (to.quantile(0.95), from.quantile(0.95))
        && t > f
    {
        return Verdict::Breach {
            kind: BreachKind::Latency,
            reason: format!(
                "{} is slower than {} in {:.0}% of request pairs (effect size {share:.2} > {}, z {z:.1}; P95 {} ms vs {} ms)",
                pair.to,
                pair.from,
                share * 100.0,
                c.max_slower_share,
                t.as_millis(),
                f.as_millis()
            ),
        };
    }
    if let (Some(max), Some(t), Some(f)) = (c.max_p95_ratio, to.quantile(0.95), from.quantile(0.95))
        && !f.is_zero()
        && t.as_secs_f64() / f.as_secs_f64() > max
    {
        return Verdict::Breach {
            kind: BreachKind::Latency,
            reason: format!(
                "{} P95 {} ms is {:.1}× {}'s {} ms (max {max}×)",
                pair.to,
                t.as_millis(),
                t.as_secs_f64() / f.as_secs_f64(),
                pair.from,
                f.as_millis()
            ),
        };
    }
    Verdict::Healthy
}
