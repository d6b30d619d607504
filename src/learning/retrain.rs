//! Retraining runs: gather the labelled window, train behind the gate, publish.
//!
//! A run (from the schedule, `POST /v1/retrain`, or a drift event) is
//! single-flight: [`start`] refuses while another holds the flight. It is a row of
//! `retrain_runs` from its first moment. Then:
//!
//! 1. The newest `training.max_rows` labelled predictions of the last
//!    `training.window_days` days: features as logged, labels from feedback. Fewer
//!    than `training.min_rows` skips the run with the reason stored and logged.
//! 2. The newest `training.holdout_share` of them are held out for the gate. The
//!    rest, plus rows of `model.bootstrap_data` making up `training.original_share`
//!    of the training set, go through k-fold CV, selection, the final fit and the
//!    compression pipeline (`train::select::train`), on a blocking thread.
//! 3. The gate scores the candidate and the live model on the held-out rows.
//!    Promoted: the candidate becomes the next major version and goes live.
//!
//! Failure is contained: an error, a panic, a non-finite metric or weight, or a
//! run past `training.time_limit_secs` leaves the live model serving, is stored
//! as `failed` and raises `retrain_failed`. A thread past its time limit cannot be
//! stopped; it keeps the flight until it ends, so no second run overlaps it, and
//! its result is thrown away.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde_json::Value;

use super::gate::Gate;
use super::{Kind, Learning};
use crate::config::{Config, BUNDLED_DATA};
use crate::data::Table;
use crate::live::LiveModel;
use crate::model::Model;
use crate::monitor::events::{Event, RetrainEvent};
use crate::store::retrain::{self as runs, Finish, LabelledRow, RunState, Trigger};
use crate::store::StoreError;
use crate::train::select::{self, TrainOptions};

/// What a run needs from the config.
#[derive(Debug, Clone)]
pub struct RetrainSettings {
    pub folds: usize,
    pub seed: u64,
    pub min_rows: usize,
    pub window: Duration,
    pub max_rows: usize,
    pub holdout_share: f64,
    pub original_share: f64,
    /// `model.bootstrap_data`: the original training data.
    pub original_data: String,
    pub gate: Gate,
    pub time_limit: Duration,
    pub max_metric_drop: f64,
    pub anomaly_level: f64,
    /// Training threads: half the cores, so that serving keeps the rest.
    pub threads: usize,
    /// A concept-drift run's wait for rows after the change, its limit, the
    /// share of older rows it adds, and how many more runs may follow a rejected one.
    pub min_rows_after_change: usize,
    pub change_wait: Duration,
    pub pre_change_share: f64,
    pub change_retries: u32,
}

impl RetrainSettings {
    pub fn from_config(c: &Config) -> RetrainSettings {
        let t = &c.training;
        RetrainSettings {
            folds: t.folds,
            seed: t.seed,
            min_rows: t.min_rows,
            window: Duration::from_secs(u64::from(t.window_days) * 86_400),
            max_rows: t.max_rows,
            holdout_share: t.holdout_share,
            original_share: t.original_share,
            original_data: c.model.bootstrap_data.clone(),
            gate: Gate {
                max_regression: t.max_regression,
                min_metric: t.min_metric,
            },
            time_limit: t.time_limit_secs.get(),
            max_metric_drop: c.compression.max_metric_drop,
            anomaly_level: c.drift.anomaly_level,
            threads: std::thread::available_parallelism().map_or(1, |n| (n.get() / 2).max(1)),
            min_rows_after_change: t.min_rows_after_change,
            change_wait: t.change_wait_secs.get(),
            pre_change_share: t.pre_change_share,
            change_retries: t.change_retries,
        }
    }
}

/// The answer to a request for a run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Started {
    /// The run's id in `retrain_runs`.
    Run(i64),
    /// Another run holds the flight.
    Busy,
}

/// Starts a run in the background unless one is running.
pub async fn start(
    learning: Arc<Learning>,
    settings: Arc<RetrainSettings>,
    trigger: Trigger,
) -> Result<Started, StoreError> {
    start_from(learning, settings, trigger, None).await
}

/// [`start`] for a run that trains on the rows predicted from `change_time` on
/// (Unix ms; `None`: the usual window).
pub async fn start_from(
    learning: Arc<Learning>,
    settings: Arc<RetrainSettings>,
    trigger: Trigger,
    change_time: Option<i64>,
) -> Result<Started, StoreError> {
    let Some(flight) = learning.flight.try_start() else {
        tracing::info!(
            %trigger,
            "retrain not started: another run is still in progress"
        );
        return Ok(Started::Busy);
    };
    let id = runs::start(
        &learning.db,
        trigger,
        crate::time::now_millis(),
        change_time,
    )
    .await?;
    tracing::info!(run = id, %trigger, change_time = change_time.map(crate::time::rfc3339), "retrain started");
    let flight = Arc::new(flight);
    tokio::spawn(async move {
        // The flight is held here until the run is recorded, and by the training
        // thread until it ends (past a time limit, that can be later).
        let held = flight.clone();
        let live = learning.slot.load_full();
        let finish = execute(&learning, &settings, live.clone(), flight, change_time).await;
        record(&learning, id, trigger, &live, finish).await;
        drop(held);
    });
    Ok(Started::Run(id))
}

/// Stores the end of the run, counts it, logs it and raises its event.
async fn record(learning: &Learning, id: i64, trigger: Trigger, live: &LiveModel, f: Finish) {
    let finished = crate::time::now_millis();
    if let Err(e) = runs::finish(&learning.db, id, &f, finished).await {
        tracing::error!(run = id, error = %e, "cannot store the end of a retrain run");
    }
    let stats = &learning.stats;
    let counter = match f.state {
        RunState::Promoted => &stats.retrain_promoted,
        RunState::Rejected => &stats.retrain_rejected,
        RunState::Skipped => &stats.retrain_skipped,
        RunState::Failed | RunState::Running => &stats.retrain_failed,
    };
    counter.fetch_add(1, Ordering::Relaxed);
    if matches!(f.state, RunState::Promoted | RunState::Rejected) {
        stats
            .retrain_last_decided_ms
            .store(finished, Ordering::Relaxed);
    }
    let reason = f.error.clone().or(f.decision.clone()).unwrap_or_default();
    match f.state {
        RunState::Skipped => {
            tracing::info!(run = id, %trigger, reason = %reason, "retrain skipped");
            return;
        }
        RunState::Failed | RunState::Running => {
            tracing::error!(run = id, %trigger, reason = %reason, "retrain failed; the live model keeps serving")
        }
        state => tracing::info!(
            run = id,
            %trigger,
            state = state.as_str(),
            live_metric = f.live_metric,
            candidate_metric = f.candidate_metric,
            reason = %reason,
            "retrain finished"
        ),
    }
    let event = RetrainEvent {
        run_id: id,
        trigger: trigger.to_string(),
        metric: f.metric.clone(),
        live_version: live.version.to_string(),
        live_metric: f.live_metric,
        candidate_metric: f.candidate_metric,
        candidate_version: f.candidate_version.clone(),
        reason,
        rows: f.rows.and_then(|r| u64::try_from(r).ok()),
        holdout_rows: f.holdout_rows.and_then(|r| u64::try_from(r).ok()),
        time: crate::time::now_millis(),
    };
    learning.monitoring.publish(match f.state {
        RunState::Promoted => Event::RetrainPromoted(event),
        RunState::Rejected => Event::RetrainRejected(event),
        RunState::Skipped | RunState::Failed | RunState::Running => Event::RetrainFailed(event),
    });
}

/// The candidate a run trained, scored on the held-out rows.
#[derive(Debug)]
struct Candidate {
    model: Model,
    report: Value,
    metric: &'static str,
    candidate_metric: f64,
    live_metric: f64,
    train_rows: usize,
    holdout_rows: usize,
}

/// The run itself; every way it can end is a [`Finish`].
async fn execute(
    learning: &Learning,
    settings: &Arc<RetrainSettings>,
    live: Arc<LiveModel>,
    flight: Arc<crate::scheduler::FlightGuard>,
    change_time: Option<i64>,
) -> Finish {
    let failed = |error: String| Finish {
        state: RunState::Failed,
        live_version: Some(live.version.to_string()),
        error: Some(error),
        ..Finish::default()
    };
    let window_ms = i64::try_from(settings.window.as_millis()).unwrap_or(i64::MAX);
    let since = crate::time::now_millis().saturating_sub(window_ms);
    let rows = match gather(learning, settings, since, change_time).await {
        Ok(rows) => rows,
        Err(e) => return failed(format!("reading the labelled rows: {e}")),
    };
    let n = rows.len() as i64;
    if rows.len() < settings.min_rows {
        return Finish {
            state: RunState::Skipped,
            rows: Some(n),
            live_version: Some(live.version.to_string()),
            decision: Some(format!(
                "{} labelled rows in the window, training.min_rows is {}",
                rows.len(),
                settings.min_rows
            )),
            ..Finish::default()
        };
    }
    let (job_settings, job_live) = (settings.clone(), live.clone());
    let job = move || {
        let result = train_candidate(&rows, &job_live, &job_settings);
        drop(flight);
        result
    };
    let candidate = match contain(settings.time_limit, job).await {
        Ok(c) => c,
        Err(message) => {
            return Finish {
                rows: Some(n),
                ..failed(message)
            }
        }
    };
    decide_and_publish(learning, settings, &live, n, candidate).await
}

/// The labelled rows a run trains and is gated on, oldest first: the newest
/// `training.max_rows` of the window; for a run after a change, those predicted
/// from `change_time` on, after `training.pre_change_share` of older ones (the
/// gate's held-out newest rows are then all from the new concept).
async fn gather(
    learning: &Learning,
    settings: &RetrainSettings,
    since: i64,
    change_time: Option<i64>,
) -> Result<Vec<LabelledRow>, StoreError> {
    let Some(change) = change_time else {
        return runs::labelled(&learning.db, since, settings.max_rows).await;
    };
    let after = runs::labelled(&learning.db, since.max(change), settings.max_rows).await?;
    let share = settings.pre_change_share;
    if share <= 0.0 {
        return Ok(after);
    }
    let older = ((after.len() as f64) * share / (1.0 - share)).round() as usize;
    let older = older.min(settings.max_rows.saturating_sub(after.len()));
    let mut rows = runs::labelled_before(&learning.db, since, change, older).await?;
    rows.extend(after);
    Ok(rows)
}

/// Puts `candidate` through the gate and, if it passes, makes it live.
async fn decide_and_publish(
    learning: &Learning,
    settings: &RetrainSettings,
    live: &LiveModel,
    rows: i64,
    candidate: Candidate,
) -> Finish {
    let decision = settings.gate.decide(
        candidate.metric,
        candidate.candidate_metric,
        candidate.live_metric,
    );
    let mut finish = Finish {
        state: if decision.promote {
            RunState::Promoted
        } else {
            RunState::Rejected
        },
        rows: Some(rows),
        train_rows: Some(candidate.train_rows as i64),
        holdout_rows: Some(candidate.holdout_rows as i64),
        metric: Some(candidate.metric.to_string()),
        live_version: Some(live.version.to_string()),
        live_metric: Some(candidate.live_metric),
        candidate_metric: Some(candidate.candidate_metric),
        candidate_version: None,
        decision: Some(decision.reason),
        report: Some(candidate.report),
        error: None,
    };
    if decision.promote {
        match learning
            .publish(candidate.model, Kind::Major, "retrain")
            .await
        {
            Ok(new) => finish.candidate_version = Some(new.version.to_string()),
            Err(e) => {
                finish.state = RunState::Failed;
                finish.error = Some(format!(
                    "the candidate passed the gate but could not go live: {e}"
                ));
            }
        }
    }
    finish
}

/// Runs `job` on a blocking thread and turns every way it can fail into a
/// message: its own error, a panic, or running past `limit` (the thread cannot be
/// stopped; its result is dropped when it ends).
pub async fn contain<T: Send + 'static>(
    limit: Duration,
    job: impl FnOnce() -> Result<T, String> + Send + 'static,
) -> Result<T, String> {
    match tokio::time::timeout(limit, tokio::task::spawn_blocking(job)).await {
        Err(_) => Err(format!(
            "ran past training.time_limit_secs ({} s); its result will be discarded",
            limit.as_secs_f64()
        )),
        Ok(Err(join)) if join.is_panic() => Err(format!(
            "training panicked: {}",
            panic_message(join.into_panic())
        )),
        Ok(Err(_)) => Err("training was cancelled".into()),
        Ok(Ok(result)) => result,
    }
}

/// Trains and scores the candidate (blocking). Errors are messages for the run's row.
fn train_candidate(
    rows: &[LabelledRow],
    live: &LiveModel,
    settings: &RetrainSettings,
) -> Result<Candidate, String> {
    let model = &live.model;
    let (labelled, skipped) = window_table(rows, model);
    if labelled.rows.len() < settings.min_rows {
        return Err(format!(
            "{} usable labelled rows ({skipped} could not be read), training.min_rows is {}",
            labelled.rows.len(),
            settings.min_rows
        ));
    }
    let (mut train, holdout) = split_newest(labelled, settings.holdout_share);
    if settings.original_share > 0.0 {
        let original = original_table(&settings.original_data, &train.headers)?;
        mix(&mut train, original, settings.original_share, settings.seed);
    }
    let options = TrainOptions {
        task: Some(model.meta.task),
        threads: settings.threads,
        max_metric_drop: Some(settings.max_metric_drop),
        anomaly_level: settings.anomaly_level,
        ..TrainOptions::new(&model.meta.label, settings.folds, settings.seed)
    };
    let trained = select::train(&train, &options).map_err(|e| e.to_string())?;
    check_finite(
        &trained.model,
        trained.report.cv.metric,
        trained.report.cv.mean,
    )?;
    let label = &model.meta.label;
    let scored =
        crate::train::evaluate(&trained.model, &holdout, label).map_err(|e| e.to_string())?;
    let live_scored = crate::train::evaluate(model, &holdout, label).map_err(|e| e.to_string())?;
    if !scored.value.is_finite() {
        return Err(format!(
            "the candidate's held-out {} is not a number",
            scored.metric
        ));
    }
    let report = serde_json::to_value(&trained.report).unwrap_or_default();
    Ok(Candidate {
        model: trained.model,
        report,
        metric: scored.metric,
        candidate_metric: scored.value,
        live_metric: live_scored.value,
        train_rows: train.rows.len(),
        holdout_rows: holdout.rows.len(),
    })
}

/// Refuses a model with a non-finite weight or CV score.
fn check_finite(model: &Model, metric: &str, cv: f64) -> Result<(), String> {
    if !super::finite_weights(model) {
        return Err("training produced non-finite weights (NaN or infinity)".into());
    }
    if !cv.is_finite() {
        return Err(format!("training produced a non-finite CV {metric} ({cv})"));
    }
    Ok(())
}

/// The labelled rows as a table with the model's feature columns and label,
/// oldest first; rows whose input or label cannot be read are counted and left out.
fn window_table(rows: &[LabelledRow], model: &Model) -> (Table, usize) {
    let mut headers: Vec<String> = model
        .schema
        .features
        .iter()
        .map(|f| f.name.clone())
        .collect();
    headers.push(model.meta.label.clone());
    let mut table = Table {
        path: "the retraining window".into(),
        headers,
        rows: Vec::with_capacity(rows.len()),
        lines: Vec::with_capacity(rows.len()),
    };
    let mut skipped = 0;
    for r in rows {
        let Ok(Value::Object(features)) = serde_json::from_str::<Value>(&r.features) else {
            skipped += 1;
            continue;
        };
        let label = match serde_json::from_str::<Value>(&r.label) {
            Ok(Value::String(s)) if !s.is_empty() => s,
            Ok(Value::Number(n)) => n.to_string(),
            _ => {
                skipped += 1;
                continue;
            }
        };
        let mut cells: Vec<String> = model
            .schema
            .features
            .iter()
            .map(|f| match features.get(&f.name) {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Number(n)) => n.to_string(),
                _ => String::new(),
            })
            .collect();
        cells.push(label);
        table.lines.push(table.rows.len() as u64 + 2);
        table.rows.push(cells);
    }
    (table, skipped)
}

/// Splits off the newest `share` of the rows (at least one) as the held-out set.
fn split_newest(mut table: Table, share: f64) -> (Table, Table) {
    let n = table.rows.len();
    let held = ((n as f64 * share).round() as usize).clamp(1, n.saturating_sub(1).max(1));
    let cut = n - held;
    let holdout = Table {
        path: format!("{} (held out)", table.path),
        headers: table.headers.clone(),
        rows: table.rows.split_off(cut),
        lines: table.lines.split_off(cut),
    };
    (table, holdout)
}

/// `model.bootstrap_data` with its columns in `headers`' order.
fn original_table(data: &str, headers: &[String]) -> Result<Table, String> {
    let table = if data == BUNDLED_DATA {
        Table::parse(BUNDLED_DATA, crate::BUNDLED_PENGUINS.as_bytes())
    } else {
        Table::read(std::path::Path::new(data))
    }
    .map_err(|e| format!("training.original_share: {e}"))?;
    let index: Vec<usize> = headers
        .iter()
        .map(|h| {
            table
                .headers
                .iter()
                .position(|t| t == h)
                .ok_or_else(|| format!("training.original_share: {data} has no column `{h}`"))
        })
        .collect::<Result<_, _>>()?;
    Ok(Table {
        rows: table
            .rows
            .iter()
            .map(|r| {
                index
                    .iter()
                    .map(|&i| r.get(i).cloned().unwrap_or_default())
                    .collect()
            })
            .collect(),
        headers: headers.to_vec(),
        ..table
    })
}

/// Adds a seeded sample of `original` so that it makes up `share` of `train`.
fn mix(train: &mut Table, mut original: Table, share: f64, seed: u64) {
    let want = (share / (1.0 - share) * train.rows.len() as f64).round() as usize;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    original.rows.shuffle(&mut rng);
    for row in original.rows.into_iter().take(want) {
        train.lines.push(train.rows.len() as u64 + 2);
        train.rows.push(row);
    }
}

fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn contain_turns_errors_and_panics_into_messages_and_passes_results() {
        assert_eq!(
            contain(Duration::from_secs(5), || Ok::<_, String>(7)).await,
            Ok(7)
        );
        let err = contain(Duration::from_secs(5), || {
            Err::<(), _>("no rows".to_string())
        })
        .await;
        assert_eq!(err, Err("no rows".to_string()));
        let panicked = contain(Duration::from_secs(5), || -> Result<(), String> {
            panic!("index out of bounds")
        })
        .await;
        assert_eq!(
            panicked,
            Err("training panicked: index out of bounds".to_string())
        );
    }

    #[tokio::test(start_paused = true)]
    async fn contain_gives_up_at_the_time_limit() {
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        // A job that runs until released. A blocking thread keeps tokio's paused
        // clock from advancing by itself, so the test moves it.
        let run = tokio::spawn(contain(Duration::from_secs(1800), move || {
            let _ = rx.recv();
            Ok::<_, String>(())
        }));
        // Let the task start its timer, then move the clock.
        tokio::task::yield_now().await;
        tokio::time::advance(Duration::from_secs(1799)).await;
        assert!(!run.is_finished(), "gave up before the limit");
        tokio::time::advance(Duration::from_secs(1)).await;
        let message = run.await.unwrap().unwrap_err();
        assert!(
            message.contains("ran past training.time_limit_secs (1800 s)"),
            "{message}"
        );
        tx.send(()).unwrap();
    }

    #[test]
    fn original_rows_are_reordered_to_the_window_and_mixed_at_the_share() {
        let headers: Vec<String> = [
            "sex",
            "island",
            "bill_length_mm",
            "bill_depth_mm",
            "flipper_length_mm",
            "body_mass_g",
            "label",
        ]
        .map(String::from)
        .to_vec();
        let original = original_table(BUNDLED_DATA, &headers).unwrap();
        assert_eq!(original.headers, headers);
        // The bundled file's first row: Torgersen,39.1,18.7,181,3750,male,Adelie.
        assert_eq!(
            original.rows[0],
            ["male", "Torgersen", "39.1", "18.7", "181", "3750", "Adelie"]
        );
        let missing = original_table(BUNDLED_DATA, &["wing_span".to_string()]).unwrap_err();
        assert!(missing.contains("has no column `wing_span`"), "{missing}");

        let mut train = Table {
            path: "window".into(),
            headers: headers.clone(),
            rows: vec![vec!["x".to_string(); 7]; 300],
            lines: (2..302).collect(),
        };
        // A quarter of the mixed set from the original data: 300 · 0.25 / 0.75 = 100.
        mix(&mut train, original.clone(), 0.25, 7);
        assert_eq!(train.rows.len(), 400);
        assert_eq!(train.lines.len(), 400);
        let added = &train.rows[300..];
        assert!(added.iter().all(|r| original.rows.contains(r)));
        // Seeded: the same sample every time.
        let mut again = Table {
            rows: train.rows[..300].to_vec(),
            lines: (2..302).collect(),
            ..train.clone()
        };
        mix(&mut again, original, 0.25, 7);
        assert_eq!(again.rows, train.rows);
    }

    #[test]
    fn the_newest_share_is_held_out() {
        let t = Table {
            path: "w".into(),
            headers: vec!["a".into()],
            rows: (0..10).map(|i| vec![i.to_string()]).collect(),
            lines: (2..12).collect(),
        };
        let (train, held) = split_newest(t, 0.2);
        assert_eq!(held.rows, [["8"], ["9"]]);
        assert_eq!(train.rows.len(), 8);
    }

    #[test]
    fn nan_weights_or_cv_are_refused() {
        let table =
            crate::data::Table::parse(BUNDLED_DATA, crate::BUNDLED_PENGUINS.as_bytes()).unwrap();
        let mut options = TrainOptions::new("label", 2, 1);
        options.grid = Some(vec![select::Candidate::Linear { alpha: 1.0 }]);
        let mut model = select::train(&table, &options).unwrap().model;
        assert_eq!(check_finite(&model, "accuracy", 0.9), Ok(()));
        assert!(check_finite(&model, "accuracy", f64::NAN)
            .unwrap_err()
            .contains("non-finite CV accuracy"));
        model.network.layers_mut()[0].weight[[0, 0]] = f32::NAN;
        assert!(check_finite(&model, "accuracy", 0.9)
            .unwrap_err()
            .contains("non-finite weights"));
    }
}
