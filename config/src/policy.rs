//! Traffic policy sections: `[[rate_limits]]`, `[retry]`, `[[mirror]]`,
//! and the routes analysis judges apart (`[[analysis.routes]]`).

use std::time::Duration;

use crate::model::{MirrorConfig, RateKey, RateLimitConfig, RetryConfig, RetryOn, RouteConfig};
use crate::reader::{Problems, Section};

pub(crate) fn rate_limits(sections: Vec<Section>, problems: &mut Problems) -> Vec<RateLimitConfig> {
    let mut out = Vec::new();
    for mut s in sections {
        let key = match s.take::<String>("key", problems) {
            None => {
                problems.push(
                    s.key_path("key"),
                    "required: \"client_ip\", \"header:NAME\" or \"global\"",
                );
                None
            }
            Some(key) => match rate_key(&key) {
                Ok(key) => Some(key),
                Err(why) => {
                    problems.push(s.key_path("key"), why);
                    None
                }
            },
        };
        let rate = match s.take::<f64>("rate", problems) {
            Some(rate) if rate.is_finite() && rate > 0.0 && rate <= 1e9 => Some(rate),
            Some(rate) => {
                problems.push(
                    s.key_path("rate"),
                    format!("{rate} is not a rate; write requests per second above 0"),
                );
                None
            }
            None => {
                problems.push(s.key_path("rate"), "required: requests per second, per key");
                None
            }
        };
        let burst = match s.take::<i64>("burst", problems) {
            Some(burst) if (1..=1_000_000_000).contains(&burst) => u32::try_from(burst).ok(),
            Some(burst) => {
                problems.push(
                    s.key_path("burst"),
                    format!("{burst} is not a burst; write how many requests may come at once (1 or more)"),
                );
                None
            }
            // A second's worth by default.
            None => rate.map(|r| r.ceil().clamp(1.0, 1e9) as u32),
        };
        s.finish(problems);
        if let (Some(key), Some(rate), Some(burst)) = (key, rate, burst) {
            out.push(RateLimitConfig { key, rate, burst });
        }
    }
    out
}

fn rate_key(key: &str) -> Result<RateKey, String> {
    match key {
        "client_ip" => Ok(RateKey::ClientIp),
        "global" => Ok(RateKey::Global),
        _ => match key.strip_prefix("header:") {
            Some(name) if valid_header_name(name) => Ok(RateKey::Header(name.to_ascii_lowercase())),
            Some(name) => Err(format!("{name:?} is not a header name")),
            None => Err(format!(
                "{key:?} is not a key; use \"client_ip\", \"header:NAME\" (e.g. \"header:x-api-key\") or \"global\""
            )),
        },
    }
}

/// An HTTP field name: one or more token characters (RFC 9110 §5.1).
fn valid_header_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Reads a retry table over `base`: `[retry]` over the built-in defaults,
/// or `[pools.NAME.retry]` over `[retry]`. Writing the table turns retries
/// on (two tries) unless it says how many.
pub(crate) fn retry(section: Option<Section>, base: RetryConfig, problems: &mut Problems) -> RetryConfig {
    let Some(mut s) = section else { return base };
    let mut r = base;
    if r.attempts == 1 {
        r.attempts = 2;
    }
    if let Some(n) = s.take::<i64>("attempts", problems) {
        match u32::try_from(n) {
            Ok(n @ 1..=5) => r.attempts = n,
            _ => problems.push(
                s.key_path("attempts"),
                format!("{n} is not a number of tries; write 1 (no retries) to 5"),
            ),
        }
    }
    if let Some(names) = s.take::<Vec<String>>("on", problems) {
        let mut on = 0;
        for name in &names {
            match RetryOn::NAMES.iter().find(|(n, _)| n == name) {
                Some((_, bit)) => on |= bit,
                None => problems.push(
                    s.key_path("on"),
                    format!("{name:?} is not a retry condition; use connect-failure, reset, 502, 503 or timeout"),
                ),
            }
        }
        r.on = RetryOn(on);
    }
    if let Some(budget) = s.take::<f64>("budget", problems) {
        if (0.0..=1.0).contains(&budget) {
            r.budget = budget;
        } else {
            problems.push(
                s.key_path("budget"),
                format!("{budget} is not a share; write retries per request from 0 to 1 (0.2: 20%)"),
            );
        }
    }
    if let Some(n) = s.take::<i64>("min_per_second", problems) {
        match u32::try_from(n) {
            Ok(n @ 0..=100_000) => r.min_per_second = n,
            _ => problems.push(s.key_path("min_per_second"), "must be between 0 and 100000"),
        }
    }
    if let Some(d) = s.duration("per_try_timeout", problems) {
        if d.is_zero() {
            problems.push(s.key_path("per_try_timeout"), "must be above 0");
        } else {
            r.per_try_timeout = Some(d);
        }
    }
    s.finish(problems);
    r
}

/// `[[mirror]]` entries; `pools` names the pools a copy may go to.
pub(crate) fn mirrors(sections: Vec<Section>, pools: &[String], problems: &mut Problems) -> Vec<MirrorConfig> {
    let mut out: Vec<MirrorConfig> = Vec::new();
    for mut s in sections {
        let to = match s.take::<String>("to", problems) {
            Some(to) if pools.contains(&to) => Some(to),
            Some(to) => {
                problems.push(s.key_path("to"), format!("{to:?} is not a pool"));
                None
            }
            None => {
                problems.push(s.key_path("to"), "required: the pool the copies go to");
                None
            }
        };
        if let Some(to) = &to
            && out.iter().any(|m| &m.to == to)
        {
            problems.push(s.key_path("to"), format!("{to:?} already has a [[mirror]]"));
        }
        let percent = match s.take::<f64>("percent", problems) {
            Some(p) if p > 0.0 && p <= 100.0 => Some(p),
            Some(p) => {
                problems.push(
                    s.key_path("percent"),
                    format!("{p} is not a share; write above 0, up to 100"),
                );
                None
            }
            None => {
                problems.push(
                    s.key_path("percent"),
                    "required: the share of requests copied, in percent",
                );
                None
            }
        };
        let max_body_bytes = match s.take::<i64>("max_body_bytes", problems) {
            None => Some(65_536),
            Some(n) => match u64::try_from(n) {
                Ok(n @ 0..=16_777_216) => Some(n),
                _ => {
                    problems.push(s.key_path("max_body_bytes"), "must be between 0 and 16777216");
                    None
                }
            },
        };
        let timeout = match s.duration("timeout", problems) {
            Some(d) if d.is_zero() => {
                problems.push(s.key_path("timeout"), "must be above 0");
                None
            }
            Some(d) => Some(d),
            None => Some(Duration::from_secs(5)),
        };
        let allow_non_idempotent = s.take("allow_non_idempotent", problems).unwrap_or(false);
        s.finish(problems);
        if let (Some(to), Some(percent), Some(max_body_bytes), Some(timeout)) = (to, percent, max_body_bytes, timeout) {
            out.push(MirrorConfig {
                to,
                percent,
                max_body_bytes,
                timeout,
                allow_non_idempotent,
            });
        }
    }
    out
}

/// At most this many `[[analysis.routes]]` (each request looks at every
/// prefix).
const MAX_ROUTES: usize = 16;

/// `[analysis]`: its `[[analysis.routes]]`.
pub(crate) fn analysis_routes(section: Option<Section>, problems: &mut Problems) -> Vec<RouteConfig> {
    let Some(mut analysis) = section else { return Vec::new() };
    let mut out: Vec<RouteConfig> = Vec::new();
    for mut r in analysis.sections("routes", problems) {
        let name = r.take::<String>("name", problems);
        let prefix = r.take::<String>("prefix", problems);
        match &name {
            None => problems.push(r.key_path("name"), "required: the route's name (its label in metrics)"),
            Some(n)
                if n.is_empty()
                    || !n
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_') =>
            {
                problems.push(
                    r.key_path("name"),
                    format!("{n:?}: lower-case letters, digits, - and _"),
                );
            }
            Some(n) if out.iter().any(|o| &o.name == n) => {
                problems.push(r.key_path("name"), format!("{n:?} is named twice"));
            }
            Some(_) => {}
        }
        match &prefix {
            None => problems.push(r.key_path("prefix"), "required: the path prefix, e.g. \"/predict\""),
            Some(p) if !p.starts_with('/') => problems.push(r.key_path("prefix"), "must start with '/'"),
            Some(_) => {}
        }
        r.finish(problems);
        if let (Some(name), Some(prefix)) = (name, prefix) {
            out.push(RouteConfig { name, prefix });
        }
    }
    if out.len() > MAX_ROUTES {
        problems.push("analysis.routes", format!("at most {MAX_ROUTES} routes"));
    }
    analysis.finish(problems);
    out
}
