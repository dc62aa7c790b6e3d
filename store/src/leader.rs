//! Leadership among replicas sharing a PostgreSQL store: a session-level
//! advisory lock held on a dedicated connection. Whoever holds it runs the
//! control loops that must run once (rollouts, rollback decisions); when
//! its process or connection dies, PostgreSQL releases the lock and another
//! replica takes it.

use std::str::FromStr;

use sqlx::Connection;
use sqlx::postgres::{PgConnectOptions, PgConnection};

use crate::{Engine, Store, StoreError};

/// The advisory lock's key ("sluice" in ASCII).
const LOCK_KEY: i64 = 0x736c_7569_6365;

/// The lock, held as long as this value and its connection live.
pub struct Leadership {
    conn: PgConnection,
}

impl std::fmt::Debug for Leadership {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Leadership").finish_non_exhaustive()
    }
}

impl Store {
    /// Tries to become the leader; `Ok(None)` when another replica is. Only
    /// meaningful on PostgreSQL (a SQLite store has one process).
    /// `replica` names this replica to the others while it leads (the lock
    /// connection's `application_name`, which PostgreSQL cuts at 63 bytes).
    pub async fn try_lead(&self, replica: &str) -> Result<Option<Leadership>, StoreError> {
        if self.engine() != Engine::Postgres {
            return Ok(None);
        }
        let options = PgConnectOptions::from_str(&self.url)?.application_name(replica);
        let mut conn = PgConnection::connect_with(&options).await?;
        let got: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
            .bind(LOCK_KEY)
            .fetch_one(&mut conn)
            .await?;
        Ok(got.then_some(Leadership { conn }))
    }
}

impl Store {
    /// The name of the replica holding the lock, if one does.
    pub async fn leader(&self) -> Result<Option<String>, StoreError> {
        if self.engine() != Engine::Postgres {
            return Ok(None);
        }
        // A bigint advisory key shows in pg_locks as two 32-bit halves.
        let name: Option<String> = sqlx::query_scalar(
            "SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
             WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
               AND l.classid::bigint = $1 AND l.objid::bigint = $2 LIMIT 1",
        )
        .bind(LOCK_KEY >> 32)
        .bind(LOCK_KEY & 0xffff_ffff)
        .fetch_optional(&self.db)
        .await?;
        Ok(name)
    }
}

impl Leadership {
    /// Whether the connection (and with it the lock) is still there; a
    /// server that does not answer within 3 s counts as gone, since another
    /// replica may then get the lock.
    pub async fn still_held(&mut self) -> bool {
        matches!(
            tokio::time::timeout(std::time::Duration::from_secs(3), self.conn.ping()).await,
            Ok(Ok(()))
        )
    }
}
