//! `POST /v1/predict`: one row (`{"features": {..}}`) or a batch
//! (`{"instances": [{..}, ..]}`). Every row is validated and encoded by the schema
//! before anything is predicted or logged: a batch with one bad instance is refused
//! whole, and nothing of it is logged. A feature named twice in one row is refused
//! (`duplicate_feature`) rather than letting the last one win; a row for which the
//! network's answer is not finite (an input far beyond anything it was trained
//! on) is refused with `non_finite_feature`, naming the most extreme feature:
//! an answer of NaN is never sent.

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
    features: Option<Row>,
    instances: Option<Vec<Row>>,
}

/// One row: a JSON object of named features, each named once.
#[derive(Debug)]
pub struct Row(pub Map<String, Value>);

impl<'de> Deserialize<'de> for Row {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Row, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Row;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an object of named features")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut a: A) -> Result<Row, A::Error> {
                let mut row = Map::new();
                while let Some(name) = a.next_key::<String>()? {
                    let value = a.next_value::<Value>()?;
                    if row.contains_key(&name) {
                        return Err(serde::de::Error::custom(format!(
                            "{DUPLICATE_FEATURE} `{name}` (each feature once per row)"
                        )));
                    }
                    row.insert(name, value);
                }
                Ok(Row(row))
            }
        }
        d.deserialize_map(Visitor)
    }
}

/// How the message of a row naming a feature twice begins (`body::parse` gives
/// it the code `duplicate_feature`).
pub const DUPLICATE_FEATURE: &str = "duplicate feature";

impl PredictRequest {
    /// The rows to predict, and whether they came as a batch (`instances`).
    pub fn into_rows(self, max_batch: usize) -> Result<(Vec<Map<String, Value>>, bool), ApiError> {
        match (self.features, self.instances) {
            (Some(row), None) => Ok((vec![row.0], false)),
            (None, Some(instances)) => {
                if instances.is_empty() {
                    return Err(ApiError::unprocessable(
                        "empty_batch",
                        "`instances` is empty",
                    ));
                }
                if instances.len() > max_batch {
                    return Err(ApiError::unprocessable(
                        "batch_too_large",
                        format!(
                            "{} instances, server.max_batch is {max_batch}",
                            instances.len()
                        ),
                    ));
                }
                Ok((instances.into_iter().map(|r| r.0).collect(), true))
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
    let (rows, batch) = req.into_rows(state.settings.load().max_batch)?;
    if !batch {
        let features = rows.into_iter().next().unwrap_or_default();
        let (answer, row) = answer_one(&live, features, None)?;
        state.metrics.predictions.fetch_add(1, Ordering::Relaxed);
        state.log.log(row).await;
        let answer = Answer {
            model_version: Some(&live.version),
            ..answer
        };
        return json_response(&answer);
    }
    let mut answers = Vec::with_capacity(rows.len());
    let mut logged = Vec::with_capacity(rows.len());
    for (i, features) in rows.into_iter().enumerate() {
        let (answer, row) = answer_one(&live, features, Some(i))?;
        answers.push(answer);
        logged.push(row);
    }
    state
        .metrics
        .predictions
        .fetch_add(logged.len() as u64, Ordering::Relaxed);
    for row in logged {
        state.log.log(row).await;
    }
    json_response(&BatchAnswer {
        model_version: &live.version,
        predictions: answers,
    })
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
    let refuse = |code: &'static str, message: String| {
        let message = match index {
            Some(i) => format!("instances[{i}]: {message}"),
            None => message,
        };
        ApiError::unprocessable(code, message)
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
