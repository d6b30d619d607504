//! `POST /v1/feedback`: labels for logged predictions, `{"id", "label"}` or
//! `{"feedback": [{"id", "label"}, ..]}`, stored by `app::feedback` (which says
//! what is refused and what is learned). Here: the two shapes of the body.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use serde_json::Value;

use super::body::JsonBody;
use super::error::ApiError;
use super::AppState;
use crate::app::feedback::{Counts, Label};

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
) -> Result<(StatusCode, Json<Counts>), ApiError> {
    let items = match req {
        FeedbackRequest {
            id: Some(id),
            label: Some(label),
            feedback: None,
        } => vec![Label { id, label }],
        FeedbackRequest {
            id: None,
            label: None,
            feedback: Some(items),
        } => items
            .into_iter()
            .map(|Item { id, label }| Label { id, label })
            .collect(),
        _ => {
            return Err(ApiError::unprocessable(
                "invalid_request",
                "the body needs `id` and `label`, or `feedback`: [{\"id\", \"label\"}, ..]",
            ))
        }
    };
    let counts = state.app.feedback().submit(items).await?;
    Ok((StatusCode::ACCEPTED, Json(counts)))
}
