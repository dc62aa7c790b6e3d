//! A small reader over a parsed TOML table that collects every problem with
//! its key path instead of stopping at the first one.
//!
//! serde's derive stops at the first error and `deny_unknown_fields` reports
//! only one unknown key; an operator fixing a file wants them all at once.
//! So each key is taken out of its table and converted on its own (serde
//! still does the conversion), and whatever is left over is reported as
//! unknown.

use std::time::Duration;

use serde::de::DeserializeOwned;
use toml::{Table, Value};

use crate::error::FieldError;

/// Every problem found so far, in file order within each table.
#[derive(Debug, Default)]
pub(crate) struct Problems(pub(crate) Vec<FieldError>);

impl Problems {
    pub(crate) fn push(&mut self, path: impl Into<String>, reason: impl Into<String>) {
        self.0.push(FieldError {
            path: path.into(),
            reason: reason.into(),
        });
    }
}

/// One TOML table being read, with the dotted path that leads to it.
#[derive(Debug)]
pub(crate) struct Section {
    path: String,
    table: Table,
}

impl Section {
    pub(crate) fn root(table: Table) -> Self {
        Self {
            path: String::new(),
            table,
        }
    }

    pub(crate) fn key_path(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_owned()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    /// Takes `key` and converts it to `T`; a missing key is `None`, a value of
    /// the wrong shape is recorded and also `None`.
    pub(crate) fn take<T: DeserializeOwned>(&mut self, key: &str, problems: &mut Problems) -> Option<T> {
        let value = self.table.remove(key)?;
        match value.try_into::<T>() {
            Ok(v) => Some(v),
            Err(e) => {
                problems.push(self.key_path(key), clean_serde_message(&e.to_string()));
                None
            }
        }
    }

    /// Takes a duration written as a string such as `"10s"`, `"1500ms"`, `"5m"`.
    pub(crate) fn duration(&mut self, key: &str, problems: &mut Problems) -> Option<Duration> {
        let text: String = self.take(key, problems)?;
        match humantime::parse_duration(&text) {
            Ok(d) => Some(d),
            Err(e) => {
                problems.push(
                    self.key_path(key),
                    format!("{text:?} is not a duration ({e}); write it like \"10s\", \"500ms\" or \"5m\""),
                );
                None
            }
        }
    }

    /// Whether `key` is present (and not yet taken).
    pub(crate) fn has(&self, key: &str) -> bool {
        self.table.contains_key(key)
    }

    /// Takes a sub-table; a value that is not a table is recorded.
    pub(crate) fn section(&mut self, key: &str, problems: &mut Problems) -> Option<Section> {
        let path = self.key_path(key);
        match self.table.remove(key)? {
            Value::Table(table) => Some(Section { path, table }),
            other => {
                problems.push(path, format!("expected a table, found {}", other.type_str()));
                None
            }
        }
    }

    /// Takes an array of tables (`[[key]]`).
    pub(crate) fn sections(&mut self, key: &str, problems: &mut Problems) -> Vec<Section> {
        let path = self.key_path(key);
        match self.table.remove(key) {
            None => Vec::new(),
            Some(Value::Array(items)) => items
                .into_iter()
                .enumerate()
                .filter_map(|(i, item)| match item {
                    Value::Table(table) => Some(Section {
                        path: format!("{path}[{i}]"),
                        table,
                    }),
                    other => {
                        problems.push(
                            format!("{path}[{i}]"),
                            format!("expected a table, found {}", other.type_str()),
                        );
                        None
                    }
                })
                .collect(),
            Some(other) => {
                problems.push(path, format!("expected an array of tables, found {}", other.type_str()));
                Vec::new()
            }
        }
    }

    /// Takes every remaining entry as a named sub-table (`[pools.NAME]`).
    pub(crate) fn named_sections(self, problems: &mut Problems) -> Vec<(String, Section)> {
        let mut out = Vec::with_capacity(self.table.len());
        for (name, value) in self.table {
            let path = if self.path.is_empty() {
                name.clone()
            } else {
                format!("{}.{name}", self.path)
            };
            match value {
                Value::Table(table) => out.push((name, Section { path, table })),
                other => problems.push(path, format!("expected a table, found {}", other.type_str())),
            }
        }
        out
    }

    /// Reports every key nobody took as unknown.
    pub(crate) fn finish(self, problems: &mut Problems) {
        for key in self.table.keys() {
            problems.push(self.key_path(key), "unknown key");
        }
    }
}

/// serde's messages for a lone value carry no position worth keeping; keep
/// the first line only, which says what was expected.
fn clean_serde_message(message: &str) -> String {
    message.lines().next().unwrap_or(message).trim().to_owned()
}
