//! Bearer tokens: names and roles from config, secrets read from files or
//! the environment (never from config), compared in constant time, and
//! re-read when a token file changes so rotation needs no restart.

use std::path::PathBuf;
use std::sync::Arc;

use arc_swap::ArcSwap;
use sluice_config::{Role, SecretRef, TokenConfig};
use subtle::ConstantTimeEq;

/// A token as loaded: its name, role and secret bytes.
#[derive(Clone)]
struct LoadedToken {
    name: Arc<str>,
    role: Role,
    secret: Vec<u8>,
}

// The secret must never reach a log line through `{:?}`.
impl std::fmt::Debug for LoadedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedToken")
            .field("name", &self.name)
            .field("role", &self.role)
            .finish_non_exhaustive()
    }
}

/// Who a request is, once authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub name: Arc<str>,
    pub role: Role,
}

impl Caller {
    /// The caller as routing changes record it.
    pub fn actor(&self) -> sluice_routing::Actor {
        sluice_routing::Actor::Operator(std::sync::Arc::clone(&self.name))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("token {name:?}: cannot read its secret file {path}: {reason}")]
    File {
        name: String,
        path: PathBuf,
        reason: String,
    },
    #[error("token {name:?}: environment variable {var} is not set or empty")]
    Env { name: String, var: String },
    #[error("token {name:?}: its secret is empty")]
    Empty { name: String },
    #[error(
        "token {name:?}: its secret holds a control character or a space inside it; \
         a bearer token is visible ASCII (RFC 6750)"
    )]
    Invalid { name: String },
}

/// The configured tokens; swapped whole when a secret file changes.
#[derive(Debug)]
pub struct TokenSet {
    config: Vec<TokenConfig>,
    loaded: ArcSwap<Vec<LoadedToken>>,
    /// Some token is configured: the API is closed to anonymous callers.
    required: bool,
}

impl TokenSet {
    /// Loads every token's secret; any unreadable secret is an error.
    pub fn load(config: &[TokenConfig]) -> Result<Self, TokenError> {
        let loaded = read_all(config)?;
        Ok(Self {
            config: config.to_vec(),
            loaded: ArcSwap::from_pointee(loaded),
            required: !config.is_empty(),
        })
    }

    /// Whether any token is configured.
    pub fn required(&self) -> bool {
        self.required
    }

    /// Secret files to watch for rotation.
    pub fn files(&self) -> Vec<PathBuf> {
        self.config
            .iter()
            .filter_map(|t| match &t.secret {
                SecretRef::File(p) => Some(p.clone()),
                SecretRef::Env(_) => None,
            })
            .collect()
    }

    /// Re-reads every secret; on error the previous secrets stay in force.
    /// Returns the names of tokens whose secret changed.
    pub fn reload(&self) -> Result<Vec<String>, TokenError> {
        let fresh = read_all(&self.config)?;
        let old = self.loaded.load();
        let changed = fresh
            .iter()
            .filter(|t| {
                old.iter()
                    .find(|o| o.name == t.name)
                    .is_none_or(|o| !bool::from(o.secret.ct_eq(&t.secret)))
            })
            .map(|t| t.name.to_string())
            .collect();
        self.loaded.store(Arc::new(fresh));
        Ok(changed)
    }

    /// The caller a presented bearer token belongs to. Every token is
    /// compared, in constant time, so timing says nothing about which
    /// prefix or which token came close.
    pub fn authenticate(&self, presented: &[u8]) -> Option<Caller> {
        let loaded = self.loaded.load();
        let mut found: Option<&LoadedToken> = None;
        for t in loaded.iter() {
            if bool::from(t.secret.ct_eq(presented)) {
                found = Some(t);
            }
        }
        found.map(|t| Caller {
            name: Arc::clone(&t.name),
            role: t.role,
        })
    }
}

fn read_all(config: &[TokenConfig]) -> Result<Vec<LoadedToken>, TokenError> {
    config
        .iter()
        .map(|t| {
            let secret = read_secret(&t.name, &t.secret)?;
            Ok(LoadedToken {
                name: t.name.as_str().into(),
                role: t.role,
                secret,
            })
        })
        .collect()
}

/// Reads a secret reference; surrounding whitespace (a trailing newline in a
/// mounted file) is not part of the secret.
pub fn read_secret(name: &str, secret: &SecretRef) -> Result<Vec<u8>, TokenError> {
    let value = match secret {
        SecretRef::File(path) => std::fs::read_to_string(path).map_err(|e| TokenError::File {
            name: name.to_owned(),
            path: path.clone(),
            reason: e.kind().to_string(),
        })?,
        SecretRef::Env(var) => std::env::var(var).map_err(|_| TokenError::Env {
            name: name.to_owned(),
            var: var.clone(),
        })?,
    };
    let trimmed = value.trim();
    if trimmed.is_empty() {
        return Err(TokenError::Empty { name: name.to_owned() });
    }
    // No client can present such a secret in an Authorization header.
    if !trimmed.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(TokenError::Invalid { name: name.to_owned() });
    }
    Ok(trimmed.as_bytes().to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(name: &str, role: Role, path: &std::path::Path) -> TokenConfig {
        TokenConfig {
            name: name.into(),
            role,
            secret: SecretRef::File(path.to_owned()),
        }
    }

    #[test]
    fn tokens_authenticate_by_secret_and_rotate_on_reload() {
        let dir = tempfile::tempdir().unwrap();
        let ci = dir.path().join("ci");
        let view = dir.path().join("view");
        std::fs::write(&ci, "s3cret-ci\n").unwrap();
        std::fs::write(&view, "s3cret-view").unwrap();
        let set = TokenSet::load(&[token("ci", Role::Operator, &ci), token("grafana", Role::Viewer, &view)]).unwrap();
        assert_eq!(set.authenticate(b"s3cret-ci").unwrap().role, Role::Operator);
        assert_eq!(&*set.authenticate(b"s3cret-view").unwrap().name, "grafana");
        assert!(set.authenticate(b"s3cret").is_none());
        assert!(set.authenticate(b"").is_none());

        std::fs::write(&ci, "rotated").unwrap();
        assert_eq!(set.reload().unwrap(), vec!["ci".to_owned()]);
        assert!(set.authenticate(b"s3cret-ci").is_none());
        assert!(set.authenticate(b"rotated").is_some());

        // A broken file keeps the secrets in force.
        std::fs::remove_file(&ci).unwrap();
        assert!(set.reload().is_err());
        assert!(set.authenticate(b"rotated").is_some());
    }

    #[test]
    fn debug_output_never_shows_a_secret() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("t");
        std::fs::write(&f, "hunter2").unwrap();
        let set = TokenSet::load(&[token("ci", Role::Operator, &f)]).unwrap();
        assert!(!format!("{set:?}").contains("hunter2"));
    }

    #[test]
    fn a_secret_with_an_inner_control_character_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("t");
        std::fs::write(&f, "hun\u{7}ter2\n").unwrap();
        let err = TokenSet::load(&[token("ci", Role::Operator, &f)]).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("\"ci\"") && text.contains("control character"), "{text}");
        assert!(!text.contains("hun"), "{text}");
    }
}
