//! `POST /v1/predict`: one row (`{"features": {..}}`) or a batch
//! (`{"instances": [{..}, ..]}`), answered by `app::predict` (validation,
//! encoding, the non-finite refusal and the log row live there). Here: the
//! request's shape (a feature named twice in one row is refused with
//! `duplicate_feature` rather than letting the last one win) and the answer's.

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::body::JsonBody;
use super::error::ApiError;
use super::AppState;
use crate::app::predict::{Predicted, Probabilities};

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

/// One answered row as sent.
#[derive(Debug, Serialize)]
struct Answer<'a> {
    id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    model_version: Option<&'a str>,
    prediction: &'a Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    probabilities: Option<Probabilities<'a>>,
    anomaly: bool,
    anomaly_score: Option<f64>,
}

impl<'a> Answer<'a> {
    fn new(p: &'a Predicted, classes: &'a [String], model_version: Option<&'a str>) -> Self {
        Answer {
            id: &p.id,
            model_version,
            prediction: &p.prediction,
            probabilities: p
                .probabilities
                .as_deref()
                .map(|v| Probabilities(classes, v)),
            anomaly: p.anomaly,
            anomaly_score: p.anomaly_score,
        }
    }
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
    let service = state.app.predictions();
    let (rows, batch) = req.into_rows(service.max_batch())?;
    let answers = service.predict(rows, batch).await?;
    let live = &answers.live;
    let classes = &live.model.meta.classes;
    if batch {
        json_response(&BatchAnswer {
            model_version: &live.version,
            predictions: answers
                .rows
                .iter()
                .map(|p| Answer::new(p, classes, None))
                .collect(),
        })
    } else {
        let Some(one) = answers.rows.first() else {
            return Err(ApiError::internal(&"a single prediction gave no answer"));
        };
        json_response(&Answer::new(one, classes, Some(&live.version)))
    }
}

/// Serialises straight to the response body (no intermediate `Value`).
fn json_response(body: &impl Serialize) -> Result<Response, ApiError> {
    let bytes = serde_json::to_vec(body).map_err(|e| ApiError::internal(&e))?;
    Ok(([(header::CONTENT_TYPE, "application/json")], bytes).into_response())
}
