//! `GET /v1/alerts` (recent notifications and their delivery state, optionally
//! of one state, with the counts by state) and the
//! silences: `POST /v1/silences` (`{"matchers": [{"name", "value"}], "ends_at":
//! RFC 3339, "created_by", "comment"}` → 201 `{"id"}`), `GET /v1/silences` (those
//! not yet ended) and `DELETE /v1/silences/{id}`. Silences need the bearer token.
//! A matcher named `rule` matches the alert's rule (`feature_drift`, ...), any
//! other name the label of that name (`feature`, `detector`). Also the outbox's
//! `/metrics` series.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use serde_json::{json, Value};

use super::body::{JsonBody, PathParam, QueryParams};
use super::error::ApiError;
use super::metrics::{counter, gauge, Metrics};
use super::AppState;
use crate::app::alerts::MailCounters;
use crate::app::alerts::NewSilence;
use crate::store::alerts::MailState;

/// `GET /v1/alerts[?state=pending|sent|failed|held|summarized]`: the newest
/// 100 notifications (in that state), and the outbox's counts by state.
pub async fn alerts(
    State(state): State<AppState>,
    params: QueryParams,
) -> Result<Json<Value>, ApiError> {
    let wanted = params.get(&["state"], "state")?;
    let rows = state.app.alerts().list(wanted).await?;
    let counts = state.app.alerts().counts().await?;
    let mut by_state = serde_json::Map::new();
    for s in MailState::ALL {
        let n = counts
            .iter()
            .find(|(k, _)| k == s.as_str())
            .map_or(0, |(_, n)| *n);
        by_state.insert(s.as_str().into(), n.into());
    }
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
                "next_attempt": (m.state == MailState::Pending).then(|| crate::time::rfc3339(m.next_attempt)),
                "last_error": m.last_error,
                "sent_at": m.sent_at.map(crate::time::rfc3339),
            })
        })
        .collect();
    Ok(Json(json!({ "alerts": list, "counts": by_state })))
}

/// At most this many matchers in one silence.
pub async fn create_silence(
    State(state): State<AppState>,
    JsonBody(req): JsonBody<NewSilence>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let id = state.app.alerts().create_silence(req).await?;
    Ok((StatusCode::CREATED, Json(json!({ "id": id }))))
}

pub async fn silences(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let rows = state.app.alerts().silences().await?;
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
    state.app.alerts().delete_silence(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The outbox series: what the alerting tasks counted since the start, and the
/// pending rows the `/metrics` handler counted just before.
#[derive(Debug)]
pub struct Collect(pub Arc<Metrics>, pub Arc<MailCounters>);

impl Collector for Collect {
    fn encode(&self, mut enc: DescriptorEncoder) -> fmt::Result {
        let counts = self
            .0
            .alert_counts
            .lock()
            .map(|c| c.clone())
            .unwrap_or_default();
        let get = |s: &str| counts.iter().find(|(k, _)| k == s).map_or(0, |(_, n)| *n);
        let counted = |c: &AtomicU64| c.load(Ordering::Relaxed);
        counter(
            &mut enc,
            "alerts_sent",
            "Alert mails sent.",
            counted(&self.1.sent),
        )?;
        counter(
            &mut enc,
            "alerts_failed",
            "Alert mails refused for good (see GET /v1/alerts for the error).",
            counted(&self.1.failed),
        )?;
        gauge(
            &mut enc,
            "alerts_pending",
            "Alert mails waiting to be sent (first try or retry).",
            None,
            get("pending"),
        )?;
        counter(
            &mut enc,
            "alerts_held",
            "Alert mails held back by alerts.max_per_hour.",
            counted(&self.1.held),
        )
    }
}
