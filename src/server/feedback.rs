//! `POST /v1/feedback`: labels for logged predictions, `{"id", "label"}` or
//! `{"feedback": [{"id", "label"}, ..]}`. All or nothing: if any id is unknown the
//! answer is 404 naming it and nothing is stored. A prediction answered a moment ago
//! may still be in the log queue, so an id not found is looked up again after a
//! flush of the queue before it is called unknown. A second label for the same id
//! replaces the first (see `store::feedback`). Each stored label's outcome (wrong
//! class, or absolute error) goes to the concept-drift detectors, and the label
//! with its logged input to the online learner.

use std::collections::HashMap;
use std::sync::atomic::Ordering;

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use serde_json::Value;

use super::body::JsonBody;
use super::error::ApiError;
use super::AppState;
use crate::learning::online::LabelItem;
use crate::model::{ModelMeta, Task};
use crate::monitor::watch::Outcome;
use crate::monitoring::Labelled;
use crate::store::feedback::{self, FeedbackRow, Logged};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Item {
    id: String,
    label: Value,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeedbackRequest {
    id: Option<String>,
    label: Option<Value>,
    feedback: Option<Vec<Item>>,
}

pub async fn feedback(
    State(state): State<AppState>,
    JsonBody(req): JsonBody<FeedbackRequest>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let items = match req {
        FeedbackRequest {
            id: Some(id),
            label: Some(label),
            feedback: None,
        } => vec![Item { id, label }],
        FeedbackRequest {
            id: None,
            label: None,
            feedback: Some(items),
        } => items,
        _ => {
            return Err(ApiError::unprocessable(
                "invalid_request",
                "the body needs `id` and `label`, or `feedback`: [{\"id\", \"label\"}, ..]",
            ))
        }
    };
    if items.is_empty() {
        return Err(ApiError::unprocessable(
            "empty_batch",
            "`feedback` is empty",
        ));
    }
    let max = state.settings.load().max_batch;
    if items.len() > max {
        return Err(ApiError::unprocessable(
            "batch_too_large",
            format!("{} labels, server.max_batch is {max}", items.len()),
        ));
    }
    let task = state.live.load().model.meta.task;
    let mut rows = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let label = check_label(task, &item.label).map_err(|m| {
            let at = if items.len() > 1 {
                format!("feedback[{i}]: ")
            } else {
                String::new()
            };
            ApiError::unprocessable("invalid_label", format!("{at}{m}"))
        })?;
        rows.push(FeedbackRow {
            prediction_id: item.id.clone(),
            label,
        });
    }
    let ids: Vec<&str> = items.iter().map(|i| i.id.as_str()).collect();
    let mut known = logged(&state, &ids).await?;
    let mut unknown: Vec<String> = missing(&known, &ids);
    if !unknown.is_empty() {
        state.log.flush().await;
        let again: Vec<&str> = unknown.iter().map(String::as_str).collect();
        known.extend(logged(&state, &again).await?);
        unknown = missing(&known, &ids);
    }
    if let Some(first) = unknown.first() {
        let more = if unknown.len() > 1 {
            format!(" (and {} more)", unknown.len() - 1)
        } else {
            String::new()
        };
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_prediction",
            format!("no prediction with id `{first}`{more}"),
        ));
    }
    let accepted = rows.len();
    let replaced = state
        .feedback
        .store(rows.clone())
        .await
        .map_err(|e| ApiError::internal(&e))?;
    state
        .metrics
        .feedback
        .fetch_add(accepted as u64, Ordering::Relaxed);
    let live = state.live.load();
    for (item, row) in items.iter().zip(rows) {
        if let Some(p) = known.get(&item.id) {
            if let Some(outcome) = outcome(&live.model.meta, &p.output, &item.label) {
                state.monitoring.labelled(Labelled {
                    model_version: p.model_version.clone(),
                    outcome,
                });
            }
            state.learning.label(LabelItem {
                features: p.features.clone(),
                label: row.label,
            });
        }
    }
    Ok((
        StatusCode::ACCEPTED,
        Json(serde_json::json!({"accepted": accepted, "replaced": replaced})),
    ))
}

/// The logged predictions among `ids`, by id.
async fn logged(state: &AppState, ids: &[&str]) -> Result<HashMap<String, Logged>, ApiError> {
    Ok(feedback::logged(&state.pool, ids)
        .await
        .map_err(|e| ApiError::internal(&e))?
        .into_iter()
        .map(|l| (l.id.clone(), l))
        .collect())
}

/// The ids of `ids` that are not logged predictions, in request order.
fn missing(known: &HashMap<String, Logged>, ids: &[&str]) -> Vec<String> {
    ids.iter()
        .filter(|id| !known.contains_key(**id))
        .map(|id| id.to_string())
        .collect()
}

/// How the logged prediction fared against its label: a wrong class, or the
/// absolute error in target standard deviations. `None` when the output cannot
/// be read (never for a row this daemon logged).
fn outcome(meta: &ModelMeta, output: &str, label: &Value) -> Option<Outcome> {
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

/// A class label is a string or a number; a regression label a finite number.
/// Returns the label as JSON text.
fn check_label(task: Task, label: &Value) -> Result<String, String> {
    match (task, label) {
        (Task::Classification, Value::String(s)) if !s.is_empty() => Ok(label.to_string()),
        (Task::Classification, Value::Number(n)) => Ok(Value::String(n.to_string()).to_string()),
        (Task::Classification, _) => Err(format!(
            "a class label must be a non-empty string or a number, got {label}"
        )),
        (Task::Regression, Value::Number(n)) if n.as_f64().is_some_and(f64::is_finite) => {
            Ok(label.to_string())
        }
        (Task::Regression, _) => Err(format!("a regression label must be a number, got {label}")),
    }
}
