//! `POST /v1/predict`: one row (`{"features": {..}}`) or a batch
//! (`{"instances": [{..}, ..]}`). Every row is validated and encoded by the schema
//! before anything is predicted or logged: a batch with one bad instance is refused
//! whole, and nothing of it is logged.

use std::sync::atomic::Ordering;
use std::time::Instant;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::ser::SerializeMap;
use serde::{Deserialize, Serialize, Serializer};
use serde_json::{Map, Value};

use super::body::JsonBody;
use super::error::ApiError;
use super::AppState;
use crate::live::LiveModel;
use crate::model::Prediction;
use crate::store::writer::PredictionRow;

/// The request body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PredictRequest {
    features: Option<Map<String, Value>>,
    instances: Option<Vec<Map<String, Value>>>,
}

/// One answered row.
#[derive(Debug, Serialize)]
pub struct Answer<'a> {
    id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    model_version: Option<&'a str>,
    prediction: Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    probabilities: Option<Probabilities<'a>>,
    /// Whether the input is an anomaly under the training distribution (false
    /// when the model has no anomaly scorer).
    anomaly: bool,
    /// The squared Mahalanobis distance of the numeric inputs; null without a
    /// scorer.
    anomaly_score: Option<f64>,
}

/// `{class: p}` in class order.
#[derive(Debug)]
pub struct Probabilities<'a>(&'a [String], Vec<f32>);

impl Serialize for Probabilities<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for (c, p) in self.0.iter().zip(&self.1) {
            m.serialize_entry(c, p)?;
        }
        m.end()
    }
}

/// What the log's `output` column holds.
#[derive(Debug, Serialize)]
struct Output<'a, 'b> {
    prediction: &'b Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    probabilities: &'b Option<Probabilities<'a>>,
}

#[derive(Debug, Serialize)]
struct BatchAnswer<'a> {
    model_version: &'a str,
    predictions: Vec<Answer<'a>>,
}

pub async fn predict(
    State(state): State<AppState>,
    JsonBody(req): JsonBody<PredictRequest>,
) -> Result<Response, ApiError> {
    let live = state.live.load_full();
    match (req.features, req.instances) {
        (Some(features), None) => {
            let (answer, row) = answer_one(&live, features, None)?;
            state.metrics.predictions.fetch_add(1, Ordering::Relaxed);
            state.log.log(row).await;
            let answer = Answer {
                model_version: Some(&live.version),
                ..answer
            };
            json_response(&answer)
        }
        (None, Some(instances)) => {
            let max = state.settings.load().max_batch;
            if instances.is_empty() {
                return Err(ApiError::unprocessable(
                    "empty_batch",
                    "`instances` is empty",
                ));
            }
            if instances.len() > max {
                return Err(ApiError::unprocessable(
                    "batch_too_large",
                    format!("{} instances, server.max_batch is {max}", instances.len()),
                ));
            }
            let mut answers = Vec::with_capacity(instances.len());
            let mut rows = Vec::with_capacity(instances.len());
            for (i, features) in instances.into_iter().enumerate() {
                let (answer, row) = answer_one(&live, features, Some(i))?;
                answers.push(answer);
                rows.push(row);
            }
            state
                .metrics
                .predictions
                .fetch_add(rows.len() as u64, Ordering::Relaxed);
            for row in rows {
                state.log.log(row).await;
            }
            let batch = BatchAnswer {
                model_version: &live.version,
                predictions: answers,
            };
            json_response(&batch)
        }
        (Some(_), Some(_)) => Err(ApiError::unprocessable(
            "invalid_request",
            "give either `features` or `instances`, not both",
        )),
        (None, None) => Err(ApiError::unprocessable(
            "invalid_request",
            "the body needs `features` (one row) or `instances` (a batch)",
        )),
    }
}

/// Encodes, predicts and builds the log row for one instance.
fn answer_one<'a>(
    live: &'a LiveModel,
    features: Map<String, Value>,
    index: Option<usize>,
) -> Result<(Answer<'a>, PredictionRow), ApiError> {
    let start = Instant::now();
    let model = &live.model;
    let mut x = vec![0.0f32; model.schema.width()];
    model.schema.encode_json(&features, &mut x).map_err(|e| {
        let message = match index {
            Some(i) => format!("instances[{i}]: {}", e.message),
            None => e.message,
        };
        ApiError::unprocessable(e.code, message)
    })?;
    let (prediction, probabilities) = match live.predict_encoded(&x) {
        Prediction::Class {
            label,
            probabilities,
        } => (
            Value::String(label),
            Some(Probabilities(&model.meta.classes, probabilities)),
        ),
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
    let answer = Answer {
        id: id.clone(),
        model_version: None,
        prediction,
        probabilities,
        anomaly,
        anomaly_score,
    };
    // The same numbers, printed the same way, as the answer.
    let output = serde_json::to_string(&Output {
        prediction: &answer.prediction,
        probabilities: &answer.probabilities,
    })
    .map_err(|e| ApiError::internal(&e))?;
    let row = PredictionRow {
        id,
        time: crate::time::now_millis(),
        model_version: live.version.clone(),
        features: Value::Object(features).to_string(),
        output,
        latency_us,
        anomaly_score,
    };
    Ok((answer, row))
}

/// Serialises straight to the response body (no intermediate `Value`).
fn json_response(body: &impl Serialize) -> Result<Response, ApiError> {
    let bytes = serde_json::to_vec(body).map_err(|e| ApiError::internal(&e))?;
    Ok(([(header::CONTENT_TYPE, "application/json")], bytes).into_response())
}
