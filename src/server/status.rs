//! Read-only endpoints: the model card, the registry, liveness, readiness and
//! `/metrics`.

use std::fmt::Write as _;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use serde_json::Value;

use super::error::ApiError;
use super::metrics::{get, push};
use super::AppState;
use crate::store::registry;

pub async fn model(State(state): State<AppState>) -> Json<Value> {
    Json(state.live.load().card.clone())
}

pub async fn models(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let list = registry::list(&state.pool)
        .await
        .map_err(|e| ApiError::internal(&e))?;
    Ok(Json(serde_json::json!({"models": list})))
}

pub async fn healthz() -> Json<Value> {
    Json(serde_json::json!({"status": "ok"}))
}

/// Ready when a model is loaded (always, once serving), the database takes a
/// write, and the log writer's last write succeeded.
pub async fn readyz(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    if let Err(e) = crate::store::heartbeat(&state.pool).await {
        tracing::warn!(error = %e, "readiness: database not writable");
        return Err(ApiError::unavailable(
            "database_unwritable",
            "the database does not take writes; see the daemon's log",
        ));
    }
    if let Some(e) = state.log.stats().error() {
        tracing::warn!(error = %e, "readiness: prediction log writes failing");
        return Err(ApiError::unavailable(
            "log_writer_failing",
            "prediction log writes are failing; see the daemon's log",
        ));
    }
    let live = state.live.load();
    Ok(Json(
        serde_json::json!({"status": "ready", "model_version": &*live.version}),
    ))
}

pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let mut out = String::with_capacity(8192);
    state.metrics.render_requests(&mut out);
    let stats = state.log.stats();
    let live = state.live.load();
    push(
        &mut out,
        "steward_predictions_total",
        "counter",
        "Instances predicted.",
        "",
        get(&state.metrics.predictions),
    );
    push(
        &mut out,
        "steward_feedback_total",
        "counter",
        "Feedback labels stored (new, or replacing a different label).",
        "",
        get(&state.metrics.feedback),
    );
    push(
        &mut out,
        "steward_feedback_unchanged_total",
        "counter",
        "Feedback labels that repeated the stored label (not stored or learned again).",
        "",
        get(&state.metrics.feedback_unchanged),
    );
    let conns = &state.metrics.connections;
    push(
        &mut out,
        "steward_connections_open",
        "gauge",
        "Client connections open.",
        "",
        get(&conns.open),
    );
    let _ = writeln!(
        out,
        "# HELP steward_connections_total Client connections by outcome: accepted; refused \
         (503 at server.max_connections with every connection busy); evicted (the longest-idle \
         connection closed to make room); header_timeout (no whole request head within \
         server.header_timeout_ms).\n# TYPE steward_connections_total counter"
    );
    for (outcome, counter) in [
        ("accepted", &conns.accepted),
        ("refused", &conns.refused),
        ("evicted", &conns.evicted),
        ("header_timeout", &conns.header_timeouts),
    ] {
        let _ = writeln!(
            out,
            "steward_connections_total{{outcome=\"{outcome}\"}} {}",
            get(counter)
        );
    }
    push(
        &mut out,
        "steward_accept_errors_total",
        "counter",
        "Failed accepts (out of file descriptors?).",
        "",
        get(&conns.accept_errors),
    );
    push(
        &mut out,
        "steward_log_queue_depth",
        "gauge",
        "Prediction log rows waiting to be written.",
        "",
        state.log.depth(),
    );
    push(
        &mut out,
        "steward_log_rows_written_total",
        "counter",
        "Prediction log rows committed.",
        "",
        get(&stats.written),
    );
    push(
        &mut out,
        "steward_log_rows_dropped_total",
        "counter",
        "Prediction log rows dropped (queue full past server wait, or unwritable at stop).",
        "",
        get(&stats.dropped),
    );
    push(
        &mut out,
        "steward_log_write_failures_total",
        "counter",
        "Failed prediction log batch writes (each is retried).",
        "",
        get(&stats.failed_writes),
    );
    push(
        &mut out,
        "steward_model_info",
        "gauge",
        "The live model version (value is always 1).",
        &format!("version=\"{}\"", live.version),
        1,
    );
    push(
        &mut out,
        "steward_model_form",
        "gauge",
        "The arithmetic that answers requests (f32 or int8; value is always 1).",
        &format!("form=\"{}\"", live.form.form.as_str()),
        1,
    );
    push(
        &mut out,
        "steward_model_version",
        "gauge",
        "The live model version as a number.",
        "",
        live.version.parse::<f64>().unwrap_or(f64::NAN),
    );
    super::drift::render(&state.monitoring, &mut out);
    super::learning::render(&state, &mut out);
    super::alerts::render(&state, &mut out).await;
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        out,
    )
}
