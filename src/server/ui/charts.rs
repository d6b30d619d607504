//! The dashboard's charts, from the same answers `/v1/overview` and
//! `/v1/drift/history` give: which chart a request names, and the `plot` chart
//! that draws it. No drawing here, and no reading: only choosing the numbers.

use crate::app::dashboard::{DriftHistory, FeatureHistory, Overview};
use crate::plot::{Distribution, Histogram, Marker, Size, Threshold, TimeSeries, Verdict};
use crate::server::error::ApiError;

/// A p-value below this is drawn at it: −log10 gives 16, not infinity.
const SMALLEST_P: f64 = 1e-16;

/// One of the overview's per-minute series.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OverviewChart {
    Predictions,
    LatencyP50,
    LatencyP99,
    AnomalyRate,
    /// Accuracy for a classifier, mean absolute error for a regression.
    Feedback,
}

/// The names `chart=` takes on `/ui/charts/overview.svg`.
pub const OVERVIEW: [(&str, OverviewChart); 5] = [
    ("predictions", OverviewChart::Predictions),
    ("latency_p50", OverviewChart::LatencyP50),
    ("latency_p99", OverviewChart::LatencyP99),
    ("anomaly_rate", OverviewChart::AnomalyRate),
    ("feedback", OverviewChart::Feedback),
];

/// A chart of one drift feature.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DriftChart {
    /// Reference against current at the newest check.
    Distribution,
    /// The adjusted p-value over the checks, as −log10, with alpha marked.
    PValue,
    Psi,
}

/// The names `chart=` takes on `/ui/charts/drift.svg`.
pub const DRIFT: [(&str, DriftChart); 3] = [
    ("distribution", DriftChart::Distribution),
    ("p_value", DriftChart::PValue),
    ("psi", DriftChart::Psi),
];

fn parse<T: Copy>(known: &[(&str, T)], raw: &str) -> Result<T, ApiError> {
    known
        .iter()
        .find(|(name, _)| *name == raw)
        .map(|(_, c)| *c)
        .ok_or_else(|| {
            let names: Vec<&str> = known.iter().map(|(n, _)| *n).collect();
            ApiError::unprocessable(
                "invalid_parameter",
                format!("chart=`{raw}`: must be one of {}", names.join(", ")),
            )
        })
}

/// A y range from 0 to `headroom` times the largest value (at least `least`).
fn from_zero(values: &[f64], headroom: f64, least: f64) -> (f64, f64) {
    let top = values
        .iter()
        .copied()
        .filter(|v| v.is_finite())
        .fold(0.0, f64::max);
    (0.0, (top * headroom).max(least))
}

/// A number, or a gap in the line.
fn value(v: Option<f64>) -> f64 {
    v.unwrap_or(f64::NAN)
}

impl OverviewChart {
    pub fn parse(raw: &str) -> Result<OverviewChart, ApiError> {
        parse(&OVERVIEW, raw)
    }

    /// The chart of this series over the overview's minutes, with every
    /// version made live in the window marked.
    pub fn series(self, o: &Overview) -> Result<TimeSeries, ApiError> {
        let s = &o.series;
        let (title, y_label, values): (String, &str, Vec<f64>) = match self {
            OverviewChart::Predictions => (
                "Predictions per minute".into(),
                "predictions",
                s.predictions.iter().map(|n| *n as f64).collect(),
            ),
            OverviewChart::LatencyP50 => (
                "Latency p50 (encoding and the model)".into(),
                "µs",
                s.latency_p50_ms.iter().map(|v| value(*v) * 1e3).collect(),
            ),
            OverviewChart::LatencyP99 => (
                "Latency p99 (encoding and the model)".into(),
                "µs",
                s.latency_p99_ms.iter().map(|v| value(*v) * 1e3).collect(),
            ),
            OverviewChart::AnomalyRate => (
                "Anomaly rate".into(),
                "share of predictions",
                s.anomaly_rate.iter().copied().map(value).collect(),
            ),
            OverviewChart::Feedback => match (&s.accuracy, &s.mae) {
                (Some(a), _) => (
                    "Accuracy on the labels that came back".into(),
                    "accuracy",
                    a.iter().copied().map(value).collect(),
                ),
                (None, Some(m)) => (
                    "Mean absolute error on the labels that came back".into(),
                    "MAE",
                    m.iter().copied().map(value).collect(),
                ),
                (None, None) => {
                    return Err(ApiError::internal(&"the overview has no feedback series"))
                }
            },
        };
        // Every series here is a count, a time or a share: from 0 up, with room
        // at the top for the version labels, which sit there.
        let labels = o.versions.len().min(3) as f64;
        let y_range = Some(from_zero(&values, 1.1 + 0.15 * labels, 1.0));
        Ok(TimeSeries {
            title,
            y_label: y_label.into(),
            points: s.minute.iter().copied().zip(values).collect(),
            markers: o
                .versions
                .iter()
                .map(|v| Marker {
                    at: v.time,
                    label: format!("v{} ({})", v.version, v.reason),
                })
                .collect(),
            threshold: None,
            y_range,
        })
    }
}

impl DriftChart {
    pub fn parse(raw: &str) -> Result<DriftChart, ApiError> {
        parse(&DRIFT, raw)
    }

    /// This chart of `feature` as SVG.
    pub fn draw(self, h: &DriftHistory, feature: &str, size: Size) -> Result<String, ApiError> {
        let f = h
            .features
            .iter()
            .find(|f| f.name == feature)
            .ok_or_else(|| {
                ApiError::unprocessable(
                    "invalid_parameter",
                    format!("feature=`{feature}`: none of the last drift checks tested it"),
                )
            })?;
        let drawn = match self {
            DriftChart::Distribution => distribution(f)?.svg(size),
            DriftChart::PValue => p_values(f, h.alpha).svg(size),
            DriftChart::Psi => psi(f).svg(size),
        };
        drawn.map_err(|e| ApiError::internal(&e))
    }
}

/// The feature's reference and current distributions at the newest check.
fn distribution(f: &FeatureHistory) -> Result<Distribution, ApiError> {
    let histogram = f.histogram.clone().ok_or_else(|| {
        ApiError::unprocessable(
            "invalid_parameter",
            format!(
                "feature=`{}`: the newest check has no distribution of it (a side had no values)",
                f.name
            ),
        )
    })?;
    let histogram: Histogram = serde_json::from_value(histogram).map_err(|e| {
        ApiError::internal(&format!("drift history histogram of `{}`: {e}", f.name))
    })?;
    Ok(Distribution {
        feature: f.name.clone(),
        histogram,
        verdict: Verdict {
            test: f.test.clone().unwrap_or_else(|| "none".into()),
            p_value: f.p_value,
            p_adjusted: f.series.p_adjusted.last().copied().flatten(),
            psi: f.psi,
            drift: f.drift,
        },
    })
}

fn p_values(f: &FeatureHistory, alpha: Option<f64>) -> TimeSeries {
    let log = |p: f64| -p.max(SMALLEST_P).log10();
    let points: Vec<(i64, f64)> = f
        .series
        .time
        .iter()
        .zip(&f.series.p_adjusted)
        .map(|(t, p)| (*t, p.map_or(f64::NAN, log)))
        .collect();
    let line = alpha.map_or(0.0, log);
    let values: Vec<f64> = points.iter().map(|p| p.1).chain([line]).collect();
    TimeSeries {
        title: format!("{}: adjusted p-value per check", f.name),
        y_label: "-log10 p (higher: surer)".into(),
        points,
        markers: Vec::new(),
        threshold: alpha.map(|a| Threshold {
            value: line,
            label: format!("alpha = {a}"),
        }),
        y_range: Some(from_zero(&values, 1.15, 1.0)),
    }
}

fn psi(f: &FeatureHistory) -> TimeSeries {
    let points: Vec<(i64, f64)> = f
        .series
        .time
        .iter()
        .zip(&f.series.psi)
        .map(|(t, v)| (*t, value(*v)))
        .collect();
    let values: Vec<f64> = points.iter().map(|p| p.1).collect();
    TimeSeries {
        title: format!("{}: PSI per check", f.name),
        y_label: "PSI".into(),
        points,
        markers: Vec::new(),
        threshold: None,
        // At least 0 to 0.1 (drift.psi_floor's default), so that a steady
        // feature's PSI of 0.001 does not fill the chart.
        y_range: Some(from_zero(&values, 1.15, 0.1)),
    }
}
