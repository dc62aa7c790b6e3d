//! The routing state (pools, versions, backends, weights, generation) and
//! deployment history, written in one transaction with the audit row of the
//! change that produced them.

use sqlx::Row;

use crate::{AuditEntry, Store, StoreError, now};

/// The PostgreSQL NOTIFY channel for routing changes.
const ROUTING_CHANNEL: &str = "sluice_routing";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolRecord {
    pub name: String,
    pub version: String,
    /// Hundredths of a percent (10,000 is all traffic).
    pub weight_hundredths: i64,
    /// `http1` or `http2`.
    pub protocol: String,
    pub backends: Vec<String>,
    /// Testers' rules, in order.
    pub matches: Vec<MatchRecord>,
}

/// One match rule: a request whose `kind` (`header` or `cookie`) named
/// `name` equals `value` goes to the pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MatchRecord {
    pub kind: String,
    pub name: String,
    pub value: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoutingRecord {
    pub generation: i64,
    /// In routing order.
    pub pools: Vec<PoolRecord>,
    pub updated_by: String,
    pub updated_at: String,
}

/// A version moving into a pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeploymentRecord {
    pub pool: String,
    pub from_version: Option<String>,
    pub to_version: String,
    pub result: String,
    pub started_at: String,
    pub finished_at: Option<String>,
}

impl Store {
    /// The last stored routing state, if any was ever stored.
    pub async fn load_routing(&self) -> Result<Option<RoutingRecord>, StoreError> {
        let Some(head) = sqlx::query("SELECT generation, updated_by, updated_at FROM routing_generation WHERE id = 1")
            .fetch_optional(self.db())
            .await?
        else {
            return Ok(None);
        };
        let pools = sqlx::query("SELECT name, version, weight_hundredths, protocol FROM pools ORDER BY position")
            .fetch_all(self.db())
            .await?;
        let backends = sqlx::query("SELECT pool, addr FROM pool_backends ORDER BY pool, position")
            .fetch_all(self.db())
            .await?;
        let matches = sqlx::query("SELECT pool, kind, name, value FROM pool_matches ORDER BY pool, position")
            .fetch_all(self.db())
            .await?;
        let mut records = Vec::with_capacity(pools.len());
        for p in &pools {
            let name: String = p.try_get("name")?;
            let pool_backends = backends
                .iter()
                .filter(|b| b.try_get::<String, _>("pool").is_ok_and(|n| n == name))
                .map(|b| b.try_get::<String, _>("addr"))
                .collect::<Result<Vec<_>, _>>()?;
            let pool_matches = matches
                .iter()
                .filter(|m| m.try_get::<String, _>("pool").is_ok_and(|n| n == name))
                .map(|m| {
                    Ok(MatchRecord {
                        kind: m.try_get("kind")?,
                        name: m.try_get("name")?,
                        value: m.try_get("value")?,
                    })
                })
                .collect::<Result<Vec<_>, sqlx::Error>>()?;
            records.push(PoolRecord {
                version: p.try_get("version")?,
                weight_hundredths: p.try_get("weight_hundredths")?,
                protocol: p.try_get("protocol")?,
                backends: pool_backends,
                matches: pool_matches,
                name,
            });
        }
        Ok(Some(RoutingRecord {
            generation: head.try_get("generation")?,
            pools: records,
            updated_by: head.try_get("updated_by")?,
            updated_at: head.try_get("updated_at")?,
        }))
    }

    /// Replaces the stored routing state with `record`, appends `audit` and
    /// any `deployments`, all in one transaction. `expected_generation` is
    /// the generation the change was computed from (`None`: nothing stored
    /// yet is expected); a different stored generation is a conflict and
    /// nothing is written.
    pub async fn save_routing(
        &self,
        expected_generation: Option<i64>,
        record: &RoutingRecord,
        audit: &AuditEntry,
        deployments: &[DeploymentRecord],
    ) -> Result<(), StoreError> {
        let mut tx = self.db().begin().await?;
        let stored: Option<i64> = sqlx::query_scalar("SELECT generation FROM routing_generation WHERE id = 1")
            .fetch_optional(&mut *tx)
            .await?;
        if let (Some(stored), Some(expected)) = (stored, expected_generation)
            && stored != expected
        {
            return Err(StoreError::Conflict { stored, expected });
        }
        match (stored, expected_generation) {
            // Compare-and-set: on PostgreSQL a concurrent writer (another
            // replica) holds the row until it commits, after which this
            // condition no longer matches: the later change loses, loudly.
            (Some(stored), Some(expected)) => {
                let updated = sqlx::query(
                    "UPDATE routing_generation SET generation = $1, updated_by = $2, updated_at = $3
                     WHERE id = 1 AND generation = $4",
                )
                .bind(record.generation)
                .bind(&record.updated_by)
                .bind(&record.updated_at)
                .bind(expected)
                .execute(&mut *tx)
                .await?;
                if updated.rows_affected() != 1 {
                    return Err(StoreError::Conflict { stored, expected });
                }
            }
            _ => {
                sqlx::query(
                    "INSERT INTO routing_generation (id, generation, updated_by, updated_at) VALUES (1, $1, $2, $3)
                     ON CONFLICT (id) DO UPDATE SET generation = excluded.generation,
                         updated_by = excluded.updated_by, updated_at = excluded.updated_at",
                )
                .bind(record.generation)
                .bind(&record.updated_by)
                .bind(&record.updated_at)
                .execute(&mut *tx)
                .await?;
            }
        }
        sqlx::query("DELETE FROM pool_backends").execute(&mut *tx).await?;
        sqlx::query("DELETE FROM pool_matches").execute(&mut *tx).await?;
        sqlx::query("DELETE FROM pools").execute(&mut *tx).await?;
        for (position, pool) in record.pools.iter().enumerate() {
            sqlx::query(
                "INSERT INTO pools (name, version, weight, weight_hundredths, protocol, position, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(&pool.name)
            .bind(&pool.version)
            .bind(pool.weight_hundredths / 100)
            .bind(pool.weight_hundredths)
            .bind(&pool.protocol)
            .bind(position as i64)
            .bind(&record.updated_at)
            .execute(&mut *tx)
            .await?;
            for (i, addr) in pool.backends.iter().enumerate() {
                sqlx::query("INSERT INTO pool_backends (pool, addr, position) VALUES ($1, $2, $3)")
                    .bind(&pool.name)
                    .bind(addr)
                    .bind(i as i64)
                    .execute(&mut *tx)
                    .await?;
            }
            for (i, m) in pool.matches.iter().enumerate() {
                sqlx::query("INSERT INTO pool_matches (pool, position, kind, name, value) VALUES ($1, $2, $3, $4, $5)")
                    .bind(&pool.name)
                    .bind(i as i64)
                    .bind(&m.kind)
                    .bind(&m.name)
                    .bind(&m.value)
                    .execute(&mut *tx)
                    .await?;
            }
        }
        crate::audit::insert(&mut tx, audit).await?;
        for d in deployments {
            sqlx::query(
                "INSERT INTO deployments (pool, from_version, to_version, started_at, finished_at, result)
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(&d.pool)
            .bind(&d.from_version)
            .bind(&d.to_version)
            .bind(&d.started_at)
            .bind(&d.finished_at)
            .bind(&d.result)
            .execute(&mut *tx)
            .await?;
        }
        if self.engine() == crate::Engine::Postgres {
            // Delivered to every replica's LISTEN when (and only if) this commits.
            sqlx::query("SELECT pg_notify($1, $2)")
                .bind(ROUTING_CHANNEL)
                .bind(record.generation.to_string())
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// On PostgreSQL, the generation of every routing change any replica
    /// stores, as it commits (LISTEN on a dedicated connection, reconnected
    /// after failures); `None` on SQLite, where one process owns the file.
    /// Notifications can be missed during a reconnect: callers also re-read
    /// now and then.
    pub fn follow_routing(&self) -> Option<tokio::sync::mpsc::Receiver<i64>> {
        if self.engine() != crate::Engine::Postgres {
            return None;
        }
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        let url = self.url.clone();
        tokio::spawn(async move {
            loop {
                match sqlx::postgres::PgListener::connect(&url).await {
                    Ok(mut listener) => {
                        if let Err(e) = listener.listen(ROUTING_CHANNEL).await {
                            tracing::warn!(error = %e, "cannot LISTEN for routing changes");
                        } else {
                            loop {
                                match listener.recv().await {
                                    Ok(n) => {
                                        let generation = n.payload().parse().unwrap_or(0);
                                        if tx.send(generation).await.is_err() {
                                            return;
                                        }
                                    }
                                    Err(e) => {
                                        tracing::warn!(error = %e, "routing change listener lost its connection");
                                        break;
                                    }
                                }
                            }
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "cannot connect the routing change listener"),
                }
                if tx.is_closed() {
                    return;
                }
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            }
        });
        Some(rx)
    }

    /// Deployment history, newest first.
    pub async fn deployments(&self, limit: i64) -> Result<Vec<DeploymentRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT pool, from_version, to_version, result, started_at, finished_at
             FROM deployments ORDER BY id DESC LIMIT $1",
        )
        .bind(limit)
        .fetch_all(self.db())
        .await?;
        rows.iter()
            .map(|r| {
                Ok(DeploymentRecord {
                    pool: r.try_get("pool")?,
                    from_version: r.try_get("from_version")?,
                    to_version: r.try_get("to_version")?,
                    result: r.try_get("result")?,
                    started_at: r.try_get("started_at")?,
                    finished_at: r.try_get("finished_at")?,
                })
            })
            .collect()
    }
}

impl DeploymentRecord {
    /// A version switch that took effect at once.
    pub fn immediate(pool: &str, from: Option<&str>, to: &str) -> Self {
        let at = now();
        Self {
            pool: pool.to_owned(),
            from_version: from.map(str::to_owned),
            to_version: to.to_owned(),
            result: "applied".to_owned(),
            started_at: at.clone(),
            finished_at: Some(at),
        }
    }
}
