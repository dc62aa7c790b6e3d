use std::time::Duration;

use sluice_config::RollbackConfig;
use sluice_routing::window::WindowSnapshot;

use crate::guard::{BreachKind, Verdict};
use crate::hooks::{self, Hook, HookPoint, OnFailure};

use super::*;

/// A rollout's comparison of `to` with `from`, as its analysis runs it.
fn compare(spec: &RolloutSpec, to: &WindowSnapshot, from: Option<&WindowSnapshot>) -> Verdict {
    let pair = crate::compare::Pair {
        to: &spec.to,
        from: &spec.from,
        min_requests: spec.analysis.min_requests,
    };
    crate::compare::compare(&pair, &spec.comparison, to, from)
}

fn spec(comparison: Comparison) -> RolloutSpec {
    RolloutSpec {
        from: "blue".into(),
        to: "green".into(),
        strategy: "canary".into(),
        steps: vec![
            Step::Weight {
                weight: sluice_config::Weight::percent(10).unwrap(),
                hold: Duration::from_secs(60),
            },
            Step::Pause,
            Step::Weight {
                weight: sluice_config::Weight::percent(100).unwrap(),
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
        checks: Vec::new(),
    }
}

fn window(requests: u64, errors: u64, p95_ms: u64) -> WindowSnapshot {
    WindowSnapshot::from_counts(requests, errors, Duration::from_secs(30)).with_latency(Duration::from_millis(p95_ms))
}

#[test]
fn the_comparison_judges_to_against_from() {
    let strict = spec(Comparison {
        max_slower_share: 1.0,
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
    // By default the latency distributions are compared: every request of
    // green slower than every one of blue is a breach, with its effect size.
    let default = spec(Comparison::default());
    let verdict = compare(&default, &window(1000, 9, 90), Some(&window(1000, 0, 20)));
    let Verdict::Breach { kind, reason } = verdict else {
        panic!("{verdict:?}")
    };
    assert_eq!(kind, BreachKind::Latency);
    assert!(
        reason.starts_with("green is slower than blue in 100% of request pairs (effect size 1.00 > 0.75"),
        "{reason}"
    );
    // Alike: no effect. A share of 1 turns the comparison off.
    assert_eq!(
        compare(&default, &window(1000, 1, 20), Some(&window(1000, 1, 20))),
        Verdict::Healthy
    );
    let off = spec(Comparison {
        max_slower_share: 1.0,
        ..Comparison::default()
    });
    assert_eq!(
        compare(&off, &window(1000, 9, 90), Some(&window(1000, 0, 20))),
        Verdict::Healthy
    );
}

#[test]
fn the_slower_share_is_mann_whitney_s_effect_size() {
    // Half of green's requests slower than all of blue's, half alike.
    let mut green = window(100, 0, 20);
    green.merge(&window(100, 0, 90));
    let blue = window(200, 0, 20);
    let (share, z) = green.slower_share(&blue).unwrap();
    // Pairs: 100×200 slower, 100×200 tied (a half each) of 200×200.
    assert!((share - 0.75).abs() < 1e-9, "{share}");
    assert!(z > 5.0, "{z}");
    let (share, z) = blue.slower_share(&blue).unwrap();
    assert!((share - 0.5).abs() < 1e-9 && z.abs() < 1e-9, "{share} {z}");
    assert_eq!(blue.slower_share(&WindowSnapshot::default()), None);
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

fn parsed(body: serde_json::Value) -> Result<RolloutSpec, SpecError> {
    let defaults = RolloutDefaults {
        analysis: RollbackConfig::default(),
        canary_percentage: sluice_config::Weight::percent(5).unwrap(),
        canary_duration: Duration::from_secs(300),
    };
    parse_request(&body, &defaults)
}

#[test]
fn checks_gates_and_mirror_steps_are_read_and_bad_ones_named() {
    let spec = parsed(serde_json::json!({
        "from": "blue", "to": "green",
        "steps": [{"mirror": 10, "hold": "2m"}, {"gate": {"webhook": {"url": "https://ci.example/approve", "timeout": "30m"}}}, {"weight": 100}],
        "on_failure": "pause",
        "analysis": {"interval": "5s", "on_no_evidence": "abort", "evidence_deadline": "10m", "checks": [
            {"name": "checkout", "prometheus": {"url": "http://prom:9090", "query": "sum(x)", "min": 0.95}},
            {"webhook": {"url": "http://tests:8080/run", "timeout": "1m"}}
        ]}
    }))
    .unwrap();
    assert_eq!(
        spec.steps[0],
        Step::Mirror {
            percent: 10.0,
            hold: Duration::from_secs(120)
        }
    );
    assert_eq!(
        spec.steps[1],
        Step::Gate {
            url: "https://ci.example/approve".into(),
            timeout: Duration::from_secs(1800),
            interval: Duration::from_secs(10)
        }
    );
    assert_eq!(
        (spec.on_failure, spec.on_no_evidence),
        (AnalysisFailure::Pause, NoEvidence::Abort)
    );
    assert_eq!(spec.evidence_deadline, Some(Duration::from_secs(600)));
    assert_eq!(spec.checks.len(), 2);
    assert_eq!(spec.checks[0].name, "checkout");
    assert_eq!(
        spec.checks[0].interval,
        Duration::from_secs(5),
        "the analysis interval by default"
    );
    assert_eq!(spec.checks[1].name, "webhook check 2");
    assert_eq!(spec.checks[1].timeout, Duration::from_secs(60));
    for (bad, named) in [
        (serde_json::json!([{"mirror": 0, "hold": "1m"}]), "steps[0].mirror"),
        (serde_json::json!([{"mirror": 10}]), "needs a hold"),
        (
            serde_json::json!([{"gate": {"webhook": {"url": "ftp://x"}}}]),
            "steps[0].gate.webhook.url",
        ),
        (
            serde_json::json!([{"gate": {"webhook": {"url": "http://x"}}, "weight": 5}]),
            "only its gate",
        ),
    ] {
        let e = parsed(serde_json::json!({"from": "blue", "to": "green", "steps": bad})).unwrap_err();
        assert!(e.to_string().contains(named), "{named}: {e}");
    }
    for (bad, named) in [
        (
            serde_json::json!({"prometheus": {"url": "http://p", "query": "x"}}),
            "give max, min or both",
        ),
        (
            serde_json::json!({"prometheus": {"url": "p:9090", "query": "x", "max": 1}}),
            "checks[0].prometheus.url",
        ),
        (
            serde_json::json!({"prometheus": {"url": "http://p", "query": "x", "max": 1, "on_no_data": "pass"}}),
            "on_no_data",
        ),
        (serde_json::json!({"name": "x"}), "give one of prometheus or webhook"),
    ] {
        let e = parsed(serde_json::json!({"from": "blue", "to": "green", "analysis": {"checks": [bad]}})).unwrap_err();
        assert!(e.to_string().contains(named), "{named}: {e}");
    }
    let e = parsed(serde_json::json!({"from": "blue", "to": "green", "on_failure": "retry"})).unwrap_err();
    assert!(e.to_string().contains("on_failure"), "{e}");
}
