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

pub async fn model(State(state): State<AppState>) -> Json<Value> {
    Json(state.app.models().card())
}

pub async fn models(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let list = state.app.models().list().await?;
    Ok(Json(serde_json::json!({"models": list})))
}

pub async fn healthz() -> Json<Value> {
    Json(serde_json::json!({"status": "ok"}))
}

/// Ready when a model is loaded (always, once serving), the database takes a
/// write, and the log writer's last write succeeded.
pub async fn readyz(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let version = state.app.health().ready().await?;
    Ok(Json(
        serde_json::json!({"status": "ready", "model_version": version}),
    ))
}

pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let mut out = String::with_capacity(8192);
    state.metrics.render_requests(&mut out);
    let health = state.app.health();
    push(
        &mut out,
        "steward_predictions_total",
        "counter",
        "Instances predicted.",
        "",
        state.app.predictions().predicted(),
    );
    push(
        &mut out,
        "steward_feedback_total",
        "counter",
        "Feedback labels stored (new, or replacing a different label).",
        "",
        state.app.feedback().stored(),
    );
    push(
        &mut out,
        "steward_feedback_unchanged_total",
        "counter",
        "Feedback labels that repeated the stored label (not stored or learned again).",
        "",
        state.app.feedback().unchanged(),
    );
    render_connections(&state.metrics.connections, &mut out);
    render_log_and_model(health, &mut out);
    super::drift::render(health.monitoring(), &mut out);
    super::learning::render(health, &mut out);
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

/// The prediction log's counters and the live model's info gauges.
fn render_log_and_model(health: &crate::app::health::Health, out: &mut String) {
    let stats = health.log_stats();
    let live = health.live();
    push(
        out,
        "steward_log_queue_depth",
        "gauge",
        "Prediction log rows waiting to be written.",
        "",
        health.log_depth(),
    );
    push(
        out,
        "steward_log_rows_written_total",
        "counter",
        "Prediction log rows committed.",
        "",
        get(&stats.written),
    );
    push(
        out,
        "steward_log_rows_dropped_total",
        "counter",
        "Prediction log rows dropped (queue full past server wait, or unwritable at stop).",
        "",
        get(&stats.dropped),
    );
    push(
        out,
        "steward_log_write_failures_total",
        "counter",
        "Failed prediction log batch writes (each is retried).",
        "",
        get(&stats.failed_writes),
    );
    push(
        out,
        "steward_model_info",
        "gauge",
        "The live model version (value is always 1).",
        &format!("version=\"{}\"", live.version),
        1,
    );
    push(
        out,
        "steward_model_form",
        "gauge",
        "The arithmetic that answers requests (f32 or int8; value is always 1).",
        &format!("form=\"{}\"", live.form.form.as_str()),
        1,
    );
}

/// The connection layer's counters.
fn render_connections(conns: &super::listen::ConnStats, out: &mut String) {
    push(
        out,
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
         server.header_timeout_secs); malformed (closed after a request head the HTTP parser \
         refused: 400, 414 or 431).\n# TYPE steward_connections_total counter"
    );
    for (outcome, counter) in [
        ("accepted", &conns.accepted),
        ("refused", &conns.refused),
        ("evicted", &conns.evicted),
        ("header_timeout", &conns.header_timeouts),
        ("malformed", &conns.malformed),
    ] {
        let _ = writeln!(
            out,
            "steward_connections_total{{outcome=\"{outcome}\"}} {}",
            get(counter)
        );
    }
    push(
        out,
        "steward_accept_errors_total",
        "counter",
        "Failed accepts (out of file descriptors?).",
        "",
        get(&conns.accept_errors),
    );
}
