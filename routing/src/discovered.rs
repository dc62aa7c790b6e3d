//! Backends found by name: what each name among a pool's `backends`
//! resolved to (kept by [`crate::RoutingHandle::set_resolved`] from the
//! control plane's discovery), and how a table build turns entries into
//! backends. Resolution never happens here, nor on the request path.

use std::collections::BTreeMap;
use std::sync::Arc;

use sluice_config::BackendTarget;

/// One address a name resolved to.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Resolved {
    /// `IP:port`, what connections go to.
    pub addr: String,
    /// The DNS name it was found under (TLS's server name by default).
    pub host: Arc<str>,
    /// Its share against the name's other addresses (an SRV record's
    /// weight, at least 1; 1 for A/AAAA).
    pub weight: u32,
}

/// Every name's last good answer, by the entry as written in the pool.
pub type ResolvedNames = BTreeMap<String, Vec<Resolved>>;

/// What one entry of a pool's `backends` stands for.
pub(crate) enum Expanded<'a> {
    /// A literal address: one backend.
    Literal(&'a str),
    /// A name: its addresses (none yet, or none now: no backend).
    Name(&'a [Resolved]),
}

pub(crate) fn expand<'a>(entry: &'a str, resolved: &'a ResolvedNames) -> Expanded<'a> {
    match BackendTarget::parse(entry) {
        Ok(target) if target.is_name() => Expanded::Name(resolved.get(entry).map_or(&[][..], Vec::as_slice)),
        _ => Expanded::Literal(entry),
    }
}

/// Whether `entry` is a name discovery follows.
pub fn is_name(entry: &str) -> bool {
    BackendTarget::parse(entry).is_ok_and(|t| t.is_name())
}
