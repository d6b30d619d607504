//! Model fan-out on PostgreSQL: a change of the active version is announced on
//! the channel [`CHANNEL`] (`pg_notify`, inside the registry's transaction, so
//! it is delivered at commit and only if the change commits), and every replica
//! listens through a [`Changes`] of its own. A notification can be lost (the
//! listening connection drops and reconnects), so replicas also poll the
//! registry (`cluster.poll_secs`); a notification only makes the change arrive
//! sooner.

use sqlx::postgres::PgListener;

use super::{Store, StoreError};

/// The notification channel; the payload is the version made active.
pub const CHANNEL: &str = "steward_model";

/// A listening connection to the store's PostgreSQL database.
pub struct Changes {
    listener: PgListener,
}

impl Changes {
    /// Listens on [`CHANNEL`]; `None` on SQLite (one daemon per file: nothing
    /// to hear).
    pub async fn listen(store: &Store) -> Result<Option<Changes>, StoreError> {
        let Some(pool) = store.postgres_pool() else {
            return Ok(None);
        };
        let mut listener = PgListener::connect_with(pool).await?;
        listener.listen(CHANNEL).await?;
        Ok(Some(Changes { listener }))
    }

    /// The next announced version. A dropped connection is reconnected (and
    /// listened on again) by sqlx; what was announced meanwhile is lost, which
    /// the poll makes up for.
    pub async fn next(&mut self) -> Result<String, StoreError> {
        let n = self.listener.recv().await?;
        Ok(n.payload().to_string())
    }

    /// The backend process id of the listening connection, for tests that cut
    /// it (`pg_terminate_backend`).
    pub async fn backend_pid(&mut self) -> Result<i32, StoreError> {
        Ok(sqlx::query_scalar("SELECT pg_backend_pid()")
            .fetch_one(&mut self.listener)
            .await?)
    }
}
