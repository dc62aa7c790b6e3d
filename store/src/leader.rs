//! Leadership among replicas sharing a PostgreSQL store: a session-level
//! advisory lock held on a dedicated connection. Whoever holds it runs the
//! control loops that must run once (rollouts, rollback decisions); when
//! its process or connection dies, PostgreSQL releases the lock and another
//! replica takes it.

use sqlx::Connection;
use sqlx::postgres::PgConnection;

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
    pub async fn try_lead(&self) -> Result<Option<Leadership>, StoreError> {
        if self.engine() != Engine::Postgres {
            return Ok(None);
        }
        let mut conn = PgConnection::connect(&self.url).await?;
        let got: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
            .bind(LOCK_KEY)
            .fetch_one(&mut conn)
            .await?;
        Ok(got.then_some(Leadership { conn }))
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
