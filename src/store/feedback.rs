//! Feedback labels, joined to logged predictions by id. A second, different label
//! for the same prediction replaces the first and counts a revision: labels get
//! corrected upstream, and the newest is the one to learn from. The same label
//! sent again (a client retrying) changes nothing and is reported as unchanged,
//! so that a label is learned from once however often it arrives.
//!
//! Each stored label's outcome (correct or not, its error) is added to
//! `feedback_rollups` in the same transaction, in the minute the label arrived;
//! a replaced label's outcome is taken out of the minute it had arrived in.
//!
//! Writes go through one [`Committer`] task that commits the labels of every
//! request waiting at that moment in one transaction (group commit) and then
//! answers each request: SQLite has one writer, and a transaction per request
//! left concurrent requests queueing on its lock (about 600 single-label requests
//! a second). A request is answered only after its labels are committed.

use std::collections::HashMap;

use sqlx::QueryBuilder;
use tokio::sync::{mpsc, oneshot};

use super::rollups::{self, Outcome, Outcomes};
use super::{Store, StoreError};

/// One label for one prediction. `label` is JSON text (a string or a number).
#[derive(Debug, Clone)]
pub struct FeedbackRow {
    pub prediction_id: String,
    pub label: String,
}

/// What storing one label did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LabelOutcome {
    /// The prediction had no label before.
    New,
    /// It had a different label, now replaced (one more revision).
    Replaced,
    /// It had this very label already: nothing was written.
    Unchanged,
}

/// A logged prediction that a label refers to.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Logged {
    pub id: String,
    pub model_version: String,
    /// The answer as JSON text (`prediction`, `probabilities`).
    pub output: String,
    /// The input as logged (JSON object).
    pub features: String,
    /// When it was answered (Unix ms).
    pub time: i64,
}

/// The logged predictions among `ids` (in no particular order).
pub async fn logged(store: &Store, ids: &[&str]) -> Result<Vec<Logged>, StoreError> {
    let mut known = Vec::with_capacity(ids.len());
    for chunk in super::standard_chunks(ids) {
        let rows = on_pool!(store, |pool| {
            let mut q: QueryBuilder<DB> = QueryBuilder::new(
                "SELECT id, model_version, output, features, time FROM predictions WHERE id IN (",
            );
            let mut sep = q.separated(", ");
            for id in chunk {
                sep.push_bind(*id);
            }
            q.push(")");
            q.build_query_as::<Logged>().fetch_all(pool).await
        })?;
        known.extend(rows);
    }
    Ok(known)
}

/// A stored label as the leader's online learner reads it from the database
/// (several replicas on PostgreSQL): its place in (time, prediction id) order,
/// the prediction's logged input and the label.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct FedLabel {
    pub time: i64,
    pub prediction_id: String,
    pub features: String,
    pub label: String,
    /// The prediction's output (JSON), model version and time (Unix ms).
    pub output: String,
    pub model_version: String,
    pub predicted: i64,
}

/// Where the learner is: the (time, prediction id) of the last label handed to
/// it (`learner_cursor`).
pub async fn learner_cursor(store: &Store) -> Result<(i64, String), StoreError> {
    Ok(on_pool!(store, |pool| sqlx::query_as(
        "SELECT time, prediction_id FROM learner_cursor WHERE id = 1"
    )
    .fetch_one(pool)
    .await)?)
}

/// Moves the learner's cursor to `at`.
pub async fn set_learner_cursor(store: &Store, at: (i64, &str)) -> Result<(), StoreError> {
    on_pool!(store, |pool| sqlx::query(
        "UPDATE learner_cursor SET time = $1, prediction_id = $2 WHERE id = 1"
    )
    .bind(at.0)
    .bind(at.1)
    .execute(pool)
    .await
    .map(|done| done.rows_affected()))?;
    Ok(())
}

/// Up to `limit` labels stored after `after` in (time, prediction id) order and
/// at or before `until` (Unix ms), with their predictions' inputs and outputs.
pub async fn labels_after(
    store: &Store,
    after: (i64, &str),
    until: i64,
    limit: i64,
) -> Result<Vec<FedLabel>, StoreError> {
    Ok(on_pool!(store, |pool| sqlx::query_as::<_, FedLabel>(
        "SELECT f.time, f.prediction_id, p.features, f.label, p.output, p.model_version, \
         p.time AS predicted FROM feedback f \
         JOIN predictions p ON p.id = f.prediction_id \
         WHERE (f.time > $1 OR (f.time = $1 AND f.prediction_id > $2)) AND f.time <= $3 \
         ORDER BY f.time, f.prediction_id LIMIT $4"
    )
    .bind(after.0)
    .bind(after.1)
    .bind(until)
    .bind(limit)
    .fetch_all(pool)
    .await)?)
}

/// Labels waiting for the committer, at most this many requests.
const QUEUE: usize = 4096;
/// Labels committed in one transaction, at most (a request is never split).
const MAX_ROWS: usize = 10_000;

type Reply = oneshot::Sender<Result<Vec<LabelOutcome>, (String, bool)>>;

/// The handle requests store labels through.
#[derive(Debug, Clone)]
pub struct Committer {
    tx: mpsc::Sender<(Vec<FeedbackRow>, Reply)>,
}

impl Committer {
    /// Starts the committer task; it ends when every handle is dropped, after
    /// committing what was sent.
    pub fn spawn(store: Store) -> (Committer, tokio::task::JoinHandle<()>) {
        let (tx, mut rx) = mpsc::channel::<(Vec<FeedbackRow>, Reply)>(QUEUE);
        let task = tokio::spawn(async move {
            while let Some(first) = rx.recv().await {
                let mut group = vec![first];
                let mut rows = group[0].0.len();
                while rows < MAX_ROWS {
                    match rx.try_recv() {
                        Ok(next) => {
                            rows += next.0.len();
                            group.push(next);
                        }
                        Err(_) => break,
                    }
                }
                let batches: Vec<&[FeedbackRow]> =
                    group.iter().map(|(r, _)| r.as_slice()).collect();
                let result = match upsert_groups(&store, &batches).await {
                    // One request's failure must not fail the others: alone, each
                    // gets its own answer.
                    Err(_) if group.len() > 1 => {
                        let mut each = Vec::with_capacity(group.len());
                        for rows in &batches {
                            each.push(
                                upsert_groups(&store, &[rows])
                                    .await
                                    .map(|mut n| n.pop().unwrap_or_default()),
                            );
                        }
                        each
                    }
                    Err(e) => vec![Err(e)],
                    Ok(outcomes) => outcomes.into_iter().map(Ok).collect(),
                };
                for ((_, reply), r) in group.into_iter().zip(result) {
                    let _ = reply.send(r.map_err(|e| (e.to_string(), e.is_unavailable())));
                }
            }
        });
        (Committer { tx }, task)
    }

    /// Stores `rows` (committed when this returns `Ok`); returns what storing
    /// each row did, in order.
    pub async fn store(&self, rows: Vec<FeedbackRow>) -> Result<Vec<LabelOutcome>, StoreError> {
        let (reply, answer) = oneshot::channel();
        let gone = || StoreError::Committer {
            message: "the feedback committer has stopped".into(),
            unavailable: true,
        };
        self.tx.send((rows, reply)).await.map_err(|_| gone())?;
        answer
            .await
            .map_err(|_| gone())?
            .map_err(|(message, unavailable)| StoreError::Committer {
                message,
                unavailable,
            })
    }
}

/// Stores every group's labels in one transaction; returns, per group, what
/// storing each of its rows did (a later group that labels the same prediction
/// sees the earlier group's label).
async fn upsert_groups(
    store: &Store,
    groups: &[&[FeedbackRow]],
) -> Result<Vec<Vec<LabelOutcome>>, StoreError> {
    upsert_groups_at(store, groups, crate::time::now_millis()).await
}

/// [`upsert_groups`] with the labels arriving at `now` (Unix ms); their
/// outcomes are added to `feedback_rollups` in the same transaction.
async fn upsert_groups_at(
    store: &Store,
    groups: &[&[FeedbackRow]],
    now: i64,
) -> Result<Vec<Vec<LabelOutcome>>, StoreError> {
    use super::Pool as _;
    let minute = rollups::minute_of(now);
    on_pool!(store, |pool| {
        let mut tx = pool.begin_write().await?;
        let mut all = Vec::with_capacity(groups.len());
        let mut rollup = Outcomes::default();
        for rows in groups {
            let mut outcomes = Vec::with_capacity(rows.len());
            for chunk in super::standard_chunks(rows) {
                let mut q: QueryBuilder<DB> = QueryBuilder::new(
                    "SELECT p.id, p.model_version, p.output, f.label, f.time FROM predictions p \
                     LEFT JOIN feedback f ON f.prediction_id = p.id WHERE p.id IN (",
                );
                let mut sep = q.separated(", ");
                for r in chunk {
                    sep.push_bind(&r.prediction_id);
                }
                q.push(")");
                let mut stored: HashMap<String, Target> = q
                    .build_query_as::<Target>()
                    .fetch_all(&mut *tx)
                    .await?
                    .into_iter()
                    .map(|t| (t.id.clone(), t))
                    .collect();
                let mut changed = Vec::with_capacity(chunk.len());
                for r in chunk {
                    // An unknown prediction: the INSERT below fails on its foreign key.
                    let Some(target) = stored.get_mut(&r.prediction_id) else {
                        changed.push(r);
                        outcomes.push(LabelOutcome::New);
                        continue;
                    };
                    let outcome = match (&target.label, target.time) {
                        (None, _) | (_, None) => LabelOutcome::New,
                        (Some(label), _) if *label == r.label => LabelOutcome::Unchanged,
                        (Some(_), _) => LabelOutcome::Replaced,
                    };
                    if outcome != LabelOutcome::Unchanged {
                        // The label replaced leaves the minute it arrived in.
                        if let (Some(label), Some(time)) = (&target.label, target.time) {
                            let old = Outcome::of(&target.output, label).negated();
                            rollup.add(rollups::minute_of(time), &target.model_version, old);
                        }
                        let new = Outcome::of(&target.output, &r.label);
                        rollup.add(minute, &target.model_version, new);
                        // A row labelling the same prediction again within this chunk
                        // compares with this label, as a later request would.
                        target.label = Some(r.label.clone());
                        target.time = Some(now);
                        changed.push(r);
                    }
                    outcomes.push(outcome);
                }
                // One statement per distinct prediction would be needed if a chunk held
                // the same id twice (an upsert cannot touch one row twice); apply such
                // rows one by one, in order.
                let runs = distinct_runs(&changed);
                for part in runs
                    .iter()
                    .flat_map(|run| super::standard_chunks(run.as_slice()))
                {
                    let mut q: QueryBuilder<DB> =
                        QueryBuilder::new("INSERT INTO feedback (prediction_id, time, label) ");
                    q.push_values(part, |mut b, r| {
                        b.push_bind(&r.prediction_id)
                            .push_bind(now)
                            .push_bind(&r.label);
                    });
                    q.push(
                        " ON CONFLICT (prediction_id) DO UPDATE SET time = excluded.time, \
                         label = excluded.label, revisions = feedback.revisions + 1",
                    );
                    q.build().execute(&mut *tx).await?;
                }
            }
            all.push(outcomes);
        }
        for (minute, version, o) in rollup.entries() {
            sqlx::query(rollups::FEEDBACK_UPSERT)
                .bind(minute)
                .bind(version)
                .bind(o.labels)
                .bind(o.correct)
                .bind(o.abs_error)
                .bind(o.sq_error)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(all)
    })
}

#[derive(sqlx::FromRow)]
struct Target {
    id: String,
    model_version: String,
    output: String,
    label: Option<String>,
    time: Option<i64>,
}

fn distinct_runs<'a>(rows: &[&'a FeedbackRow]) -> Vec<Vec<&'a FeedbackRow>> {
    let mut runs: Vec<Vec<&FeedbackRow>> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for r in rows {
        if runs.is_empty() || !seen.insert(r.prediction_id.as_str()) {
            seen.clear();
            seen.insert(r.prediction_id.as_str());
            runs.push(Vec::new());
        }
        if let Some(run) = runs.last_mut() {
            run.push(r);
        }
    }
    runs
}

#[cfg(test)]
mod tests {
    use super::LabelOutcome::{New, Replaced, Unchanged};
    use super::*;

    #[tokio::test]
    async fn concurrent_requests_are_committed_together_and_each_gets_its_count() {
        let dir = tempfile::tempdir().unwrap();
        let pool = super::super::open(&dir.path().join("f.db")).await.unwrap();
        for i in 0..200 {
            sqlx::query(
                "INSERT INTO predictions (id, time, model_version, features, output, latency_us) \
                 VALUES ($1, 0, '1', '{}', '{}', 0)",
            )
            .bind(format!("p{i}"))
            .execute(pool.sqlite_pool().unwrap())
            .await
            .unwrap();
        }
        let (committer, task) = Committer::spawn(pool.clone());
        let row = |i: usize, label: &str| FeedbackRow {
            prediction_id: format!("p{i}"),
            label: format!("\"{label}\""),
        };
        // 200 single-label requests at once, then 50 of them again.
        let first = futures_join(&committer, (0..200).map(|i| vec![row(i, "a")]).collect()).await;
        assert!(first.iter().all(|r| *r == [New]), "{first:?}");
        let again = futures_join(&committer, (0..50).map(|i| vec![row(i, "b")]).collect()).await;
        assert!(again.iter().all(|r| *r == [Replaced]), "{again:?}");
        // The same label again is a retry: nothing written, no revision.
        let retry = futures_join(&committer, (0..50).map(|i| vec![row(i, "b")]).collect()).await;
        assert!(retry.iter().all(|r| *r == [Unchanged]), "{retry:?}");
        let (n, b): (i64, i64) =
            sqlx::query_as("SELECT COUNT(*), SUM(label = '\"b\"' AND revisions = 1) FROM feedback")
                .fetch_one(pool.sqlite_pool().unwrap())
                .await
                .unwrap();
        assert_eq!((n, b), (200, 50));
        // An unknown prediction fails its own request, not the others sent with it.
        let c2 = committer.clone();
        let bad = tokio::spawn(async move { c2.store(vec![row(999, "a")]).await });
        let good = futures_join(&committer, (50..60).map(|i| vec![row(i, "c")]).collect()).await;
        assert!(good.iter().all(|r| *r == [Replaced]), "{good:?}");
        let err = bad.await.unwrap().unwrap_err();
        assert!(err.to_string().contains("FOREIGN KEY"), "{err}");
        drop(committer);
        task.await.unwrap();
    }

    /// Lookups and label batches of every size from 1 to 300 give the right
    /// answers and leave SQLite's memory bounded (one prepared statement per
    /// distinct size would hold megabytes: see `store::CHUNK_SIZES`).
    #[tokio::test]
    async fn batches_of_every_size_are_answered_and_keep_sqlites_memory_bounded() {
        let _alone = super::super::tests::SQLITE_MEMORY.lock().await;
        let dir = tempfile::tempdir().unwrap();
        let store = super::super::open(&dir.path().join("f.db")).await.unwrap();
        let total: usize = (1..=300).sum();
        let predictions: Vec<crate::store::writer::PredictionRow> = (0..total)
            .map(|i| crate::store::writer::PredictionRow {
                id: format!("p{i}"),
                time: 0,
                model_version: std::sync::Arc::from("1"),
                features: "{}".into(),
                output: "{}".into(),
                latency_us: 0,
                anomaly_score: None,
                anomaly: false,
            })
            .collect();
        crate::store::writer::insert(&store, predictions)
            .await
            .unwrap();
        let (committer, task) = Committer::spawn(store.clone());
        let before = super::super::sqlite_memory_bytes();
        let mut next = 0;
        for n in 1..=300 {
            let ids: Vec<String> = (next..next + n).map(|i| format!("p{i}")).collect();
            let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
            assert_eq!(logged(&store, &refs).await.unwrap().len(), n);
            let rows = ids
                .iter()
                .map(|id| FeedbackRow {
                    prediction_id: id.clone(),
                    label: "\"a\"".into(),
                })
                .collect();
            assert_eq!(committer.store(rows).await.unwrap(), vec![New; n]);
            next += n;
        }
        let after = super::super::sqlite_memory_bytes();
        // One statement per size: about 30 MB more; the standard sizes: under 1.
        assert!(after < before + 10_000_000, "{before} -> {after}");
        let stored: i64 = on_pool!(store, |pool| sqlx::query_scalar(
            "SELECT COUNT(*) FROM feedback"
        )
        .fetch_one(pool)
        .await)
        .unwrap();
        assert_eq!(stored as usize, total);
        drop(committer);
        task.await.unwrap();
    }

    #[tokio::test]
    async fn one_request_labelling_a_prediction_twice_is_stored_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let pool = super::super::open(&dir.path().join("f.db")).await.unwrap();
        sqlx::query(
            "INSERT INTO predictions (id, time, model_version, features, output, latency_us) \
             VALUES ('p', 0, '1', '{}', '{}', 0)",
        )
        .execute(pool.sqlite_pool().unwrap())
        .await
        .unwrap();
        let (committer, task) = Committer::spawn(pool.clone());
        let row = |label: &str| FeedbackRow {
            prediction_id: "p".into(),
            label: format!("\"{label}\""),
        };
        let outcomes = committer
            .store(vec![row("a"), row("a"), row("b"), row("b"), row("a")])
            .await
            .unwrap();
        assert_eq!(outcomes, [New, Unchanged, Replaced, Unchanged, Replaced]);
        let (label, revisions): (String, i64) =
            sqlx::query_as("SELECT label, revisions FROM feedback WHERE prediction_id = 'p'")
                .fetch_one(pool.sqlite_pool().unwrap())
                .await
                .unwrap();
        assert_eq!((label.as_str(), revisions), ("\"a\"", 2));
        drop(committer);
        task.await.unwrap();
    }

    /// A replaced label's outcome leaves the minute its predecessor arrived in
    /// and is counted in its own; the same label again changes nothing.
    #[tokio::test]
    async fn a_replaced_label_moves_its_outcome_to_its_own_minute() {
        let dir = tempfile::tempdir().unwrap();
        let store = super::super::open(&dir.path().join("f.db")).await.unwrap();
        for (id, version, output) in [
            ("c", "1", r#"{"prediction":"a"}"#),
            ("r", "2", r#"{"prediction":1.5}"#),
        ] {
            sqlx::query(
                "INSERT INTO predictions (id, time, model_version, features, output, latency_us) \
                 VALUES ($1, 0, $2, '{}', $3, 0)",
            )
            .bind(id)
            .bind(version)
            .bind(output)
            .execute(store.sqlite_pool().unwrap())
            .await
            .unwrap();
        }
        let label = |id: &str, label: &str| FeedbackRow {
            prediction_id: id.into(),
            label: label.into(),
        };
        let minute = 60_000;
        let at = |rows: Vec<FeedbackRow>, t: i64| {
            let store = store.clone();
            async move { upsert_groups_at(&store, &[&rows], t).await.unwrap() }
        };
        at(vec![label("c", "\"a\""), label("r", "2")], minute + 5).await;
        at(vec![label("c", "\"b\""), label("r", "3.5")], 3 * minute + 1).await;
        at(vec![label("c", "\"b\"")], 4 * minute).await;
        let rollups: Vec<(i64, String, i64, i64, f64, f64)> =
            on_pool!(store, |pool| sqlx::query_as(
                "SELECT minute, model_version, labels, correct, abs_error_sum, sq_error_sum \
             FROM feedback_rollups ORDER BY minute, model_version",
            )
            .fetch_all(pool)
            .await)
            .unwrap();
        assert_eq!(
            rollups,
            vec![
                (minute, "1".into(), 0, 0, 0.0, 0.0),
                (minute, "2".into(), 0, 0, 0.0, 0.0),
                (3 * minute, "1".into(), 1, 0, 0.0, 0.0),
                (3 * minute, "2".into(), 1, 0, 2.0, 4.0),
            ]
        );
    }

    async fn futures_join(
        c: &Committer,
        requests: Vec<Vec<FeedbackRow>>,
    ) -> Vec<Vec<LabelOutcome>> {
        let handles: Vec<_> = requests
            .into_iter()
            .map(|rows| {
                let c = c.clone();
                tokio::spawn(async move { c.store(rows).await.unwrap() })
            })
            .collect();
        let mut out = Vec::new();
        for h in handles {
            out.push(h.await.unwrap());
        }
        out
    }
}
