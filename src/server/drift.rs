//! `GET /v1/drift` and the monitoring series of `/metrics`.
//!
//! The drift endpoint answers the newest stored check (so it survives a restart),
//! or 404 `no_drift_report` until the first check has run. The gauges come from
//! the newest check in memory; a value a check could not compute (a feature with
//! no values) is left out rather than exported as NaN.

use std::fmt::Write;
use std::sync::atomic::Ordering;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};

use super::error::ApiError;
use super::AppState;
use crate::monitor::drift::FeatureDrift;
use crate::monitor::watch::Check;
use crate::monitoring::Monitoring;

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

/// Escapes a Prometheus label value.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Appends the drift, anomaly, concept and event series.
pub fn render(m: &Monitoring, out: &mut String) {
    let counters = [
        (
            "steward_drift_checks_total",
            "Drift checks completed.",
            &m.checks,
        ),
        (
            "steward_drift_checks_skipped_total",
            "Drift checks skipped (too few predictions, or no reference sample).",
            &m.skipped,
        ),
        (
            "steward_drift_checks_failed_total",
            "Drift checks that failed (see the log).",
            &m.failed,
        ),
        (
            "steward_concept_labels_total",
            "Labelled predictions read by the concept-drift detectors.",
            &m.labels,
        ),
        (
            "steward_concept_labels_dropped_total",
            "Labelled predictions not read because the detectors' queue was full.",
            &m.labels_dropped,
        ),
    ];
    for (name, help, v) in counters {
        let v = v.load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}"
        );
    }
    let _ = writeln!(out, "# HELP steward_monitoring_events_total Monitoring events raised, by event.\n# TYPE steward_monitoring_events_total counter");
    if let Ok(raised) = m.raised.lock() {
        for (name, n) in raised.iter() {
            let _ = writeln!(
                out,
                "steward_monitoring_events_total{{event=\"{name}\"}} {n}"
            );
        }
    }
    let Some(check) = m.latest.load_full() else {
        return;
    };
    render_features(&check, out);
    render_window(&check, out);
}

/// The last check's per-feature (and per-output) series.
fn render_features(check: &Check, out: &mut String) {
    let features: Vec<(&str, &FeatureDrift)> = check
        .report
        .features
        .iter()
        .map(|f| ("input", f))
        .chain(check.prediction.iter().map(|f| ("output", f)))
        .collect();
    type Pick = fn(&FeatureDrift) -> Option<f64>;
    let series: [(&str, &str, Pick); 5] = [
        (
            "steward_drift_p_value",
            "Raw p-value of the feature's drift test at the last check.",
            |f| f.p_value,
        ),
        (
            "steward_drift_p_adjusted",
            "Corrected p-value at the last check.",
            |f| f.p_adjusted,
        ),
        (
            "steward_drift_statistic",
            "KS or chi-square statistic at the last check.",
            |f| f.statistic,
        ),
        (
            "steward_drift_psi",
            "Population stability index at the last check.",
            |f| f.psi,
        ),
        (
            "steward_drift_drifted",
            "1 when the feature drifted at the last check.",
            |f| Some(f64::from(u8::from(f.drift))),
        ),
    ];
    for (name, help, pick) in series {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
        for (subject, f) in &features {
            if let Some(v) = pick(f).filter(|v| v.is_finite()) {
                let _ = writeln!(
                    out,
                    "{name}{{feature=\"{}\",subject=\"{subject}\"}} {v}",
                    label(&f.name)
                );
            }
        }
    }
}

/// The last check's dataset-level gauges.
fn render_window(check: &Check, out: &mut String) {
    let gauge = |out: &mut String, name: &str, help: &str, v: f64| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
    };
    gauge(
        out,
        "steward_dataset_drift",
        "1 when the last check found dataset drift.",
        f64::from(u8::from(check.report.dataset_drift)),
    );
    gauge(
        out,
        "steward_drift_window_rows",
        "Predictions in the last check's window.",
        check.window.rows as f64,
    );
    if let Some(a) = &check.anomaly {
        gauge(
            out,
            "steward_anomaly_rate",
            "Share of anomalous inputs in the last check's window.",
            a.rate,
        );
        gauge(
            out,
            "steward_anomaly_expected_rate",
            "Anomaly rate expected under the training distribution.",
            a.expected_rate,
        );
        gauge(
            out,
            "steward_anomaly_rate_p_value",
            "Binomial test of the window's anomaly count against the expected rate.",
            a.p_value,
        );
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn label_values_are_escaped() {
        assert_eq!(super::label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
