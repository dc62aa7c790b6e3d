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
        .fetch_one(self.pool())
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
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Rollouts, newest first.
    pub async fn rollouts(&self, limit: i64) -> Result<Vec<RolloutRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, spec, state, current_step, started_at, updated_at, finished_at, outcome, reason
             FROM rollouts ORDER BY id DESC LIMIT $1",
        )
        .bind(limit)
        .fetch_all(self.pool())
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
