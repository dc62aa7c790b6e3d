//! sluice's durable state on SQLite (embedded, the default) or PostgreSQL
//! (shared by replicas): the routing state, rollouts, deployment history and
//! the audit trail, under versioned reversible migrations ([`migrate`]).
//!
//! One logical schema, two dialects: the SQL files differ only where the
//! engines do (identity columns, integer widths); queries are written once
//! with `$N` placeholders, which both engines accept through sqlx's `Any`
//! driver. Timestamps are RFC 3339 UTC text with milliseconds, which sorts
//! correctly as text on both engines.

pub mod audit;
mod leader;
pub mod migrate;
pub mod rollouts;
pub mod routing;
mod windows;

use std::sync::Once;
use std::time::SystemTime;

use sqlx::AnyPool;
use sqlx::any::AnyPoolOptions;

pub use audit::{AuditEntry, AuditQuery, AuditRecord};
pub use leader::Leadership;
pub use migrate::{MigrationSet, Migrator, StatusLine, StepState};
pub use rollouts::{FenceRecord, RolloutRecord};
pub use routing::{DeploymentRecord, MatchRecord, PoolRecord, RoutingRecord};
pub use windows::WindowRecord;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    Sqlite,
    Postgres,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store URL {0:?} is neither sqlite: nor postgres://")]
    UnsupportedUrl(String),
    #[error("cannot open the store at {url}: {source}")]
    Connect {
        url: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("store query failed: {0}")]
    Query(#[from] sqlx::Error),
    #[error("migration {version} failed and was rolled back: {source}")]
    Step {
        version: i64,
        #[source]
        source: sqlx::Error,
    },
    #[error(
        "migration {0} was changed after it was applied (checksum differs); restore its SQL, never edit an applied migration"
    )]
    ChecksumMismatch(i64),
    #[error(
        "the database has migration {applied} applied, but this binary knows only up to {known}: it is newer than this sluice"
    )]
    SchemaTooNew { applied: i64, known: i64 },
    #[error(
        "the database schema is at version {current}, this sluice needs {latest}; run `sluice migrate up --store URL` or set store.auto_migrate = true"
    )]
    SchemaBehind { current: i64, latest: i64 },
    #[error("migrations: {0}")]
    MigrationSource(String),
    #[error("routing state changed underneath (stored generation {stored}, expected {expected}); retry")]
    Conflict { stored: i64, expected: i64 },
    #[error("stored data is invalid: {0}")]
    Corrupt(String),
}

/// A connection pool to the store.
#[derive(Debug, Clone)]
pub struct Store {
    db: AnyPool,
    engine: Engine,
    /// For connections outside the pool (PostgreSQL LISTEN).
    url: std::sync::Arc<str>,
}

impl Store {
    /// Opens the store; a SQLite file is created if missing (WAL mode).
    pub async fn connect(url: &str) -> Result<Store, StoreError> {
        static DRIVERS: Once = Once::new();
        DRIVERS.call_once(sqlx::any::install_default_drivers);
        let (engine, url) = if url.starts_with("sqlite:") {
            // Create the file if missing unless the URL says otherwise.
            let url = if url.contains("mode=") || url.contains(":memory:") {
                url.to_owned()
            } else if url.contains('?') {
                format!("{url}&mode=rwc")
            } else {
                format!("{url}?mode=rwc")
            };
            (Engine::Sqlite, url)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            (Engine::Postgres, url.to_owned())
        } else {
            return Err(StoreError::UnsupportedUrl(redact(url)));
        };
        let pool = AnyPoolOptions::new()
            // SQLite allows one writer: with several pooled connections, a
            // transaction that reads then writes fails with SQLITE_BUSY
            // when another connection wrote in between (busy_timeout does
            // not help there). One connection serialises the writes; the
            // store is never on the request path.
            .max_connections(match engine {
                Engine::Sqlite => 1,
                Engine::Postgres => 8,
            })
            // A store that is down refuses changes within seconds (503)
            // instead of holding the caller for sqlx's default 30 s.
            .acquire_timeout(std::time::Duration::from_secs(2))
            .connect(&url)
            .await
            .map_err(|source| StoreError::Connect {
                url: redact(&url),
                source,
            })?;
        if engine == Engine::Sqlite {
            // sqlx's SQLite default is already WAL; say so explicitly since
            // concurrent readers during writes depend on it.
            sqlx::query("PRAGMA journal_mode = WAL").execute(&pool).await?;
        }
        Ok(Store {
            db: pool,
            engine,
            url: url.as_str().into(),
        })
    }

    pub fn engine(&self) -> Engine {
        self.engine
    }

    /// The SQL connection pool (sqlx), for queries outside this crate.
    pub fn db(&self) -> &AnyPool {
        &self.db
    }

    /// Whether the store answers a trivial query.
    pub async fn ping(&self) -> bool {
        sqlx::query("SELECT 1").execute(&self.db).await.is_ok()
    }

    /// Checks that the schema is exactly at this binary's latest version.
    pub async fn check_schema(&self) -> Result<(), StoreError> {
        let set = MigrationSet::builtin(self.engine);
        let current = Migrator::new(self, &set).verified_version().await?;
        if current < set.latest() {
            return Err(StoreError::SchemaBehind {
                current,
                latest: set.latest(),
            });
        }
        Ok(())
    }

    /// Applies sluice's pending migrations; returns the versions applied.
    pub async fn migrate_up(&self) -> Result<Vec<i64>, StoreError> {
        let set = MigrationSet::builtin(self.engine);
        Migrator::new(self, &set).up(None).await
    }

    pub async fn close(&self) {
        self.db.close().await;
    }
}

/// Now as RFC 3339 UTC with milliseconds.
pub fn now() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}

/// A URL without its password, for messages and logs.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let userinfo = &url[scheme_end + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme_end + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(redact("postgres://u:secret@h:5/db"), "postgres://u:***@h:5/db");
        assert_eq!(redact("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(redact("sqlite://x.db"), "sqlite://x.db");
    }
}
