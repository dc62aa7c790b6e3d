//! Environment overrides and where each effective value came from.
//!
//! Any key can be set per environment as `SLUICE_` followed by its path in
//! upper case with `__` between the parts: `SLUICE_PROXY__LISTEN`,
//! `SLUICE_STORE__URL`, `SLUICE_ROLLBACK__MAX_ERROR_RATIO`,
//! `SLUICE_POOLS__GREEN__WEIGHT`. Values are read as TOML values (numbers,
//! booleans, `["a", "b"]`) and otherwise as strings, and are validated like
//! the file. The story's own names (`HEALTH_CHECK_INTERVAL`, …) are applied
//! after that ([`crate::Config::apply_env`]).

use std::collections::BTreeMap;

use toml::{Table, Value};

/// Where an effective value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Default,
    File,
    Env(String),
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Default => f.write_str("default"),
            Source::File => f.write_str("file"),
            Source::Env(name) => write!(f, "env {name}"),
        }
    }
}

/// Key paths set in the file or the environment (anything else is a default).
#[derive(Debug, Clone, Default)]
pub struct Sources(BTreeMap<String, Source>);

impl Sources {
    /// Where the value at `path` came from: its own entry, else the entry
    /// of a key below it (`sticky` from `sticky.cookie`), else default.
    pub fn of(&self, path: &str) -> Source {
        let base = path.split('[').next().unwrap_or(path);
        if let Some(s) = self.0.get(base) {
            return s.clone();
        }
        let below = format!("{base}.");
        self.0
            .iter()
            .find(|(k, _)| k.starts_with(&below))
            .map_or(Source::Default, |(_, s)| s.clone())
    }

    pub(crate) fn set(&mut self, path: &str, source: Source) {
        self.0.insert(path.to_owned(), source);
    }
}

/// Records every leaf key of the file as coming from it.
pub(crate) fn file_sources(table: &Table, prefix: &str, sources: &mut Sources) {
    for (key, value) in table {
        let path = if prefix.is_empty() {
            key.clone()
        } else {
            format!("{prefix}.{key}")
        };
        match value {
            Value::Table(t) => file_sources(t, &path, sources),
            _ => sources.set(&path, Source::File),
        }
    }
}

/// Applies `SLUICE_A__B=value` variables onto the parsed file.
pub(crate) fn apply_overrides(table: &mut Table, vars: &[(String, String)], sources: &mut Sources) {
    for (name, raw) in vars {
        let Some(rest) = name.strip_prefix("SLUICE_") else {
            continue;
        };
        if !rest.contains("__") {
            continue; // SLUICE_TOKEN, SLUICE_ADMIN, … belong to the CLI.
        }
        let parts: Vec<String> = rest.split("__").map(str::to_ascii_lowercase).collect();
        let value = format!("v = {raw}")
            .parse::<Table>()
            .ok()
            .and_then(|mut t| t.remove("v"))
            .unwrap_or_else(|| Value::String(raw.clone()));
        if insert_path(table, &parts, value) {
            sources.set(&parts.join("."), Source::Env(name.clone()));
        }
    }
}

/// Sets `parts` (a key path) in `table`, creating tables on the way; false
/// when a part of the path is a value, not a table.
fn insert_path(table: &mut Table, parts: &[String], value: Value) -> bool {
    match parts {
        [] => false,
        [leaf] => {
            table.insert(leaf.clone(), value);
            true
        }
        [head, rest @ ..] => match table.entry(head.clone()).or_insert_with(|| Value::Table(Table::new())) {
            Value::Table(t) => insert_path(t, rest, value),
            _ => false,
        },
    }
}
