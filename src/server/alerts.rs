//! `GET /v1/alerts` (recent notifications and their delivery state) and the
//! silences: `POST /v1/silences` (`{"matchers": [{"name", "value"}], "ends_at":
//! RFC 3339, "created_by", "comment"}` → 201 `{"id"}`), `GET /v1/silences` (those
//! not yet ended) and `DELETE /v1/silences/{id}`. Silences need the bearer token.
//! A matcher named `rule` matches the alert's rule (`feature_drift`, ...), any
//! other name the label of that name (`feature`, `detector`).

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::body::{JsonBody, PathParam};
use super::error::ApiError;
use super::AppState;
use crate::alert::rules::Matcher;
use crate::store::alerts::{self as outbox, SilenceRow};

pub async fn alerts(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let rows = outbox::recent(&state.pool, 100)
        .await
        .map_err(|e| ApiError::internal(&e))?;
    let list: Vec<Value> = rows
        .iter()
        .map(|m| {
            json!({
                "id": m.id,
                "created": crate::time::rfc3339(m.created),
                "group": m.group_key,
                "kind": m.kind,
                "subject": m.subject,
                "recipients": m.recipients(),
                "message_id": m.message_id,
                "state": m.state,
                "attempts": m.attempts,
                "next_attempt": (m.state == "pending").then(|| crate::time::rfc3339(m.next_attempt)),
                "last_error": m.last_error,
                "sent_at": m.sent_at.map(crate::time::rfc3339),
            })
        })
        .collect();
    Ok(Json(json!({ "alerts": list })))
}

/// At most this many matchers in one silence.
const MAX_MATCHERS: usize = 32;
/// At most this many bytes in a matcher's name or value (`created_by` and
/// `comment`: four times as many).
const MAX_TEXT: usize = 256;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewSilence {
    matchers: Vec<Matcher>,
    ends_at: String,
    #[serde(default)]
    starts_at: Option<String>,
    #[serde(default)]
    created_by: String,
    #[serde(default)]
    comment: String,
}

pub async fn create_silence(
    State(state): State<AppState>,
    JsonBody(req): JsonBody<NewSilence>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let invalid = |m: String| ApiError::unprocessable("invalid_silence", m);
    if req.matchers.is_empty() {
        return Err(invalid(
            "`matchers` is empty: a silence must say which alerts it silences".into(),
        ));
    }
    if req.matchers.len() > MAX_MATCHERS {
        return Err(invalid(format!(
            "{} matchers, at most {MAX_MATCHERS} are allowed",
            req.matchers.len()
        )));
    }
    if let Some((i, m)) = req
        .matchers
        .iter()
        .enumerate()
        .find(|(_, m)| m.name.is_empty() || m.value.is_empty())
    {
        return Err(invalid(format!(
            "matchers[{i}] {{\"name\": {:?}, \"value\": {:?}}} needs a non-empty name and value",
            m.name, m.value
        )));
    }
    if let Some(i) = req
        .matchers
        .iter()
        .position(|m| m.name.len() > MAX_TEXT || m.value.len() > MAX_TEXT)
    {
        return Err(invalid(format!(
            "matchers[{i}]: a name or value longer than {MAX_TEXT} bytes"
        )));
    }
    for (field, text) in [("created_by", &req.created_by), ("comment", &req.comment)] {
        if text.len() > MAX_TEXT * 4 {
            return Err(invalid(format!(
                "`{field}` is longer than {} bytes",
                MAX_TEXT * 4
            )));
        }
    }
    let now = crate::time::now_millis();
    let parse = |field: &str, v: &str| {
        crate::time::parse_rfc3339(v).ok_or_else(|| {
            invalid(format!(
                "`{field}` is not an RFC 3339 time like 2026-11-29T18:00:00Z: {v:?}"
            ))
        })
    };
    let ends_at = parse("ends_at", &req.ends_at)?;
    let starts_at = match &req.starts_at {
        Some(s) => parse("starts_at", s)?,
        None => now,
    };
    if ends_at <= now || ends_at <= starts_at {
        return Err(invalid(format!(
            "`ends_at` ({}) must be in the future and after `starts_at`",
            req.ends_at
        )));
    }
    let row = SilenceRow {
        id: uuid::Uuid::now_v7().to_string(),
        matchers: serde_json::to_string(&req.matchers).map_err(|e| ApiError::internal(&e))?,
        starts_at,
        ends_at,
        created_by: req.created_by,
        comment: req.comment,
    };
    outbox::insert_silence(&state.pool, &row)
        .await
        .map_err(|e| ApiError::internal(&e))?;
    tracing::info!(id = %row.id, matchers = %row.matchers, ends_at = %req.ends_at, created_by = %row.created_by, "silence created");
    Ok((StatusCode::CREATED, Json(json!({ "id": row.id }))))
}

pub async fn silences(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let rows = outbox::silences(&state.pool, crate::time::now_millis())
        .await
        .map_err(|e| ApiError::internal(&e))?;
    let list: Vec<Value> = rows
        .iter()
        .map(|s| {
            json!({
                "id": s.id,
                "matchers": serde_json::from_str::<Value>(&s.matchers).unwrap_or(Value::Null),
                "starts_at": crate::time::rfc3339(s.starts_at),
                "ends_at": crate::time::rfc3339(s.ends_at),
                "created_by": s.created_by,
                "comment": s.comment,
            })
        })
        .collect();
    Ok(Json(json!({ "silences": list })))
}

pub async fn delete_silence(
    State(state): State<AppState>,
    PathParam(id): PathParam,
) -> Result<StatusCode, ApiError> {
    if outbox::delete_silence(&state.pool, &id)
        .await
        .map_err(|e| ApiError::internal(&e))?
    {
        tracing::info!(%id, "silence deleted");
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_silence",
            format!("no silence with id `{id}`"),
        ))
    }
}

/// Appends the outbox counts to `/metrics`.
pub async fn render(state: &AppState, out: &mut String) {
    let counts = outbox::counts(&state.pool).await.unwrap_or_default();
    let get = |s: &str| counts.iter().find(|(k, _)| k == s).map_or(0, |(_, n)| *n);
    for (name, help, value) in [
        (
            "steward_alerts_sent_total",
            "Alert mails sent.",
            get("sent"),
        ),
        (
            "steward_alerts_failed_total",
            "Alert mails refused for good (see GET /v1/alerts for the error).",
            get("failed"),
        ),
        (
            "steward_alerts_pending",
            "Alert mails waiting to be sent (first try or retry).",
            get("pending"),
        ),
        (
            "steward_alerts_held_total",
            "Alert mails held back by alerts.max_per_hour.",
            get("held") + get("summarized"),
        ),
    ] {
        let kind = if name.ends_with("_total") {
            "counter"
        } else {
            "gauge"
        };
        super::metrics::push(out, name, kind, help, "", value);
    }
}
