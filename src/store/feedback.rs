//! Feedback labels, joined to logged predictions by id. A second label for the
//! same prediction replaces the first and counts a revision: labels get corrected
//! upstream, and the newest is the one to learn from.

use sqlx::{QueryBuilder, Sqlite, SqlitePool};

use super::StoreError;

/// One label for one prediction. `label` is JSON text (a string or a number).
#[derive(Debug, Clone)]
pub struct FeedbackRow {
    pub prediction_id: String,
    pub label: String,
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
}

/// The logged predictions among `ids` (in no particular order).
pub async fn logged(pool: &SqlitePool, ids: &[&str]) -> Result<Vec<Logged>, StoreError> {
    let mut known = Vec::with_capacity(ids.len());
    for chunk in ids.chunks(500) {
        let mut q: QueryBuilder<Sqlite> = QueryBuilder::new(
            "SELECT id, model_version, output, features FROM predictions WHERE id IN (",
        );
        let mut sep = q.separated(", ");
        for id in chunk {
            sep.push_bind(*id);
        }
        q.push(")");
        known.extend(q.build_query_as::<Logged>().fetch_all(pool).await?);
    }
    Ok(known)
}

/// Stores the labels in one transaction; returns how many replaced an earlier label.
/// The transaction takes the write lock at its start (`BEGIN IMMEDIATE`): a
/// deferred one that reads first fails at once with `SQLITE_BUSY_SNAPSHOT` when
/// another connection commits between its read and its write, instead of waiting
/// out the busy timeout.
pub async fn upsert(pool: &SqlitePool, rows: &[FeedbackRow]) -> Result<u64, StoreError> {
    let now = crate::time::now_millis();
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
    let mut replaced = 0;
    for chunk in rows.chunks(500) {
        let ids: Vec<&str> = chunk.iter().map(|r| r.prediction_id.as_str()).collect();
        let mut q: QueryBuilder<Sqlite> =
            QueryBuilder::new("SELECT COUNT(*) FROM feedback WHERE prediction_id IN (");
        let mut sep = q.separated(", ");
        for id in &ids {
            sep.push_bind(*id);
        }
        q.push(")");
        let (existing,): (i64,) = q.build_query_as().fetch_one(&mut *tx).await?;
        replaced += existing as u64;
        let mut q: QueryBuilder<Sqlite> =
            QueryBuilder::new("INSERT INTO feedback (prediction_id, time, label) ");
        q.push_values(chunk, |mut b, r| {
            b.push_bind(&r.prediction_id)
                .push_bind(now)
                .push_bind(&r.label);
        });
        q.push(
            " ON CONFLICT (prediction_id) DO UPDATE SET time = excluded.time, label = excluded.label, \
             revisions = revisions + 1",
        );
        q.build().execute(&mut *tx).await?;
    }
    tx.commit().await?;
    Ok(replaced)
}
