//! `GET /v1/drift` and the monitoring series of `/metrics`.
//!
//! The drift endpoint answers the newest stored check (so it survives a restart),
//! or 404 `no_drift_report` until the first check has run. The gauges come from
//! the newest check in memory; a value a check could not compute (a feature with
//! no values) is left out rather than exported as NaN.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Unit;

use super::error::ApiError;
use super::metrics::{counter, counters_by, gauge, timestamp_seconds};
use super::AppState;
use crate::app::App;
use crate::monitor::drift::FeatureDrift;
use crate::monitor::watch::Check;

pub async fn drift(State(state): State<AppState>) -> Result<Response, ApiError> {
    match state.app.health().drift_report().await? {
        Some(json) => Ok(([(header::CONTENT_TYPE, "application/json")], json).into_response()),
        None => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "no_drift_report",
            "no drift check has run yet: the first runs drift.interval_secs after start, \
             once the window holds drift.min_rows predictions",
        )),
    }
}

/// The drift, anomaly, concept and event series.
#[derive(Debug)]
pub struct Collect(pub Arc<App>);

impl Collector for Collect {
    fn encode(&self, mut enc: DescriptorEncoder) -> fmt::Result {
        let m = self.0.health().monitoring();
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        counter(
            &mut enc,
            "drift_checks",
            "Drift checks completed.",
            get(&m.checks),
        )?;
        counter(
            &mut enc,
            "drift_checks_skipped",
            "Drift checks skipped (too few predictions, or no reference sample).",
            get(&m.skipped),
        )?;
        counter(
            &mut enc,
            "drift_checks_failed",
            "Drift checks that failed (see the log).",
            get(&m.failed),
        )?;
        if let Some(t) = timestamp_seconds(m.last_check_ms.load(Ordering::Relaxed)) {
            gauge(
                &mut enc,
                "drift_last_success_timestamp",
                "When the last drift check completed (Unix time; restored from the database \
                 at start).",
                Some(&Unit::Seconds),
                t,
            )?;
        }
        counter(
            &mut enc,
            "concept_labels",
            "Labelled predictions read by the concept-drift detectors.",
            get(&m.labels),
        )?;
        counter(
            &mut enc,
            "concept_labels_dropped",
            "Labelled predictions not read because the detectors' queue was full.",
            get(&m.labels_dropped),
        )?;
        let raised: Vec<(&str, u64)> = match m.raised.lock() {
            Ok(r) => r.iter().map(|(k, v)| (*k, *v)).collect(),
            Err(_) => Vec::new(),
        };
        counters_by(
            &mut enc,
            "monitoring_events",
            "Monitoring events raised, by event.",
            "event",
            &raised,
        )?;
        let Some(check) = m.latest.load_full() else {
            return Ok(());
        };
        encode_features(&check, &mut enc)?;
        encode_window(&check, &mut enc)
    }
}

/// The last check's per-feature (and per-output) series.
fn encode_features(check: &Check, enc: &mut DescriptorEncoder) -> fmt::Result {
    let features: Vec<(&str, &FeatureDrift)> = check
        .report
        .features
        .iter()
        .map(|f| ("input", f))
        .chain(check.prediction.iter().map(|f| ("output", f)))
        .collect();
    type Pick = fn(&FeatureDrift) -> Option<f64>;
    let series: [(&str, &str, Pick); 4] = [
        (
            "drift_p_value",
            "Raw p-value of the feature's drift test at the last check.",
            |f| f.p_value,
        ),
        (
            "drift_p_adjusted",
            "Corrected p-value at the last check.",
            |f| f.p_adjusted,
        ),
        (
            "drift_statistic",
            "KS or chi-square statistic at the last check.",
            |f| f.statistic,
        ),
        (
            "drift_psi",
            "Population stability index at the last check.",
            |f| f.psi,
        ),
    ];
    for (name, help, pick) in series {
        let mut m = enc.encode_descriptor(name, help, None, MetricType::Gauge)?;
        for (subject, f) in &features {
            if let Some(v) = pick(f).filter(|v| v.is_finite()) {
                let labels = [("feature", f.name.as_str()), ("subject", subject)];
                ConstGauge::new(v).encode(m.encode_family(&labels)?)?;
            }
        }
    }
    let mut m = enc.encode_descriptor(
        "drift_drifted",
        "1 when the feature drifted at the last check.",
        None,
        MetricType::Gauge,
    )?;
    for (subject, f) in &features {
        let labels = [("feature", f.name.as_str()), ("subject", subject)];
        ConstGauge::new(u64::from(f.drift)).encode(m.encode_family(&labels)?)?;
    }
    Ok(())
}

/// The last check's dataset-level gauges.
fn encode_window(check: &Check, enc: &mut DescriptorEncoder) -> fmt::Result {
    gauge(
        enc,
        "dataset_drift",
        "1 when the last check found dataset drift.",
        None,
        u64::from(check.report.dataset_drift),
    )?;
    gauge(
        enc,
        "drift_window_rows",
        "Predictions in the last check's window.",
        None,
        check.window.rows as u64,
    )?;
    let Some(a) = &check.anomaly else {
        return Ok(());
    };
    let ratio = Unit::Other("ratio".to_owned());
    gauge(
        enc,
        "anomaly",
        "Share of anomalous inputs in the last check's window.",
        Some(&ratio),
        a.rate,
    )?;
    gauge(
        enc,
        "anomaly_expected",
        "Share of anomalous inputs expected under the training distribution.",
        Some(&ratio),
        a.expected_rate,
    )?;
    gauge(
        enc,
        "anomaly_p_value",
        "Binomial test of the window's anomaly count against the expected share.",
        None,
        a.p_value,
    )
}
