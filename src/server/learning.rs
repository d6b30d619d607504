//! The continuous-learning endpoints: `POST /v1/retrain` (admin) starts a run and
//! answers its id, `GET /v1/retrain/{id}` shows one run, `GET /v1/retrain` the
//! recent ones, and `POST /v1/models/{version}/activate` (admin) rolls back or
//! forward to a stored version. Also their `/metrics` series.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::registry::Unit;
use serde_json::{json, Value};

use super::body::PathParam;
use super::error::ApiError;
use super::metrics::{counter, counters_by, gauge, timestamp_seconds};
use super::AppState;
use crate::app::App;
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

/// The model swap, online learner and retraining series.
#[derive(Debug)]
pub struct Collect(pub Arc<App>);

impl Collector for Collect {
    fn encode(&self, mut enc: DescriptorEncoder) -> fmt::Result {
        let health = self.0.health();
        let s = health.learning();
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        for (name, help, c) in [
            (
                "model_swaps",
                "Model versions made live (publish, activation, revert).",
                &s.swaps,
            ),
            (
                "online_updates",
                "Online gradient steps taken from feedback labels.",
                &s.online_updates,
            ),
            (
                "online_published",
                "Minor versions published by the online learner.",
                &s.online_published,
            ),
            (
                "online_reverts",
                "Times the online guard went back to the base version.",
                &s.online_reverts,
            ),
            (
                "online_labels_skipped",
                "Labels the online learner could not use (unknown class, unreadable input).",
                &s.online_skipped,
            ),
            (
                "online_labels_dropped",
                "Labels dropped because the online learner's queue was full.",
                &s.online_dropped,
            ),
        ] {
            counter(&mut enc, name, help, get(c))?;
        }
        counters_by(
            &mut enc,
            "retrain_runs",
            "Retraining runs by how they ended.",
            "state",
            &[
                ("promoted", get(&s.retrain_promoted)),
                ("rejected", get(&s.retrain_rejected)),
                ("skipped", get(&s.retrain_skipped)),
                ("failed", get(&s.retrain_failed)),
            ],
        )?;
        gauge(
            &mut enc,
            "retrain_running",
            "1 while a retraining run holds the flight.",
            None,
            u64::from(health.retrain_running()),
        )?;
        match timestamp_seconds(s.retrain_last_decided_ms.load(Ordering::Relaxed)) {
            Some(t) => gauge(
                &mut enc,
                "retrain_last_success_timestamp",
                "When the last retraining run that reached a decision (promoted or rejected) \
                 ended (Unix time; restored from the database at start).",
                Some(&Unit::Seconds),
                t,
            ),
            None => Ok(()),
        }
    }
}
