//! `[pools.NAME]`: versions, weights, protocols, backends, per-pool health
//! and backend TLS.

use std::collections::HashSet;

use serde::Deserialize;

use crate::model::*;
use crate::policy::retry;
use crate::reader::{Problems, Section};
use crate::sections::{health, secret};
use sluice_api::{Weight, weight_total, weight_total_text};

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

pub(crate) fn pools(
    section: Section,
    default_health: &HealthConfig,
    default_retry: &RetryConfig,
    problems: &mut Problems,
) -> Vec<PoolConfig> {
    let mut pools = Vec::new();
    let mut weights = Vec::new();
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
        let weight = match p.take::<toml::Value>("weight", problems).map(Weight::deserialize) {
            Some(Ok(w)) => w,
            Some(Err(_)) => {
                problems.push(
                    p.key_path("weight"),
                    "must be a percentage between 0 and 100 with at most two decimals (e.g. 10 or 0.5)",
                );
                all_weights_known = false;
                Weight::ZERO
            }
            // A pool without a weight takes no traffic until given some.
            None => Weight::ZERO,
        };
        weights.push(weight);
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
        if !weight.is_zero() && backends.is_empty() {
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
        let retry = retry(p.section("retry", problems), *default_retry, problems);
        let matches = p
            .sections("match", problems)
            .into_iter()
            .filter_map(|m| match_rule(m, problems))
            .collect();
        p.finish(problems);
        pools.push(PoolConfig {
            name,
            version,
            weight,
            backends,
            protocol,
            health,
            tls: tls.flatten(),
            matches,
            retry,
        });
    }
    if pools.is_empty() {
        problems.push("pools", "at least one pool is required");
    } else if all_weights_known && weight_total(&weights) != u64::from(WEIGHT_TOTAL.hundredths()) {
        problems.push(
            "pools",
            format!(
                "weights must sum to {WEIGHT_TOTAL}, they sum to {}",
                weight_total_text(weight_total(&weights))
            ),
        );
    }
    pools
}

/// A backend is `host:port`: an IP or DNS name and a port.
fn check_backend(text: &str) -> Result<(), String> {
    crate::BackendTarget::parse(text).map(|_| ())
}

/// One `[[pools.NAME.match]]`: a `header` or a `cookie` name,
/// and the `value` it must have.
fn match_rule(mut m: Section, problems: &mut Problems) -> Option<MatchRule> {
    let header = m.take::<String>("header", problems);
    let cookie = m.take::<String>("cookie", problems);
    let value = m.take::<String>("value", problems);
    let on = match (header, cookie) {
        (Some(name), None) if is_token(&name) => Some(MatchOn::Header(name.to_ascii_lowercase())),
        (None, Some(name)) if is_token(&name) => Some(MatchOn::Cookie(name)),
        (Some(name), None) | (None, Some(name)) => {
            problems.push(m.key_path("header"), format!("{name:?} is not a header or cookie name"));
            None
        }
        _ => {
            problems.push(
                m.key_path("header"),
                "give either header = \"NAME\" or cookie = \"NAME\"",
            );
            None
        }
    };
    let value = match value {
        Some(v) if !v.is_empty() && v.bytes().all(|b| b.is_ascii_graphic() || b == b' ') => Some(v),
        Some(_) => {
            problems.push(m.key_path("value"), "must be visible ASCII, not empty");
            None
        }
        None => {
            problems.push(
                m.key_path("value"),
                "required: the value that sends a request to this pool",
            );
            None
        }
    };
    m.finish(problems);
    Some(MatchRule { on: on?, value: value? })
}

/// An RFC 9110 token (header and cookie names).
fn is_token(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}
