//! Predictions: every row is validated and encoded by the schema before anything
//! is predicted or logged, so a batch with one bad instance is refused whole and
//! nothing of it is logged. A row for which the network's answer is not finite
//! (an input far beyond anything it was trained on) is refused with
//! `non_finite_feature`, naming the most extreme feature: an answer of NaN is
//! never sent.
//!
//! Rows come as the JSON text of each row's object, as the request sent it
//! ([`Schema::encode_text`](crate::model::schema::Schema) parses it straight into
//! the model's input), and that text is what the log's `features` column holds.
//! The answer's JSON is written here, from the same text as the log row's
//! `output` column, so the answer and the log say the same thing in the same
//! digits: `{"id", "model_version", "prediction", "probabilities", "anomaly",
//! "anomaly_score"}` for one row, `{"model_version", "predictions": [..]}` (no
//! version in each) for a batch.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwap;
use prometheus_client::metrics::histogram::Histogram;
use serde::ser::SerializeMap;
use serde::{Serialize, Serializer};

use super::Settings;
use crate::live::{LiveModel, Slot};
use crate::model::row::RowError;
use crate::model::Prediction;
use crate::store::writer::{LogHandle, PredictionRow};

/// Why rows were not answered.
#[derive(Debug, thiserror::Error)]
pub enum PredictError {
    /// A row the model cannot answer (422): a stable code and what is wrong.
    #[error("{message}")]
    Refused { code: &'static str, message: String },
    /// Row `row`'s text is not one JSON object of distinct names (or holds a
    /// number beyond f64): serde_json's error, positioned in that row's text.
    #[error("instance {row}: {error}")]
    Json {
        row: usize,
        error: serde_json::Error,
    },
    #[error("cannot write the answer: {0}")]
    Output(#[from] serde_json::Error),
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

/// The class label, or the regression value (null if not representable).
#[derive(Debug)]
enum Answer<'a> {
    Class(&'a str),
    Value(f64),
}

impl Serialize for Answer<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Answer::Class(label) => s.serialize_str(label),
            // serde_json writes a non-finite f64 as null.
            Answer::Value(v) => s.serialize_f64(*v),
        }
    }
}

/// What the log's `output` column holds, and the middle of each answer.
#[derive(Debug, Serialize)]
struct Output<'a> {
    prediction: Answer<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    probabilities: Option<Probabilities<'a>>,
}

/// What one answered row adds to the answer besides its log row.
#[derive(Debug, Clone, Copy)]
struct Scored {
    anomaly: bool,
    anomaly_score: Option<f64>,
}

/// The answer to one request.
#[derive(Debug)]
pub struct Answers {
    /// The model that answered.
    pub live: Arc<LiveModel>,
    /// The answer's JSON.
    pub body: Vec<u8>,
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

    /// Waits until every row queued so far is in the database; `false` if the
    /// log writer is gone.
    pub async fn flush_log(&self) -> bool {
        self.log.flush().await
    }

    /// Instances answered since start.
    pub fn predicted(&self) -> u64 {
        self.predicted.load(Ordering::Relaxed)
    }

    /// Answers `rows` (each the JSON text of one row's object) with the live
    /// model, queues their log rows, and writes the answer. With `batch`, a
    /// refusal names the instance (`instances[i]: ...`) and the answer is the
    /// batch form.
    pub async fn predict(&self, rows: &[&str], batch: bool) -> Result<Answers, PredictError> {
        let live = self.slot.load_full();
        let mut logged = Vec::with_capacity(rows.len());
        let mut scored = Vec::with_capacity(rows.len());
        let mut x = vec![0.0f32; live.model.schema.width()];
        for (i, text) in rows.iter().enumerate() {
            let (row, s) = answer_one(&live, text, i, batch, &mut x)?;
            self.inference.observe(row.latency_us as f64 / 1e6);
            logged.push(row);
            scored.push(s);
        }
        let body = if batch {
            write_batch(&live.version, &logged, &scored)?
        } else {
            write_one(&live.version, &logged[0], scored[0])?
        };
        self.predicted
            .fetch_add(logged.len() as u64, Ordering::Relaxed);
        let mut queued = true;
        for row in logged {
            queued &= self.log.log(row).await;
        }
        // `database.answer_after_commit`: the answer waits for its rows'
        // commit. With a spool (PostgreSQL), it waits for them to be written
        // there. Either way a kill -9 then loses no answered prediction.
        if queued && self.settings.load().answer_after_commit {
            self.log.flush().await;
        } else if queued && self.log.spooled() {
            self.log.sync().await;
        }
        Ok(Answers { live, body })
    }
}

/// One answered row's fields, without the braces: `"id"`, `"model_version"`
/// (when given), the output's fields, the anomaly's.
fn write_fields(
    out: &mut Vec<u8>,
    row: &PredictionRow,
    version: Option<&str>,
    s: Scored,
) -> serde_json::Result<()> {
    out.extend_from_slice(b"\"id\":");
    serde_json::to_writer(&mut *out, &row.id)?;
    if let Some(version) = version {
        out.extend_from_slice(b",\"model_version\":");
        serde_json::to_writer(&mut *out, version)?;
    }
    // The output is a JSON object `{..}`: its fields go in between.
    let inner = row
        .output
        .strip_prefix('{')
        .and_then(|o| o.strip_suffix('}'))
        .unwrap_or_default();
    if !inner.is_empty() {
        out.push(b',');
        out.extend_from_slice(inner.as_bytes());
    }
    out.extend_from_slice(if s.anomaly {
        b",\"anomaly\":true,\"anomaly_score\":"
    } else {
        b",\"anomaly\":false,\"anomaly_score\":"
    });
    serde_json::to_writer(&mut *out, &s.anomaly_score)
}

/// `{"id", "model_version", "prediction", "probabilities", "anomaly", "anomaly_score"}`.
fn write_one(version: &str, row: &PredictionRow, s: Scored) -> serde_json::Result<Vec<u8>> {
    let mut out = Vec::with_capacity(64 + version.len() + row.output.len());
    out.push(b'{');
    write_fields(&mut out, row, Some(version), s)?;
    out.push(b'}');
    Ok(out)
}

/// `{"model_version", "predictions": [{"id", "prediction", ..}, ..]}`.
fn write_batch(
    version: &str,
    rows: &[PredictionRow],
    scored: &[Scored],
) -> serde_json::Result<Vec<u8>> {
    let per_row: usize = rows.iter().map(|r| 80 + r.output.len()).sum();
    let mut out = Vec::with_capacity(48 + version.len() + per_row);
    out.extend_from_slice(b"{\"model_version\":");
    serde_json::to_writer(&mut out, version)?;
    out.extend_from_slice(b",\"predictions\":[");
    for (i, (row, s)) in rows.iter().zip(scored).enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.push(b'{');
        write_fields(&mut out, row, None, *s)?;
        out.push(b'}');
    }
    out.extend_from_slice(b"]}");
    Ok(out)
}

/// Encodes, predicts and builds the log row for row `index`.
fn answer_one(
    live: &LiveModel,
    text: &str,
    index: usize,
    batch: bool,
    x: &mut [f32],
) -> Result<(PredictionRow, Scored), PredictError> {
    let start = Instant::now();
    let model = &live.model;
    let refuse = |code: &'static str, message: String| {
        let message = match batch {
            true => format!("instances[{index}]: {message}"),
            false => message,
        };
        PredictError::Refused { code, message }
    };
    model.schema.encode_text(text, x).map_err(|e| match e {
        RowError::Json(error) => PredictError::Json { row: index, error },
        RowError::Encode(e) => refuse(e.code, e.message),
    })?;
    let prediction = live.predict_encoded(x);
    if !prediction.is_finite() {
        let worst = match model.schema.most_extreme(x) {
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
    // Scores are finite for finite inputs; an infinite one (never from JSON) is
    // stored and answered as null rather than as a non-number.
    let anomaly_score = model
        .meta
        .anomaly
        .as_ref()
        .map(|s| s.score(x))
        .filter(|v| v.is_finite());
    let anomaly = match (&model.meta.anomaly, anomaly_score) {
        (Some(s), Some(v)) => s.gaussian.is_anomaly(v),
        _ => false,
    };
    let latency_us = i64::try_from(start.elapsed().as_micros()).unwrap_or(i64::MAX);
    let output = match &prediction {
        Prediction::Class {
            label,
            probabilities,
        } => serde_json::to_string(&Output {
            prediction: Answer::Class(label),
            probabilities: Some(Probabilities(&model.meta.classes, probabilities)),
        }),
        Prediction::Value(v) => serde_json::to_string(&Output {
            prediction: Answer::Value(*v),
            probabilities: None,
        }),
    }?;
    let mut id = uuid::Uuid::encode_buffer();
    let row = PredictionRow {
        id: uuid::Uuid::now_v7()
            .hyphenated()
            .encode_lower(&mut id)
            .to_owned(),
        time: crate::time::now_millis(),
        model_version: live.version.clone(),
        features: text.to_owned(),
        output,
        latency_us,
        anomaly_score,
        anomaly,
    };
    Ok((
        row,
        Scored {
            anomaly,
            anomaly_score,
        },
    ))
}
