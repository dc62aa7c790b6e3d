//! Backends written as names (`[discovery]`): which entries of a pool's
//! `backends` are DNS names to follow, and how often and where they are
//! resolved.

use std::net::SocketAddr;
use std::time::Duration;

use crate::reader::{Problems, Section};

/// What one entry of a pool's `backends` names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackendTarget {
    /// A literal `IP:port`: one backend, as written.
    Address(SocketAddr),
    /// `host:port`: every A/AAAA address of `host` is a backend on `port`.
    Host { host: String, port: u16 },
    /// `_service._proto.name`: the SRV record's targets, ports and weights.
    Srv { name: String },
}

impl BackendTarget {
    /// The entry's kind, or why it is none.
    pub fn parse(text: &str) -> Result<BackendTarget, String> {
        if let Ok(addr) = text.parse::<SocketAddr>() {
            return Ok(BackendTarget::Address(addr));
        }
        if text.starts_with('_') && !text.contains(':') {
            let labels: Vec<&str> = text.split('.').collect();
            let proto_ok = labels.get(1).is_some_and(|p| matches!(*p, "_tcp" | "_udp"));
            if labels.len() >= 3 && proto_ok && labels.iter().all(|l| dns_label(l.trim_start_matches('_'))) {
                return Ok(BackendTarget::Srv { name: text.to_owned() });
            }
            return Err(format!(
                "{text:?} is not an SRV name; write it like \"_http._tcp.green.example\""
            ));
        }
        let Some((host, port)) = text.rsplit_once(':') else {
            return Err(format!("{text:?} is not host:port"));
        };
        let port = match port.parse::<u16>() {
            Ok(p) if p != 0 => p,
            _ => return Err(format!("{text:?} has no valid port")),
        };
        if !host.is_empty() && host.len() <= 253 && host.split('.').all(dns_label) {
            Ok(BackendTarget::Host {
                host: host.to_owned(),
                port,
            })
        } else {
            Err(format!("{text:?} is not host:port"))
        }
    }

    /// A name that discovery follows (not a literal address).
    pub fn is_name(&self) -> bool {
        !matches!(self, BackendTarget::Address(_))
    }
}

/// One DNS label: letters, digits and `-` (`_` tolerated, as resolvers
/// do), 1–63 bytes. A trailing dot (an empty last label) is allowed.
fn dns_label(label: &str) -> bool {
    label.len() <= 63
        && label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// `[discovery]`: how names among the backends are followed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiscoveryConfig {
    /// A record's TTL is clamped to at least this…
    pub min_interval: Duration,
    /// …and at most this before the name is resolved again.
    pub max_interval: Duration,
    /// Name servers to ask (`IP:port`); empty: the system's resolv.conf.
    pub nameservers: Vec<SocketAddr>,
    /// Resolution failing for this long alerts (the last good set stays).
    pub stale_alert_after: Duration,
    /// At most this many addresses from one name (more alert, and are cut).
    pub max_backends_per_name: usize,
}

impl Default for DiscoveryConfig {
    fn default() -> Self {
        Self {
            min_interval: Duration::from_secs(1),
            max_interval: Duration::from_secs(30),
            nameservers: Vec::new(),
            stale_alert_after: Duration::from_secs(300),
            max_backends_per_name: 256,
        }
    }
}

pub(crate) fn discovery(section: Option<Section>, problems: &mut Problems) -> DiscoveryConfig {
    let mut d = DiscoveryConfig::default();
    let Some(mut s) = section else { return d };
    if let Some(v) = s.duration("min_interval", problems) {
        d.min_interval = v;
    }
    if let Some(v) = s.duration("max_interval", problems) {
        d.max_interval = v;
    }
    if d.min_interval.is_zero() || d.max_interval < d.min_interval {
        problems.push(
            s.key_path("max_interval"),
            "min_interval must be above 0 and max_interval at least min_interval",
        );
    }
    if let Some(list) = s.take::<Vec<String>>("nameservers", problems) {
        for (i, text) in list.iter().enumerate() {
            let addr = text
                .parse::<SocketAddr>()
                .or_else(|_| text.parse::<std::net::IpAddr>().map(|ip| SocketAddr::new(ip, 53)));
            match addr {
                Ok(a) => d.nameservers.push(a),
                Err(_) => problems.push(
                    format!("{}[{i}]", s.key_path("nameservers")),
                    format!("{text:?} is not an IP address (with an optional :port)"),
                ),
            }
        }
    }
    if let Some(v) = s.duration("stale_alert_after", problems) {
        d.stale_alert_after = v;
    }
    if let Some(v) = s.take::<usize>("max_backends_per_name", problems) {
        if v == 0 {
            problems.push(s.key_path("max_backends_per_name"), "must be at least 1");
        } else {
            d.max_backends_per_name = v;
        }
    }
    s.finish(problems);
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_addresses_names_or_srv_records() {
        assert!(matches!(
            BackendTarget::parse("10.0.0.5:8080"),
            Ok(BackendTarget::Address(_))
        ));
        assert!(matches!(
            BackendTarget::parse("[::1]:8080"),
            Ok(BackendTarget::Address(_))
        ));
        assert_eq!(
            BackendTarget::parse("green.default.svc.cluster.local:8080"),
            Ok(BackendTarget::Host {
                host: "green.default.svc.cluster.local".into(),
                port: 8080
            })
        );
        assert_eq!(
            BackendTarget::parse("_http._tcp.green.example"),
            Ok(BackendTarget::Srv {
                name: "_http._tcp.green.example".into()
            })
        );
        for bad in [
            "green",
            "green:0",
            "green:http",
            "_http.green.example",
            "gr een:80",
            ":80",
        ] {
            assert!(BackendTarget::parse(bad).is_err(), "{bad}");
        }
    }
}
