//! TOML text → validated [`Config`]: reads every section, checks every value
//! and the rules that span keys (weights sum to 100, a weighted pool has
//! backends), and reports all problems together.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::PathBuf;

use crate::error::ConfigError;
use crate::model::*;
use crate::reader::{Problems, Section};

pub(crate) fn parse(text: &str) -> Result<Config, ConfigError> {
    parse_table(parse_text(text)?)
}

pub(crate) fn parse_text(text: &str) -> Result<toml::Table, ConfigError> {
    text.parse()
        .map_err(|e: toml::de::Error| ConfigError::Syntax(e.to_string()))
}

pub(crate) fn parse_table(table: toml::Table) -> Result<Config, ConfigError> {
    let mut problems = Problems::default();
    let mut root = Section::root(table);

    let proxy = proxy(root.section("proxy", &mut problems), &mut problems);
    let admin = admin(root.section("admin", &mut problems), &mut problems);
    let store = store(root.section("store", &mut problems), &mut problems);
    let health = health(
        root.section("health", &mut problems),
        HealthConfig::default(),
        &mut problems,
    );
    let sticky = root
        .section("sticky", &mut problems)
        .and_then(|s| sticky(s, &mut problems));
    let rollback = rollback(root.section("rollback", &mut problems), &mut problems);
    let alerts = alerts(root.section("alerts", &mut problems), &mut problems);
    let outlier = outlier(root.section("outlier", &mut problems), &mut problems);
    let pools = match root.section("pools", &mut problems) {
        Some(section) => pools(section, &health, &mut problems),
        None => {
            problems.push(
                "pools",
                "at least one pool is required, e.g. [pools.blue] with version, weight and backends",
            );
            Vec::new()
        }
    };
    root.finish(&mut problems);

    if problems.0.is_empty() {
        Ok(Config {
            proxy,
            admin,
            store,
            health,
            sticky,
            rollback,
            alerts,
            outlier,
            pools,
        })
    } else {
        Err(ConfigError::Invalid(problems.0))
    }
}

fn socket_addr(section: &mut Section, key: &str, default: &str, problems: &mut Problems) -> SocketAddr {
    let fallback: SocketAddr = default.parse().unwrap_or(SocketAddr::from(([127, 0, 0, 1], 0)));
    let Some(text) = section.take::<String>(key, problems) else {
        return fallback;
    };
    text.parse().unwrap_or_else(|_| {
        problems.push(
            section.key_path(key),
            format!("{text:?} is not a socket address; write it like \"0.0.0.0:8080\""),
        );
        fallback
    })
}

fn proxy(section: Option<Section>, problems: &mut Problems) -> ProxyConfig {
    let mut s = section.unwrap_or_else(|| Section::root(toml::Table::new()));
    let listen = socket_addr(&mut s, "listen", "0.0.0.0:8080", problems);
    let workers = s.take::<u64>("workers", problems).and_then(|w| {
        if (1..=1024).contains(&w) {
            Some(w as usize)
        } else {
            problems.push(s.key_path("workers"), "must be between 1 and 1024");
            None
        }
    });
    let allow_pool_override = s.take("allow_pool_override", problems).unwrap_or(false);
    let engine = match s.take::<String>("engine", problems).as_deref() {
        None | Some("sluice") => Engine::Sluice,
        Some("hyper") => Engine::Hyper,
        Some(other) => {
            problems.push(
                s.key_path("engine"),
                format!("must be \"sluice\" or \"hyper\", not {other:?}"),
            );
            Engine::Sluice
        }
    };
    let drain_timeout = s
        .duration("drain_timeout", problems)
        .unwrap_or(std::time::Duration::from_secs(30));

    let mut timeouts = Timeouts::default();
    if let Some(mut t) = s.section("timeouts", problems) {
        for (key, slot) in [
            ("connect", &mut timeouts.connect),
            ("request_header", &mut timeouts.request_header),
            ("upstream_response", &mut timeouts.upstream_response),
            ("keep_alive_idle", &mut timeouts.keep_alive_idle),
            ("max_grpc_timeout", &mut timeouts.max_grpc_timeout),
        ] {
            if let Some(d) = t.duration(key, problems) {
                if d.is_zero() {
                    problems.push(t.key_path(key), "must be greater than zero");
                } else {
                    *slot = d;
                }
            }
        }
        t.finish(problems);
    }

    let mut limits = Limits::default();
    if let Some(mut l) = s.section("limits", problems) {
        if let Some(v) = l.take::<u64>("max_header_bytes", problems) {
            // hyper's HTTP/1 read buffer cannot be smaller than 8 KiB.
            if (8192..=1024 * 1024).contains(&v) {
                limits.max_header_bytes = v as usize;
            } else {
                problems.push(l.key_path("max_header_bytes"), "must be between 8192 and 1048576");
            }
        }
        if let Some(v) = l.take::<u64>("max_headers", problems) {
            if (1..=1000).contains(&v) {
                limits.max_headers = v as usize;
            } else {
                problems.push(l.key_path("max_headers"), "must be between 1 and 1000");
            }
        }
        if let Some(v) = l.take::<u64>("max_request_body_bytes", problems) {
            limits.max_request_body_bytes = v;
        }
        if let Some(v) = l.take::<u64>("max_connections", problems) {
            if (1..=1_000_000).contains(&v) {
                limits.max_connections = v as usize;
            } else {
                problems.push(l.key_path("max_connections"), "must be between 1 and 1000000");
            }
        }
        if let Some(v) = l.take::<u64>("max_in_flight_per_backend", problems) {
            match u32::try_from(v) {
                Ok(v) => limits.max_in_flight_per_backend = v,
                Err(_) => problems.push(l.key_path("max_in_flight_per_backend"), "is too large (0: no limit)"),
            }
        }
        l.finish(problems);
    }

    let tls = s.section("tls", problems).map(|t| tls(t, problems));
    s.finish(problems);
    ProxyConfig {
        listen,
        engine,
        workers,
        allow_pool_override,
        drain_timeout,
        timeouts,
        limits,
        tls,
    }
}

fn tls(mut s: Section, problems: &mut Problems) -> TlsConfig {
    let listen = socket_addr(&mut s, "listen", "0.0.0.0:8443", problems);
    let mut certificates = Vec::new();
    for mut c in s.sections("certificates", problems) {
        let cert = secret(&mut c, "cert", problems);
        let key = secret(&mut c, "key", problems);
        if let (Some(cert), Some(key)) = (cert, key) {
            certificates.push(CertificateConfig { cert, key });
        }
        c.finish(problems);
    }
    if certificates.is_empty() {
        problems.push(
            s.key_path("certificates"),
            "a TLS listener needs at least one [[proxy.tls.certificates]]",
        );
    }
    s.finish(problems);
    TlsConfig { listen, certificates }
}

/// `[pools.NAME.tls]`: a CA, an optional SNI name, an optional client pair.
fn upstream_tls(mut s: Section, problems: &mut Problems) -> Option<UpstreamTlsConfig> {
    let ca = secret(&mut s, "ca", problems);
    let server_name: Option<String> = s.take("server_name", problems);
    if let Some(name) = &server_name
        && rustls_name_is_invalid(name)
    {
        problems.push(
            s.key_path("server_name"),
            format!("{name:?} is not a DNS name or IP address"),
        );
    }
    let client_cert = match (s.has("cert"), s.has("key")) {
        (false, false) => None,
        (true, true) => {
            let cert = secret(&mut s, "cert", problems);
            let key = secret(&mut s, "key", problems);
            cert.zip(key).map(|(cert, key)| CertificateConfig { cert, key })
        }
        _ => {
            problems.push(s.key_path("cert"), "a client certificate needs both cert and key");
            None
        }
    };
    s.finish(problems);
    Some(UpstreamTlsConfig {
        ca: ca?,
        server_name,
        client_cert,
    })
}

fn rustls_name_is_invalid(name: &str) -> bool {
    name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b':' | b'_'))
}

/// A secret is a reference, `file:/path` or `env:NAME`, never the value.
fn secret(s: &mut Section, key: &str, problems: &mut Problems) -> Option<SecretRef> {
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

fn admin(section: Option<Section>, problems: &mut Problems) -> AdminConfig {
    let mut s = section.unwrap_or_else(|| Section::root(toml::Table::new()));
    let listen = socket_addr(&mut s, "listen", "127.0.0.1:9901", problems);
    let metrics_require_token = s.take("metrics_require_token", problems).unwrap_or(false);
    let insecure = s.take("insecure", problems).unwrap_or(false);
    let mut tokens = Vec::new();
    let mut names = HashSet::new();
    for mut t in s.sections("tokens", problems) {
        let name: Option<String> = t.take("name", problems);
        let role = match t.take::<String>("role", problems).as_deref() {
            Some("viewer") => Some(Role::Viewer),
            Some("operator") => Some(Role::Operator),
            Some(other) => {
                problems.push(
                    t.key_path("role"),
                    format!("{other:?} is not a role; use \"viewer\" or \"operator\""),
                );
                None
            }
            None => {
                problems.push(t.key_path("role"), "is required (\"viewer\" or \"operator\")");
                None
            }
        };
        let secret = secret(&mut t, "secret", problems);
        match &name {
            None => problems.push(t.key_path("name"), "is required"),
            Some(n) if !names.insert(n.clone()) => {
                problems.push(t.key_path("name"), format!("token name {n:?} is used twice"))
            }
            _ => {}
        }
        if let (Some(name), Some(role), Some(secret)) = (name, role, secret) {
            tokens.push(TokenConfig { name, role, secret });
        }
        t.finish(problems);
    }
    if !listen.ip().is_loopback() && tokens.is_empty() && !insecure {
        problems.push(
            s.key_path("listen"),
            format!(
                "the admin API on {listen} is reachable from other machines but no [[admin.tokens]] are configured; \
                 add a token, listen on 127.0.0.1, or set admin.insecure = true"
            ),
        );
    }
    s.finish(problems);
    AdminConfig {
        listen,
        tokens,
        metrics_require_token,
        insecure,
    }
}

fn store(section: Option<Section>, problems: &mut Problems) -> StoreConfig {
    let mut s = section.unwrap_or_else(|| Section::root(toml::Table::new()));
    let url = s
        .take::<String>("url", problems)
        .unwrap_or_else(|| "sqlite://sluice.db".to_owned());
    if !(url.starts_with("sqlite:") || url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        problems.push(
            s.key_path("url"),
            "must start with sqlite: (embedded) or postgres:// (shared by replicas)",
        );
    }
    let auto_migrate = s.take("auto_migrate", problems);
    s.finish(problems);
    StoreConfig { url, auto_migrate }
}

/// Reads a health table over `base`: `[health]` over the built-in defaults,
/// or `[pools.NAME.health]` over `[health]`.
fn health(section: Option<Section>, base: HealthConfig, problems: &mut Problems) -> HealthConfig {
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

fn sticky(mut s: Section, problems: &mut Problems) -> Option<Sticky> {
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

fn rollback(section: Option<Section>, problems: &mut Problems) -> RollbackConfig {
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
    if let Some(d) = s.duration("evaluation_interval", problems) {
        r.evaluation_interval = d;
    }
    if let Some(d) = s.duration("protection", problems) {
        r.protection = d;
    }
    s.finish(problems);
    r
}

fn outlier(section: Option<Section>, problems: &mut Problems) -> OutlierConfig {
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

fn alerts(section: Option<Section>, problems: &mut Problems) -> AlertsConfig {
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

fn pools(section: Section, default_health: &HealthConfig, problems: &mut Problems) -> Vec<PoolConfig> {
    let mut pools = Vec::new();
    let mut total: u32 = 0;
    let mut all_weights_known = true;
    for (name, mut p) in section.named_sections(problems) {
        let path = p.key_path("");
        let path = path.trim_end_matches('.').to_owned();
        if name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            problems.push(path.clone(), "pool names use letters, digits, '-' and '_' only");
        }
        let version = p.take::<String>("version", problems).unwrap_or_else(|| {
            problems.push(p.key_path("version"), "is required (the version label, e.g. \"v1\")");
            String::new()
        });
        let weight = match p.take::<i64>("weight", problems) {
            Some(w) if (0..=i64::from(WEIGHT_TOTAL)).contains(&w) => w as u32,
            Some(_) => {
                problems.push(p.key_path("weight"), "must be an integer between 0 and 100");
                all_weights_known = false;
                0
            }
            // A pool without a weight takes no traffic until given some.
            None => 0,
        };
        total += weight;
        let backends: Vec<String> = p.take("backends", problems).unwrap_or_default();
        let mut seen = HashSet::new();
        for (i, b) in backends.iter().enumerate() {
            if let Err(reason) = check_backend(b) {
                problems.push(format!("{}[{i}]", p.key_path("backends")), reason);
            } else if !seen.insert(b.as_str()) {
                problems.push(
                    format!("{}[{i}]", p.key_path("backends")),
                    format!("{b:?} is listed twice"),
                );
            }
        }
        if weight > 0 && backends.is_empty() {
            problems.push(
                p.key_path("backends"),
                "a pool with weight above 0 needs at least one backend",
            );
        }
        let protocol = match p.take::<String>("protocol", problems).as_deref() {
            None | Some("http1") => UpstreamProtocol::Http1,
            Some("http2") | Some("h2c") => UpstreamProtocol::Http2,
            Some(other) => {
                problems.push(
                    p.key_path("protocol"),
                    format!("{other:?} is not a protocol; use \"http1\" or \"http2\""),
                );
                UpstreamProtocol::Http1
            }
        };
        let health = health(p.section("health", problems), default_health.clone(), problems);
        if health.mode == HealthMode::Grpc && protocol == UpstreamProtocol::Http1 {
            problems.push(
                p.key_path("protocol"),
                "gRPC health checks ([health] mode = \"grpc\") need protocol = \"http2\"",
            );
        }
        let tls = p.section("tls", problems).map(|t| upstream_tls(t, problems));
        p.finish(problems);
        pools.push(PoolConfig {
            name,
            version,
            weight,
            backends,
            protocol,
            health,
            tls: tls.flatten(),
        });
    }
    if pools.is_empty() {
        problems.push("pools", "at least one pool is required");
    } else if all_weights_known && total != WEIGHT_TOTAL {
        problems.push(
            "pools",
            format!("weights must sum to {WEIGHT_TOTAL}, they sum to {total}"),
        );
    }
    pools
}

/// A backend is `host:port`: an IP or DNS name and a port.
fn check_backend(text: &str) -> Result<(), String> {
    if text.parse::<SocketAddr>().is_ok() {
        return Ok(());
    }
    let Some((host, port)) = text.rsplit_once(':') else {
        return Err(format!("{text:?} is not host:port"));
    };
    if port.parse::<u16>().map_or(true, |p| p == 0) {
        return Err(format!("{text:?} has no valid port"));
    }
    let host_ok = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
    if host_ok {
        Ok(())
    } else {
        Err(format!("{text:?} is not host:port"))
    }
}
