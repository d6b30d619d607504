//! Retraining runs (`retrain_runs`) and the labelled rows a run trains on.
//!
//! A run is inserted as `running` before any work starts and finished once, with
//! its state (`promoted`, `rejected`, `skipped` or `failed`), counts, both
//! metrics, the decision and the training report. A run still `running` when the
//! daemon starts was cut short by a stop or crash: [`interrupted`] marks it failed.

use super::{Get, Store, StoreError};
use serde::Serialize;

/// Where a run stands; stored and answered as its snake_case name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, sqlx::Type)]
#[serde(rename_all = "snake_case")]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum RunState {
    /// Started, not yet ended (or cut short by a stop: see [`interrupted`]).
    #[default]
    Running,
    /// The candidate went live.
    Promoted,
    /// The candidate did worse than the live model on the held-out rows.
    Rejected,
    /// Not enough labelled rows to train on.
    Skipped,
    /// An error, a time limit, or a stop before the end.
    Failed,
}

impl RunState {
    pub fn as_str(self) -> &'static str {
        match self {
            RunState::Running => "running",
            RunState::Promoted => "promoted",
            RunState::Rejected => "rejected",
            RunState::Skipped => "skipped",
            RunState::Failed => "failed",
        }
    }
}

/// What started a run; stored and answered as its snake_case name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, sqlx::Type)]
#[serde(rename_all = "snake_case")]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum Trigger {
    /// `training.schedule`.
    Schedule,
    /// `POST /v1/retrain`.
    Api,
    /// A dataset drift event (`training.drift_retrain`).
    DatasetDrift,
    /// A concept drift event (`training.drift_retrain`).
    ConceptDrift,
}

impl Trigger {
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Schedule => "schedule",
            Trigger::Api => "api",
            Trigger::DatasetDrift => "dataset_drift",
            Trigger::ConceptDrift => "concept_drift",
        }
    }
}

impl std::fmt::Display for Trigger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One run as stored and as `GET /v1/retrain/{id}` shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Run {
    pub id: i64,
    pub trigger: Trigger,
    /// Unix milliseconds.
    pub started: i64,
    pub finished: Option<i64>,
    /// A concept-drift run's change point (Unix ms): it trained on rows
    /// predicted from then on.
    pub change_time: Option<i64>,
    #[serde(flatten)]
    pub outcome: Finish,
}

/// How a run ended (`state` is `running` until it has).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Finish {
    pub state: RunState,
    pub rows: Option<i64>,
    pub train_rows: Option<i64>,
    pub holdout_rows: Option<i64>,
    pub metric: Option<String>,
    pub live_version: Option<String>,
    pub live_metric: Option<f64>,
    pub candidate_metric: Option<f64>,
    pub candidate_version: Option<String>,
    pub decision: Option<String>,
    pub report: Option<serde_json::Value>,
    pub error: Option<String>,
}

const COLUMNS: &str =
    "id, trigger, started, finished, change_time, state, rows, train_rows, holdout_rows, metric, \
     live_version, live_metric, candidate_metric, candidate_version, decision, report, error";

fn run(row: &impl Get) -> Result<Run, StoreError> {
    let report: Option<String> = row.get("report")?;
    Ok(Run {
        id: row.get("id")?,
        trigger: row.get("trigger")?,
        started: row.get("started")?,
        finished: row.get("finished")?,
        change_time: row.get("change_time")?,
        outcome: Finish {
            state: row.get("state")?,
            rows: row.get("rows")?,
            train_rows: row.get("train_rows")?,
            holdout_rows: row.get("holdout_rows")?,
            metric: row.get("metric")?,
            live_version: row.get("live_version")?,
            live_metric: row.get("live_metric")?,
            candidate_metric: row.get("candidate_metric")?,
            candidate_version: row.get("candidate_version")?,
            decision: row.get("decision")?,
            report: report
                .map(|r| serde_json::from_str(&r))
                .transpose()
                .map_err(|e| StoreError::Decode(format!("retrain_runs.report: {e}")))?,
            error: row.get("error")?,
        },
    })
}

/// Records the start of a run; returns its id.
pub async fn start(
    store: &Store,
    trigger: Trigger,
    now: i64,
    change_time: Option<i64>,
) -> Result<i64, StoreError> {
    let id: i64 = on_pool!(store, |pool| sqlx::query_scalar(
        "INSERT INTO retrain_runs (trigger, started, state, change_time) \
         VALUES ($1, $2, $3, $4) RETURNING id",
    )
    .bind(trigger)
    .bind(now)
    .bind(RunState::Running)
    .bind(change_time)
    .fetch_one(pool)
    .await)?;
    Ok(id)
}

/// Records how run `id` ended.
pub async fn finish(store: &Store, id: i64, f: &Finish, now: i64) -> Result<(), StoreError> {
    on_pool!(store, |pool| {
        sqlx::query(
        "UPDATE retrain_runs SET finished = $1, state = $2, rows = $3, train_rows = $4, holdout_rows = $5, \
         metric = $6, live_version = $7, live_metric = $8, candidate_metric = $9, candidate_version = $10, \
         decision = $11, report = $12, error = $13 WHERE id = $14",
    )
    .bind(now)
    .bind(f.state)
    .bind(f.rows)
    .bind(f.train_rows)
    .bind(f.holdout_rows)
    .bind(&f.metric)
    .bind(&f.live_version)
    .bind(f.live_metric.filter(|m| m.is_finite()))
    .bind(f.candidate_metric.filter(|m| m.is_finite()))
    .bind(&f.candidate_version)
    .bind(&f.decision)
    .bind(f.report.as_ref().map(|r| r.to_string()))
    .bind(&f.error)
    .bind(id)
    .execute(pool)
    .await
    .map(|done| done.rows_affected())
    })?;
    Ok(())
}

/// Run `id`, if there is one.
pub async fn get(store: &Store, id: i64) -> Result<Option<Run>, StoreError> {
    let sql = format!("SELECT {COLUMNS} FROM retrain_runs WHERE id = $1");
    on_pool!(store, |pool| {
        let row = sqlx::query(&sql).bind(id).fetch_optional(pool).await?;
        row.as_ref().map(run).transpose()
    })
}

/// The newest `limit` runs, newest first (without their reports).
pub async fn recent(store: &Store, limit: i64) -> Result<Vec<Run>, StoreError> {
    let sql = format!(
        "SELECT {} FROM retrain_runs ORDER BY id DESC LIMIT $1",
        COLUMNS.replace("report", "NULL AS report")
    );
    on_pool!(store, |pool| {
        let rows = sqlx::query(&sql).bind(limit).fetch_all(pool).await?;
        rows.iter().map(run).collect()
    })
}

/// When the newest run that reached a decision (promoted or rejected) ended
/// (Unix ms): the last successful retrain, for `/metrics` after a restart.
pub async fn last_decided(store: &Store) -> Result<Option<i64>, StoreError> {
    let row: Option<(Option<i64>,)> = on_pool!(store, |pool| sqlx::query_as(
        "SELECT MAX(finished) FROM retrain_runs WHERE state IN ('promoted', 'rejected')",
    )
    .fetch_optional(pool)
    .await)?;
    Ok(row.and_then(|(t,)| t))
}

/// Marks runs left `running` by a stop or crash as failed; returns how many.
pub async fn interrupted(store: &Store, now: i64) -> Result<u64, StoreError> {
    let done = on_pool!(store, |pool| sqlx::query(
        "UPDATE retrain_runs SET state = $1, finished = $2, \
         error = 'the daemon stopped before the run finished' WHERE state = $3",
    )
    .bind(RunState::Failed)
    .bind(now)
    .bind(RunState::Running)
    .execute(pool)
    .await
    .map(|done| done.rows_affected()))?;
    Ok(done)
}

/// A labelled prediction: the features as logged and the label as given.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct LabelledRow {
    /// JSON object.
    pub features: String,
    /// JSON value (a class name or a number).
    pub label: String,
    /// When the prediction was made (Unix milliseconds).
    pub time: i64,
}

/// The newest `max_rows` labelled predictions made at or after `since`, oldest
/// first.
pub async fn labelled(
    store: &Store,
    since: i64,
    max_rows: usize,
) -> Result<Vec<LabelledRow>, StoreError> {
    labelled_before(store, since, i64::MAX, max_rows).await
}

/// Labelled predictions made at or after `since` (Unix ms).
pub async fn count_labelled(store: &Store, since: i64) -> Result<u64, StoreError> {
    let n: i64 = on_pool!(store, |pool| {
        sqlx::query_scalar(
        "SELECT COUNT(*) FROM feedback f JOIN predictions p ON p.id = f.prediction_id WHERE p.time >= $1",
    )
    .bind(since)
    .fetch_one(pool)
    .await
    })?;
    Ok(u64::try_from(n).unwrap_or(0))
}

/// The newest `max_rows` labelled predictions made at or after `since` and
/// before `before`, oldest first.
pub async fn labelled_before(
    store: &Store,
    since: i64,
    before: i64,
    max_rows: usize,
) -> Result<Vec<LabelledRow>, StoreError> {
    let limit = i64::try_from(max_rows).unwrap_or(i64::MAX);
    let mut rows = on_pool!(store, |pool| {
        sqlx::query_as::<_, LabelledRow>(
        "SELECT p.features, f.label, p.time FROM feedback f JOIN predictions p ON p.id = f.prediction_id \
         WHERE p.time >= $1 AND p.time < $2 ORDER BY p.time DESC, p.id DESC LIMIT $3",
    )
    .bind(since)
    .bind(before)
    .bind(limit)
    .fetch_all(pool)
    .await
    })?;
    rows.reverse();
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_run_is_stored_finished_listed_and_an_interrupted_one_marked_failed() {
        let dir = tempfile::tempdir().unwrap();
        let pool = super::super::open(&dir.path().join("r.db")).await.unwrap();
        let a = start(&pool, Trigger::Api, 1_000, None).await.unwrap();
        let b = start(&pool, Trigger::Schedule, 2_000, Some(1_500))
            .await
            .unwrap();
        let f = Finish {
            state: RunState::Rejected,
            rows: Some(300),
            metric: Some("accuracy".into()),
            live_metric: Some(0.9),
            candidate_metric: Some(f64::NAN),
            decision: Some("worse".into()),
            report: Some(serde_json::json!({"cv": {"mean": 0.5}})),
            ..Finish::default()
        };
        finish(&pool, a, &f, 1_500).await.unwrap();
        let got = get(&pool, a).await.unwrap().unwrap();
        assert_eq!(got.finished, Some(1_500));
        let got = got.outcome;
        assert_eq!(got.state, RunState::Rejected);
        assert_eq!(got.rows, Some(300));
        assert_eq!(got.live_metric, Some(0.9));
        // NaN is not stored as a number.
        assert_eq!(got.candidate_metric, None);
        assert_eq!(got.report.unwrap()["cv"]["mean"], 0.5);
        assert_eq!(interrupted(&pool, 3_000).await.unwrap(), 1);
        let b = get(&pool, b).await.unwrap().unwrap();
        assert_eq!(b.outcome.state, RunState::Failed);
        assert_eq!(b.trigger, Trigger::Schedule);
        assert_eq!(b.change_time, Some(1_500));
        // Stored as the names the API shows (and older rows hold).
        let stored: (String, String) =
            sqlx::query_as("SELECT state, trigger FROM retrain_runs WHERE id = $1")
                .bind(b.id)
                .fetch_one(pool.sqlite_pool().unwrap())
                .await
                .unwrap();
        assert_eq!(stored, ("failed".to_string(), "schedule".to_string()));
        assert!(b.outcome.error.unwrap().contains("stopped"));
        let ids: Vec<i64> = recent(&pool, 10)
            .await
            .unwrap()
            .iter()
            .map(|r| r.id)
            .collect();
        assert_eq!(ids, vec![b.id, a]);
        assert!(get(&pool, 99).await.unwrap().is_none());
    }
}
