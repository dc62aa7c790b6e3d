//! sluice's configuration: one TOML file becomes a validated [`Config`].
//!
//! Pure data and validation, no I/O beyond reading the file: the proxy and
//! the control plane receive values that have already passed every check.
//! Every problem names its key path, all problems are reported together, and
//! unknown keys are rejected so a typo never silently falls back to a default.

mod discovery;
mod effective;
mod env;
mod error;
mod model;
mod observe;
mod parse;
mod policy;
mod pools;
mod reader;
mod sections;

use std::path::Path;

pub use discovery::{BackendTarget, DiscoveryConfig};
pub use env::{Source, Sources};
pub use error::{ConfigError, FieldError};
pub use model::*;
pub use sluice_api::{Weight, WeightError, weight_total, weight_total_text};

impl Config {
    /// Parses and validates TOML text.
    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        parse::parse(text)
    }

    /// Reads, parses and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::from_toml(&text)
    }

    /// Reads a config file with the environment applied: `SLUICE_…__…`
    /// overrides onto the file, then the story's variables. Returns where
    /// each value set came from.
    pub fn load_with_env(path: &Path, vars: &[(String, String)]) -> Result<(Config, Sources), ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let mut table = parse::parse_text(&text)?;
        let mut sources = Sources::default();
        env::file_sources(&table, "", &mut sources);
        env::apply_overrides(&mut table, vars, &mut sources);
        let mut config = parse::parse_table(table).map_err(|e| match e {
            // Name the variable when the bad value came from one.
            ConfigError::Invalid(mut list) => {
                for problem in &mut list {
                    if let Source::Env(var) = sources.of(&problem.path) {
                        problem.reason.push_str(&format!(" (set by {var})"));
                    }
                }
                ConfigError::Invalid(list)
            }
            other => other,
        })?;
        let get = |name: &str| vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
        config.apply_env(get)?;
        for (var, key) in [
            ("HEALTH_CHECK_INTERVAL", "interval"),
            ("HEALTH_CHECK_TIMEOUT", "timeout"),
        ] {
            if get(var).is_some() {
                sources.set(&format!("health.{key}"), Source::Env(var.to_owned()));
                for pool in &config.pools {
                    sources.set(
                        &format!("pools.{}.health.{key}", pool.name),
                        Source::Env(var.to_owned()),
                    );
                }
            }
        }
        if get("AUTOMATIC_ROLLBACK_ON_ERROR").is_some() {
            sources.set("rollback.enabled", Source::Env("AUTOMATIC_ROLLBACK_ON_ERROR".into()));
        }
        if get("BLUE_GREEN_MODE").is_some() {
            for pool in &config.pools {
                sources.set(
                    &format!("pools.{}.weight", pool.name),
                    Source::Env("BLUE_GREEN_MODE".into()),
                );
            }
        }
        Ok((config, sources))
    }

    /// The process environment, for [`Config::load_with_env`].
    pub fn process_env() -> Vec<(String, String)> {
        std::env::vars().collect()
    }

    /// Applies the story's environment overrides (`HEALTH_CHECK_INTERVAL`,
    /// `HEALTH_CHECK_TIMEOUT`, `AUTOMATIC_ROLLBACK_ON_ERROR`, and
    /// `BLUE_GREEN_MODE=<pool>`: the active pool gets 100%) read through
    /// `env`; a bad value is an error naming the variable.
    pub fn apply_env(&mut self, env: impl Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        let mut problems = Vec::new();
        let duration = |name: &str, problems: &mut Vec<FieldError>| {
            let text = env(name)?;
            match humantime::parse_duration(text.trim()) {
                Ok(d) if !d.is_zero() => Some(d),
                _ => {
                    problems.push(FieldError {
                        path: name.to_owned(),
                        reason: format!("{text:?} is not a duration like \"10s\""),
                    });
                    None
                }
            }
        };
        if let Some(d) = duration("HEALTH_CHECK_INTERVAL", &mut problems) {
            self.health.interval = d;
            self.pools.iter_mut().for_each(|p| p.health.interval = d);
        }
        if let Some(d) = duration("HEALTH_CHECK_TIMEOUT", &mut problems) {
            self.health.timeout = d;
            self.pools.iter_mut().for_each(|p| p.health.timeout = d);
        }
        if let Some(v) = env("AUTOMATIC_ROLLBACK_ON_ERROR") {
            match v.trim().to_ascii_lowercase().as_str() {
                "true" | "1" | "yes" | "on" => self.rollback.enabled = true,
                "false" | "0" | "no" | "off" => self.rollback.enabled = false,
                _ => problems.push(FieldError {
                    path: "AUTOMATIC_ROLLBACK_ON_ERROR".into(),
                    reason: format!("{v:?} is not true or false"),
                }),
            }
        }
        if let Some(v) = env("BLUE_GREEN_MODE") {
            // Which pool is the active colour: it gets all the traffic.
            let active = v.trim();
            if self.pool(active).is_some() {
                self.pools
                    .iter_mut()
                    .for_each(|p| p.weight = if p.name == active { Weight::FULL } else { Weight::ZERO });
            } else {
                let names: Vec<&str> = self.pools.iter().map(|p| p.name.as_str()).collect();
                problems.push(FieldError {
                    path: "BLUE_GREEN_MODE".into(),
                    reason: format!("{v:?} is not a pool; name the active one of {}", names.join(", ")),
                });
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid(problems))
        }
    }

    pub fn pool(&self, name: &str) -> Option<&PoolConfig> {
        self.pools.iter().find(|p| p.name == name)
    }
}

#[cfg(test)]
mod tests;
