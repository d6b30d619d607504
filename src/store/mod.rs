//! SQLite through sqlx: opening the database (WAL, foreign keys, busy timeout),
//! the embedded migrations, and the queries of the serving core. The prediction log
//! writer is in `writer`, the model registry in `registry`.
//!
//! This module owns SQL; callers see typed rows and `StoreError`.

pub mod alerts;
pub mod drift;
pub mod feedback;
pub mod registry;
pub mod writer;

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::SqlitePool;

/// Everything that can go wrong with the database.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database {path}: cannot create its directory: {source}")]
    Dir {
        path: String,
        source: std::io::Error,
    },
    #[error("database {path}: cannot open: {source}")]
    Open { path: String, source: sqlx::Error },
    #[error("database {path}: not writable: {source}")]
    NotWritable { path: String, source: sqlx::Error },
    #[error("database {path}: migrations failed: {source}")]
    Migrate {
        path: String,
        source: sqlx::migrate::MigrateError,
    },
    #[error("database: {0}")]
    Sql(#[from] sqlx::Error),
    #[error("database: stored value is invalid: {0}")]
    Decode(String),
}

/// Opens (creating if needed) the database at `path`, applies the migrations and
/// proves it writable.
pub async fn open(path: &Path) -> Result<SqlitePool, StoreError> {
    let name = path.display().to_string();
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|source| StoreError::Dir {
            path: name.clone(),
            source,
        })?;
    }
    let options = SqliteConnectOptions::from_str("sqlite://")
        .map_err(|source| StoreError::Open {
            path: name.clone(),
            source,
        })?
        .filename(path)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal)
        .foreign_keys(true)
        .busy_timeout(Duration::from_secs(5));
    let pool = SqlitePoolOptions::new()
        .max_connections(4)
        .connect_with(options)
        .await
        .map_err(|source| StoreError::Open {
            path: name.clone(),
            source,
        })?;
    sqlx::migrate!("./migrations")
        .run(&pool)
        .await
        .map_err(|source| StoreError::Migrate {
            path: name.clone(),
            source,
        })?;
    heartbeat(&pool)
        .await
        .map_err(|source| StoreError::NotWritable { path: name, source })?;
    Ok(pool)
}

/// Rewrites the heartbeat row: fails when the database cannot be written.
pub async fn heartbeat(pool: &SqlitePool) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE heartbeat SET time = ? WHERE id = 1")
        .bind(crate::time::now_millis())
        .execute(pool)
        .await
        .map(|_| ())
}

/// Deletes predictions (and their feedback) older than `days`; returns rows deleted.
pub async fn apply_retention(pool: &SqlitePool, days: u32) -> Result<u64, StoreError> {
    let cutoff = crate::time::now_millis() - i64::from(days) * 86_400_000;
    let done = sqlx::query("DELETE FROM predictions WHERE time < ?")
        .bind(cutoff)
        .execute(pool)
        .await?;
    sqlx::query("DELETE FROM drift_reports WHERE time < ?")
        .bind(cutoff)
        .execute(pool)
        .await?;
    Ok(done.rows_affected())
}
