//! The drift job's reads and writes: the most recent window of logged
//! predictions, and the reports of past checks. Each report is stored whole
//! (`drift_reports.report`, what `GET /v1/drift` answers) and, in the same
//! transaction, as one row of numbers per feature (`drift_features`), which the
//! dashboard's history reads without parsing every report.

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
    Ok(on_pool!(store, |pool| sqlx::query_as::<_, LoggedRow>(
        "SELECT features, output, anomaly_score FROM predictions ORDER BY time DESC LIMIT $1",
    )
    .bind(limit)
    .fetch_all(pool)
    .await)?)
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
    /// Its numbers per input feature and for the output.
    pub features: Vec<FeatureRow>,
}

/// Whether a tested column is one of the model's inputs or its output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, sqlx::Type)]
#[serde(rename_all = "lowercase")]
#[sqlx(type_name = "text", rename_all = "lowercase")]
pub enum Subject {
    Input,
    /// The model's answers (the feature is named `prediction`).
    Output,
}

/// One feature's numbers in one check.
#[derive(Debug, Clone, PartialEq)]
pub struct FeatureRow {
    pub subject: Subject,
    pub feature: String,
    pub statistic: Option<f64>,
    pub p_value: Option<f64>,
    pub p_adjusted: Option<f64>,
    pub psi: Option<f64>,
    pub drift: bool,
}

/// Stores one check: the report and its features' rows, in one transaction.
pub async fn insert(store: &Store, row: &ReportRow) -> Result<(), StoreError> {
    use super::Pool as _;
    on_pool!(store, |pool| {
        let mut tx = pool.begin_write().await?;
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO drift_reports \
             (time, model_version, window_rows, drift, dataset_drift, report) \
             VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
        )
        .bind(row.time)
        .bind(&row.model_version)
        .bind(row.window_rows)
        .bind(i64::from(row.drift))
        .bind(i64::from(row.dataset_drift))
        .bind(&row.report)
        .fetch_one(&mut *tx)
        .await?;
        for f in &row.features {
            sqlx::query(
                "INSERT INTO drift_features \
                 (report_id, subject, feature, statistic, p_value, p_adjusted, psi, drift) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            )
            .bind(id)
            .bind(f.subject)
            .bind(&f.feature)
            .bind(f.statistic)
            .bind(f.p_value)
            .bind(f.p_adjusted)
            .bind(f.psi)
            .bind(i64::from(f.drift))
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
    });
    Ok(())
}

/// A stored check without its report.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct CheckRow {
    pub id: i64,
    pub time: i64,
    pub model_version: String,
    pub window_rows: i64,
    pub drift: bool,
    pub dataset_drift: bool,
}

/// The newest `n` checks, oldest first.
pub async fn checks(store: &Store, n: i64) -> Result<Vec<CheckRow>, StoreError> {
    let mut rows = on_pool!(store, |pool| sqlx::query_as::<_, CheckRow>(
        "SELECT id, time, model_version, window_rows, drift <> 0 AS drift, \
         dataset_drift <> 0 AS dataset_drift FROM drift_reports \
         ORDER BY time DESC, id DESC LIMIT $1",
    )
    .bind(n)
    .fetch_all(pool)
    .await)?;
    rows.reverse();
    Ok(rows)
}

/// The feature rows of the checks with ids in `[from, to]`, by check id (500
/// checks are a few thousand rows: read as `store::read` reads).
pub async fn features_between(
    store: &Store,
    from: i64,
    to: i64,
) -> Result<Vec<(i64, FeatureRow)>, StoreError> {
    const SQL: &str = "SELECT report_id, subject, feature, statistic, p_value, p_adjusted, psi, \
                       drift FROM drift_features WHERE report_id >= $1 AND report_id <= $2 \
                       ORDER BY report_id";
    let readers = match &store.db {
        super::Db::Sqlite { readers, .. } => readers,
        super::Db::Postgres { pool, .. } => return features_pg(pool, SQL, from, to).await,
    };
    readers
        .run(move |conn| {
            let mut stmt = conn.prepare_cached(SQL)?;
            let rows = stmt.query_map((from, to), |row| {
                let subject = match row.get_ref(1)?.as_str()? {
                    "output" => Subject::Output,
                    _ => Subject::Input,
                };
                Ok((
                    row.get(0)?,
                    FeatureRow {
                        subject,
                        feature: row.get(2)?,
                        statistic: row.get(3)?,
                        p_value: row.get(4)?,
                        p_adjusted: row.get(5)?,
                        psi: row.get(6)?,
                        drift: row.get(7)?,
                    },
                ))
            })?;
            rows.collect()
        })
        .await
}

/// [`features_between`] on PostgreSQL.
async fn features_pg(
    pool: &sqlx::PgPool,
    sql: &str,
    from: i64,
    to: i64,
) -> Result<Vec<(i64, FeatureRow)>, StoreError> {
    use sqlx::Row;
    let rows = sqlx::query(sql).bind(from).bind(to).fetch_all(pool).await?;
    rows.iter()
        .map(|row| {
            let subject: String = row.try_get(1)?;
            let drift: i64 = row.try_get(7)?;
            Ok((
                row.try_get(0)?,
                FeatureRow {
                    subject: if subject == "output" {
                        Subject::Output
                    } else {
                        Subject::Input
                    },
                    feature: row.try_get(2)?,
                    statistic: row.try_get(3)?,
                    p_value: row.try_get(4)?,
                    p_adjusted: row.try_get(5)?,
                    psi: row.try_get(6)?,
                    drift: drift != 0,
                },
            ))
        })
        .collect::<Result<_, sqlx::Error>>()
        .map_err(StoreError::Sql)
}

/// One stored report's JSON text.
pub async fn report(store: &Store, id: i64) -> Result<Option<String>, StoreError> {
    Ok(on_pool!(store, |pool| sqlx::query_scalar(
        "SELECT report FROM drift_reports WHERE id = $1"
    )
    .bind(id)
    .fetch_optional(pool)
    .await)?)
}

/// When the newest stored check ran (Unix ms): the last successful drift check,
/// for `/metrics` after a restart.
pub async fn last_time(store: &Store) -> Result<Option<i64>, StoreError> {
    let row: Option<(Option<i64>,)> = on_pool!(store, |pool| sqlx::query_as(
        "SELECT MAX(time) FROM drift_reports"
    )
    .fetch_optional(pool)
    .await)?;
    Ok(row.and_then(|(t,)| t))
}

/// The newest stored report's JSON text.
pub async fn latest(store: &Store) -> Result<Option<String>, StoreError> {
    let row: Option<(String,)> = on_pool!(store, |pool| sqlx::query_as(
        "SELECT report FROM drift_reports ORDER BY id DESC LIMIT 1"
    )
    .fetch_optional(pool)
    .await)?;
    Ok(row.map(|(r,)| r))
}
