//! Versioned, reversible migrations with a tracking table.
//!
//! sqlx ships a migrator, but its tracking table cannot say when a step ran
//! in a form both engines share, it has no dry run, and its fields are
//! semver-exempt; this runner is small and owns those guarantees:
//! every step runs in its own transaction together with its tracking row,
//! an applied step whose SQL changed is an error (never re-run), and a
//! database that has steps this binary does not know is refused.

use std::path::Path;

use sha2::{Digest, Sha256};
use sqlx::{AssertSqlSafe, Row};
use tokio::time::Instant;

use crate::{Engine, Store, StoreError, now};

/// The tracking table of sluice's own schema.
pub const SLUICE_TABLE: &str = "sluice_schema_migrations";
/// The tracking table used for a directory of user migrations (`--dir`).
pub const USER_TABLE: &str = "schema_migrations";

/// One step: SQL to go up and SQL to come back down.
#[derive(Debug, Clone)]
pub struct Migration {
    pub version: i64,
    pub description: String,
    pub up: String,
    pub down: String,
}

impl Migration {
    /// SHA-256 of the up SQL, hex: what the tracking table remembers.
    pub fn checksum(&self) -> String {
        Sha256::digest(self.up.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }
}

/// An ordered set of migrations and the table that tracks them.
#[derive(Debug, Clone)]
pub struct MigrationSet {
    pub migrations: Vec<Migration>,
    pub table: String,
}

macro_rules! builtin {
    ($engine:literal, $($version:literal => $stem:literal),+ $(,)?) => {
        vec![$(Migration {
            version: $version,
            description: $stem.split_once('_').map_or($stem, |(_, d)| d).replace('_', " "),
            up: include_str!(concat!("../migrations/", $engine, "/", $stem, ".up.sql")).to_owned(),
            down: include_str!(concat!("../migrations/", $engine, "/", $stem, ".down.sql")).to_owned(),
        }),+]
    };
}

impl MigrationSet {
    /// sluice's own schema for `engine`, compiled into the binary.
    pub fn builtin(engine: Engine) -> Self {
        // A new migration is a new pair of files in both engine folders and
        // a new entry in both lists here.
        let migrations = match engine {
            Engine::Sqlite => {
                builtin!("sqlite", 1 => "0001_initial", 2 => "0002_audit_environment", 3 => "0003_contract_fences", 4 => "0004_replica_windows", 5 => "0005_pool_matches", 6 => "0006_weight_hundredths", 7 => "0007_replica_totals")
            }
            Engine::Postgres => {
                builtin!("postgres", 1 => "0001_initial", 2 => "0002_audit_environment", 3 => "0003_contract_fences", 4 => "0004_replica_windows", 5 => "0005_pool_matches", 6 => "0006_weight_hundredths", 7 => "0007_replica_totals")
            }
        };
        Self {
            migrations,
            table: SLUICE_TABLE.to_owned(),
        }
    }

    /// Migrations from a directory of `NNNN_description.up.sql` and
    /// `NNNN_description.down.sql` pairs.
    pub fn from_dir(dir: &Path) -> Result<Self, StoreError> {
        let bad = |m: String| StoreError::MigrationSource(format!("{}: {m}", dir.display()));
        let entries = std::fs::read_dir(dir).map_err(|e| bad(e.to_string()))?;
        let mut ups = Vec::new();
        for entry in entries {
            let path = entry.map_err(|e| bad(e.to_string()))?.path();
            let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            let Some(stem) = name.strip_suffix(".up.sql") else {
                continue;
            };
            let (version, description) = stem
                .split_once('_')
                .ok_or_else(|| bad(format!("{name}: expected NNNN_description.up.sql")))?;
            let version: i64 = version
                .parse()
                .map_err(|_| bad(format!("{name}: version {version:?} is not a number")))?;
            let down_path = path.with_file_name(format!("{stem}.down.sql"));
            let up = std::fs::read_to_string(&path).map_err(|e| bad(format!("{name}: {e}")))?;
            let down = std::fs::read_to_string(&down_path)
                .map_err(|_| bad(format!("{name} has no {stem}.down.sql: every up needs a down")))?;
            ups.push(Migration {
                version,
                description: description.replace('_', " "),
                up,
                down,
            });
        }
        ups.sort_by_key(|m| m.version);
        if let Some(w) = ups.windows(2).find(|w| w[0].version == w[1].version) {
            return Err(bad(format!("version {} appears twice", w[0].version)));
        }
        Ok(Self {
            migrations: ups,
            table: USER_TABLE.to_owned(),
        })
    }

    pub fn latest(&self) -> i64 {
        self.migrations.last().map_or(0, |m| m.version)
    }

    fn get(&self, version: i64) -> Option<&Migration> {
        self.migrations.iter().find(|m| m.version == version)
    }
}

/// A row of the tracking table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppliedMigration {
    pub version: i64,
    pub description: String,
    pub checksum: String,
    pub applied_at: String,
    pub duration_ms: i64,
}

/// One line of `sluice migrate status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusLine {
    pub version: i64,
    pub description: String,
    pub state: StepState,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StepState {
    Applied {
        at: String,
        duration_ms: i64,
    },
    Pending,
    /// Applied, but the SQL has changed since.
    Modified {
        at: String,
    },
    /// Applied by a newer binary; this one does not know it.
    Unknown {
        at: String,
    },
}

/// Runs a [`MigrationSet`] against a [`Store`].
#[derive(Debug)]
pub struct Migrator<'a> {
    store: &'a Store,
    set: &'a MigrationSet,
}

impl<'a> Migrator<'a> {
    pub fn new(store: &'a Store, set: &'a MigrationSet) -> Self {
        Self { store, set }
    }

    async fn table_exists(&self) -> Result<bool, StoreError> {
        let sql = match self.store.engine() {
            Engine::Sqlite => "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = $1",
            Engine::Postgres => "SELECT COUNT(*) FROM pg_tables WHERE schemaname = current_schema() AND tablename = $1",
        };
        let n: i64 = sqlx::query_scalar(sql)
            .bind(&self.set.table)
            .fetch_one(self.store.db())
            .await?;
        Ok(n > 0)
    }

    async fn ensure_table(&self) -> Result<(), StoreError> {
        let sql = format!(
            "CREATE TABLE IF NOT EXISTS {} (
                version BIGINT PRIMARY KEY,
                description TEXT NOT NULL,
                checksum TEXT NOT NULL,
                applied_at TEXT NOT NULL,
                duration_ms BIGINT NOT NULL
            )",
            self.set.table
        );
        sqlx::raw_sql(AssertSqlSafe(sql)).execute(self.store.db()).await?;
        Ok(())
    }

    /// The tracking table's rows, oldest first (none when it does not exist).
    pub async fn applied(&self) -> Result<Vec<AppliedMigration>, StoreError> {
        if !self.table_exists().await? {
            return Ok(Vec::new());
        }
        let sql = format!(
            "SELECT version, description, checksum, applied_at, duration_ms FROM {} ORDER BY version",
            self.set.table
        );
        let rows = sqlx::query(AssertSqlSafe(sql)).fetch_all(self.store.db()).await?;
        rows.iter()
            .map(|r| {
                Ok(AppliedMigration {
                    version: r.try_get("version")?,
                    description: r.try_get("description")?,
                    checksum: r.try_get("checksum")?,
                    applied_at: r.try_get("applied_at")?,
                    duration_ms: r.try_get("duration_ms")?,
                })
            })
            .collect()
    }

    /// Every known and every applied step with its state.
    pub async fn status(&self) -> Result<Vec<StatusLine>, StoreError> {
        let applied = self.applied().await?;
        let mut lines: Vec<StatusLine> = self
            .set
            .migrations
            .iter()
            .map(|m| {
                let state = match applied.iter().find(|a| a.version == m.version) {
                    None => StepState::Pending,
                    Some(a) if a.checksum != m.checksum() => StepState::Modified {
                        at: a.applied_at.clone(),
                    },
                    Some(a) => StepState::Applied {
                        at: a.applied_at.clone(),
                        duration_ms: a.duration_ms,
                    },
                };
                StatusLine {
                    version: m.version,
                    description: m.description.clone(),
                    state,
                }
            })
            .collect();
        for a in applied.iter().filter(|a| self.set.get(a.version).is_none()) {
            lines.push(StatusLine {
                version: a.version,
                description: a.description.clone(),
                state: StepState::Unknown {
                    at: a.applied_at.clone(),
                },
            });
        }
        lines.sort_by_key(|l| l.version);
        Ok(lines)
    }

    /// The applied version, after checking that every applied step is known
    /// and unchanged.
    pub async fn verified_version(&self) -> Result<i64, StoreError> {
        let mut current = 0;
        for line in self.status().await? {
            match line.state {
                StepState::Applied { .. } => current = line.version,
                StepState::Pending => {}
                StepState::Modified { .. } => return Err(StoreError::ChecksumMismatch(line.version)),
                StepState::Unknown { .. } => {
                    return Err(StoreError::SchemaTooNew {
                        applied: line.version,
                        known: self.set.latest(),
                    });
                }
            }
        }
        Ok(current)
    }

    /// The steps `up` would run, in order.
    pub async fn plan_up(&self, to: Option<i64>) -> Result<Vec<&'a Migration>, StoreError> {
        self.verified_version().await?;
        let applied = self.applied().await?;
        let target = to.unwrap_or(self.set.latest());
        Ok(self
            .set
            .migrations
            .iter()
            .filter(|m| m.version <= target && !applied.iter().any(|a| a.version == m.version))
            .collect())
    }

    /// The steps `down` would reverse, newest first.
    pub async fn plan_down(&self, to: i64) -> Result<Vec<&'a Migration>, StoreError> {
        self.verified_version().await?;
        let applied = self.applied().await?;
        let mut steps: Vec<&Migration> = applied
            .iter()
            .filter(|a| a.version > to)
            .filter_map(|a| self.set.get(a.version))
            .collect();
        steps.reverse();
        Ok(steps)
    }

    /// Applies pending steps up to `to` (default: all); returns the versions applied.
    pub async fn up(&self, to: Option<i64>) -> Result<Vec<i64>, StoreError> {
        self.ensure_table().await?;
        let mut done = Vec::new();
        for m in self.plan_up(to).await? {
            tracing::info!(version = m.version, description = %m.description, "applying migration");
            let started = Instant::now();
            let mut tx = self.store.db().begin().await?;
            run_step(&mut tx, m.version, &m.up).await?;
            let insert = format!(
                "INSERT INTO {} (version, description, checksum, applied_at, duration_ms) VALUES ($1, $2, $3, $4, $5)",
                self.set.table
            );
            sqlx::query(AssertSqlSafe(insert))
                .bind(m.version)
                .bind(&m.description)
                .bind(m.checksum())
                .bind(now())
                .bind(i64::try_from(started.elapsed().as_millis()).unwrap_or(i64::MAX))
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            tracing::info!(version = m.version, description = %m.description, "migration applied");
            done.push(m.version);
        }
        Ok(done)
    }

    /// Reverses applied steps above `to`, newest first; returns the versions reversed.
    pub async fn down(&self, to: i64) -> Result<Vec<i64>, StoreError> {
        let mut done = Vec::new();
        for m in self.plan_down(to).await? {
            let mut tx = self.store.db().begin().await?;
            run_step(&mut tx, m.version, &m.down).await?;
            let delete = format!("DELETE FROM {} WHERE version = $1", self.set.table);
            sqlx::query(AssertSqlSafe(delete))
                .bind(m.version)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            tracing::info!(version = m.version, description = %m.description, "migration reversed");
            done.push(m.version);
        }
        Ok(done)
    }
}

/// Runs one step's SQL inside the step's transaction.
async fn run_step(tx: &mut sqlx::Transaction<'_, sqlx::Any>, version: i64, sql: &str) -> Result<(), StoreError> {
    sqlx::raw_sql(AssertSqlSafe(sql.to_owned()))
        .execute(&mut **tx)
        .await
        .map(|_| ())
        .map_err(|source| StoreError::Step { version, source })
}
