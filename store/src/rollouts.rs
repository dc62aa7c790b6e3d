//! Rollout records: the spec, where the state machine stands, and how it
//! ended.

use sqlx::Row;

use crate::{Store, StoreError, now};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RolloutRecord {
    pub id: i64,
    pub spec: String,
    pub state: String,
    pub current_step: i64,
    pub started_at: String,
    pub updated_at: String,
    pub finished_at: Option<String>,
    pub outcome: Option<String>,
    pub reason: Option<String>,
}

impl Store {
    /// Records a new rollout; returns its id.
    pub async fn insert_rollout(&self, spec: &str, state: &str) -> Result<i64, StoreError> {
        let at = now();
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO rollouts (spec, state, current_step, started_at, updated_at) VALUES ($1, $2, 0, $3, $3) RETURNING id",
        )
        .bind(spec)
        .bind(state)
        .bind(&at)
        .fetch_one(self.db())
        .await?;
        Ok(id)
    }

    /// Moves a rollout to `state`; a finished one records its outcome.
    pub async fn update_rollout(
        &self,
        id: i64,
        state: &str,
        step: i64,
        reason: &str,
        finished: bool,
    ) -> Result<(), StoreError> {
        let at = now();
        let finished_at = finished.then(|| at.clone());
        let outcome = finished.then(|| state.to_owned());
        sqlx::query(
            "UPDATE rollouts SET state = $1, current_step = $2, reason = $3, updated_at = $4,
                 finished_at = COALESCE($5, finished_at), outcome = COALESCE($6, outcome)
             WHERE id = $7",
        )
        .bind(state)
        .bind(step)
        .bind(reason)
        .bind(&at)
        .bind(finished_at)
        .bind(outcome)
        .bind(id)
        .execute(self.db())
        .await?;
        Ok(())
    }

    /// One rollout by its id.
    pub async fn rollout(&self, id: i64) -> Result<Option<RolloutRecord>, StoreError> {
        Ok(self.rollouts_where(Some(id), 1).await?.into_iter().next())
    }

    /// Rollouts, newest first.
    pub async fn rollouts(&self, limit: i64) -> Result<Vec<RolloutRecord>, StoreError> {
        self.rollouts_where(None, limit).await
    }

    async fn rollouts_where(&self, id: Option<i64>, limit: i64) -> Result<Vec<RolloutRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, spec, state, current_step, started_at, updated_at, finished_at, outcome, reason
             FROM rollouts WHERE ($1 = 0 OR id = $1) ORDER BY id DESC LIMIT $2",
        )
        .bind(id.unwrap_or(0))
        .bind(limit)
        .fetch_all(self.db())
        .await?;
        rows.iter()
            .map(|r| {
                Ok(RolloutRecord {
                    id: r.try_get("id")?,
                    spec: r.try_get("spec")?,
                    state: r.try_get("state")?,
                    current_step: r.try_get("current_step")?,
                    started_at: r.try_get("started_at")?,
                    updated_at: r.try_get("updated_at")?,
                    finished_at: r.try_get("finished_at")?,
                    outcome: r.try_get("outcome")?,
                    reason: r.try_get("reason")?,
                })
            })
            .collect()
    }
}

/// A version fenced off by a rollout's contract step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FenceRecord {
    pub pool: String,
    pub version: String,
    pub reason: String,
    pub rollout_id: Option<i64>,
    pub created_at: String,
}

impl Store {
    /// Records a fence; the newest per pool is the one that holds.
    pub async fn add_fence(&self, fence: &FenceRecord) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO contract_fences (pool, version, reason, rollout_id, created_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&fence.pool)
        .bind(&fence.version)
        .bind(&fence.reason)
        .bind(fence.rollout_id)
        .bind(&fence.created_at)
        .execute(self.db())
        .await?;
        Ok(())
    }

    /// The newest fence of every pool.
    pub async fn fences(&self) -> Result<Vec<FenceRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT pool, version, reason, rollout_id, created_at FROM contract_fences
             WHERE id IN (SELECT MAX(id) FROM contract_fences GROUP BY pool) ORDER BY id",
        )
        .fetch_all(self.db())
        .await?;
        rows.iter()
            .map(|r| {
                Ok(FenceRecord {
                    pool: r.try_get("pool")?,
                    version: r.try_get("version")?,
                    reason: r.try_get("reason")?,
                    rollout_id: r.try_get("rollout_id")?,
                    created_at: r.try_get("created_at")?,
                })
            })
            .collect()
    }
}
