//! The comparison of `to` with `from` over the same window: a pure
//! decision, on top of the absolute thresholds. By default the latency
//! distributions are compared (Mann–Whitney, with its effect size: the
//! share of request pairs in which `to` was slower); the error-ratio and
//! P95-ratio limits are opt-in.

use sluice_routing::window::WindowSnapshot;

use super::spec::RolloutSpec;
use crate::guard::{BreachKind, Verdict};

/// One-sided z above which a difference is significant (α = 0.001).
const SIGNIFICANT_Z: f64 = 3.09;

/// The comparison of `to` with `from` over the same window.
pub(super) fn compare(spec: &RolloutSpec, to: &WindowSnapshot, from: Option<&WindowSnapshot>) -> Verdict {
    let min = spec.analysis.min_requests.max(1);
    let Some(from) = from.filter(|f| f.requests >= min && to.requests >= min) else {
        return Verdict::Healthy;
    };
    if let Some(max) = spec.comparison.max_error_ratio_increase {
        let (t, f) = (to.error_ratio(), from.error_ratio());
        if t - f > max {
            return Verdict::Breach {
                kind: BreachKind::ErrorRatio,
                reason: format!(
                    "{} error ratio {:.2}% is {:.2} points above {}'s {:.2}% (max increase {:.2} points)",
                    spec.to,
                    t * 100.0,
                    (t - f) * 100.0,
                    spec.from,
                    f * 100.0,
                    max * 100.0
                ),
            };
        }
    }
    if let Some((share, z)) = to.slower_share(from)
        && share > spec.comparison.max_slower_share
        && z > SIGNIFICANT_Z
        && let (Some(t), Some(f)) = (to.quantile(0.95), from.quantile(0.95))
        && t > f
    {
        return Verdict::Breach {
            kind: BreachKind::Latency,
            reason: format!(
                "{} is slower than {} in {:.0}% of request pairs (effect size {share:.2} > {}, z {z:.1}; P95 {} ms vs {} ms)",
                spec.to,
                spec.from,
                share * 100.0,
                spec.comparison.max_slower_share,
                t.as_millis(),
                f.as_millis()
            ),
        };
    }
    if let (Some(max), Some(t), Some(f)) = (spec.comparison.max_p95_ratio, to.quantile(0.95), from.quantile(0.95))
        && !f.is_zero()
        && t.as_secs_f64() / f.as_secs_f64() > max
    {
        return Verdict::Breach {
            kind: BreachKind::Latency,
            reason: format!(
                "{} P95 {} ms is {:.1}× {}'s {} ms (max {max}×)",
                spec.to,
                t.as_millis(),
                t.as_secs_f64() / f.as_secs_f64(),
                spec.from,
                f.as_millis()
            ),
        };
    }
    Verdict::Healthy
}
