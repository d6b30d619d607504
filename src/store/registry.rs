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

use super::{Get, Pool, Store, StoreError};
use serde::Serialize;

/// Binds the record's columns in the order of [`insert_sql`]'s placeholders (a
/// macro: the query's type is the backend's).
macro_rules! bind_record {
    ($query:expr, $rec:expr) => {
        $query
            .bind(&$rec.version)
            .bind($rec.created)
            .bind(&$rec.path)
            .bind($rec.metrics.to_string())
            .bind($rec.sparsity)
            .bind($rec.bits)
            .bind(&$rec.parent)
            .bind(&$rec.source)
            .bind($rec.online_updates)
    };
}

/// Where a registered version stands; stored and answered as its lowercase name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, sqlx::Type)]
#[serde(rename_all = "lowercase")]
#[sqlx(type_name = "text", rename_all = "lowercase")]
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

fn record(row: &impl Get) -> Result<ModelRecord, StoreError> {
    let metrics: String = row.get("metrics")?;
    Ok(ModelRecord {
        version: row.get("version")?,
        created: row.get("created")?,
        path: row.get("path")?,
        metrics: serde_json::from_str(&metrics)
            .map_err(|e| StoreError::Decode(format!("models.metrics: {e}")))?,
        sparsity: row.get("sparsity")?,
        bits: row.get("bits")?,
        status: row.get("status")?,
        parent: row.get("parent")?,
        source: row.get("source")?,
        online_updates: row.get("online_updates")?,
        activated: row.get("activated")?,
    })
}

const COLUMNS: &str =
    "version, created, path, metrics, sparsity, bits, status, parent, source, online_updates, activated";

/// The active version, if any.
pub async fn active(store: &Store) -> Result<Option<ModelRecord>, StoreError> {
    let sql = format!("SELECT {COLUMNS} FROM models WHERE status = 'active'");
    on_pool!(store, |pool| {
        let row = sqlx::query(&sql).fetch_optional(pool).await?;
        row.as_ref().map(record).transpose()
    })
}

/// One version, if registered.
pub async fn get(store: &Store, version: &str) -> Result<Option<ModelRecord>, StoreError> {
    let sql = format!("SELECT {COLUMNS} FROM models WHERE version = $1");
    on_pool!(store, |pool| {
        let row = sqlx::query(&sql).bind(version).fetch_optional(pool).await?;
        row.as_ref().map(record).transpose()
    })
}

/// Every version, newest first: by creation time, and within one millisecond
/// by version number ("3.2" after "3.1" after "3").
pub async fn list(store: &Store) -> Result<Vec<ModelRecord>, StoreError> {
    let sql = format!("SELECT {COLUMNS} FROM models");
    let mut all: Vec<ModelRecord> = on_pool!(store, |pool| {
        let rows = sqlx::query(&sql).fetch_all(pool).await?;
        rows.iter().map(record).collect::<Result<_, _>>()?
    });
    all.sort_by(|a, b| {
        (b.created, version_key(&b.version)).cmp(&(a.created, version_key(&a.version)))
    });
    Ok(all)
}

/// A version's numbers for ordering: "3" → (3, 0), "3.2" → (3, 2).
fn version_key(version: &str) -> (u64, u64) {
    let (major, minor) = version.split_once('.').unwrap_or((version, "0"));
    (major.parse().unwrap_or(0), minor.parse().unwrap_or(0))
}

/// The next free minor version of `major` ("3" → "3.1", then "3.2", ...).
pub async fn next_minor(store: &Store, major: &str) -> Result<String, StoreError> {
    let versions: Vec<String> = on_pool!(store, |pool| sqlx::query_scalar(
        "SELECT version FROM models WHERE version LIKE $1"
    )
    .bind(format!("{major}.%"))
    .fetch_all(pool)
    .await)?;
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
    let max: Option<i64> = on_pool!(store, |pool| sqlx::query_scalar(
        "SELECT MAX(CAST(version AS BIGINT)) FROM models WHERE version NOT LIKE '%.%'",
    )
    .fetch_one(pool)
    .await)?;
    Ok((max.unwrap_or(0) + 1).to_string())
}

/// Registers `rec` and makes it the only active version, in one transaction.
/// `fence`: on PostgreSQL, the epoch this replica leads in, when it does: the
/// write is refused with [`StoreError::Deposed`] if another replica has led
/// since (docs/CLUSTER.md, "Fencing").
pub async fn insert_active(
    store: &Store,
    rec: &ModelRecord,
    artifact: &[u8],
    fence: Option<i64>,
) -> Result<(), StoreError> {
    let now = crate::time::now_millis();
    let sql = insert_sql("active", NEXT_ACTIVATION);
    on_pool!(store, |pool| {
        let mut tx = pool.begin_write().await?;
        pool.fence(&mut tx, fence).await?;
        let previous: Option<String> = sqlx::query_scalar(ACTIVE_VERSION)
            .fetch_optional(&mut *tx)
            .await?;
        sqlx::query("UPDATE models SET status = 'inactive' WHERE status = 'active'")
            .execute(&mut *tx)
            .await?;
        bind_record!(sqlx::query(&sql), rec)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        sqlx::query(INSERT_ARTIFACT)
            .bind(&rec.version)
            .bind(artifact)
            .execute(&mut *tx)
            .await?;
        sqlx::query(RECORD_ACTIVATION)
            .bind(previous.as_deref())
            .bind(&rec.source)
            .bind(&rec.version)
            .execute(&mut *tx)
            .await?;
        pool.announce(&mut tx, &rec.version).await?;
        tx.commit().await?;
    });
    Ok(())
}

/// The active version (inside a transaction).
const ACTIVE_VERSION: &str = "SELECT version FROM models WHERE status = 'active'";

/// Adds a version's activation (at its `activated` time) to the history:
/// `$1` the version it replaced, `$2` the reason, `$3` the version.
const RECORD_ACTIVATION: &str = "INSERT INTO activations (time, version, previous, reason) \
     SELECT activated, version, $1, $2 FROM models WHERE version = $3";

/// Registers `rec` and its artifact's bytes without making it live (an upload
/// that is not activated).
pub async fn insert_inactive(
    store: &Store,
    rec: &ModelRecord,
    artifact: &[u8],
) -> Result<(), StoreError> {
    let sql = insert_sql("inactive", "NULL");
    on_pool!(store, |pool| {
        let mut tx = pool.begin().await?;
        bind_record!(sqlx::query(&sql), rec)
            .execute(&mut *tx)
            .await?;
        sqlx::query(INSERT_ARTIFACT)
            .bind(&rec.version)
            .bind(artifact)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
    });
    Ok(())
}

/// Stores a version's artifact bytes: `$1` the version, `$2` the bytes.
const INSERT_ARTIFACT: &str = "INSERT INTO model_artifacts (version, bytes) VALUES ($1, $2)";

/// The artifact bytes of `version`, if stored (every version registered since
/// migration 0009 that is not retired).
pub async fn artifact(store: &Store, version: &str) -> Result<Option<Vec<u8>>, StoreError> {
    Ok(on_pool!(store, |pool| sqlx::query_scalar(
        "SELECT bytes FROM model_artifacts WHERE version = $1"
    )
    .bind(version)
    .fetch_optional(pool)
    .await)?)
}

/// The INSERT of one `models` row with this status and activation order.
fn insert_sql(status: &str, activation: &str) -> String {
    format!(
        "INSERT INTO models ({COLUMNS}) \
         VALUES ($1, $2, $3, $4, $5, $6, '{status}', $7, $8, $9, {activation})"
    )
}

/// The activation time, parameter `$10` being now: now, or just after the latest
/// one, so that activations are strictly ordered even within one millisecond
/// (the previous version is the inactive one activated last).
const NEXT_ACTIVATION: &str = "(SELECT CASE WHEN $10 > m THEN $10 ELSE m END FROM \
     (SELECT COALESCE(MAX(activated), 0) + 1 AS m FROM models) AS latest)";

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
/// `fence` as for [`insert_active`].
pub async fn activate(
    store: &Store,
    version: &str,
    why: Reactivation,
    fence: Option<i64>,
) -> Result<bool, StoreError> {
    let now = crate::time::now_millis();
    let update = "UPDATE models SET status = 'active', activated = \
         (SELECT CASE WHEN $1 > m THEN $1 ELSE m END FROM \
          (SELECT COALESCE(MAX(activated), 0) + 1 AS m FROM models) AS latest) \
         WHERE version = $2 AND status != 'retired'";
    let done = on_pool!(store, |pool| {
        let mut tx = pool.begin_write().await?;
        pool.fence(&mut tx, fence).await?;
        let previous: Option<String> = sqlx::query_scalar(ACTIVE_VERSION)
            .fetch_optional(&mut *tx)
            .await?;
        let reason = match why {
            Reactivation::Revert => "revert",
            Reactivation::Operator => {
                let (older,): (Option<bool>,) = sqlx::query_as(
                    "SELECT (SELECT created FROM models WHERE version = $1) \
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
        sqlx::query(
            "UPDATE models SET status = 'inactive' WHERE status = 'active' AND version != $1",
        )
        .bind(version)
        .execute(&mut *tx)
        .await?;
        let done = sqlx::query(update)
            .bind(now)
            .bind(version)
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() != 1 {
            tx.rollback().await?;
            false
        } else {
            if previous.as_deref() != Some(version) {
                sqlx::query(RECORD_ACTIVATION)
                    .bind(previous.as_deref())
                    .bind(reason)
                    .bind(version)
                    .execute(&mut *tx)
                    .await?;
            }
            pool.announce(&mut tx, version).await?;
            tx.commit().await?;
            true
        }
    });
    Ok(done)
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
    Ok(on_pool!(store, |pool| {
        sqlx::query_as::<_, ActivationRecord>(
            "SELECT time, version, previous, reason FROM activations WHERE time >= $1 \
         ORDER BY time, id",
        )
        .bind(since)
        .fetch_all(pool)
        .await
    })?)
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
        on_pool!(store, |pool| sqlx::query(
            "DELETE FROM model_artifacts WHERE version = $1"
        )
        .bind(&r.version)
        .execute(pool)
        .await
        .map(|done| done.rows_affected()))?;
        on_pool!(store, |pool| sqlx::query(
            "UPDATE models SET status = 'retired' WHERE version = $1 AND status = 'inactive'",
        )
        .bind(&r.version)
        .execute(pool)
        .await
        .map(|done| done.rows_affected()))?;
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
        insert_active(&pool, &rec("1", 1), b"bytes", None)
            .await
            .unwrap();
        assert_eq!(next_minor(&pool, "1").await.unwrap(), "1.1");
        insert_active(&pool, &rec("1.1", 2), b"bytes", None)
            .await
            .unwrap();
        insert_active(&pool, &rec("1.2", 3), b"bytes", None)
            .await
            .unwrap();
        // Minor versions do not move the major count.
        assert_eq!(next_version(&pool).await.unwrap(), "2");
        assert_eq!(next_minor(&pool, "1").await.unwrap(), "1.3");
        assert_eq!(major("1.2"), "1");
        assert_eq!(major("12"), "12");
        insert_active(&pool, &rec("2", 4), b"bytes", None)
            .await
            .unwrap();
        insert_active(&pool, &rec("2.1", 5), b"bytes", None)
            .await
            .unwrap();
        // Roll back to 1.1: it is active, 2.1 is the previous version.
        assert!(activate(&pool, "1.1", Reactivation::Operator, None)
            .await
            .unwrap());
        assert!(!activate(&pool, "9", Reactivation::Operator, None)
            .await
            .unwrap());
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
            .fetch_all(pool.sqlite_pool().unwrap())
            .await
            .unwrap();
        assert_eq!(
            stored,
            ["inactive", "active", "retired", "retired", "inactive"]
        );
        // A retired version cannot be activated, and a second pass retires nothing.
        assert!(!activate(&pool, "2", Reactivation::Operator, None)
            .await
            .unwrap());
        assert!(retire(&pool, 1, "1").await.unwrap().is_empty());
    }
}
