//! The audit trail: who changed what, from what to what, with what result.

use sqlx::{Any, Row, Transaction};

use crate::{Store, StoreError, now};

/// A change to record. `before`/`after` are JSON documents.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AuditEntry {
    pub actor: String,
    pub action: String,
    pub target: String,
    pub before: Option<String>,
    pub after: Option<String>,
    /// `ok`, or why the change was refused.
    pub result: String,
    pub request_id: Option<String>,
    /// `DEPLOYMENT_ENV`, when set.
    pub environment: Option<String>,
}

/// A stored audit row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRecord {
    pub id: i64,
    pub at: String,
    pub entry: AuditEntry,
}

/// Filters for reading the trail; all optional.
#[derive(Debug, Clone, Default)]
pub struct AuditQuery {
    /// RFC 3339, inclusive.
    pub since: Option<String>,
    /// RFC 3339, exclusive.
    pub until: Option<String>,
    pub actor: Option<String>,
    pub action: Option<String>,
    pub limit: Option<i64>,
}

pub(crate) async fn insert(tx: &mut Transaction<'_, Any>, e: &AuditEntry) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO audit_log (at, actor, action, target, before, after, result, request_id, environment)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(now())
    .bind(&e.actor)
    .bind(&e.action)
    .bind(&e.target)
    .bind(&e.before)
    .bind(&e.after)
    .bind(&e.result)
    .bind(&e.request_id)
    .bind(&e.environment)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

impl Store {
    /// Appends one entry on its own (changes that touch no other table, and
    /// refused changes).
    pub async fn append_audit(&self, entry: &AuditEntry) -> Result<(), StoreError> {
        let mut tx = self.db().begin().await?;
        insert(&mut tx, entry).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Reads the trail, newest first.
    pub async fn audit(&self, q: &AuditQuery) -> Result<Vec<AuditRecord>, StoreError> {
        // Absent filters bind values that match everything ('' and '~'
        // bracket every timestamp), so one fixed statement serves all
        // combinations on both engines.
        let rows = sqlx::query(
            "SELECT id, at, actor, action, target, before, after, result, request_id, environment
             FROM audit_log
             WHERE at >= $1 AND at < $2 AND ($3 = '' OR actor = $3) AND ($4 = '' OR action = $4)
             ORDER BY id DESC LIMIT $5",
        )
        .bind(q.since.as_deref().unwrap_or(""))
        .bind(q.until.as_deref().unwrap_or("~"))
        .bind(q.actor.as_deref().unwrap_or(""))
        .bind(q.action.as_deref().unwrap_or(""))
        .bind(q.limit.unwrap_or(100).clamp(1, 10_000))
        .fetch_all(self.db())
        .await?;
        rows.iter()
            .map(|r| {
                Ok(AuditRecord {
                    id: r.try_get("id")?,
                    at: r.try_get("at")?,
                    entry: AuditEntry {
                        actor: r.try_get("actor")?,
                        action: r.try_get("action")?,
                        target: r.try_get("target")?,
                        before: r.try_get("before")?,
                        after: r.try_get("after")?,
                        result: r.try_get("result")?,
                        request_id: r.try_get("request_id")?,
                        environment: r.try_get("environment")?,
                    },
                })
            })
            .collect()
    }
}
