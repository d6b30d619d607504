//! The dashboard's data: the overview (the live model, per-minute series and
//! totals over a window, version changes, firing alerts) and the drift history
//! (per feature, the numbers of the last checks and the newest histograms).
//!
//! Everything here reads rollups and small tables, never `predictions`: the
//! per-minute rows of `store::rollups` (one per minute and version, however many
//! predictions), the activation history, the alert rules' saved state and the
//! drift checks' per-feature rows. So the cost of an answer grows with the
//! window's minutes or checks, not with the log (docs/BENCHMARKS.md times them
//! on 10 million rows).
//!
//! Latency percentiles come from the rollups' buckets
//! (`store::rollups::LATENCY_BOUNDS_US`): the value is in the bucket of the
//! exact percentile, placed linearly within it. The latency is the log's
//! `latency_us`, the time to encode the row and run the model.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;

use crate::alert::rules::Rules;
use crate::live::Slot;
use crate::model::Task;
use crate::store::drift::{self as checks, FeatureRow, Subject};
use crate::store::registry::{self, ActivationRecord};
use crate::store::rollups::{self, Outcome, PredictionCounts, MINUTE_MS};
use crate::store::{alerts as outbox, Store, StoreError};

/// Why a dashboard query was not answered.
#[derive(Debug, thiserror::Error)]
pub enum DashboardError {
    /// A query parameter that is not a whole number in its range.
    #[error("{0}")]
    InvalidParameter(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// `minutes` of the overview: the default and the most (one week).
pub const DEFAULT_MINUTES: i64 = 60;
pub const MAX_MINUTES: i64 = 10_080;
/// `checks` of the drift history: the default and the most.
pub const DEFAULT_CHECKS: i64 = 50;
pub const MAX_CHECKS: i64 = 500;

/// `raw` (a query parameter's value, if given) as a whole number in
/// `1..=max`, or `default` when absent.
pub fn parameter(
    name: &str,
    raw: Option<&str>,
    default: i64,
    max: i64,
) -> Result<i64, DashboardError> {
    let Some(raw) = raw else {
        return Ok(default);
    };
    match raw.parse::<i64>() {
        Ok(n) if (1..=max).contains(&n) => Ok(n),
        _ => Err(DashboardError::InvalidParameter(format!(
            "{name}=`{raw}`: must be a whole number from 1 to {max}"
        ))),
    }
}

/// The live model, as the overview shows it.
#[derive(Debug, Clone, Serialize)]
pub struct LiveSummary {
    pub version: String,
    /// The form answering requests: `f32` or `int8`.
    pub form: &'static str,
    /// How the version came: `bootstrap`, `import`, `retrain`, `online`,
    /// `upload`, `onnx`.
    pub source: String,
    pub task: Task,
    /// What `accuracy` or `mae` measures from feedback: `accuracy`
    /// (classification) or `mae` (regression).
    pub metric: &'static str,
    /// When it last became live (Unix ms), as the registry says.
    pub activated: Option<i64>,
}

/// One value per minute of the window, oldest first. Counts are 0 in a minute
/// without traffic; a value that needs a denominator is null there.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Series {
    /// The minutes' starts (Unix ms).
    pub minute: Vec<i64>,
    pub predictions: Vec<i64>,
    pub anomalies: Vec<i64>,
    pub anomaly_rate: Vec<Option<f64>>,
    pub latency_p50_ms: Vec<Option<f64>>,
    pub latency_p99_ms: Vec<Option<f64>>,
    /// Labels that arrived in the minute (for predictions of any time).
    pub labels: Vec<i64>,
    /// Classification: the share of the minute's labels equal to the predicted class.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub accuracy: Option<Vec<Option<f64>>>,
    /// Regression: the mean absolute error of the minute's labels.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mae: Option<Vec<Option<f64>>>,
}

/// The window's totals.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Totals {
    pub predictions: i64,
    /// Over the window (from its first minute's start to now).
    pub predictions_per_second: f64,
    /// Over the last full minute.
    pub predictions_per_second_last_minute: f64,
    pub anomalies: i64,
    pub anomaly_rate: Option<f64>,
    pub latency_p50_ms: Option<f64>,
    pub latency_p99_ms: Option<f64>,
    pub latency_mean_ms: Option<f64>,
    pub labels: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub accuracy: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mae: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rmse: Option<f64>,
}

/// An alert firing now, from the alert rules' saved state.
#[derive(Debug, Clone, Serialize)]
pub struct FiringAlert {
    pub rule: String,
    pub labels: BTreeMap<String, String>,
    /// When it started firing (Unix ms).
    pub since: i64,
    pub model_version: String,
    /// Whether a silence holds its notifications back now.
    pub silenced: bool,
}

/// `GET /v1/overview`.
#[derive(Debug, Clone, Serialize)]
pub struct Overview {
    /// When the answer was made (Unix ms).
    pub time: i64,
    pub minutes: i64,
    /// The first and last minutes of the series (the last is the current one,
    /// still going).
    pub from: i64,
    pub to: i64,
    pub model: LiveSummary,
    pub series: Series,
    pub totals: Totals,
    /// The versions made live within the window, oldest first.
    pub versions: Vec<ActivationRecord>,
    pub alerts: Vec<FiringAlert>,
}

/// One check in the drift history.
#[derive(Debug, Clone, Serialize)]
pub struct CheckSummary {
    pub id: i64,
    /// Unix ms.
    pub time: i64,
    pub model_version: String,
    pub rows: i64,
    pub drift: bool,
    pub dataset_drift: bool,
}

/// One feature's numbers over the checks that tested it, oldest first.
#[derive(Debug, Clone, Default, Serialize)]
pub struct FeatureSeries {
    pub time: Vec<i64>,
    pub p_value: Vec<Option<f64>>,
    pub p_adjusted: Vec<Option<f64>>,
    pub psi: Vec<Option<f64>>,
    pub statistic: Vec<Option<f64>>,
    pub drift: Vec<bool>,
}

/// One feature (or the prediction) in the drift history.
#[derive(Debug, Clone, Serialize)]
pub struct FeatureHistory {
    pub name: String,
    pub subject: Subject,
    /// Whether it is in the newest check (a model with another schema may have
    /// replaced the one that had it).
    pub in_newest: bool,
    /// At the newest check.
    pub drift: bool,
    pub p_value: Option<f64>,
    pub psi: Option<f64>,
    /// From the newest report: `numeric`/`categorical`, `ks`/`chi2`/`none`.
    pub kind: Option<String>,
    pub test: Option<String>,
    pub series: FeatureSeries,
    /// The newest check's histograms (reference and current over common bins).
    pub histogram: Option<Value>,
}

/// `GET /v1/drift/history`.
#[derive(Debug, Clone, Serialize)]
pub struct DriftHistory {
    /// The newest check's significance level (`drift.alpha` when it ran).
    pub alpha: Option<f64>,
    /// The checks, oldest first.
    pub checks: Vec<CheckSummary>,
    /// Drifted first at the newest check, then by p-value (smallest first).
    pub features: Vec<FeatureHistory>,
}

/// The dashboard service.
#[derive(Clone)]
pub struct Dashboard {
    db: Store,
    slot: Slot,
}

impl Dashboard {
    pub(super) fn new(db: Store, slot: Slot) -> Self {
        Dashboard { db, slot }
    }

    /// The overview of the last `minutes` (a query parameter: default 60, at
    /// most 10,080), now.
    pub async fn overview(&self, minutes: Option<&str>) -> Result<Overview, DashboardError> {
        let minutes = parameter("minutes", minutes, DEFAULT_MINUTES, MAX_MINUTES)?;
        self.overview_at(minutes, crate::time::now_millis()).await
    }

    /// The overview of the `minutes` ending with the minute of `now` (Unix ms).
    pub async fn overview_at(&self, minutes: i64, now: i64) -> Result<Overview, DashboardError> {
        let live = self.slot.load_full();
        let to = rollups::minute_of(now);
        let from = to - (minutes - 1) * MINUTE_MS;
        // From the last full minute at least, for its rate.
        let last_full = to - MINUTE_MS;
        let predicted = rollups::prediction_minutes(&self.db, from.min(last_full), to).await?;
        let last_minute = predicted
            .iter()
            .find(|(m, _)| *m == last_full)
            .map_or(0, |(_, c)| c.predictions);
        let labelled = rollups::feedback_minutes(&self.db, from, to).await?;
        let task = live.model.meta.task;
        let mut series = Series {
            accuracy: (task == Task::Classification).then(Vec::new),
            mae: (task == Task::Regression).then(Vec::new),
            ..Series::default()
        };
        let mut all = PredictionCounts::default();
        let mut feedback = Outcome::default();
        let first = predicted.partition_point(|(m, _)| *m < from);
        let mut p = predicted[first..].iter().peekable();
        let mut f = labelled.iter().peekable();
        for minute in (0..minutes).map(|i| from + i * MINUTE_MS) {
            let empty = PredictionCounts::default();
            let c = match p.next_if(|(m, _)| *m == minute) {
                Some((_, c)) => c,
                None => &empty,
            };
            all.merge(c);
            series.minute.push(minute);
            series.predictions.push(c.predictions);
            series.anomalies.push(c.anomalies);
            series
                .anomaly_rate
                .push(ratio(c.anomalies as f64, c.predictions));
            series.latency_p50_ms.push(ms(c.latency_quantile_us(0.5)));
            series.latency_p99_ms.push(ms(c.latency_quantile_us(0.99)));
            let fb = f.next_if(|(m, _)| *m == minute).map(|(_, o)| *o);
            series.labels.push(fb.map_or(0, |o| o.labels));
            if let Some(o) = fb {
                feedback.add(o);
            }
            if let Some(a) = &mut series.accuracy {
                a.push(fb.and_then(|o| ratio(o.correct as f64, o.labels)));
            }
            if let Some(e) = &mut series.mae {
                e.push(fb.and_then(|o| ratio(o.abs_error, o.labels)));
            }
        }
        let elapsed_s = ((now - from) as f64 / 1e3).max(1.0);
        let totals = Totals {
            predictions: all.predictions,
            predictions_per_second: all.predictions as f64 / elapsed_s,
            predictions_per_second_last_minute: last_minute as f64 / 60.0,
            anomalies: all.anomalies,
            anomaly_rate: ratio(all.anomalies as f64, all.predictions),
            latency_p50_ms: ms(all.latency_quantile_us(0.5)),
            latency_p99_ms: ms(all.latency_quantile_us(0.99)),
            latency_mean_ms: ratio(all.latency_us_sum as f64 / 1e3, all.predictions),
            labels: feedback.labels,
            accuracy: (task == Task::Classification)
                .then(|| ratio(feedback.correct as f64, feedback.labels))
                .flatten(),
            mae: (task == Task::Regression)
                .then(|| ratio(feedback.abs_error, feedback.labels))
                .flatten(),
            rmse: (task == Task::Regression)
                .then(|| ratio(feedback.sq_error, feedback.labels).map(f64::sqrt))
                .flatten(),
        };
        Ok(Overview {
            time: now,
            minutes,
            from,
            to,
            model: LiveSummary {
                version: live.version.to_string(),
                form: live.form.form.as_str(),
                source: live.record.source.clone(),
                task,
                metric: match task {
                    Task::Classification => "accuracy",
                    Task::Regression => "mae",
                },
                activated: registry::active(&self.db)
                    .await?
                    .filter(|r| r.version == *live.version)
                    .and_then(|r| r.activated),
            },
            series,
            totals,
            versions: registry::activations_since(&self.db, from).await?,
            alerts: self.firing(now).await?,
        })
    }

    /// The alerts firing now, oldest first, from the rules' saved state.
    async fn firing(&self, now: i64) -> Result<Vec<FiringAlert>, StoreError> {
        let Some(json) = outbox::load_rules(&self.db).await? else {
            return Ok(Vec::new());
        };
        let rules: Rules = serde_json::from_str(&json)
            .map_err(|e| StoreError::Decode(format!("alert_rules.state: {e}")))?;
        let silences: Vec<_> = outbox::silences(&self.db, now)
            .await?
            .iter()
            .filter_map(crate::alert::silence_from_row)
            .collect();
        let mut firing: Vec<FiringAlert> = rules
            .alerts
            .into_values()
            .filter(|a| a.is_firing())
            .map(|a| FiringAlert {
                silenced: silences.iter().any(|s| s.active(now) && s.matches(&a)),
                rule: a.rule,
                labels: a.labels,
                since: a.starts_at,
                model_version: a.model_version,
            })
            .collect();
        firing.sort_by(|a, b| (a.since, &a.rule).cmp(&(b.since, &b.rule)));
        Ok(firing)
    }

    /// The last `checks` drift checks (a query parameter: default 50, at most
    /// 500), per feature.
    pub async fn drift_history(
        &self,
        checks: Option<&str>,
    ) -> Result<DriftHistory, DashboardError> {
        let n = parameter("checks", checks, DEFAULT_CHECKS, MAX_CHECKS)?;
        let list = checks::checks(&self.db, n).await?;
        let (Some(first), Some(newest)) = (list.first(), list.last()) else {
            return Ok(DriftHistory {
                alpha: None,
                checks: Vec::new(),
                features: Vec::new(),
            });
        };
        let times: BTreeMap<i64, i64> = list.iter().map(|c| (c.id, c.time)).collect();
        let rows = checks::features_between(&self.db, first.id, newest.id).await?;
        let report: Value = match checks::report(&self.db, newest.id).await? {
            Some(text) => serde_json::from_str(&text)
                .map_err(|e| StoreError::Decode(format!("drift_reports.report: {e}")))?,
            None => Value::Null,
        };
        let mut features: BTreeMap<(Subject, String), FeatureHistory> = BTreeMap::new();
        for (id, row) in rows {
            // Ids between the first and the newest belong to these checks
            // unless a check's time went backwards; those are left out.
            let Some(time) = times.get(&id) else {
                continue;
            };
            let key = (row.subject, row.feature.clone());
            let f = features
                .entry(key)
                .or_insert_with(|| FeatureHistory::new(&row, &report));
            f.push(*time, &row, id == newest.id);
        }
        let mut features: Vec<FeatureHistory> = features.into_values().collect();
        features.sort_by(|a, b| {
            let p = |f: &FeatureHistory| f.p_value.unwrap_or(f64::INFINITY);
            (!a.in_newest, !a.drift)
                .cmp(&(!b.in_newest, !b.drift))
                .then(p(a).total_cmp(&p(b)))
                .then(a.name.cmp(&b.name))
        });
        Ok(DriftHistory {
            alpha: report["alpha"].as_f64(),
            checks: list
                .into_iter()
                .map(|c| CheckSummary {
                    id: c.id,
                    time: c.time,
                    model_version: c.model_version,
                    rows: c.window_rows,
                    drift: c.drift,
                    dataset_drift: c.dataset_drift,
                })
                .collect(),
            features,
        })
    }
}

impl FeatureHistory {
    /// A feature first seen in `row`, with what the newest `report` says of it.
    fn new(row: &FeatureRow, report: &Value) -> FeatureHistory {
        let newest = match row.subject {
            Subject::Output => report.get("prediction"),
            Subject::Input => report
                .get("features")
                .and_then(Value::as_array)
                .and_then(|all| all.iter().find(|f| f["name"] == row.feature.as_str())),
        }
        .filter(|f| f.is_object());
        let text = |k: &str| newest.and_then(|f| f[k].as_str()).map(str::to_string);
        FeatureHistory {
            name: row.feature.clone(),
            subject: row.subject,
            in_newest: false,
            drift: false,
            p_value: None,
            psi: None,
            kind: text("kind"),
            test: text("test"),
            series: FeatureSeries::default(),
            histogram: newest.and_then(|f| f.get("histogram")).cloned(),
        }
    }

    fn push(&mut self, time: i64, row: &FeatureRow, newest: bool) {
        let s = &mut self.series;
        s.time.push(time);
        s.p_value.push(row.p_value);
        s.p_adjusted.push(row.p_adjusted);
        s.psi.push(row.psi);
        s.statistic.push(row.statistic);
        s.drift.push(row.drift);
        if newest {
            self.in_newest = true;
            self.drift = row.drift;
            self.p_value = row.p_value;
            self.psi = row.psi;
        }
    }
}

/// `num / den`, or `None` when `den` is 0.
fn ratio(num: f64, den: i64) -> Option<f64> {
    (den > 0).then(|| num / den as f64)
}

/// Microseconds as milliseconds.
fn ms(us: Option<f64>) -> Option<f64> {
    us.map(|v| v / 1e3)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_are_whole_numbers_in_range() {
        assert_eq!(parameter("minutes", None, 60, 10_080).unwrap(), 60);
        assert_eq!(parameter("minutes", Some("1"), 60, 10_080).unwrap(), 1);
        assert_eq!(
            parameter("minutes", Some("10080"), 60, 10_080).unwrap(),
            10_080
        );
        for bad in [
            "0",
            "-5",
            "10081",
            "1.5",
            "",
            "sixty",
            "99999999999999999999",
        ] {
            let e = parameter("minutes", Some(bad), 60, 10_080).unwrap_err();
            assert!(e.to_string().contains("from 1 to 10080"), "{bad}: {e}");
        }
    }
}
