//! The effective settings as `key path = value` lines, for
//! `sluice check-config`. Secrets appear only as their references.

use crate::model::*;

fn secret(s: &SecretRef) -> String {
    match s {
        SecretRef::File(p) => format!("file:{}", p.display()),
        SecretRef::Env(n) => format!("env:{n}"),
    }
}

fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => match url[s + 3..at].split_once(':') {
            Some((user, _)) => format!("{}{user}:***{}", &url[..s + 3], &url[at..]),
            None => url.to_owned(),
        },
        _ => url.to_owned(),
    }
}

fn health(prefix: &str, h: &HealthConfig, out: &mut Vec<(String, String)>) {
    out.push((format!("{prefix}.method"), h.method.clone()));
    out.push((format!("{prefix}.path"), h.path.clone()));
    out.push((format!("{prefix}.interval"), format!("{:?}", h.interval)));
    out.push((format!("{prefix}.timeout"), format!("{:?}", h.timeout)));
    out.push((format!("{prefix}.healthy_threshold"), h.healthy_threshold.to_string()));
    out.push((
        format!("{prefix}.unhealthy_threshold"),
        h.unhealthy_threshold.to_string(),
    ));
}

impl Config {
    /// Every setting with its effective value, in file order of sections.
    pub fn effective(&self) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = Vec::new();
        let mut push = |k: &str, v: String| out.push((k.to_owned(), v));
        let p = &self.proxy;
        push("proxy.listen", p.listen.to_string());
        push(
            "proxy.workers",
            p.workers.map_or("one per core".into(), |w| w.to_string()),
        );
        push("proxy.engine", p.engine.as_str().to_owned());
        push("proxy.allow_pool_override", p.allow_pool_override.to_string());
        push(
            "proxy.request_id_header",
            p.request_id_header.clone().unwrap_or_default(),
        );
        push("proxy.drain_timeout", format!("{:?}", p.drain_timeout));
        push("proxy.timeouts.connect", format!("{:?}", p.timeouts.connect));
        push(
            "proxy.timeouts.request_header",
            format!("{:?}", p.timeouts.request_header),
        );
        push(
            "proxy.timeouts.upstream_response",
            format!("{:?}", p.timeouts.upstream_response),
        );
        push(
            "proxy.timeouts.keep_alive_idle",
            format!("{:?}", p.timeouts.keep_alive_idle),
        );
        push("proxy.timeouts.stream_idle", format!("{:?}", p.timeouts.stream_idle));
        push("proxy.limits.max_header_bytes", p.limits.max_header_bytes.to_string());
        push("proxy.limits.max_headers", p.limits.max_headers.to_string());
        push(
            "proxy.limits.max_request_body_bytes",
            p.limits.max_request_body_bytes.to_string(),
        );
        push("admin.listen", self.admin.listen.to_string());
        for (i, t) in self.admin.tokens.iter().enumerate() {
            push(
                &format!("admin.tokens[{i}]"),
                format!("{} ({:?}) from {}", t.name, t.role, secret(&t.secret)),
            );
        }
        push("store.url", redact_url(&self.store.url));
        let r = &self.rollback;
        push("rollback.enabled", r.enabled.to_string());
        push("rollback.window", format!("{:?}", r.window));
        push("rollback.max_error_ratio", r.max_error_ratio.to_string());
        push("rollback.max_p95", format!("{:?}", r.max_p95));
        push("rollback.min_requests", r.min_requests.to_string());
        push("rollback.alpha", r.alpha.to_string());
        push("rollback.protection", format!("{:?}", r.protection));
        push("outlier.enabled", self.outlier.enabled.to_string());
        push(
            "outlier.consecutive_failures",
            self.outlier.consecutive_failures.to_string(),
        );
        let a = &self.access_log;
        push("access_log.enabled", a.enabled.to_string());
        if a.enabled {
            push("access_log.path", a.path.clone());
            push("access_log.format", a.format.as_str().into());
            push("access_log.sample", a.sample.to_string());
        }
        for (i, limit) in self.rate_limits.iter().enumerate() {
            push(
                &format!("rate_limits[{i}]"),
                format!("{} {}/s burst {}", limit.key.describe(), limit.rate, limit.burst),
            );
        }
        let t = &self.tracing;
        push("tracing.propagate", t.propagate.to_string());
        if let Some(endpoint) = &t.otlp_endpoint {
            push("tracing.otlp_endpoint", endpoint.clone());
            push("tracing.sample_ratio", t.sample_ratio.to_string());
        }
        push(
            "sticky",
            match &self.sticky {
                None => "off".into(),
                Some(Sticky::Cookie(c)) => format!("cookie {c}"),
                Some(Sticky::Header(h)) => format!("header {h}"),
                Some(Sticky::ClientIp) => "client ip".into(),
            },
        );
        health("health", &self.health, &mut out);
        for pool in &self.pools {
            let k = format!("pools.{}", pool.name);
            out.push((format!("{k}.version"), pool.version.clone()));
            out.push((format!("{k}.weight"), pool.weight.to_string()));
            out.push((format!("{k}.backends"), format!("{:?}", pool.backends)));
            health(&format!("{k}.health"), &pool.health, &mut out);
        }
        out
    }
}
