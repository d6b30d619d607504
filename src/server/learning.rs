//! The continuous-learning endpoints: `POST /v1/retrain` (admin) starts a run and
//! answers its id, `GET /v1/retrain/{id}` shows one run, `GET /v1/retrain` the
//! recent ones, and `POST /v1/models/{version}/activate` (admin) rolls back or
//! forward to a stored version. Also their `/metrics` lines.

use std::fmt::Write;

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde_json::{json, Value};

use super::body::PathParam;
use super::error::ApiError;
use super::metrics::{get, push};
use super::AppState;
use crate::app::health::Health;
use crate::learning::retrain::Started;
use crate::learning::Activation;
use crate::store::retrain::{self as runs, Trigger};

pub async fn start(State(state): State<AppState>) -> Result<(StatusCode, Json<Value>), ApiError> {
    match state.app.models().retrain(Trigger::Api).await? {
        Started::Run(id) => Ok((
            StatusCode::ACCEPTED,
            Json(json!({"id": id, "state": "running", "url": format!("/v1/retrain/{id}")})),
        )),
        Started::Busy => Err(ApiError::new(
            StatusCode::CONFLICT,
            "retrain_running",
            "a retrain is already running; GET /v1/retrain lists it",
        )),
    }
}

pub async fn run(
    State(state): State<AppState>,
    PathParam(id): PathParam,
) -> Result<Json<runs::Run>, ApiError> {
    let unknown = || {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_run",
            format!("no retrain run with id `{id}`"),
        )
    };
    let n: i64 = id.parse().map_err(|_| unknown())?;
    state
        .app
        .models()
        .run(n)
        .await?
        .map(Json)
        .ok_or_else(unknown)
}

pub async fn runs(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let (list, running) = state.app.models().runs().await?;
    Ok(Json(json!({"runs": list, "running": running})))
}

pub async fn activate(
    State(state): State<AppState>,
    PathParam(version): PathParam,
) -> Result<Json<Activation>, ApiError> {
    Ok(Json(state.app.models().activate(&version).await?))
}

/// The learning counters in Prometheus text.
pub fn render(health: &Health, out: &mut String) {
    let s = health.learning();
    push(
        out,
        "steward_model_swaps_total",
        "counter",
        "Model versions made live (publish, activation, revert).",
        "",
        get(&s.swaps),
    );
    push(
        out,
        "steward_online_updates_total",
        "counter",
        "Online gradient steps taken from feedback labels.",
        "",
        get(&s.online_updates),
    );
    push(
        out,
        "steward_online_published_total",
        "counter",
        "Minor versions published by the online learner.",
        "",
        get(&s.online_published),
    );
    push(
        out,
        "steward_online_reverts_total",
        "counter",
        "Times the online guard went back to the base version.",
        "",
        get(&s.online_reverts),
    );
    push(
        out,
        "steward_online_labels_skipped_total",
        "counter",
        "Labels the online learner could not use (unknown class, unreadable input).",
        "",
        get(&s.online_skipped),
    );
    push(
        out,
        "steward_online_labels_dropped_total",
        "counter",
        "Labels dropped because the online learner's queue was full.",
        "",
        get(&s.online_dropped),
    );
    out.push_str(
        "# HELP steward_retrain_runs_total Retraining runs by how they ended.\n\
         # TYPE steward_retrain_runs_total counter\n",
    );
    for (name, c) in [
        ("promoted", &s.retrain_promoted),
        ("rejected", &s.retrain_rejected),
        ("skipped", &s.retrain_skipped),
        ("failed", &s.retrain_failed),
    ] {
        let _ = writeln!(
            out,
            "steward_retrain_runs_total{{state=\"{name}\"}} {}",
            get(c)
        );
    }
    push(
        out,
        "steward_retrain_running",
        "gauge",
        "1 while a retraining run holds the flight.",
        "",
        u8::from(health.retrain_running()),
    );
}
