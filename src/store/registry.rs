//! The model registry: one row per model version in `models`, at most one of them
//! active. Versions are decimal integers as text ("1", "2", ...), assigned here.

use serde::Serialize;
use sqlx::{Row, SqlitePool};

use super::StoreError;

/// One registered version.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelRecord {
    pub version: String,
    /// Unix milliseconds.
    pub created: i64,
    pub path: String,
    pub metrics: serde_json::Value,
    pub sparsity: f64,
    pub bits: i64,
    pub status: String,
    pub parent: Option<String>,
    pub source: String,
}

fn record(row: &sqlx::sqlite::SqliteRow) -> Result<ModelRecord, StoreError> {
    let metrics: String = row.try_get("metrics")?;
    Ok(ModelRecord {
        version: row.try_get("version")?,
        created: row.try_get("created")?,
        path: row.try_get("path")?,
        metrics: serde_json::from_str(&metrics)
            .map_err(|e| StoreError::Decode(format!("models.metrics: {e}")))?,
        sparsity: row.try_get("sparsity")?,
        bits: row.try_get("bits")?,
        status: row.try_get("status")?,
        parent: row.try_get("parent")?,
        source: row.try_get("source")?,
    })
}

const COLUMNS: &str = "version, created, path, metrics, sparsity, bits, status, parent, source";

/// The active version, if any.
pub async fn active(pool: &SqlitePool) -> Result<Option<ModelRecord>, StoreError> {
    let row = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM models WHERE status = 'active'"
    ))
    .fetch_optional(pool)
    .await?;
    row.as_ref().map(record).transpose()
}

/// Every version, newest first.
pub async fn list(pool: &SqlitePool) -> Result<Vec<ModelRecord>, StoreError> {
    let rows = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM models ORDER BY created DESC, CAST(version AS INTEGER) DESC"
    ))
    .fetch_all(pool)
    .await?;
    rows.iter().map(record).collect()
}

/// The next free version number.
pub async fn next_version(pool: &SqlitePool) -> Result<String, StoreError> {
    let max: Option<i64> = sqlx::query_scalar("SELECT MAX(CAST(version AS INTEGER)) FROM models")
        .fetch_one(pool)
        .await?;
    Ok((max.unwrap_or(0) + 1).to_string())
}

/// Registers `rec` and makes it the only active version, in one transaction.
pub async fn insert_active(pool: &SqlitePool, rec: &ModelRecord) -> Result<(), StoreError> {
    let mut tx = pool.begin().await?;
    sqlx::query("UPDATE models SET status = 'inactive' WHERE status = 'active'")
        .execute(&mut *tx)
        .await?;
    sqlx::query(&format!(
        "INSERT INTO models ({COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, 'active', ?, ?)"
    ))
    .bind(&rec.version)
    .bind(rec.created)
    .bind(&rec.path)
    .bind(rec.metrics.to_string())
    .bind(rec.sparsity)
    .bind(rec.bits)
    .bind(&rec.parent)
    .bind(&rec.source)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(())
}
