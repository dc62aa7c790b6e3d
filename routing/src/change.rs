//! The routing changes there are, each with its one rule: the action it is
//! recorded as, and what it checks before a table is built from it. The
//! admin API, reloads, the guard, rollouts and tests all change routing
//! through these (`RoutingHandle::change_weights`, `change_pool`).

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use sluice_config::Weight;

use crate::error::TableError;
use crate::table::PoolSpec;

/// Who changed something, as the audit trail and the events name them.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Actor {
    /// An admin API token, by its name.
    Operator(Arc<str>),
    /// The config file: at start, on reload, with `--reset-state`.
    ConfigFile,
    /// The rollback guard.
    Guard,
    /// The rollout engine.
    Rollout,
    /// The health checker.
    Health,
    /// The admin token files, reloaded.
    TokenFile,
    /// The listener's certificate files, reloaded.
    CertificateFile,
    /// DNS discovery: a name among the backends resolved differently.
    Discovery,
}

impl Actor {
    pub fn operator(name: &str) -> Self {
        Self::Operator(name.into())
    }

    /// The name the audit trail, the events and `sluice ctl` show.
    pub fn as_str(&self) -> &str {
        match self {
            Self::Operator(name) => name,
            Self::ConfigFile => "config-file",
            Self::Guard => "sluice",
            Self::Rollout => "rollout",
            Self::Health => "health",
            Self::TokenFile => "token-file",
            Self::CertificateFile => "certificate-file",
            Self::Discovery => "discovery",
        }
    }

    /// The actor a stored name stands for (another replica's change):
    /// sluice's own names, else an operator's token.
    pub fn from_recorded(name: &str) -> Self {
        [
            Self::ConfigFile,
            Self::Guard,
            Self::Rollout,
            Self::Health,
            Self::TokenFile,
            Self::CertificateFile,
            Self::Discovery,
        ]
        .into_iter()
        .find(|a| a.as_str() == name)
        .unwrap_or_else(|| Self::operator(name))
    }
}

impl fmt::Display for Actor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a routing change is recorded as (audit rows, events).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RoutingAction {
    WeightsSet,
    PoolUpdate,
    BackendAdd,
    BackendRemove,
    BackendDrain,
    /// Back to earlier weights: the guard's, or an operator's.
    Rollback,
    RolloutStep,
    RolloutAbort,
    ConfigReload,
    /// The config's routing stored in a store that had none.
    RoutingInit,
    /// The config's routing over the stored one (`--reset-state`).
    RoutingReset,
    /// Another replica's stored change, served here (not stored again).
    RoutingSync,
    /// Health verdicts changed the routable sets (published, not stored).
    Health,
    /// A name among the backends resolved to other addresses (this
    /// replica's; published and audited, not stored).
    Discovery,
}

impl RoutingAction {
    /// The name the audit trail, the events and `sluice ctl` show.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::WeightsSet => "weights.set",
            Self::PoolUpdate => "pool.update",
            Self::BackendAdd => "backend.add",
            Self::BackendRemove => "backend.remove",
            Self::BackendDrain => "backend.drain",
            Self::Rollback => "rollback",
            Self::RolloutStep => "rollout.step",
            Self::RolloutAbort => "rollout.abort",
            Self::ConfigReload => "config.reload",
            Self::RoutingInit => "routing.init",
            Self::RoutingReset => "routing.reset",
            Self::RoutingSync => "routing.sync",
            Self::Health => "health",
            Self::Discovery => "discovery",
        }
    }
}

impl fmt::Display for RoutingAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A new weight for every pool, and who asked and why.
#[derive(Debug, Clone)]
pub struct WeightChange<'a> {
    pub weights: &'a HashMap<String, Weight>,
    pub actor: Actor,
    pub action: RoutingAction,
    /// Why, when the change was decided rather than asked for.
    pub reason: Option<&'a str>,
    /// Past a contract fence, and weight onto a pool without backends
    /// (its share would get 503s).
    pub force: bool,
}

impl<'a> WeightChange<'a> {
    /// An operator's `weights.set` by `actor`, checked in full.
    pub fn set(weights: &'a HashMap<String, Weight>, actor: Actor) -> Self {
        Self {
            weights,
            actor,
            action: RoutingAction::WeightsSet,
            reason: None,
            force: false,
        }
    }

    /// The same, past fences and onto pools without backends.
    pub fn forced(self) -> Self {
        Self { force: true, ..self }
    }

    /// The rule: every pool named, none unknown, no weight on a pool
    /// without backends unless forced (the sum is the table's own check).
    pub fn apply(&self, specs: &mut [PoolSpec]) -> Result<(), TableError> {
        if let Some(unknown) = self.weights.keys().find(|name| !specs.iter().any(|s| &s.name == *name)) {
            return Err(TableError::UnknownPool(unknown.clone()));
        }
        for spec in specs {
            spec.weight = *self
                .weights
                .get(&spec.name)
                .ok_or_else(|| TableError::MissingPool(spec.name.clone()))?;
            if !spec.weight.is_zero() && spec.backends.is_empty() && !self.force {
                return Err(TableError::NoBackends(spec.name.clone()));
            }
        }
        Ok(())
    }
}

/// A change to one pool's version label or backends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PoolChange {
    /// A new version and/or backend list. While the pool carries traffic,
    /// refused unless forced: its clients would meet the new version at once.
    Update {
        version: Option<String>,
        backends: Option<Vec<String>>,
        /// New match rules for testers (an empty list removes them); they
        /// move no one else, so they need no force.
        matches: Option<Vec<sluice_config::MatchRule>>,
        force: bool,
    },
    /// One more backend.
    AddBackend(String),
    /// One backend out; the last one of a pool with traffic only if forced.
    RemoveBackend { addr: String, force: bool },
    /// As [`PoolChange::RemoveBackend`], recorded as a drain (the caller
    /// then waits for the backend's requests).
    DrainBackend { addr: String, force: bool },
}

impl PoolChange {
    pub fn action(&self) -> RoutingAction {
        match self {
            Self::Update { .. } => RoutingAction::PoolUpdate,
            Self::AddBackend(_) => RoutingAction::BackendAdd,
            Self::RemoveBackend { .. } => RoutingAction::BackendRemove,
            Self::DrainBackend { .. } => RoutingAction::BackendDrain,
        }
    }

    /// Applies the change to pool `pool` among `specs`, under its rule;
    /// a refused change leaves them as they were.
    pub fn apply(&self, pool: &str, specs: &mut [PoolSpec]) -> Result<(), TableError> {
        let spec = specs
            .iter_mut()
            .find(|s| s.name == pool)
            .ok_or_else(|| TableError::UnknownPool(pool.to_owned()))?;
        match self {
            Self::Update {
                version,
                backends,
                matches,
                force,
            } => {
                let new_version = version.as_ref().is_some_and(|v| *v != spec.version);
                let new_backends = backends.as_ref().is_some_and(|b| *b != spec.backends);
                if !spec.weight.is_zero() && (new_version || new_backends) && !force {
                    return Err(TableError::PoolCarriesTraffic {
                        pool: pool.to_owned(),
                        weight: spec.weight,
                    });
                }
                if let Some(v) = version {
                    spec.version.clone_from(v);
                }
                if let Some(b) = backends {
                    spec.backends.clone_from(b);
                }
                if let Some(m) = matches {
                    spec.matches.clone_from(m);
                }
            }
            Self::AddBackend(addr) => {
                if spec.backends.contains(addr) {
                    return Err(TableError::BackendExists(pool.to_owned(), addr.clone()));
                }
                spec.backends.push(addr.clone());
            }
            Self::RemoveBackend { addr, force } | Self::DrainBackend { addr, force } => {
                if !spec.backends.contains(addr) {
                    return Err(TableError::UnknownBackend(pool.to_owned(), addr.clone()));
                }
                if spec.backends.len() == 1 && !spec.weight.is_zero() && !force {
                    return Err(TableError::LastBackend(pool.to_owned(), addr.clone()));
                }
                spec.backends.retain(|b| b != addr);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use sluice_config::UpstreamProtocol;

    fn specs() -> Vec<PoolSpec> {
        let spec = |name: &str, weight| PoolSpec {
            name: name.into(),
            version: "v1".into(),
            weight,
            protocol: UpstreamProtocol::Http1,
            backends: vec![format!("{name}:80")],
            tls: None,
            matches: Vec::new(),
        };
        vec![
            spec("blue", sluice_config::Weight::percent(100).unwrap()),
            spec("green", sluice_config::Weight::percent(0).unwrap()),
        ]
    }

    #[test]
    fn a_pool_with_traffic_keeps_its_version_and_last_backend_unless_forced() {
        let mut s = specs();
        let update = |force| PoolChange::Update {
            version: Some("v2".into()),
            backends: None,
            matches: None,
            force,
        };
        assert_eq!(
            update(false).apply("blue", &mut s),
            Err(TableError::PoolCarriesTraffic {
                pool: "blue".into(),
                weight: sluice_config::Weight::percent(100).unwrap()
            })
        );
        update(false).apply("green", &mut s).unwrap();
        assert_eq!(s[1].version, "v2");
        let remove = |force| PoolChange::RemoveBackend {
            addr: "blue:80".into(),
            force,
        };
        assert_eq!(
            remove(false).apply("blue", &mut s),
            Err(TableError::LastBackend("blue".into(), "blue:80".into()))
        );
        remove(true).apply("blue", &mut s).unwrap();
        assert!(s[0].backends.is_empty());
        assert_eq!(
            PoolChange::AddBackend("green:80".into()).apply("green", &mut s),
            Err(TableError::BackendExists("green".into(), "green:80".into()))
        );
        assert_eq!(
            PoolChange::AddBackend("x:1".into()).apply("red", &mut s),
            Err(TableError::UnknownPool("red".into()))
        );
    }

    #[test]
    fn weights_name_every_pool_and_stay_off_empty_pools_unless_forced() {
        let mut s = specs();
        s[1].backends.clear();
        let w: HashMap<String, sluice_config::Weight> = [
            ("blue".into(), sluice_config::Weight::percent(50).unwrap()),
            ("green".into(), sluice_config::Weight::percent(50).unwrap()),
        ]
        .into();
        assert_eq!(
            WeightChange::set(&w, Actor::operator("t")).apply(&mut s),
            Err(TableError::NoBackends("green".into()))
        );
        WeightChange::set(&w, Actor::operator("t"))
            .forced()
            .apply(&mut s)
            .unwrap();
        let partial: HashMap<String, sluice_config::Weight> = [("blue".into(), sluice_config::Weight::FULL)].into();
        assert_eq!(
            WeightChange::set(&partial, Actor::operator("t")).apply(&mut s),
            Err(TableError::MissingPool("green".into()))
        );
    }

    #[test]
    fn actors_read_back_as_recorded() {
        for actor in [
            Actor::ConfigFile,
            Actor::Guard,
            Actor::Rollout,
            Actor::Health,
            Actor::TokenFile,
            Actor::CertificateFile,
            Actor::operator("ci-bot"),
        ] {
            assert_eq!(Actor::from_recorded(actor.as_str()), actor);
        }
        // The guard's changes have always been recorded as "sluice".
        assert_eq!(Actor::Guard.as_str(), "sluice");
    }
}
