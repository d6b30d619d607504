//! The drift job's reads and writes: the most recent window of logged
//! predictions, and the reports of past checks.

use super::{Store, StoreError};

/// One logged prediction as the drift job reads it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct LoggedRow {
    /// The features as received (JSON object).
    pub features: String,
    /// The answer (JSON: prediction, probabilities).
    pub output: String,
    pub anomaly_score: Option<f64>,
}

/// The `rows` most recent predictions, newest first.
pub async fn recent(store: &Store, rows: usize) -> Result<Vec<LoggedRow>, StoreError> {
    let limit = i64::try_from(rows).unwrap_or(i64::MAX);
    Ok(sqlx::query_as::<_, LoggedRow>(
        "SELECT features, output, anomaly_score FROM predictions ORDER BY time DESC LIMIT ?",
    )
    .bind(limit)
    .fetch_all(&store.pool)
    .await?)
}

/// A stored check.
#[derive(Debug, Clone)]
pub struct ReportRow {
    pub time: i64,
    pub model_version: String,
    pub window_rows: i64,
    pub drift: bool,
    pub dataset_drift: bool,
    /// The report as JSON text.
    pub report: String,
}

/// Stores one check.
pub async fn insert(store: &Store, row: &ReportRow) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO drift_reports (time, model_version, window_rows, drift, dataset_drift, report) \
         VALUES (?, ?, ?, ?, ?, ?)",
    )
    .bind(row.time)
    .bind(&row.model_version)
    .bind(row.window_rows)
    .bind(row.drift)
    .bind(row.dataset_drift)
    .bind(&row.report)
    .execute(&store.pool)
    .await?;
    Ok(())
}

/// When the newest stored check ran (Unix ms): the last successful drift check,
/// for `/metrics` after a restart.
pub async fn last_time(store: &Store) -> Result<Option<i64>, StoreError> {
    let row: Option<(Option<i64>,)> = sqlx::query_as("SELECT MAX(time) FROM drift_reports")
        .fetch_optional(&store.pool)
        .await?;
    Ok(row.and_then(|(t,)| t))
}

/// The newest stored report's JSON text.
pub async fn latest(store: &Store) -> Result<Option<String>, StoreError> {
    let row: Option<(String,)> =
        sqlx::query_as("SELECT report FROM drift_reports ORDER BY id DESC LIMIT 1")
            .fetch_optional(&store.pool)
            .await?;
    Ok(row.map(|(r,)| r))
}
