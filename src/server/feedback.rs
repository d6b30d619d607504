//! `POST /v1/feedback`: labels for logged predictions, `{"id", "label"}` or
//! `{"feedback": [{"id", "label"}, ..]}`. All or nothing: if any id is unknown the
//! answer is 404 naming it and nothing is stored; a batch that labels one id twice
//! is refused (422 `duplicate_prediction`). A prediction answered a moment ago
//! may still be in the log queue, so an id not found is looked up again after a
//! flush of the queue before it is called unknown; while the log cannot be written
//! (disk full) the answer is 503 `log_unavailable` instead, since the id may well
//! be one of the rows waiting. A second, different label for the same id replaces
//! the first; the same label again changes nothing (see `store::feedback`).
//!
//! A label that is new for its prediction sends the outcome (wrong class, or
//! absolute error) to the concept-drift detectors, which count each prediction
//! once; a new or replaced label goes with its logged input to the online learner.
//! An unchanged one goes nowhere, so a retried request is never learned twice.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::Duration;

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
use crate::store::feedback::{self, FeedbackRow, LabelOutcome, Logged};

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
    if let Some((first, again)) = first_duplicate(&items) {
        return Err(ApiError::unprocessable(
            "duplicate_prediction",
            format!(
                "feedback[{first}] and feedback[{again}] both label prediction `{}`; \
                 send one label per prediction",
                items[first].id
            ),
        ));
    }
    let ids: Vec<&str> = items.iter().map(|i| i.id.as_str()).collect();
    let mut known = logged(&state, &ids).await?;
    let mut unknown: Vec<String> = missing(&known, &ids);
    if !unknown.is_empty() {
        flush_log(&state).await?;
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
    let outcomes = state.feedback.store(rows.clone()).await?;
    let count = |o: LabelOutcome| outcomes.iter().filter(|x| **x == o).count();
    let (new, replaced, unchanged) = (
        count(LabelOutcome::New),
        count(LabelOutcome::Replaced),
        count(LabelOutcome::Unchanged),
    );
    state
        .metrics
        .feedback
        .fetch_add((new + replaced) as u64, Ordering::Relaxed);
    state
        .metrics
        .feedback_unchanged
        .fetch_add(unchanged as u64, Ordering::Relaxed);
    let live = state.live.load();
    for ((item, row), outcome) in items.iter().zip(rows).zip(outcomes) {
        let Some(p) = known.get(&item.id) else {
            continue;
        };
        if outcome == LabelOutcome::New {
            if let Some(outcome) = outcome_of(&live.model.meta, &p.output, &item.label) {
                state.monitoring.labelled(Labelled {
                    model_version: p.model_version.clone(),
                    outcome,
                });
            }
        }
        if outcome != LabelOutcome::Unchanged {
            state.learning.label(LabelItem {
                features: p.features.clone(),
                label: row.label,
            });
        }
    }
    Ok((
        StatusCode::ACCEPTED,
        Json(serde_json::json!({
            "accepted": accepted,
            "replaced": replaced,
            "unchanged": unchanged,
        })),
    ))
}

/// The positions of the first two items that label the same prediction.
fn first_duplicate(items: &[Item]) -> Option<(usize, usize)> {
    let mut seen: HashMap<&str, usize> = HashMap::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        if let Some(first) = seen.insert(item.id.as_str(), i) {
            return Some((first, i));
        }
    }
    None
}

/// How long a feedback request waits for the prediction log to commit what it
/// holds before its ids are looked up again.
const FLUSH_WAIT: Duration = Duration::from_secs(2);

/// Waits until the predictions answered so far are in the database. While the
/// log cannot be written, an id not found may be one of the rows held for retry:
/// that is a 503 to retry, not an unknown prediction.
async fn flush_log(state: &AppState) -> Result<(), ApiError> {
    let unavailable = || {
        ApiError::unavailable(
            "log_unavailable",
            "some of these predictions may not be in the database yet: its writes are \
             failing (disk full, locked or read-only); nothing was stored, retry later",
        )
        .retry_after(5)
    };
    if state.log.stats().error().is_some() {
        return Err(unavailable());
    }
    match tokio::time::timeout(FLUSH_WAIT, state.log.flush()).await {
        Ok(true) => Ok(()),
        _ => Err(unavailable()),
    }
}

/// The logged predictions among `ids`, by id.
async fn logged(state: &AppState, ids: &[&str]) -> Result<HashMap<String, Logged>, ApiError> {
    Ok(feedback::logged(&state.pool, ids)
        .await?
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
fn outcome_of(meta: &ModelMeta, output: &str, label: &Value) -> Option<Outcome> {
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
