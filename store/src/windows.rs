//! Live windows shared between replicas: each replica writes its per-pool
//! window every second; the leader adds the others' to its own, so its
//! decisions see all the traffic.

use sqlx::Row;

use crate::{Store, StoreError};

/// One replica's window of one pool, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WindowRecord {
    pub replica: String,
    pub pool: String,
    pub requests: i64,
    pub errors: i64,
    pub upstream_failures: i64,
    /// The latency histogram's slot counts.
    pub latency: Vec<u64>,
    /// The replica's running totals since it started, encoded (empty from
    /// a replica that does not share them).
    pub totals: String,
}

impl Store {
    /// Replaces this replica's window of `w.pool`, stamped `now_ms`.
    pub async fn publish_window(&self, w: &WindowRecord, now_ms: i64) -> Result<(), StoreError> {
        let latency: Vec<String> = w.latency.iter().map(u64::to_string).collect();
        sqlx::query(
            "INSERT INTO replica_windows (replica, pool, updated_ms, requests, errors, upstream_failures, latency, totals)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
             ON CONFLICT (replica, pool) DO UPDATE SET updated_ms = excluded.updated_ms,
                 requests = excluded.requests, errors = excluded.errors,
                 upstream_failures = excluded.upstream_failures, latency = excluded.latency,
                 totals = excluded.totals",
        )
        .bind(&w.replica)
        .bind(&w.pool)
        .bind(now_ms)
        .bind(w.requests)
        .bind(w.errors)
        .bind(w.upstream_failures)
        .bind(latency.join(","))
        .bind(&w.totals)
        .execute(self.db())
        .await?;
        Ok(())
    }

    /// The other replicas' windows written since `since_ms` (older ones are
    /// from replicas that stopped).
    pub async fn peer_windows(&self, replica: &str, since_ms: i64) -> Result<Vec<WindowRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT replica, pool, requests, errors, upstream_failures, latency, totals FROM replica_windows
             WHERE replica <> $1 AND updated_ms >= $2",
        )
        .bind(replica)
        .bind(since_ms)
        .fetch_all(self.db())
        .await?;
        rows.iter()
            .map(|r| {
                let latency: String = r.try_get("latency")?;
                Ok(WindowRecord {
                    replica: r.try_get("replica")?,
                    pool: r.try_get("pool")?,
                    requests: r.try_get("requests")?,
                    errors: r.try_get("errors")?,
                    upstream_failures: r.try_get("upstream_failures")?,
                    latency: latency.split(',').filter_map(|n| n.parse().ok()).collect(),
                    totals: r.try_get("totals")?,
                })
            })
            .collect()
    }
}
