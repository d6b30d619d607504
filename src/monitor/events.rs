//! The events monitoring raises, as typed values. The daemon publishes them on a
//! broadcast channel; alerting and retraining subscribe. Each carries the numbers
//! a person needs to judge it without opening a dashboard: the feature and its
//! test, statistic, p-values and PSI, the window it was computed on, and the model
//! version that was live.
//!
//! An event marks a *change of state* (drift starts, drift ends), never a repeated
//! observation: a feature that drifts for a day is one `drift_detected` and one
//! `drift_resolved`, however many checks ran in between.

use serde::Serialize;

use super::drift::FeatureDrift;

/// The sample a check ran on.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Window {
    /// The live model's version.
    pub model_version: String,
    /// Rows in the current window.
    pub rows: usize,
    /// Rows in the reference sample.
    pub reference_rows: usize,
    /// When the check ran (Unix milliseconds).
    pub time: i64,
}

/// What a drift event is about: an input feature or the model's output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Subject {
    Input,
    Output,
}

/// One feature started or stopped drifting.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FeatureEvent {
    pub subject: Subject,
    /// The feature's numbers at this check.
    pub feature: FeatureDrift,
    pub window: Window,
}

/// Enough features drift (or stopped drifting) for the data set as a whole.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DatasetEvent {
    /// The input features drifting at this check.
    pub drifted: Vec<String>,
    /// Input features tested.
    pub tested: usize,
    pub window: Window,
}

/// The share of anomalous inputs left (or came back to) its expected level.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AnomalyRate {
    /// Inputs in the window scored above the threshold.
    pub anomalies: u64,
    /// Inputs in the window with a score.
    pub scored: u64,
    pub rate: f64,
    /// The rate expected under the training distribution.
    pub expected_rate: f64,
    /// One-sided binomial test of `anomalies` out of `scored` against
    /// `expected_rate`.
    pub p_value: f64,
    /// The score above which an input is an anomaly.
    pub threshold: f64,
}

/// A detector on the feedback error stream found the model getting worse.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ConceptEvent {
    /// `ddm` or `page_hinkley`.
    pub detector: &'static str,
    /// Labelled predictions the detector read since its last reset.
    pub labels: u64,
    /// The error measure over those labels: the error rate for classification,
    /// the mean absolute error in target standard deviations for regression.
    pub error: f64,
    pub model_version: String,
    /// Unix milliseconds.
    pub time: i64,
    /// Where the detector dates the change: the labelled predictions since it
    /// began, and the time (Unix ms) of the first of them. A retrain started by
    /// this event trains on the rows logged from then on.
    pub change_labels: u64,
    pub change_time: i64,
    /// The error over the labels the watch kept (since its last reset), in at
    /// most [`ERROR_SERIES_POINTS`] consecutive groups of equal size: each
    /// group's mean error at the prediction time of its last label. What the
    /// alert mail plots, with `change_time` marked.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub error_series: Vec<(i64, f64)>,
}

/// The most points of [`ConceptEvent::error_series`].
pub const ERROR_SERIES_POINTS: usize = 60;

/// A retraining run ended: its candidate was promoted or rejected by the gate,
/// or the run failed (error, panic, NaN, time limit).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RetrainEvent {
    pub run_id: i64,
    /// `schedule`, `api`, `dataset_drift` or `concept_drift`.
    pub trigger: String,
    /// `accuracy` or `r2`, when the run got as far as scoring.
    pub metric: Option<String>,
    /// The version live when the run started.
    pub live_version: String,
    /// Both models' metric on the run's held-out newest labelled rows.
    pub live_metric: Option<f64>,
    pub candidate_metric: Option<f64>,
    /// The version the candidate was registered as (promoted only).
    pub candidate_version: Option<String>,
    /// The gate's reason, or the error.
    pub reason: String,
    /// Labelled rows found, and the newest of them held out for the gate.
    pub rows: Option<u64>,
    pub holdout_rows: Option<u64>,
    /// Unix milliseconds.
    pub time: i64,
}

/// The online guard found the online copy worse than the model it started from
/// and went back to that model.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OnlineEvent {
    /// The version live when the guard tripped, and the one it went back to.
    pub from_version: String,
    pub to_version: String,
    /// `accuracy` or `r2`, over the guard's window of recent labels.
    pub metric: &'static str,
    /// Progressive metric of the online copy, and of the base model, on the same labels.
    pub online_metric: f64,
    pub base_metric: f64,
    /// `online.guard_margin`.
    pub margin: f64,
    /// Labels in the window.
    pub window: usize,
    /// Online steps taken since the base model.
    pub updates: u64,
    /// Unix milliseconds.
    pub time: i64,
}

/// Everything monitoring raises.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    DriftDetected(FeatureEvent),
    DriftResolved(FeatureEvent),
    DatasetDriftDetected(DatasetEvent),
    DatasetDriftResolved(DatasetEvent),
    AnomalyRateHigh {
        #[serde(flatten)]
        rate: AnomalyRate,
        window: Window,
    },
    AnomalyRateNormal {
        #[serde(flatten)]
        rate: AnomalyRate,
        window: Window,
    },
    ConceptDrift(ConceptEvent),
    RetrainPromoted(RetrainEvent),
    RetrainRejected(RetrainEvent),
    RetrainFailed(RetrainEvent),
    OnlineReverted(OnlineEvent),
}

impl Event {
    /// The event's name as serialised (`drift_detected`, ...).
    pub fn name(&self) -> &'static str {
        match self {
            Event::DriftDetected(_) => "drift_detected",
            Event::DriftResolved(_) => "drift_resolved",
            Event::DatasetDriftDetected(_) => "dataset_drift_detected",
            Event::DatasetDriftResolved(_) => "dataset_drift_resolved",
            Event::AnomalyRateHigh { .. } => "anomaly_rate_high",
            Event::AnomalyRateNormal { .. } => "anomaly_rate_normal",
            Event::ConceptDrift(_) => "concept_drift",
            Event::RetrainPromoted(_) => "retrain_promoted",
            Event::RetrainRejected(_) => "retrain_rejected",
            Event::RetrainFailed(_) => "retrain_failed",
            Event::OnlineReverted(_) => "online_reverted",
        }
    }

    /// Whether the event starts a problem (as opposed to ending one, or good news).
    pub fn is_firing(&self) -> bool {
        matches!(
            self,
            Event::DriftDetected(_)
                | Event::DatasetDriftDetected(_)
                | Event::AnomalyRateHigh { .. }
                | Event::ConceptDrift(_)
                | Event::RetrainRejected(_)
                | Event::RetrainFailed(_)
                | Event::OnlineReverted(_)
        )
    }
}
