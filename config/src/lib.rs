//! sluice's configuration: one TOML file becomes a validated [`Config`].
//!
//! Pure data and validation, no I/O beyond reading the file: the proxy and
//! the control plane receive values that have already passed every check.
//! Every problem names its key path, all problems are reported together, and
//! unknown keys are rejected so a typo never silently falls back to a default.

mod error;
mod model;
mod parse;
mod reader;

use std::path::Path;

pub use error::{ConfigError, FieldError};
pub use model::*;

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

    pub fn pool(&self, name: &str) -> Option<&PoolConfig> {
        self.pools.iter().find(|p| p.name == name)
    }
}

#[cfg(test)]
mod tests;
