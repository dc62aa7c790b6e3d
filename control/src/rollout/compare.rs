//! The optional comparison of `to` with `from` over the same window: a
//! pure decision, on top of the absolute thresholds.

use sluice_routing::window::WindowSnapshot;

use super::spec::RolloutSpec;
use crate::guard::{BreachKind, Verdict};

/// The optional comparison of `to` with `from` over the same window.
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
