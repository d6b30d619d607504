//! The daemon side of monitoring: the periodic drift job, the concept-drift task
//! fed by feedback, and the event channel both publish on.
//!
//! - The drift job wakes every `drift.interval_secs`, reads the last `drift.window`
//!   logged predictions, and compares them with the live model's reference sample
//!   on a blocking thread (parsing JSON and the exact KS sums never run on the
//!   async workers). Inputs, the model's outputs and the anomaly rate are tested;
//!   the result is stored in `drift_reports`, kept for `GET /v1/drift` and
//!   `/metrics`, and read by a [`DriftWatch`] that raises events.
//! - Feedback handlers send each labelled prediction's outcome to the concept
//!   task, which runs a [`ConceptWatch`]. The channel is bounded; when it is full
//!   the outcome is dropped and counted (feedback is never slowed down by it).
//! - Events go out on a broadcast channel (alerting and retraining subscribe) and
//!   into the log: a warning when a problem starts, info when it ends.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use serde_json::{Map, Value};
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;

use crate::config::DriftConfig;
use crate::live::{LiveModel, Slot};
use crate::model::{ModelMeta, Task};
use crate::monitor::drift::{self, DriftOptions};
use crate::monitor::events::{AnomalyRate, Event, Window};
use crate::monitor::watch::{Check, ConceptWatch, DriftWatch, Outcome};
use crate::monitor::window;
use crate::stats::gaussian as anomaly;
use crate::stats::Correction;
use crate::store::Store;
use crate::store::{self, drift::LoggedRow};

/// Capacity of the event channel; a subscriber that lags further loses the oldest.
const EVENT_CAPACITY: usize = 1024;
/// Capacity of the feedback-outcome channel.
const OUTCOME_CAPACITY: usize = 65_536;

/// One labelled prediction for the concept task.
#[derive(Debug, Clone)]
pub struct Labelled {
    pub model_version: String,
    pub outcome: Outcome,
    /// When the prediction was made (Unix ms): dates a change.
    pub predicted: i64,
}

/// What handlers and `/metrics` reach.
#[derive(Debug)]
pub struct Monitoring {
    pub events: broadcast::Sender<Event>,
    outcomes: mpsc::Sender<Labelled>,
    /// The newest check (for `/metrics`).
    pub latest: ArcSwapOption<Check>,
    /// Events raised, by name.
    pub raised: Mutex<BTreeMap<&'static str, u64>>,
    pub checks: AtomicU64,
    pub skipped: AtomicU64,
    pub failed: AtomicU64,
    pub labels: AtomicU64,
    pub labels_dropped: AtomicU64,
    /// When the last drift check completed (Unix ms; 0 before any, restored
    /// from the newest stored report at start).
    pub last_check_ms: AtomicI64,
}

impl Monitoring {
    /// The shared state and the receiving end of the outcome channel (for
    /// [`concept_task`]).
    pub fn new() -> (Arc<Monitoring>, mpsc::Receiver<Labelled>) {
        let (events, _) = broadcast::channel(EVENT_CAPACITY);
        let (outcomes, rx) = mpsc::channel(OUTCOME_CAPACITY);
        let m = Monitoring {
            events,
            outcomes,
            latest: ArcSwapOption::empty(),
            raised: Mutex::new(BTreeMap::new()),
            checks: AtomicU64::new(0),
            skipped: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            labels: AtomicU64::new(0),
            labels_dropped: AtomicU64::new(0),
            last_check_ms: AtomicI64::new(0),
        };
        (Arc::new(m), rx)
    }

    /// Hands a labelled prediction to the concept task without waiting.
    pub fn labelled(&self, item: Labelled) {
        if self.outcomes.try_send(item).is_err() {
            self.labels_dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Logs, counts and broadcasts an event.
    pub fn publish(&self, event: Event) {
        // Counted before it is logged: whoever reads the log line finds it counted.
        if let Ok(mut raised) = self.raised.lock() {
            *raised.entry(event.name()).or_default() += 1;
        }
        let json = serde_json::to_string(&event).unwrap_or_default();
        if event.is_firing() {
            tracing::warn!(event = event.name(), details = %json, "monitoring event");
        } else {
            tracing::info!(event = event.name(), details = %json, "monitoring event");
        }
        // No subscriber is not an error: the log line above is the record.
        let _ = self.events.send(event);
    }
}

/// The job's settings.
#[derive(Debug, Clone)]
pub struct JobSettings {
    pub interval: Duration,
    pub window: usize,
    pub min_rows: usize,
    pub confirm: u32,
    pub options: DriftOptions,
}

impl JobSettings {
    pub fn from_config(c: &DriftConfig) -> JobSettings {
        JobSettings {
            interval: c.interval_secs.get(),
            window: c.window,
            min_rows: c.min_rows,
            confirm: c.confirm_checks,
            options: crate::monitor::drift::DriftOptions::from_config(c),
        }
    }
}

/// Runs a check every `interval` until `stop`.
pub async fn drift_job(
    db: Store,
    live: Slot,
    monitoring: Arc<Monitoring>,
    settings: JobSettings,
    stop: CancellationToken,
) {
    let mut watch = DriftWatch::new(settings.confirm, settings.options.alpha);
    let mut tick = tokio::time::interval(settings.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await; // the first tick is immediate: wait one interval instead
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = stop.cancelled() => return,
        }
        match run_check(&db, &live, &settings).await {
            Ok(Some(check)) => {
                let events = watch.observe(&check);
                if let Err(e) = store_check(&db, &check).await {
                    tracing::error!(error = %e, "drift check: cannot store the report");
                }
                monitoring
                    .last_check_ms
                    .store(check.window.time, Ordering::Relaxed);
                monitoring.latest.store(Some(Arc::new(check)));
                for event in events {
                    monitoring.publish(event);
                }
                // Counted last: a reader that sees the count sees the report.
                monitoring.checks.fetch_add(1, Ordering::Relaxed);
            }
            Ok(None) => {
                monitoring.skipped.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                monitoring.failed.fetch_add(1, Ordering::Relaxed);
                tracing::error!(error = %e, "drift check failed");
            }
        }
    }
}

/// Why a check could not run.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error(transparent)]
    Store(#[from] store::StoreError),
    #[error("the check's thread panicked")]
    Panicked,
}

/// One check; `None` when there is nothing to check yet (logged at debug, or once
/// at info when the model cannot be checked at all).
pub async fn run_check(
    db: &Store,
    live: &Slot,
    settings: &JobSettings,
) -> Result<Option<Check>, CheckError> {
    let rows = store::drift::recent(db, settings.window).await?;
    if rows.len() < settings.min_rows {
        tracing::debug!(
            rows = rows.len(),
            min_rows = settings.min_rows,
            "drift check skipped: too few predictions in the window"
        );
        return Ok(None);
    }
    let live = live.load_full();
    let options = settings.options;
    tokio::task::spawn_blocking(move || build_check(&live, &rows, &options))
        .await
        .map_err(|_| CheckError::Panicked)
}

/// The statistics of one check (blocking: parse, sort, sum).
pub fn build_check(live: &LiveModel, rows: &[LoggedRow], options: &DriftOptions) -> Option<Check> {
    let model = &live.model;
    let Some(reference) = live.drift_reference.as_ref() else {
        tracing::info!(version = %live.version, "drift check skipped: the live model has no reference sample");
        return None;
    };
    let features: Vec<Map<String, Value>> = rows
        .iter()
        .map(|r| serde_json::from_str(&r.features).unwrap_or_default())
        .collect();
    let outputs: Vec<Value> = rows
        .iter()
        .map(|r| serde_json::from_str(&r.output).unwrap_or(Value::Null))
        .collect();
    let names: Vec<String> = model
        .schema
        .features
        .iter()
        .map(|f| f.name.clone())
        .collect();
    let cur_values = window::logged_values(&model.schema, &features);
    let report = match drift::compare(&names, &reference.features, &cur_values, options) {
        Ok(r) => r,
        Err(e) => {
            tracing::info!(version = %live.version, error = %e, "drift check skipped");
            return None;
        }
    };
    // The outputs: one test, so no correction.
    let single = DriftOptions {
        correction: Correction::None,
        ..*options
    };
    let current_outputs = window::logged_outputs(model.meta.task, &outputs);
    let prediction = drift::compare(
        &["prediction".to_string()],
        std::slice::from_ref(&reference.outputs),
        std::slice::from_ref(&current_outputs),
        &single,
    )
    .ok()
    .and_then(|mut rep| rep.features.pop());
    let anomaly = model
        .meta
        .anomaly
        .as_ref()
        .and_then(|s| anomaly_rate(&s.gaussian, rows));
    Some(Check {
        window: Window {
            model_version: live.version.to_string(),
            rows: rows.len(),
            reference_rows: reference.rows,
            time: crate::time::now_millis(),
        },
        report,
        prediction,
        anomaly,
    })
}

/// The share of scored rows above the scorer's threshold, tested against the
/// rate expected under the training distribution.
fn anomaly_rate(g: &anomaly::Gaussian, rows: &[LoggedRow]) -> Option<AnomalyRate> {
    let scores: Vec<f64> = rows.iter().filter_map(|r| r.anomaly_score).collect();
    if scores.is_empty() {
        return None;
    }
    let anomalies = scores.iter().filter(|s| g.is_anomaly(**s)).count() as u64;
    let scored = scores.len() as u64;
    let expected_rate = g.expected_rate();
    Some(AnomalyRate {
        anomalies,
        scored,
        rate: anomalies as f64 / scored as f64,
        expected_rate,
        p_value: anomaly::rate_test(anomalies, scored, expected_rate),
        threshold: g.threshold(),
    })
}

async fn store_check(db: &Store, check: &Check) -> Result<(), store::StoreError> {
    store::drift::insert(
        db,
        &store::drift::ReportRow {
            time: check.window.time,
            model_version: check.window.model_version.clone(),
            window_rows: i64::try_from(check.window.rows).unwrap_or(i64::MAX),
            drift: check.report.drift || check.prediction.as_ref().is_some_and(|p| p.drift),
            dataset_drift: check.report.dataset_drift,
            report: report_json(check).to_string(),
            features: feature_rows(check),
        },
    )
    .await
}

/// A check's numbers per input feature and for the output, as stored beside
/// the report.
fn feature_rows(check: &Check) -> Vec<store::drift::FeatureRow> {
    use store::drift::{FeatureRow, Subject};
    let row = |subject, f: &drift::FeatureDrift| FeatureRow {
        subject,
        feature: f.name.clone(),
        statistic: f.statistic,
        p_value: f.p_value,
        p_adjusted: f.p_adjusted,
        psi: f.psi,
        drift: f.drift,
    };
    check
        .report
        .features
        .iter()
        .map(|f| row(Subject::Input, f))
        .chain(check.prediction.iter().map(|f| row(Subject::Output, f)))
        .collect()
}

/// The report as `GET /v1/drift` answers it: the shape of `steward drift --json`
/// plus `window`, `time` (RFC 3339), `prediction` and `anomaly`.
pub fn report_json(check: &Check) -> Value {
    let mut v = serde_json::to_value(check).unwrap_or(Value::Null);
    if let Value::Object(m) = &mut v {
        m.insert(
            "time".into(),
            Value::String(crate::time::rfc3339(check.window.time)),
        );
    }
    v
}

/// How the logged prediction fared against its label: a wrong class, or the
/// absolute error in target standard deviations. `None` when the output cannot
/// be read (never for a row this daemon logged).
pub fn outcome_of(meta: &ModelMeta, output: &str, label: &Value) -> Option<Outcome> {
    let output: Value = serde_json::from_str(output).ok()?;
    let predicted = output.get("prediction")?;
    match meta.task {
        Task::Classification => {
            let label = match label {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            Some(Outcome::Class {
                wrong: predicted.as_str()? != label,
            })
        }
        Task::Regression => {
            let scale = meta.target.map_or(1.0, |t| t.std).max(f64::MIN_POSITIVE);
            Some(Outcome::Value {
                error: (label.as_f64()? - predicted.as_f64()?).abs() / scale,
            })
        }
    }
}

/// Reads labelled outcomes until `stop` and raises concept-drift events.
pub async fn concept_task(
    mut rx: mpsc::Receiver<Labelled>,
    monitoring: Arc<Monitoring>,
    stop: CancellationToken,
) {
    let mut watch = ConceptWatch::default();
    loop {
        let item = tokio::select! {
            item = rx.recv() => item,
            () = stop.cancelled() => return,
        };
        let Some(item) = item else { return };
        monitoring.labels.fetch_add(1, Ordering::Relaxed);
        if let Some(event) = watch.observe(
            &item.model_version,
            item.outcome,
            item.predicted,
            crate::time::now_millis(),
        ) {
            monitoring.publish(event);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::monitor::events::ConceptEvent;

    fn concept(version: &str) -> Event {
        Event::ConceptDrift(ConceptEvent {
            detector: "ddm",
            labels: 120,
            error: 0.3,
            model_version: version.into(),
            time: 0,
            change_labels: 80,
            change_time: 0,
            error_series: Vec::new(),
        })
    }

    #[tokio::test]
    async fn published_events_reach_every_subscriber_and_are_counted() {
        let (m, _outcomes) = Monitoring::new();
        let mut alerting = m.events.subscribe();
        let mut retraining = m.events.subscribe();
        m.publish(concept("7"));
        assert_eq!(alerting.recv().await.unwrap(), concept("7"));
        assert_eq!(retraining.recv().await.unwrap(), concept("7"));
        assert_eq!(m.raised.lock().unwrap().get("concept_drift"), Some(&1));
        // With no subscriber at all publishing still logs and counts.
        drop((alerting, retraining));
        m.publish(concept("8"));
        assert_eq!(m.raised.lock().unwrap().get("concept_drift"), Some(&2));
    }

    #[tokio::test]
    async fn the_concept_task_turns_outcomes_into_one_event_per_change() {
        let (m, outcomes) = Monitoring::new();
        let mut events = m.events.subscribe();
        let stop = CancellationToken::new();
        let task = tokio::spawn(concept_task(outcomes, m.clone(), stop.clone()));
        for i in 0..400u32 {
            // Right for 200 labels (one error in 50), then wrong every time.
            let wrong = i >= 200 || i % 50 == 49;
            m.labelled(Labelled {
                model_version: "3".into(),
                outcome: Outcome::Class { wrong },
                predicted: 1_000 + i64::from(i),
            });
        }
        let Event::ConceptDrift(e) = events.recv().await.unwrap() else {
            panic!("not a concept event")
        };
        assert_eq!(e.model_version, "3");
        // Dated where DDM's warning began: a few labels into the new concept
        // (its first label was predicted at 1,200 ms).
        assert!((1_195..=1_205).contains(&e.change_time), "{e:?}");
        // Let the task read the rest of the queue (one thread: it runs when we
        // yield).
        while m.labels.load(Ordering::Relaxed) < 400 {
            tokio::task::yield_now().await;
        }
        stop.cancel();
        task.await.unwrap();
        assert_eq!(m.raised.lock().unwrap().get("concept_drift"), Some(&1));
    }
}
