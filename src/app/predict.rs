//! Predictions: every row is validated and encoded by the schema before anything
//! is predicted or logged, so a batch with one bad instance is refused whole and
//! nothing of it is logged. A row for which the network's answer is not finite
//! (an input far beyond anything it was trained on) is refused with
//! `non_finite_feature`, naming the most extreme feature: an answer of NaN is
//! never sent. Each answered row is queued for the prediction log with the same
//! numbers, printed the same way, as the answer.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwap;
use prometheus_client::metrics::histogram::Histogram;
use serde::ser::SerializeMap;
use serde::{Serialize, Serializer};
use serde_json::{Map, Value};

use super::Settings;
use crate::live::{LiveModel, Slot};
use crate::model::Prediction;
use crate::store::writer::{LogHandle, PredictionRow};

/// Why rows were not answered.
#[derive(Debug, thiserror::Error)]
pub enum PredictError {
    /// A row the model cannot answer (422): a stable code and what is wrong.
    #[error("{message}")]
    Refused { code: &'static str, message: String },
    #[error("cannot write the prediction's log row: {0}")]
    Output(#[from] serde_json::Error),
}

/// One answered row.
#[derive(Debug)]
pub struct Predicted {
    pub id: String,
    /// The class label, or the regression value (null if not representable).
    pub prediction: Value,
    /// Class probabilities in the model's class order (classifiers only).
    pub probabilities: Option<Vec<f32>>,
    /// Whether the input is an anomaly under the training distribution (false
    /// when the model has no anomaly scorer).
    pub anomaly: bool,
    /// The squared Mahalanobis distance of the numeric inputs; `None` without a
    /// scorer.
    pub anomaly_score: Option<f64>,
}

/// The rows of one request, answered by one model.
#[derive(Debug)]
pub struct Answers {
    /// The model that answered (its version and classes name the answers).
    pub live: Arc<LiveModel>,
    pub rows: Vec<Predicted>,
}

/// `{class: p}` in class order.
#[derive(Debug)]
pub struct Probabilities<'a>(pub &'a [String], pub &'a [f32]);

impl Serialize for Probabilities<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for (c, p) in self.0.iter().zip(self.1) {
            m.serialize_entry(c, p)?;
        }
        m.end()
    }
}

/// What the log's `output` column holds.
#[derive(Debug, Serialize)]
struct Output<'a> {
    prediction: &'a Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    probabilities: Option<Probabilities<'a>>,
}

/// The prediction service.
#[derive(Clone)]
pub struct Predictions {
    slot: Slot,
    log: LogHandle,
    settings: Arc<ArcSwap<Settings>>,
    predicted: Arc<AtomicU64>,
    /// Model time per instance (the log row's `latency_us`), for `/metrics`.
    inference: Histogram,
}

/// Upper bounds of the inference time buckets, in seconds: the logged latency
/// has microsecond resolution, and a forward pass of a few hundred weights
/// takes a few microseconds.
pub const INFERENCE_BUCKETS: [f64; 11] = [
    0.000_002, 0.000_005, 0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001,
    0.002_5, 0.01,
];

impl Predictions {
    pub(super) fn new(slot: Slot, log: LogHandle, settings: Arc<ArcSwap<Settings>>) -> Self {
        Predictions {
            slot,
            log,
            settings,
            predicted: Arc::default(),
            inference: Histogram::new(INFERENCE_BUCKETS),
        }
    }

    /// The inference time histogram (a handle: observations through either
    /// copy land in both).
    pub fn inference_histogram(&self) -> Histogram {
        self.inference.clone()
    }

    /// `server.max_batch` as it stands now.
    pub fn max_batch(&self) -> usize {
        self.settings.load().max_batch
    }

    /// Instances answered since start.
    pub fn predicted(&self) -> u64 {
        self.predicted.load(Ordering::Relaxed)
    }

    /// Answers `rows` with the live model and queues their log rows. With
    /// `batch`, a refusal names the instance (`instances[i]: ...`).
    pub async fn predict(
        &self,
        rows: Vec<Map<String, Value>>,
        batch: bool,
    ) -> Result<Answers, PredictError> {
        let live = self.slot.load_full();
        let mut answers = Vec::with_capacity(rows.len());
        let mut logged = Vec::with_capacity(rows.len());
        for (i, features) in rows.into_iter().enumerate() {
            let (answer, row) = answer_one(&live, features, batch.then_some(i))?;
            self.inference.observe(row.latency_us as f64 / 1e6);
            answers.push(answer);
            logged.push(row);
        }
        self.predicted
            .fetch_add(logged.len() as u64, Ordering::Relaxed);
        for row in logged {
            self.log.log(row).await;
        }
        Ok(Answers {
            live,
            rows: answers,
        })
    }
}

/// Encodes, predicts and builds the log row for one instance.
fn answer_one(
    live: &LiveModel,
    features: Map<String, Value>,
    index: Option<usize>,
) -> Result<(Predicted, PredictionRow), PredictError> {
    let start = Instant::now();
    let model = &live.model;
    let mut x = vec![0.0f32; model.schema.width()];
    let refuse = |code: &'static str, message: String| {
        let message = match index {
            Some(i) => format!("instances[{i}]: {message}"),
            None => message,
        };
        PredictError::Refused { code, message }
    };
    model
        .schema
        .encode_json(&features, &mut x)
        .map_err(|e| refuse(e.code, e.message))?;
    let prediction = live.predict_encoded(&x);
    if !prediction.is_finite() {
        let worst = match model.schema.most_extreme(&x) {
            Some((name, z)) => {
                format!(": feature `{name}` is {z:.1e} standard deviations from the training mean")
            }
            None => String::new(),
        };
        return Err(refuse(
            "non_finite_feature",
            format!("the model's answer is not finite for this input{worst}"),
        ));
    }
    let (prediction, probabilities) = match prediction {
        Prediction::Class {
            label,
            probabilities,
        } => (Value::String(label), Some(probabilities)),
        Prediction::Value(v) => (
            serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number),
            None,
        ),
    };
    // Scores are finite for finite inputs; an infinite one (never from JSON) is
    // stored and answered as null rather than as a non-number.
    let anomaly_score = model
        .meta
        .anomaly
        .as_ref()
        .map(|s| s.score(&x))
        .filter(|v| v.is_finite());
    let anomaly = match (&model.meta.anomaly, anomaly_score) {
        (Some(s), Some(v)) => s.gaussian.is_anomaly(v),
        _ => false,
    };
    let latency_us = i64::try_from(start.elapsed().as_micros()).unwrap_or(i64::MAX);
    let id = uuid::Uuid::now_v7().to_string();
    let output = serde_json::to_string(&Output {
        prediction: &prediction,
        probabilities: probabilities
            .as_deref()
            .map(|p| Probabilities(&model.meta.classes, p)),
    })?;
    let row = PredictionRow {
        id: id.clone(),
        time: crate::time::now_millis(),
        model_version: live.version.clone(),
        features: Value::Object(features).to_string(),
        output,
        latency_us,
        anomaly_score,
    };
    let answer = Predicted {
        id,
        prediction,
        probabilities,
        anomaly,
        anomaly_score,
    };
    Ok((answer, row))
}
