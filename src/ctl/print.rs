//! What `sluice ctl` prints for people: tables and lines from the API's
//! answers.

use std::fmt::Write as _;

use sluice_api as api;

/// Which replica answered and which one leads the rollout controller.
pub(super) fn replica_line(s: &api::Status) -> String {
    let this = &s.replica;
    match (s.leader, &s.leader_replica) {
        (true, _) => format!("replica {this} (leader)\n"),
        (_, Some(leader)) => format!("replica {this}; leader: {leader}\n"),
        _ => format!("replica {this}; no leader (is the store reachable?)\n"),
    }
}

pub(super) fn pools_table(generation: u64, pools: &[api::Pool]) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "generation {generation}");
    let _ = writeln!(
        out,
        "{:<12} {:<12} {:>6} {:>8} {:>8} {:>8} {:>9}",
        "POOL", "VERSION", "WEIGHT", "HEALTHY", "REQ/S", "ERROR %", "P95 MS"
    );
    for p in pools {
        let healthy = p.backends.iter().filter(|b| b.healthy && !b.ejected).count();
        // Live-window numbers when the answer has them (status, pools).
        let w = p.window.as_ref();
        let rate = w.map_or("-".to_owned(), |w| format!("{:.1}", w.rate));
        let errors = w.map_or("-".to_owned(), |w| format!("{:.2}", w.error_ratio * 100.0));
        let p95 = w.and_then(|w| w.p95_ms).map_or("-".to_owned(), |ms| format!("{ms:.1}"));
        let _ = writeln!(
            out,
            "{:<12} {:<12} {:>5}% {:>8} {:>8} {:>8} {:>9}",
            p.name,
            p.version,
            p.weight,
            format!("{healthy}/{}", p.backends.len()),
            rate,
            errors,
            p95
        );
    }
    out
}

pub(super) fn history_table(h: &api::History) -> String {
    let mut out = format!("{:<26} {:<12} {:<12} {:<12} RESULT\n", "STARTED", "POOL", "FROM", "TO");
    for d in &h.deployments {
        let _ = writeln!(
            out,
            "{:<26} {:<12} {:<12} {:<12} {}",
            d.started_at,
            d.pool,
            d.from_version.as_deref().unwrap_or("-"),
            d.to_version,
            d.result,
        );
    }
    out
}

/// A rollout, as the engine reports it.
pub(super) fn rollout_line(r: &api::Rollout) -> String {
    let step = r.step.map(|s| format!(" step {s}/{}", r.steps)).unwrap_or_default();
    let hold = r
        .hold_remaining_seconds
        .map(|left| format!(", {}s of its hold left", left.round()))
        .unwrap_or_default();
    let mut out = format!(
        "rollout {} {} → {} ({}): {}{step}{hold}\n  {}\n",
        r.id, r.from, r.to, r.strategy, r.state, r.reason,
    );
    if let Some(e) = &r.evidence {
        let p95 = e.p95_ms.map(|ms| format!(", P95 {ms:.0} ms")).unwrap_or_default();
        let verdict = if e.enough {
            "judged healthy"
        } else {
            "not enough to judge yet"
        };
        let _ = writeln!(
            out,
            "  evidence: {} requests ({} errors{p95}) in the fullest window of {} needed: {verdict}",
            e.requests, e.errors, e.min_requests
        );
    }
    if r.dry_run {
        out.push_str("plan (dry run):\n");
        for line in &r.plan {
            let _ = writeln!(out, "  - {line}");
        }
    }
    for hook in &r.hooks {
        let _ = writeln!(
            out,
            "  hook {} {}: {} in {} ms",
            hook.point,
            hook.name,
            hook.error.as_deref().unwrap_or("ok"),
            hook.duration_ms,
        );
    }
    out
}

pub(super) fn rollouts_table(list: &api::RolloutList) -> String {
    let mut out = format!("{:<5} {:<26} {:<12} {}\n", "ID", "STARTED", "STATE", "REASON");
    for r in &list.rollouts {
        let _ = writeln!(
            out,
            "{:<5} {:<26} {:<12} {}",
            r.id,
            r.started_at,
            r.state,
            r.reason.as_deref().unwrap_or(""),
        );
    }
    out
}

pub(super) fn audit_table(page: &api::AuditPage) -> String {
    let mut out = format!(
        "{:<26} {:<14} {:<16} {:<28} RESULT\n",
        "AT", "ACTOR", "ACTION", "TARGET"
    );
    for e in &page.entries {
        let _ = writeln!(
            out,
            "{:<26} {:<14} {:<16} {:<28} {}",
            e.at, e.actor, e.action, e.target, e.result,
        );
    }
    out
}

/// One access-log line for people: when, status, request, where it went,
/// how long, the id and sluice's error.
pub fn access_line(l: &api::AccessLine) -> String {
    let target = match (&l.pool, &l.version, &l.backend) {
        (Some(p), Some(v), Some(b)) => format!("{p}/{v} {b}"),
        (Some(p), Some(v), None) => format!("{p}/{v}"),
        _ => "-".to_owned(),
    };
    format!(
        "{} {} {} {} -> {} {:.1}ms id={}{}\n",
        l.ts,
        l.status,
        l.method,
        l.path,
        target,
        l.duration_ms,
        l.request_id.as_deref().unwrap_or("-"),
        l.error.as_ref().map(|e| format!(" error={e}")).unwrap_or_default()
    )
}
