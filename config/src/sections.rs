//! The sections every config may have beside proxy, admin and store:
//! health, sticky, rollback, outlier, alerts; and secret references.

use std::path::PathBuf;

use crate::model::*;
use crate::reader::{Problems, Section};

/// A secret is a reference, `file:/path` or `env:NAME`, never the value.
pub(crate) fn secret(s: &mut Section, key: &str, problems: &mut Problems) -> Option<SecretRef> {
    let Some(text) = s.take::<String>(key, problems) else {
        problems.push(s.key_path(key), "is required (\"file:/path\" or \"env:NAME\")");
        return None;
    };
    if let Some(path) = text.strip_prefix("file:").filter(|p| !p.is_empty()) {
        Some(SecretRef::File(PathBuf::from(path)))
    } else if let Some(name) = text.strip_prefix("env:").filter(|n| !n.is_empty()) {
        Some(SecretRef::Env(name.to_owned()))
    } else {
        // Never echo the value: it may be a secret pasted in by mistake.
        problems.push(
            s.key_path(key),
            "must be a reference, \"file:/path\" or \"env:NAME\"; secret values are never written in config",
        );
        None
    }
}

/// Reads a health table over `base`: `[health]` over the built-in defaults,
/// or `[pools.NAME.health]` over `[health]`.
pub(crate) fn health(section: Option<Section>, base: HealthConfig, problems: &mut Problems) -> HealthConfig {
    let Some(mut s) = section else { return base };
    let mut h = base;
    if let Some(m) = s.take::<String>("method", problems) {
        h.method = m.to_ascii_uppercase();
    }
    if let Some(p) = s.take::<String>("path", problems) {
        if p.starts_with('/') {
            h.path = p;
        } else {
            problems.push(s.key_path("path"), "must start with '/'");
        }
    }
    if let Some(d) = s.duration("interval", problems) {
        h.interval = d;
    }
    if let Some(d) = s.duration("timeout", problems) {
        h.timeout = d;
    }
    if let Some(d) = s.duration("slow_start", problems) {
        h.slow_start = d;
    }
    for (key, slot) in [
        ("healthy_threshold", &mut h.healthy_threshold),
        ("unhealthy_threshold", &mut h.unhealthy_threshold),
    ] {
        if let Some(v) = s.take::<u32>(key, problems) {
            if v == 0 {
                problems.push(s.key_path(key), "must be at least 1");
            } else {
                *slot = v;
            }
        }
    }
    if let Some(range) = s.take::<Vec<u16>>("expected_status", problems) {
        match range.as_slice() {
            [lo, hi] if (100..=599).contains(lo) && lo <= hi && *hi <= 599 => h.expected_status = (*lo, *hi),
            [one] if (100..=599).contains(one) => h.expected_status = (*one, *one),
            _ => problems.push(
                s.key_path("expected_status"),
                "must be [status] or [low, high] within 100..=599",
            ),
        }
    }
    if let Some(host) = s.take::<String>("host", problems) {
        h.host = Some(host);
    }
    match s.take::<String>("mode", problems).as_deref() {
        None => {}
        Some("http") => h.mode = HealthMode::Http,
        Some("grpc") => h.mode = HealthMode::Grpc,
        Some(other) => problems.push(
            s.key_path("mode"),
            format!("{other:?} is not a health mode; use \"http\" or \"grpc\""),
        ),
    }
    if let Some(service) = s.take::<String>("grpc_service", problems) {
        h.grpc_service = service;
    }
    if h.timeout > h.interval {
        problems.push(s.key_path("timeout"), "must not be longer than the interval");
    }
    s.finish(problems);
    h
}

pub(crate) fn sticky(mut s: Section, problems: &mut Problems) -> Option<Sticky> {
    let cookie: Option<String> = s.take("cookie", problems);
    let header: Option<String> = s.take("header", problems);
    let client_ip: bool = s.take("client_ip", problems).unwrap_or(false);
    let path = s.key_path("");
    let path = path.trim_end_matches('.').to_owned();
    s.finish(problems);
    let chosen = [cookie.is_some(), header.is_some(), client_ip]
        .iter()
        .filter(|b| **b)
        .count();
    if chosen != 1 {
        problems.push(
            path,
            "set exactly one of cookie = \"NAME\", header = \"NAME\" or client_ip = true",
        );
        return None;
    }
    let token_ok = |v: &str| !v.is_empty() && v.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    match (cookie, header) {
        (Some(c), _) if token_ok(&c) => Some(Sticky::Cookie(c)),
        (Some(_), _) => {
            problems.push(
                format!("{path}.cookie"),
                "must be a cookie name (letters, digits, '-', '_', '.')",
            );
            None
        }
        (_, Some(h)) if token_ok(&h) => Some(Sticky::Header(h.to_ascii_lowercase())),
        (_, Some(_)) => {
            problems.push(
                format!("{path}.header"),
                "must be a header name (letters, digits, '-', '_', '.')",
            );
            None
        }
        _ => Some(Sticky::ClientIp),
    }
}

pub(crate) fn rollback(section: Option<Section>, problems: &mut Problems) -> RollbackConfig {
    let mut r = RollbackConfig::default();
    let Some(mut s) = section else { return r };
    if let Some(v) = s.take("enabled", problems) {
        r.enabled = v;
    }
    if let Some(d) = s.duration("window", problems) {
        r.window = d;
    }
    if let Some(v) = s.take::<f64>("max_error_ratio", problems) {
        if (0.0..=1.0).contains(&v) {
            r.max_error_ratio = v;
        } else {
            problems.push(s.key_path("max_error_ratio"), "must be between 0.0 and 1.0");
        }
    }
    if let Some(d) = s.duration("max_p95", problems) {
        r.max_p95 = d;
    }
    if let Some(v) = s.take("min_requests", problems) {
        r.min_requests = v;
    }
    if let Some(v) = s.take::<u32>("consecutive_breaches", problems) {
        if v == 0 {
            problems.push(s.key_path("consecutive_breaches"), "must be at least 1");
        } else {
            r.consecutive_breaches = v;
        }
    }
    if let Some(v) = s.take::<f64>("alpha", problems) {
        if v > 0.0 && v < 0.5 {
            r.alpha = v;
        } else {
            problems.push(s.key_path("alpha"), "must be above 0 and below 0.5 (e.g. 0.001)");
        }
    }
    if let Some(v) = s.take::<f64>("max_slower_share", problems) {
        if (0.5..=1.0).contains(&v) {
            r.max_slower_share = Some(v);
        } else {
            problems.push(
                s.key_path("max_slower_share"),
                "a share between 0.5 (no difference) and 1 (off)",
            );
        }
    }
    if let Some(v) = s.take::<f64>("max_error_ratio_increase", problems) {
        if (0.0..=1.0).contains(&v) {
            r.max_error_ratio_increase = Some(v);
        } else {
            problems.push(s.key_path("max_error_ratio_increase"), "a ratio between 0 and 1");
        }
    }
    if let Some(v) = s.take::<f64>("max_p95_ratio", problems) {
        if v >= 1.0 && v.is_finite() {
            r.max_p95_ratio = Some(v);
        } else {
            problems.push(s.key_path("max_p95_ratio"), "a factor of at least 1, e.g. 1.5");
        }
    }
    if let Some(d) = s.duration("evaluation_interval", problems) {
        r.evaluation_interval = d;
    }
    if let Some(d) = s.duration("protection", problems) {
        r.protection = d;
    }
    s.finish(problems);
    r
}

pub(crate) fn outlier(section: Option<Section>, problems: &mut Problems) -> OutlierConfig {
    let mut o = OutlierConfig::default();
    let Some(mut s) = section else { return o };
    if let Some(v) = s.take("enabled", problems) {
        o.enabled = v;
    }
    if let Some(v) = s.take::<u32>("consecutive_failures", problems) {
        if v == 0 {
            problems.push(s.key_path("consecutive_failures"), "must be at least 1");
        } else {
            o.consecutive_failures = v;
        }
    }
    if let Some(d) = s.duration("base_ejection", problems) {
        o.base_ejection = d;
    }
    if let Some(d) = s.duration("max_ejection", problems) {
        o.max_ejection = d;
    }
    s.finish(problems);
    o
}

pub(crate) fn alerts(section: Option<Section>, problems: &mut Problems) -> AlertsConfig {
    let Some(mut s) = section else {
        return AlertsConfig::default();
    };
    let mut webhooks = Vec::new();
    for mut w in s.sections("webhooks", problems) {
        let url: Option<String> = w.take("url", problems);
        let format = match w.take::<String>("format", problems).as_deref() {
            None | Some("json") => WebhookFormat::Json,
            Some("slack") => WebhookFormat::Slack,
            Some(other) => {
                problems.push(
                    w.key_path("format"),
                    format!("{other:?} is not a format; use \"json\" or \"slack\""),
                );
                WebhookFormat::Json
            }
        };
        match url {
            Some(u) if u.starts_with("http://") || u.starts_with("https://") => {
                webhooks.push(WebhookConfig { url: u, format });
            }
            Some(_) => problems.push(w.key_path("url"), "must be an http:// or https:// URL"),
            None => problems.push(w.key_path("url"), "is required"),
        }
        w.finish(problems);
    }
    s.finish(problems);
    AlertsConfig { webhooks }
}
