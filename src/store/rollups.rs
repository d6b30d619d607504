//! Per-minute rollups of the prediction log and of feedback (migration 0006), so
//! that the dashboard's endpoints read a row per minute instead of scanning
//! `predictions`.
//!
//! - `prediction_rollups`: per minute (Unix ms of its start) and model version,
//!   predictions, anomalies (answers that said `anomaly: true`), the sum of
//!   `latency_us` and its histogram over [`LATENCY_BOUNDS_US`]. The log writer
//!   (`writer::sqlite`) adds a batch's [`Tally`] in the transaction that inserts
//!   the batch's rows, one upsert per (minute, version), so rows and rollups are
//!   committed together or not at all (a `kill -9` cannot leave them apart).
//! - `feedback_rollups`: per minute in which labels arrived and the labelled
//!   predictions' version, labels, correct classes and the sums of absolute and
//!   squared errors, written by the feedback committer (`feedback`) in its
//!   transaction. A replaced label takes its predecessor's [`Outcome`] out of
//!   the minute that predecessor arrived in, and adds its own to the current one.
//!
//! This module owns the buckets, the aggregation and the reads; it does not
//! decide windows or percentiles' presentation (the `app` layer's dashboard
//! service does).

use std::fmt::Write as _;
use std::sync::{Arc, OnceLock};

use super::{Store, StoreError};

/// One minute, in milliseconds.
pub const MINUTE_MS: i64 = 60_000;

/// Upper bounds (inclusive, in µs) of the latency buckets: about ten per decade
/// from 1 µs to 10 ms (integer microseconds: seven below 10 µs), then 20, 50 and
/// 100 ms and 1 s; one more bucket takes everything over 1 s. A percentile read
/// from them lies in the same bucket as the exact one, so within about a quarter
/// of it from 10 µs up. `lat_le_<bound>` and `lat_gt_1000000` are the columns.
pub const LATENCY_BOUNDS_US: [i64; 42] = [
    1, 2, 3, 4, 5, 6, 8, 10, 13, 16, 20, 25, 32, 40, 50, 63, 80, 100, 130, 160, 200, 250, 320, 400,
    500, 630, 800, 1_000, 1_300, 1_600, 2_000, 2_500, 3_200, 4_000, 5_000, 6_300, 8_000, 10_000,
    20_000, 50_000, 100_000, 1_000_000,
];

/// Latency buckets: one per bound and one over the last.
pub const LATENCY_BUCKETS: usize = LATENCY_BOUNDS_US.len() + 1;

/// The start of the minute `time` (Unix ms) falls in.
pub fn minute_of(time: i64) -> i64 {
    time.div_euclid(MINUTE_MS) * MINUTE_MS
}

/// The bucket of a latency: the first whose bound is at least `us`.
pub fn latency_bucket(us: i64) -> usize {
    LATENCY_BOUNDS_US.partition_point(|b| *b < us)
}

/// The latency columns of `prediction_rollups`, in bucket order.
pub fn latency_columns() -> Vec<String> {
    LATENCY_BOUNDS_US
        .iter()
        .map(|b| format!("lat_le_{b}"))
        .chain(std::iter::once(format!(
            "lat_gt_{}",
            LATENCY_BOUNDS_US[LATENCY_BOUNDS_US.len() - 1]
        )))
        .collect()
}

/// What some logged predictions add up to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PredictionCounts {
    pub predictions: i64,
    pub anomalies: i64,
    pub latency_us_sum: i64,
    /// Rows per latency bucket ([`LATENCY_BOUNDS_US`]).
    pub latency: [i64; LATENCY_BUCKETS],
}

impl Default for PredictionCounts {
    fn default() -> Self {
        PredictionCounts {
            predictions: 0,
            anomalies: 0,
            latency_us_sum: 0,
            latency: [0; LATENCY_BUCKETS],
        }
    }
}

impl PredictionCounts {
    /// Counts one row.
    pub fn add(&mut self, latency_us: i64, anomaly: bool) {
        self.predictions += 1;
        self.anomalies += i64::from(anomaly);
        self.latency_us_sum = self.latency_us_sum.saturating_add(latency_us);
        self.latency[latency_bucket(latency_us)] += 1;
    }

    /// Adds another set of counts.
    pub fn merge(&mut self, other: &PredictionCounts) {
        self.predictions += other.predictions;
        self.anomalies += other.anomalies;
        self.latency_us_sum = self.latency_us_sum.saturating_add(other.latency_us_sum);
        for (a, b) in self.latency.iter_mut().zip(other.latency) {
            *a += b;
        }
    }

    /// The `q` quantile of the latency in µs (nearest rank: the value of rank
    /// ⌈q·n⌉), estimated from the buckets: the rank's bucket is found exactly and
    /// the value placed within it linearly; over the last bound, that bound.
    /// `None` without rows.
    pub fn latency_quantile_us(&self, q: f64) -> Option<f64> {
        let n: i64 = self.latency.iter().sum();
        if n == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * n as f64).ceil() as i64).clamp(1, n);
        let mut below = 0i64;
        for (i, count) in self.latency.iter().enumerate() {
            if below + count >= rank {
                let Some(upper) = LATENCY_BOUNDS_US.get(i) else {
                    return Some(LATENCY_BOUNDS_US[LATENCY_BOUNDS_US.len() - 1] as f64);
                };
                let lower = if i == 0 { 0 } else { LATENCY_BOUNDS_US[i - 1] };
                let within = (rank - below) as f64 / *count as f64;
                return Some(lower as f64 + (upper - lower) as f64 * within);
            }
            below += count;
        }
        None
    }
}

/// What one batch of log rows adds, per (minute, model version). A batch spans
/// a minute or two and one version or two, so a short list searched in order
/// beats a map.
#[derive(Debug, Default)]
pub struct Tally {
    entries: Vec<(i64, Arc<str>, PredictionCounts)>,
}

impl Tally {
    /// Counts one logged row.
    pub fn add(&mut self, time: i64, version: &Arc<str>, latency_us: i64, anomaly: bool) {
        let minute = minute_of(time);
        let found = self
            .entries
            .iter_mut()
            .find(|(m, v, _)| *m == minute && (Arc::ptr_eq(v, version) || v == version));
        let counts = match found {
            Some((_, _, c)) => c,
            None => {
                self.entries
                    .push((minute, version.clone(), PredictionCounts::default()));
                let last = self.entries.len() - 1;
                &mut self.entries[last].2
            }
        };
        counts.add(latency_us, anomaly);
    }

    /// (minute, version, counts) in the order first seen.
    pub fn entries(&self) -> &[(i64, Arc<str>, PredictionCounts)] {
        &self.entries
    }
}

/// The upsert that adds one (minute, version)'s counts: parameters `$1` minute,
/// `$2` version, `$3` predictions, `$4` anomalies, `$5` latency sum, then one per
/// latency bucket (both backends, and rusqlite, take `$N`).
pub fn prediction_upsert_sql() -> &'static str {
    static SQL: OnceLock<String> = OnceLock::new();
    SQL.get_or_init(|| {
        let columns = latency_columns();
        let mut sql = String::from(
            "INSERT INTO prediction_rollups \
             (minute, model_version, predictions, anomalies, latency_us_sum",
        );
        for c in &columns {
            let _ = write!(sql, ", {c}");
        }
        sql.push_str(") VALUES ($1, $2, $3, $4, $5");
        for i in 0..columns.len() {
            let _ = write!(sql, ", ${}", i + 6);
        }
        sql.push_str(
            ") ON CONFLICT (minute, model_version) DO UPDATE SET \
             predictions = prediction_rollups.predictions + excluded.predictions, \
             anomalies = prediction_rollups.anomalies + excluded.anomalies, \
             latency_us_sum = prediction_rollups.latency_us_sum + excluded.latency_us_sum",
        );
        for c in &columns {
            let _ = write!(sql, ", {c} = prediction_rollups.{c} + excluded.{c}");
        }
        sql
    })
}

/// How one label fares against its prediction: it counts once, and is correct
/// (classification) or off by an error (regression).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Outcome {
    pub labels: i64,
    pub correct: i64,
    pub abs_error: f64,
    pub sq_error: f64,
}

impl Outcome {
    /// The label `label` (JSON text) given for the logged `output` (JSON text,
    /// `{"prediction", ..}`): a class label equal to the predicted class is
    /// correct; a numeric label's error is label - prediction. The migration's
    /// backfill computes the same in SQL.
    pub fn of(output: &str, label: &str) -> Outcome {
        #[derive(serde::Deserialize)]
        struct Output {
            prediction: serde_json::Value,
        }
        let mut o = Outcome {
            labels: 1,
            ..Outcome::default()
        };
        let Ok(out) = serde_json::from_str::<Output>(output) else {
            return o;
        };
        let Ok(label) = serde_json::from_str::<serde_json::Value>(label) else {
            return o;
        };
        match (&out.prediction, &label) {
            (serde_json::Value::String(p), serde_json::Value::String(l)) => {
                o.correct = i64::from(p == l);
            }
            (serde_json::Value::Number(p), serde_json::Value::Number(l)) => {
                if let (Some(p), Some(l)) = (p.as_f64(), l.as_f64()) {
                    let e = l - p;
                    o.abs_error = e.abs();
                    o.sq_error = e * e;
                }
            }
            _ => {}
        }
        o
    }

    /// The outcome taken away.
    pub fn negated(self) -> Outcome {
        Outcome {
            labels: -self.labels,
            correct: -self.correct,
            abs_error: -self.abs_error,
            sq_error: -self.sq_error,
        }
    }

    pub fn add(&mut self, other: Outcome) {
        self.labels += other.labels;
        self.correct += other.correct;
        self.abs_error += other.abs_error;
        self.sq_error += other.sq_error;
    }
}

/// Outcomes to add per (minute, model version), gathered over one transaction.
#[derive(Debug, Default)]
pub struct Outcomes {
    entries: Vec<(i64, String, Outcome)>,
}

impl Outcomes {
    pub fn add(&mut self, minute: i64, version: &str, outcome: Outcome) {
        match self
            .entries
            .iter_mut()
            .find(|(m, v, _)| *m == minute && v == version)
        {
            Some((_, _, o)) => o.add(outcome),
            None => self.entries.push((minute, version.to_string(), outcome)),
        }
    }

    /// The (minute, version, outcome) entries, in the order first added.
    pub fn entries(&self) -> &[(i64, String, Outcome)] {
        &self.entries
    }
}

/// The upsert that adds one (minute, version)'s label outcomes: `$1` minute,
/// `$2` version, `$3` labels, `$4` correct, `$5` absolute and `$6` squared error.
pub(super) const FEEDBACK_UPSERT: &str = "INSERT INTO feedback_rollups \
     (minute, model_version, labels, correct, abs_error_sum, sq_error_sum) \
     VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (minute, model_version) DO UPDATE SET \
     labels = feedback_rollups.labels + excluded.labels, \
     correct = feedback_rollups.correct + excluded.correct, \
     abs_error_sum = feedback_rollups.abs_error_sum + excluded.abs_error_sum, \
     sq_error_sum = feedback_rollups.sq_error_sum + excluded.sq_error_sum";

/// The prediction counts of every minute in `[from, to]` (minute starts) that
/// has any, summed over model versions, oldest first. Read through a
/// read-only rusqlite connection (`store::read`): a week is ten thousand rows of
/// fifty columns. The rows come in key order (minute, version) and a minute's
/// versions are added up here rather than by SQL's `GROUP BY`, which spent
/// more than the read itself on the sums.
pub async fn prediction_minutes(
    store: &Store,
    from: i64,
    to: i64,
) -> Result<Vec<(i64, PredictionCounts)>, StoreError> {
    let readers = match &store.db {
        super::Db::Sqlite { readers, .. } => readers,
        super::Db::Postgres { pool, .. } => {
            use sqlx::Row;
            let rows = sqlx::query(minutes_sql())
                .bind(from)
                .bind(to)
                .fetch_all(pool)
                .await?;
            let mut out: Vec<(i64, PredictionCounts)> = Vec::new();
            for row in &rows {
                let minute: i64 = row.try_get(0)?;
                let mut c = PredictionCounts {
                    predictions: row.try_get(1)?,
                    anomalies: row.try_get(2)?,
                    latency_us_sum: row.try_get(3)?,
                    ..PredictionCounts::default()
                };
                for (i, b) in c.latency.iter_mut().enumerate() {
                    *b = row.try_get(4 + i)?;
                }
                add_minute(&mut out, minute, c);
            }
            return Ok(out);
        }
    };
    readers
        .run(move |conn| {
            let mut stmt = conn.prepare_cached(minutes_sql())?;
            let mut rows = stmt.query((from, to))?;
            let mut out: Vec<(i64, PredictionCounts)> = Vec::new();
            while let Some(row) = rows.next()? {
                let minute: i64 = row.get(0)?;
                let mut c = PredictionCounts {
                    predictions: row.get(1)?,
                    anomalies: row.get(2)?,
                    latency_us_sum: row.get(3)?,
                    ..PredictionCounts::default()
                };
                for (i, b) in c.latency.iter_mut().enumerate() {
                    *b = row.get(4 + i)?;
                }
                add_minute(&mut out, minute, c);
            }
            Ok(out)
        })
        .await
}

/// Adds one (minute, version) row's counts to `out`, whose last entry is the
/// minute's sum so far when the rows come in minute order.
fn add_minute(out: &mut Vec<(i64, PredictionCounts)>, minute: i64, c: PredictionCounts) {
    match out.last_mut() {
        Some((m, sum)) if *m == minute => sum.merge(&c),
        _ => out.push((minute, c)),
    }
}

/// [`add_minute`] for label outcomes.
fn add_outcome(out: &mut Vec<(i64, Outcome)>, minute: i64, o: Outcome) {
    match out.last_mut() {
        Some((m, sum)) if *m == minute => sum.add(o),
        _ => out.push((minute, o)),
    }
}

fn minutes_sql() -> &'static str {
    static SQL: OnceLock<String> = OnceLock::new();
    SQL.get_or_init(|| {
        let mut sql = String::from("SELECT minute, predictions, anomalies, latency_us_sum");
        for c in latency_columns() {
            let _ = write!(sql, ", {c}");
        }
        sql.push_str(
            " FROM prediction_rollups WHERE minute >= $1 AND minute <= $2 \
             ORDER BY minute, model_version",
        );
        sql
    })
}

/// The feedback of every minute in `[from, to]` that has any, summed over model
/// versions, oldest first (read as [`prediction_minutes`] reads).
pub async fn feedback_minutes(
    store: &Store,
    from: i64,
    to: i64,
) -> Result<Vec<(i64, Outcome)>, StoreError> {
    const SQL: &str = "SELECT minute, labels, correct, abs_error_sum, sq_error_sum \
                       FROM feedback_rollups WHERE minute >= $1 AND minute <= $2 \
                       ORDER BY minute, model_version";
    let readers = match &store.db {
        super::Db::Sqlite { readers, .. } => readers,
        super::Db::Postgres { pool, .. } => {
            use sqlx::Row;
            let rows = sqlx::query(SQL).bind(from).bind(to).fetch_all(pool).await?;
            let mut out: Vec<(i64, Outcome)> = Vec::new();
            for row in &rows {
                let minute: i64 = row.try_get(0)?;
                let o = Outcome {
                    labels: row.try_get(1)?,
                    correct: row.try_get(2)?,
                    abs_error: row.try_get(3)?,
                    sq_error: row.try_get(4)?,
                };
                add_outcome(&mut out, minute, o);
            }
            return Ok(out);
        }
    };
    readers
        .run(move |conn| {
            let mut stmt = conn.prepare_cached(SQL)?;
            let mut rows = stmt.query((from, to))?;
            let mut out: Vec<(i64, Outcome)> = Vec::new();
            while let Some(row) = rows.next()? {
                let minute: i64 = row.get(0)?;
                let o = Outcome {
                    labels: row.get(1)?,
                    correct: row.get(2)?,
                    abs_error: row.get(3)?,
                    sq_error: row.get(4)?,
                };
                add_outcome(&mut out, minute, o);
            }
            Ok(out)
        })
        .await
}

/// Deletes the rollups of minutes before `cutoff` (a minute start).
pub(super) async fn delete_before(store: &Store, cutoff: i64) -> Result<(), StoreError> {
    on_pool!(store, |pool| sqlx::query(
        "DELETE FROM prediction_rollups WHERE minute < $1"
    )
    .bind(cutoff)
    .execute(pool)
    .await
    .map(|done| done.rows_affected()))?;
    on_pool!(store, |pool| sqlx::query(
        "DELETE FROM feedback_rollups WHERE minute < $1"
    )
    .bind(cutoff)
    .execute(pool)
    .await
    .map(|done| done.rows_affected()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_take_each_latency_once_at_its_bound() {
        assert_eq!(latency_bucket(0), 0);
        assert_eq!(latency_bucket(1), 0);
        assert_eq!(latency_bucket(2), 1);
        assert_eq!(latency_bucket(9), 7);
        assert_eq!(latency_bucket(10), 7);
        assert_eq!(latency_bucket(11), 8);
        assert_eq!(latency_bucket(1_000_000), LATENCY_BUCKETS - 2);
        assert_eq!(latency_bucket(1_000_001), LATENCY_BUCKETS - 1);
        assert!(LATENCY_BOUNDS_US.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(minute_of(119_999), 60_000);
        assert_eq!(minute_of(120_000), 120_000);
    }

    /// The estimate lies in the exact quantile's bucket, for every quantile of
    /// a spread of latencies.
    #[test]
    fn a_quantile_falls_in_the_bucket_of_the_exact_one() {
        let mut latencies: Vec<i64> = (0..5_000).map(|i| (i * i) % 1_700 + (i % 7)).collect();
        latencies.push(2_000_000);
        let mut c = PredictionCounts::default();
        for l in &latencies {
            c.add(*l, false);
        }
        latencies.sort_unstable();
        let n = latencies.len();
        for q in [0.0, 0.01, 0.25, 0.5, 0.9, 0.99, 0.999, 1.0] {
            let rank = ((q * n as f64).ceil() as usize).clamp(1, n);
            let exact = latencies[rank - 1];
            let estimate = c.latency_quantile_us(q).unwrap();
            let bucket = latency_bucket(exact);
            let lower = if bucket == 0 {
                0.0
            } else {
                LATENCY_BOUNDS_US[bucket - 1] as f64
            };
            let upper = LATENCY_BOUNDS_US
                .get(bucket)
                .map_or(f64::MAX, |b| *b as f64);
            assert!(
                (estimate >= lower && estimate <= upper)
                    || (bucket == LATENCY_BUCKETS - 1 && estimate == lower),
                "q {q}: exact {exact}, estimate {estimate}"
            );
        }
        assert_eq!(PredictionCounts::default().latency_quantile_us(0.5), None);
    }

    #[test]
    fn outcomes_of_classes_and_values() {
        let class = r#"{"prediction":"Gentoo","probabilities":{"Gentoo":0.9}}"#;
        assert_eq!(Outcome::of(class, "\"Gentoo\"").correct, 1);
        assert_eq!(Outcome::of(class, "\"Adelie\"").correct, 0);
        assert_eq!(Outcome::of(class, "\"Adelie\"").labels, 1);
        let value = Outcome::of(r#"{"prediction":2.5}"#, "4");
        assert_eq!((value.abs_error, value.sq_error), (1.5, 2.25));
        let mut all = Outcomes::default();
        all.add(0, "1", value);
        all.add(0, "1", value.negated());
        assert_eq!(all.entries[0].2, Outcome::default());
    }

    use crate::store::writer::{self, PredictionRow};

    fn logged(i: i64, time: i64, version: &str, latency_us: i64, score: f64) -> PredictionRow {
        PredictionRow {
            id: format!("p{i:05}"),
            time,
            model_version: Arc::from(version),
            features: "{}".into(),
            output: if version == "r" {
                format!("{{\"prediction\":{}}}", i as f64 / 4.0)
            } else {
                format!("{{\"prediction\":\"{}\"}}", ["a", "b"][i as usize % 2])
            },
            latency_us,
            anomaly_score: Some(score),
            anomaly: score > 10.0,
        }
    }

    /// Rows over four minutes, two versions and every kind of latency.
    fn sample() -> Vec<PredictionRow> {
        let t0 = 1_700_000_000_000 - 1_700_000_000_000 % MINUTE_MS;
        (0..600i64)
            .map(|i| {
                let version = if i % 5 == 0 { "r" } else { "1" };
                let latency = [0, 1, 2, 9, 10, 11, 640, 1_000_001][i as usize % 8] + i % 3;
                logged(i, t0 + i * 400, version, latency, (i % 13) as f64)
            })
            .collect()
    }

    /// The rollups of every minute, as stored, by (minute, version).
    async fn stored(store: &Store) -> Vec<Vec<i64>> {
        use sqlx::Row;
        let mut sql = String::from("SELECT minute, predictions, anomalies, latency_us_sum");
        for c in latency_columns() {
            let _ = write!(sql, ", {c}");
        }
        sql.push_str(" FROM prediction_rollups ORDER BY minute, model_version");
        let rows = sqlx::query(&sql)
            .fetch_all(store.sqlite_pool().unwrap())
            .await
            .unwrap();
        rows.iter()
            .map(|r| {
                (0..4 + LATENCY_BUCKETS)
                    .map(|i| r.get::<i64, _>(i))
                    .collect()
            })
            .collect()
    }

    /// The log writer's rollups are what SQL over the rows it wrote gives, in
    /// batches that split minutes and versions anywhere.
    #[tokio::test]
    async fn the_writers_rollups_count_exactly_its_rows() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::open(&dir.path().join("w.db")).await.unwrap();
        let rows = sample();
        for batch in rows.chunks(77) {
            writer::insert(&store, batch.to_vec()).await.unwrap();
        }
        let exact: Vec<(i64, i64, i64, i64)> = on_pool!(store, |pool| sqlx::query_as(
            "SELECT (time / 60000) * 60000, COUNT(*), SUM(anomaly), SUM(latency_us) \
             FROM predictions GROUP BY 1 ORDER BY 1",
        )
        .fetch_all(pool)
        .await)
        .unwrap();
        let minutes = prediction_minutes(&store, 0, i64::MAX).await.unwrap();
        let got: Vec<(i64, i64, i64, i64)> = minutes
            .iter()
            .map(|(m, c)| (*m, c.predictions, c.anomalies, c.latency_us_sum))
            .collect();
        assert_eq!(got, exact);
        for (minute, c) in &minutes {
            let latencies: Vec<i64> = on_pool!(store, |pool| sqlx::query_scalar(
                "SELECT latency_us FROM predictions WHERE time >= $1 AND time < $2",
            )
            .bind(minute)
            .bind(minute + MINUTE_MS)
            .fetch_all(pool)
            .await)
            .unwrap();
            let mut expected = [0i64; LATENCY_BUCKETS];
            for l in latencies {
                expected[latency_bucket(l)] += 1;
            }
            assert_eq!(c.latency, expected, "minute {minute}");
        }
        assert!(prediction_minutes(&store, 0, 1).await.unwrap().is_empty());
    }

    /// Upgrading a database that holds rows gives the rollups the writer and
    /// the committer would have written, the activation history and the drift
    /// reports' feature rows.
    #[tokio::test]
    async fn the_migration_backfills_what_the_writers_would_have_written() {
        let dir = tempfile::tempdir().unwrap();
        // A database at migration 5, with rows.
        let old = dir.path().join("migrations");
        std::fs::create_dir(&old).unwrap();
        let shipped = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations");
        for entry in std::fs::read_dir(&shipped).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_str().unwrap().to_string();
            if name.as_str() < "0006" {
                std::fs::copy(&path, old.join(name)).unwrap();
            }
        }
        let path = dir.path().join("old.db");
        let url = format!("sqlite://{}?mode=rwc", path.display());
        let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
        sqlx::migrate::Migrator::new(old.as_path())
            .await
            .unwrap()
            .run(&pool)
            .await
            .unwrap();
        let rows = sample();
        for r in &rows {
            sqlx::query(
                "INSERT INTO predictions (id, time, model_version, features, output, latency_us, \
                 anomaly_score) VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(&r.id)
            .bind(r.time)
            .bind(&*r.model_version)
            .bind(&r.features)
            .bind(&r.output)
            .bind(r.latency_us)
            .bind(r.anomaly_score)
            .execute(&pool)
            .await
            .unwrap();
        }
        // Labels for every third row, some right, some wrong, arriving over
        // two minutes.
        let mut expected = Outcomes::default();
        for r in rows.iter().step_by(3) {
            let label = match &*r.model_version {
                "r" => "2.25".to_string(),
                _ => format!("\"{}\"", if r.id.ends_with('0') { "b" } else { "a" }),
            };
            let time = r.time + 45_000;
            sqlx::query("INSERT INTO feedback (prediction_id, time, label) VALUES ($1, $2, $3)")
                .bind(&r.id)
                .bind(time)
                .bind(&label)
                .execute(&pool)
                .await
                .unwrap();
            expected.add(
                minute_of(time),
                &r.model_version,
                Outcome::of(&r.output, &label),
            );
        }
        // Version 1's threshold is in its drift reports; version r was never
        // checked. The report names two features and the output.
        let report = serde_json::json!({
            "anomaly": {"threshold": 10.0},
            "features": [
                {"name": "a", "statistic": 0.5, "p_value": 0.001, "p_adjusted": 0.002,
                 "psi": 0.3, "drift": true},
                {"name": "b", "statistic": null, "p_value": null, "p_adjusted": null,
                 "psi": null, "drift": false}
            ],
            "prediction": {"name": "prediction", "statistic": 1.0, "p_value": 0.5,
                           "p_adjusted": 0.5, "psi": 0.01, "drift": false}
        });
        sqlx::query(
            "INSERT INTO drift_reports (time, model_version, window_rows, drift, dataset_drift, \
             report) VALUES (1, '1', 10, 1, 0, $1)",
        )
        .bind(report.to_string())
        .execute(&pool)
        .await
        .unwrap();
        sqlx::query(
            "INSERT INTO models (version, created, path, metrics, status, source, activated) \
             VALUES ('1', 1000, 'a', '{}', 'inactive', 'bootstrap', 1001), \
                    ('2', 2000, 'b', '{}', 'inactive', 'retrain', 2001), \
                    ('3', 3000, 'c', '{}', 'inactive', 'upload', NULL), \
                    ('4', 4000, 'd', '{}', 'active', 'online', 4002)",
        )
        .execute(&pool)
        .await
        .unwrap();
        sqlx::query("UPDATE models SET activated = 900000 WHERE version = '1'")
            .execute(&pool)
            .await
            .unwrap();
        pool.close().await;

        let upgraded = crate::store::open(&path).await.unwrap();
        // The writer's rollups of the same rows, with version 1's threshold.
        let fresh = crate::store::open(&dir.path().join("fresh.db"))
            .await
            .unwrap();
        let flagged: Vec<PredictionRow> = rows
            .iter()
            .cloned()
            .map(|mut r| {
                r.anomaly = &*r.model_version == "1" && r.anomaly_score > Some(10.0);
                r
            })
            .collect();
        writer::insert(&fresh, flagged).await.unwrap();
        assert_eq!(stored(&upgraded).await, stored(&fresh).await);

        let got = sqlx::query_as::<_, (i64, String, i64, i64, f64, f64)>(
            "SELECT minute, model_version, labels, correct, abs_error_sum, sq_error_sum \
             FROM feedback_rollups ORDER BY minute, model_version",
        )
        .fetch_all(upgraded.sqlite_pool().unwrap())
        .await
        .unwrap();
        let mut want = expected.entries.clone();
        want.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
        assert_eq!(got.len(), want.len());
        for (g, (minute, version, o)) in got.iter().zip(&want) {
            assert_eq!(
                (g.0, &g.1, g.2, g.3),
                (*minute, version, o.labels, o.correct)
            );
            assert!((g.4 - o.abs_error).abs() < 1e-9 && (g.5 - o.sq_error).abs() < 1e-9);
        }
        assert!(want
            .iter()
            .any(|(_, v, o)| v == "1" && o.correct > 0 && o.correct < o.labels));
        assert!(want.iter().any(|(_, v, o)| v == "r" && o.abs_error > 0.0));

        let history = crate::store::registry::activations_since(&upgraded, 0)
            .await
            .unwrap();
        let history: Vec<(i64, &str, &str)> = history
            .iter()
            .map(|a| (a.time, a.version.as_str(), a.reason.as_str()))
            .collect();
        assert_eq!(
            history,
            [
                (2001, "2", "retrain"),
                (4002, "4", "online"),
                (900000, "1", "rollback")
            ]
        );

        let features = crate::store::drift::features_between(&upgraded, 0, i64::MAX)
            .await
            .unwrap();
        let names: Vec<(&str, bool, Option<f64>)> = features
            .iter()
            .map(|(_, f)| (f.feature.as_str(), f.drift, f.p_value))
            .collect();
        assert_eq!(
            names,
            [
                ("a", true, Some(0.001)),
                ("b", false, None),
                ("prediction", false, Some(0.5))
            ]
        );
        assert_eq!(features[2].1.subject, crate::store::drift::Subject::Output);
    }

    #[test]
    fn a_tally_keeps_one_entry_per_minute_and_version() {
        let (a, b): (Arc<str>, Arc<str>) = ("1".into(), "2".into());
        let mut t = Tally::default();
        t.add(1_000, &a, 5, true);
        t.add(59_999, &Arc::from("1"), 7, false);
        t.add(60_000, &a, 7, false);
        t.add(61_000, &b, 2_000_000, false);
        let e = t.entries();
        assert_eq!(e.len(), 3);
        assert_eq!((e[0].0, e[0].2.predictions, e[0].2.anomalies), (0, 2, 1));
        assert_eq!(e[0].2.latency_us_sum, 12);
        assert_eq!(e[2].2.latency[LATENCY_BUCKETS - 1], 1);
    }
}
