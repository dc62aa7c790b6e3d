//! TOML text → validated [`Config`]: reads every section, checks every value
//! and the rules that span keys (weights sum to 100, a weighted pool has
//! backends), and reports all problems together.

use std::collections::HashSet;
use std::net::SocketAddr;

use crate::error::ConfigError;
use crate::model::*;
use crate::observe::{access_log, tracing};
use crate::policy::{analysis_routes, mirrors, rate_limits, retry};
use crate::pools::pools;
use crate::reader::{Problems, Section};
use crate::sections::{alerts, health, outlier, rollback, secret, sticky};

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
    let access_log = access_log(root.section("access_log", &mut problems), &mut problems);
    let tracing = tracing(root.section("tracing", &mut problems), &mut problems);
    let rate_limits = rate_limits(root.sections("rate_limits", &mut problems), &mut problems);
    let retry = retry(
        root.section("retry", &mut problems),
        RetryConfig::default(),
        &mut problems,
    );
    let pools = match root.section("pools", &mut problems) {
        Some(section) => pools(section, &health, &retry, &mut problems),
        None => {
            problems.push(
                "pools",
                "at least one pool is required, e.g. [pools.blue] with version, weight and backends",
            );
            Vec::new()
        }
    };
    let names: Vec<String> = pools.iter().map(|p| p.name.clone()).collect();
    let mirrors = mirrors(root.sections("mirror", &mut problems), &names, &mut problems);
    let analysis_routes = analysis_routes(root.section("analysis", &mut problems), &mut problems);
    let discovery = crate::discovery::discovery(root.section("discovery", &mut problems), &mut problems);
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
            access_log,
            tracing,
            rate_limits,
            retry,
            mirrors,
            discovery,
            analysis_routes,
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
    let request_id_header = match s.take::<String>("request_id_header", problems) {
        None => Some("x-request-id".to_owned()),
        Some(name) if name.is_empty() => None,
        Some(name) if is_header_name(&name) => Some(name.to_ascii_lowercase()),
        Some(name) => {
            problems.push(
                s.key_path("request_id_header"),
                format!(
                    "{name:?} is not a header name (letters, digits and -_.!#$%&'*+^`|~), or \"\" for no request ids"
                ),
            );
            None
        }
    };
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
        // Zero is allowed here: no idle limit.
        if let Some(d) = t.duration("stream_idle", problems) {
            timeouts.stream_idle = d;
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
        if let Some(v) = l.take::<u64>("max_pending_per_backend", problems) {
            match u32::try_from(v) {
                Ok(v) => limits.max_pending_per_backend = v,
                Err(_) => problems.push(l.key_path("max_pending_per_backend"), "is too large (0: no limit)"),
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
        request_id_header,
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

/// An HTTP field name: a token (RFC 9110 §5.1), at most 64 bytes here.
fn is_header_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}
