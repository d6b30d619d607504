//! The dashboard's JSON: `GET /v1/overview?minutes=N` (the live model, per-minute
//! series and totals over the last N minutes, version changes, firing alerts)
//! and `GET /v1/drift/history?checks=N` (per feature, the numbers of the last N
//! drift checks, drifted features first, and the newest histograms). Both read
//! rollups (`app::dashboard`), never the prediction log; no token needed, like
//! every GET.

use axum::extract::State;
use axum::Json;

use super::body::QueryParams;
use super::error::ApiError;
use super::AppState;
use crate::app::dashboard::{DriftHistory, Overview};

pub async fn overview(
    State(state): State<AppState>,
    params: QueryParams,
) -> Result<Json<Overview>, ApiError> {
    let minutes = params.get(&["minutes"], "minutes")?;
    Ok(Json(state.app.dashboard().overview(minutes).await?))
}

pub async fn drift_history(
    State(state): State<AppState>,
    params: QueryParams,
) -> Result<Json<DriftHistory>, ApiError> {
    let checks = params.get(&["checks"], "checks")?;
    Ok(Json(state.app.dashboard().drift_history(checks).await?))
}
