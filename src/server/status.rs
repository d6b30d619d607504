//! Read-only endpoints: the model card, the registry, liveness, readiness and
//! `/metrics`.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::registry::Unit;
use serde_json::Value;

use super::error::ApiError;
use super::listen::ConnStats;
use super::metrics::{counter, counters_by, gauge, info, Metrics};
use super::AppState;
use crate::app::health::Health;
use crate::app::App;

/// The live model's card; with several replicas, also this replica's name and
/// whether it leads (`cluster`).
pub async fn model(State(state): State<AppState>) -> Json<Value> {
    let mut card = state.app.models().card();
    if let (Some(view), Some(map)) = (state.app.health().cluster(), card.as_object_mut()) {
        map.insert("cluster".into(), serde_json::json!(view));
    }
    Json(card)
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

/// `GET /metrics`. The outbox counts need a query, so they are read here
/// and left for the alerts collector; every other series is read while encoding.
pub async fn metrics(State(state): State<AppState>) -> Result<impl IntoResponse, ApiError> {
    match state.app.alerts().counts().await {
        Ok(counts) => {
            if let Ok(mut held) = state.metrics.alert_counts.lock() {
                *held = counts
                    .into_iter()
                    .map(|(state, n)| (state, u64::try_from(n).unwrap_or(0)))
                    .collect();
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "/metrics: cannot count the alert outbox; its series keep their last values")
        }
    }
    let out = super::metrics::encode(&state.registry).map_err(|e| ApiError::internal(&e))?;
    Ok((
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        out,
    ))
}

/// The series of the prediction and feedback services, the log writer, the
/// live model and the connection layer.
#[derive(Debug)]
pub struct Collect {
    pub app: Arc<App>,
    pub metrics: Arc<Metrics>,
}

impl Collector for Collect {
    fn encode(&self, mut enc: DescriptorEncoder) -> fmt::Result {
        let app = &self.app;
        counter(
            &mut enc,
            "predictions",
            "Instances predicted.",
            app.predictions().predicted(),
        )?;
        counter(
            &mut enc,
            "feedback",
            "Feedback labels stored (new, or replacing a different label).",
            app.feedback().stored(),
        )?;
        counter(
            &mut enc,
            "feedback_unchanged",
            "Feedback labels that repeated the stored label (not stored or learned again).",
            app.feedback().unchanged(),
        )?;
        encode_connections(&self.metrics.connections, &mut enc)?;
        encode_log_and_model(app.health(), &mut enc)
    }
}

/// The prediction log's counters and the live model's info series.
fn encode_log_and_model(health: &Health, enc: &mut DescriptorEncoder) -> fmt::Result {
    let stats = health.log_stats();
    gauge(
        enc,
        "log_queue_depth",
        "Prediction log rows waiting to be written.",
        None,
        health.log_depth() as u64,
    )?;
    counter(
        enc,
        "log_rows_written",
        "Prediction log rows committed.",
        get(&stats.written),
    )?;
    counter(
        enc,
        "log_rows_dropped",
        "Prediction log rows dropped (queue full past server wait, or unwritable at stop).",
        get(&stats.dropped),
    )?;
    counter(
        enc,
        "log_write_failures",
        "Failed prediction log batch writes (each is retried).",
        get(&stats.failed_writes),
    )?;
    gauge(
        enc,
        "database_memory",
        "Memory SQLite holds across its connections (page caches, statements, sorters).",
        Some(&Unit::Bytes),
        health.database_memory_bytes(),
    )?;
    if let Some(heap) = crate::memory::heap() {
        gauge(
            enc,
            "heap_in_use",
            "Bytes in live heap allocations (glibc mallinfo2).",
            Some(&Unit::Bytes),
            heap.in_use,
        )?;
        gauge(
            enc,
            "heap_free",
            "Bytes freed but kept inside malloc's arenas (glibc mallinfo2).",
            Some(&Unit::Bytes),
            heap.free,
        )?;
    }
    let live = health.live();
    info(
        enc,
        "model",
        "The live model: its version and the arithmetic that answers (f32 or int8; value is always 1).",
        &[("version", &live.version), ("form", live.form.form.as_str())],
    )?;
    if let Some(c) = health.cluster() {
        info(
            enc,
            "cluster",
            "This replica among those on one PostgreSQL database: its name, and its role \
             (leader or follower; value is always 1).",
            &[
                ("replica", &c.replica),
                ("role", if c.leader { "leader" } else { "follower" }),
            ],
        )?;
        gauge(
            enc,
            "cluster_epoch",
            "The leader's term this replica last saw (it increases at every new leader).",
            None,
            c.epoch,
        )?;
    }
    Ok(())
}

/// The connection layer's counters.
fn encode_connections(conns: &ConnStats, enc: &mut DescriptorEncoder) -> fmt::Result {
    gauge(
        enc,
        "connections_open",
        "Client connections open.",
        None,
        get(&conns.open),
    )?;
    counters_by(
        enc,
        "connections",
        "Client connections by outcome: accepted; refused (503 at server.max_connections \
         with every connection busy); evicted (the longest-idle connection closed to make \
         room); header_timeout (no whole request head within server.header_timeout_secs); \
         malformed (closed after a request head the HTTP parser refused: 400, 414 or 431).",
        "outcome",
        &[
            ("accepted", get(&conns.accepted)),
            ("refused", get(&conns.refused)),
            ("evicted", get(&conns.evicted)),
            ("header_timeout", get(&conns.header_timeouts)),
            ("malformed", get(&conns.malformed)),
        ],
    )?;
    counter(
        enc,
        "accept_errors",
        "Failed accepts (out of file descriptors?).",
        get(&conns.accept_errors),
    )
}

/// Reads an atomic counter.
fn get(c: &AtomicU64) -> u64 {
    c.load(Ordering::Relaxed)
}
