use std::time::Duration;

use sluice_config::RollbackConfig;
use sluice_routing::window::WindowSnapshot;

use crate::guard::{BreachKind, Verdict};
use crate::hooks::{self, Hook, HookPoint, OnFailure};

use super::compare::compare;
use super::*;

fn spec(comparison: Comparison) -> RolloutSpec {
    RolloutSpec {
        from: "blue".into(),
        to: "green".into(),
        strategy: "canary".into(),
        steps: vec![
            Step::Weight {
                weight: 10,
                hold: Duration::from_secs(60),
            },
            Step::Pause,
            Step::Weight {
                weight: 100,
                hold: Duration::ZERO,
            },
        ],
        analysis: RollbackConfig::default(),
        analysis_interval: Duration::from_secs(10),
        max_failed_checks: 2,
        smoke: Vec::new(),
        post_promotion: Duration::from_secs(60),
        health_gate: Duration::from_secs(60),
        comparison,
        hooks: Vec::new(),
        rollback: RollbackMode::Instant,
        dry_run: false,
        force: false,
        evidence_deadline: None,
        on_no_evidence: NoEvidence::Pause,
        on_failure: AnalysisFailure::Abort,
    }
}

fn window(requests: u64, errors: u64, p95_ms: u64) -> WindowSnapshot {
    WindowSnapshot::from_counts(requests, errors, Duration::from_secs(30)).with_latency(Duration::from_millis(p95_ms))
}

#[test]
fn the_comparison_judges_to_against_from() {
    let strict = spec(Comparison {
        max_error_ratio_increase: Some(0.002),
        max_p95_ratio: Some(1.5),
    });
    // 0.5% vs 0.1%: within the absolute 1%, but 0.4 points worse.
    let verdict = compare(&strict, &window(1000, 5, 10), Some(&window(1000, 1, 10)));
    let Verdict::Breach { kind, reason } = verdict else {
        panic!("{verdict:?}")
    };
    assert_eq!(kind, BreachKind::ErrorRatio);
    assert!(reason.contains("0.40 points above blue"), "{reason}");
    // Twice as slow as blue.
    let verdict = compare(&strict, &window(1000, 0, 40), Some(&window(1000, 0, 20)));
    assert!(
        matches!(
            verdict,
            Verdict::Breach {
                kind: BreachKind::Latency,
                ..
            }
        ),
        "{verdict:?}"
    );
    // Alike, or not enough data on one side: healthy.
    assert_eq!(
        compare(&strict, &window(1000, 1, 20), Some(&window(1000, 1, 20))),
        Verdict::Healthy
    );
    assert_eq!(
        compare(&strict, &window(1000, 9, 90), Some(&window(5, 0, 20))),
        Verdict::Healthy
    );
    // Without a comparison configured, nothing is compared.
    let lax = spec(Comparison::default());
    assert_eq!(
        compare(&lax, &window(1000, 9, 90), Some(&window(1000, 0, 20))),
        Verdict::Healthy
    );
}

#[test]
fn the_plan_lists_every_stage() {
    let mut s = spec(Comparison::default());
    s.hooks.push((
        HookPoint::PreSwitch,
        Hook {
            name: "expand".into(),
            action: hooks::HookAction::Webhook {
                url: "http://127.0.0.1:1/".into(),
            },
            timeout: Duration::from_secs(1),
            on_failure: OnFailure::Abort,
        },
    ));
    let plan = s.plan();
    assert_eq!(plan[1], "pre_switch hooks: expand");
    assert!(plan[2].starts_with("step 1: green at 10%"), "{plan:?}");
    assert_eq!(plan[3], "step 2: pause until promote");
    assert!(
        plan.last()
            .unwrap()
            .starts_with("on failure: traffic back to blue at once")
    );
}
