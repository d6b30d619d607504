//! The model registry: one row per model version in `models`, at most one of them
//! active. Versions are assigned here: a decimal integer as text ("1", "2", ...)
//! for a model trained in batch (bootstrap, import, retrain), and
//! "<major>.<minor>" ("3.1", "3.2", ...) for one made by online updates from
//! major version 3 and its descendants.
//!
//! Activation is one transaction (the old active row becomes inactive, the new
//! one active, its `activated` time set), so the table never has two active
//! versions. Retention ([`retire`]) deletes artifacts beyond `model.keep_versions`
//! but never the active or the previous version (the inactive one activated most
//! recently), and keeps the rows as `retired`.
//!
//! Every activation is also a row of `activations` (time, version, the version
//! it replaced, and why), written in the same transaction: the history the
//! dashboard marks on its charts ([`activations_since`]).

use serde::Serialize;
use sqlx::Row;

use super::{Store, StoreError};

/// Where a registered version stands; stored and answered as its lowercase name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, sqlx::Type)]
#[serde(rename_all = "lowercase")]
#[sqlx(rename_all = "lowercase")]
pub enum ModelStatus {
    /// The one version that answers requests.
    Active,
    /// Registered, with its artifact kept: it can be activated.
    Inactive,
    /// Its artifact was deleted (`model.keep_versions`): it cannot come back.
    Retired,
}

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
    pub status: ModelStatus,
    pub parent: Option<String>,
    pub source: String,
    /// Online gradient steps since the model's last batch training.
    pub online_updates: i64,
    /// When the version last became active (Unix milliseconds).
    pub activated: Option<i64>,
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
        online_updates: row.try_get("online_updates")?,
        activated: row.try_get("activated")?,
    })
}

const COLUMNS: &str =
    "version, created, path, metrics, sparsity, bits, status, parent, source, online_updates, activated";

/// The active version, if any.
pub async fn active(store: &Store) -> Result<Option<ModelRecord>, StoreError> {
    let row = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM models WHERE status = 'active'"
    ))
    .fetch_optional(&store.pool)
    .await?;
    row.as_ref().map(record).transpose()
}

/// One version, if registered.
pub async fn get(store: &Store, version: &str) -> Result<Option<ModelRecord>, StoreError> {
    let row = sqlx::query(&format!("SELECT {COLUMNS} FROM models WHERE version = ?"))
        .bind(version)
        .fetch_optional(&store.pool)
        .await?;
    row.as_ref().map(record).transpose()
}

/// Every version, newest first.
pub async fn list(store: &Store) -> Result<Vec<ModelRecord>, StoreError> {
    let rows = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM models ORDER BY created DESC, rowid DESC"
    ))
    .fetch_all(&store.pool)
    .await?;
    rows.iter().map(record).collect()
}

/// The next free minor version of `major` ("3" → "3.1", then "3.2", ...).
pub async fn next_minor(store: &Store, major: &str) -> Result<String, StoreError> {
    let versions: Vec<String> =
        sqlx::query_scalar("SELECT version FROM models WHERE version LIKE ?")
            .bind(format!("{major}.%"))
            .fetch_all(&store.pool)
            .await?;
    let last = versions
        .iter()
        .filter_map(|v| {
            v.strip_prefix(major)?
                .strip_prefix('.')?
                .parse::<u64>()
                .ok()
        })
        .max()
        .unwrap_or(0);
    Ok(format!("{major}.{}", last + 1))
}

/// The batch-trained version a version descends from ("3.2" → "3").
pub fn major(version: &str) -> &str {
    version.split_once('.').map_or(version, |(m, _)| m)
}

/// The next free version number.
pub async fn next_version(store: &Store) -> Result<String, StoreError> {
    let max: Option<i64> = sqlx::query_scalar("SELECT MAX(CAST(version AS INTEGER)) FROM models")
        .fetch_one(&store.pool)
        .await?;
    Ok((max.unwrap_or(0) + 1).to_string())
}

/// Registers `rec` and makes it the only active version, in one transaction.
pub async fn insert_active(store: &Store, rec: &ModelRecord) -> Result<(), StoreError> {
    let now = crate::time::now_millis();
    let mut tx = store.pool.begin_with("BEGIN IMMEDIATE").await?;
    let previous = active_version(&mut tx).await?;
    sqlx::query("UPDATE models SET status = 'inactive' WHERE status = 'active'")
        .execute(&mut *tx)
        .await?;
    let sql = insert_sql("active", NEXT_ACTIVATION);
    bind_record(sqlx::query(&sql), rec)
        .bind(now)
        .execute(&mut *tx)
        .await?;
    record_activation(&mut tx, &rec.version, previous.as_deref(), &rec.source).await?;
    tx.commit().await?;
    Ok(())
}

/// The active version inside a transaction.
async fn active_version(
    tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
) -> Result<Option<String>, StoreError> {
    Ok(
        sqlx::query_scalar("SELECT version FROM models WHERE status = 'active'")
            .fetch_optional(&mut **tx)
            .await?,
    )
}

/// Adds `version`'s activation (at its `activated` time) to the history.
async fn record_activation(
    tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
    version: &str,
    previous: Option<&str>,
    reason: &str,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO activations (time, version, previous, reason) \
         SELECT activated, version, ?, ? FROM models WHERE version = ?",
    )
    .bind(previous)
    .bind(reason)
    .bind(version)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Registers `rec` without making it live (an upload that is not activated).
pub async fn insert_inactive(store: &Store, rec: &ModelRecord) -> Result<(), StoreError> {
    let sql = insert_sql("inactive", "NULL");
    bind_record(sqlx::query(&sql), rec)
        .execute(&store.pool)
        .await?;
    Ok(())
}

/// The INSERT of one `models` row with this status and activation order.
fn insert_sql(status: &str, activation: &str) -> String {
    format!(
        "INSERT INTO models ({COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, '{status}', ?, ?, ?, {activation})"
    )
}

/// Binds the record's columns in the order of [`insert_sql`]'s placeholders.
fn bind_record<'q>(
    query: sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments<'q>>,
    rec: &'q ModelRecord,
) -> sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments<'q>> {
    query
        .bind(&rec.version)
        .bind(rec.created)
        .bind(&rec.path)
        .bind(rec.metrics.to_string())
        .bind(rec.sparsity)
        .bind(rec.bits)
        .bind(&rec.parent)
        .bind(&rec.source)
        .bind(rec.online_updates)
}

/// The activation time: now, or just after the latest one, so that activations are
/// strictly ordered even within one millisecond (the previous version is the
/// inactive one activated last).
const NEXT_ACTIVATION: &str = "MAX(?, COALESCE((SELECT MAX(activated) FROM models), 0) + 1)";

/// Why a stored version is made live again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reactivation {
    /// Through the API: recorded as `rollback` (a version older than the one
    /// it replaces) or `rollforward`.
    Operator,
    /// The online guard went back to the base version: `revert`.
    Revert,
}

/// Makes the registered, not retired `version` the only active one, and adds it
/// to the activation history. Returns false when there is no such version.
pub async fn activate(store: &Store, version: &str, why: Reactivation) -> Result<bool, StoreError> {
    let now = crate::time::now_millis();
    let mut tx = store.pool.begin_with("BEGIN IMMEDIATE").await?;
    let previous = active_version(&mut tx).await?;
    let reason = match why {
        Reactivation::Revert => "revert",
        Reactivation::Operator => {
            let (older,): (Option<bool>,) = sqlx::query_as(
                "SELECT (SELECT created FROM models WHERE version = ?) \
                      < (SELECT created FROM models WHERE status = 'active')",
            )
            .bind(version)
            .fetch_one(&mut *tx)
            .await?;
            if older.unwrap_or(false) {
                "rollback"
            } else {
                "rollforward"
            }
        }
    };
    sqlx::query("UPDATE models SET status = 'inactive' WHERE status = 'active' AND version != ?")
        .bind(version)
        .execute(&mut *tx)
        .await?;
    let done = sqlx::query(&format!(
        "UPDATE models SET status = 'active', activated = {NEXT_ACTIVATION} \
         WHERE version = ? AND status != 'retired'"
    ))
    .bind(now)
    .bind(version)
    .execute(&mut *tx)
    .await?;
    if done.rows_affected() != 1 {
        tx.rollback().await?;
        return Ok(false);
    }
    if previous.as_deref() != Some(version) {
        record_activation(&mut tx, version, previous.as_deref(), reason).await?;
    }
    tx.commit().await?;
    Ok(true)
}

/// One entry of the activation history.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct ActivationRecord {
    /// When the version became live (Unix ms).
    pub time: i64,
    pub version: String,
    /// The version it replaced (none for the first).
    pub previous: Option<String>,
    /// The new version's source (`bootstrap`, `import`, `retrain`, `online`,
    /// `upload`, `onnx`) when it went live as it was registered; `rollback`,
    /// `rollforward` (through the API) or `revert` (the online guard) when a
    /// stored version went live again.
    pub reason: String,
}

/// The activations at or after `since` (Unix ms), oldest first.
pub async fn activations_since(
    store: &Store,
    since: i64,
) -> Result<Vec<ActivationRecord>, StoreError> {
    Ok(sqlx::query_as::<_, ActivationRecord>(
        "SELECT time, version, previous, reason FROM activations WHERE time >= ? \
         ORDER BY time, id",
    )
    .bind(since)
    .fetch_all(&store.pool)
    .await?)
}

/// Marks as retired every version beyond the newest `keep` that is neither
/// active, nor the previous one, nor `keep_major` (the batch-trained version the
/// online learner would revert to), and returns them (the caller deletes their
/// artifacts).
pub async fn retire(
    store: &Store,
    keep: usize,
    keep_major: &str,
) -> Result<Vec<ModelRecord>, StoreError> {
    let all = list(store).await?;
    let previous = all
        .iter()
        .filter(|r| r.status == ModelStatus::Inactive)
        .max_by_key(|r| r.activated)
        .filter(|r| r.activated.is_some())
        .map(|r| r.version.clone());
    let retired: Vec<ModelRecord> = all
        .into_iter()
        .filter(|r| r.status != ModelStatus::Retired)
        .enumerate()
        .filter(|(i, r)| {
            *i >= keep
                && r.status != ModelStatus::Active
                && Some(&r.version) != previous.as_ref()
                && r.version != keep_major
        })
        .map(|(_, r)| r)
        .collect();
    for r in &retired {
        sqlx::query(
            "UPDATE models SET status = 'retired' WHERE version = ? AND status = 'inactive'",
        )
        .bind(&r.version)
        .execute(&store.pool)
        .await?;
    }
    Ok(retired)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(version: &str, created: i64) -> ModelRecord {
        ModelRecord {
            version: version.into(),
            created,
            path: format!("v{version}.safetensors"),
            metrics: serde_json::json!({}),
            sparsity: 0.0,
            bits: 32,
            status: ModelStatus::Active,
            parent: None,
            source: "test".into(),
            online_updates: 0,
            activated: None,
        }
    }

    fn statuses(all: &[ModelRecord]) -> Vec<(String, ModelStatus)> {
        all.iter().map(|r| (r.version.clone(), r.status)).collect()
    }

    #[tokio::test]
    async fn versions_activation_and_retention() {
        let dir = tempfile::tempdir().unwrap();
        let pool = super::super::open(&dir.path().join("r.db")).await.unwrap();
        assert_eq!(next_version(&pool).await.unwrap(), "1");
        insert_active(&pool, &rec("1", 1)).await.unwrap();
        assert_eq!(next_minor(&pool, "1").await.unwrap(), "1.1");
        insert_active(&pool, &rec("1.1", 2)).await.unwrap();
        insert_active(&pool, &rec("1.2", 3)).await.unwrap();
        // Minor versions do not move the major count.
        assert_eq!(next_version(&pool).await.unwrap(), "2");
        assert_eq!(next_minor(&pool, "1").await.unwrap(), "1.3");
        assert_eq!(major("1.2"), "1");
        assert_eq!(major("12"), "12");
        insert_active(&pool, &rec("2", 4)).await.unwrap();
        insert_active(&pool, &rec("2.1", 5)).await.unwrap();
        // Roll back to 1.1: it is active, 2.1 is the previous version.
        assert!(activate(&pool, "1.1", Reactivation::Operator)
            .await
            .unwrap());
        assert!(!activate(&pool, "9", Reactivation::Operator).await.unwrap());
        assert_eq!(active(&pool).await.unwrap().unwrap().version, "1.1");
        let history: Vec<(String, Option<String>, String)> = activations_since(&pool, 0)
            .await
            .unwrap()
            .into_iter()
            .map(|a| (a.version, a.previous, a.reason))
            .collect();
        let entry = |v: &str, p: Option<&str>, r: &str| (v.into(), p.map(Into::into), r.into());
        assert_eq!(
            history,
            vec![
                entry("1", None, "test"),
                entry("1.1", Some("1"), "test"),
                entry("1.2", Some("1.1"), "test"),
                entry("2", Some("1.2"), "test"),
                entry("2.1", Some("2"), "test"),
                entry("1.1", Some("2.1"), "rollback"),
            ]
        );
        // Keep 1 newest: 2.1 (newest, and previous) stays; so do 1.1 (active) and
        // 1 (its major); 2 and 1.2 go.
        let retired: Vec<String> = retire(&pool, 1, "1")
            .await
            .unwrap()
            .into_iter()
            .map(|r| r.version)
            .collect();
        assert_eq!(retired, vec!["2", "1.2"]);
        let all = list(&pool).await.unwrap();
        assert_eq!(
            statuses(&all),
            [
                ("2.1", ModelStatus::Inactive),
                ("2", ModelStatus::Retired),
                ("1.2", ModelStatus::Retired),
                ("1.1", ModelStatus::Active),
                ("1", ModelStatus::Inactive)
            ]
            .map(|(v, s)| (v.to_string(), s))
            .to_vec()
        );
        // Stored as the names the API shows.
        let stored: Vec<String> = sqlx::query_scalar("SELECT status FROM models ORDER BY version")
            .fetch_all(&pool.pool)
            .await
            .unwrap();
        assert_eq!(
            stored,
            ["inactive", "active", "retired", "retired", "inactive"]
        );
        // A retired version cannot be activated, and a second pass retires nothing.
        assert!(!activate(&pool, "2", Reactivation::Operator).await.unwrap());
        assert!(retire(&pool, 1, "1").await.unwrap().is_empty());
    }
}
