//! Configuration errors: a file that cannot be read or parsed, or a list of
//! problems each naming the key path it concerns.

use std::fmt;
use std::path::PathBuf;

/// One problem with one key, e.g. `pools.green.weight: must be between 0 and 100`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// Dotted key path, e.g. `proxy.timeouts.connect` or `admin.tokens[0].role`.
    pub path: String,
    /// What is wrong and, where it helps, what would be right.
    pub reason: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.reason)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("config is not valid TOML: {0}")]
    Syntax(String),
    #[error("{} problem(s) in config:\n{}", .0.len(), list(.0))]
    Invalid(Vec<FieldError>),
}

impl ConfigError {
    /// The individual problems (a syntax or read error counts as one).
    pub fn problems(&self) -> Vec<String> {
        match self {
            ConfigError::Invalid(list) => list.iter().map(ToString::to_string).collect(),
            other => vec![other.to_string()],
        }
    }
}

fn list(problems: &[FieldError]) -> String {
    problems
        .iter()
        .map(|p| format!("  - {p}"))
        .collect::<Vec<_>>()
        .join("\n")
}
