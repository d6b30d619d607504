//! Turning checks into events: the state machines between the statistics and the
//! people they would page.
//!
//! - [`DriftWatch`] reads each periodic [`Check`] (feature drift, prediction drift,
//!   the anomaly rate) and raises an event only when a condition has held for
//!   `confirm` checks in a row, and its end only when it has been clear for as many
//!   (the `for:` of a Prometheus alert rule). With Bonferroni at α = 0.05 a single
//!   check of stationary data still has up to a 5% chance of a false drift; asking
//!   for two in a row brings that near 0.25% per check, while a real shift, which
//!   persists, is still reported on its second window.
//! - [`ConceptWatch`] feeds the feedback error stream to DDM and to an upward
//!   Page-Hinkley test. A detection is dated at the least-squares split of the
//!   last `SCAN_LABELS` errors ([`rise_start`]), not where the detector would
//!   place it: DDM's warning can begin hundreds of labels early on a
//!   near-perfect model, and Page-Hinkley's minimum drifts to the start of any
//!   slow rise. It is then confirmed: the errors from that point on must be
//!   higher than those before it by Welch's one-sided test at `CONFIRM_ALPHA`
//!   (divided by the number of splits the date was chosen from, Bonferroni) and
//!   by at least `min_rise` (error-rate points, or target standard deviations),
//!   within `CONFIRM_WITHIN` more labels (a change found after a few labels
//!   rarely has the evidence yet; the labels that follow bring it). Without
//!   this, DDM on a near-perfect model (1% errors) alarms on a few extra
//!   errors. A confirmed detection, dated again with those labels, raises
//!   `concept_drift`; an unconfirmed one is let go, with the detectors
//!   restarted and the history kept.
//!
//!   One change is one event: after an event the watch starts afresh and
//!   ignores the next `settle` labels (the model is adapting; its falling error
//!   is the new concept being learnt, not a second change), and it starts
//!   afresh when a new major version goes live, not for the online learner's
//!   minor versions, which continue one error stream.

use std::collections::{BTreeMap, VecDeque};

use serde::Serialize;

use super::detect::{rise_start, Ddm, Mode, PageHinkley};
use super::drift::{DriftReport, FeatureDrift};
use super::events::{
    AnomalyRate, ConceptEvent, DatasetEvent, Event, FeatureEvent, Subject, Window,
};
use crate::stats::{welch_greater, Summary};

/// One run of the daemon's drift job.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Check {
    pub window: Window,
    /// Input features against the reference sample (flattened: the JSON has the
    /// shape of `steward drift --json`).
    #[serde(flatten)]
    pub report: DriftReport,
    /// The model's outputs on the window against its outputs on the reference.
    pub prediction: Option<FeatureDrift>,
    /// The anomaly rate over the window, when the model has an anomaly scorer.
    pub anomaly: Option<AnomalyRate>,
}

/// A condition's state: whether it is firing, and how many checks in a row have
/// disagreed with that.
#[derive(Debug, Clone, Copy, Default)]
struct State {
    firing: bool,
    streak: u32,
}

impl State {
    /// Reads one observation; `Some(true)` when it starts firing, `Some(false)`
    /// when it stops.
    fn observe(&mut self, condition: bool, confirm: u32) -> Option<bool> {
        if condition == self.firing {
            self.streak = 0;
            return None;
        }
        self.streak += 1;
        if self.streak < confirm {
            return None;
        }
        self.firing = condition;
        self.streak = 0;
        Some(condition)
    }
}

/// Events from periodic checks, with confirmation both ways.
#[derive(Debug, Clone)]
pub struct DriftWatch {
    confirm: u32,
    /// Significance level of the anomaly-rate test.
    alpha: f64,
    features: BTreeMap<(Subject, String), State>,
    dataset: State,
    anomaly: State,
}

impl DriftWatch {
    /// `confirm`: checks in a row before a change of state (at least 1).
    pub fn new(confirm: u32, alpha: f64) -> DriftWatch {
        DriftWatch {
            confirm: confirm.max(1),
            alpha,
            features: BTreeMap::new(),
            dataset: State::default(),
            anomaly: State::default(),
        }
    }

    /// Features currently firing.
    pub fn firing(&self) -> Vec<(Subject, String)> {
        self.features
            .iter()
            .filter(|(_, s)| s.firing)
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// Reads one check and returns the events it completes.
    pub fn observe(&mut self, check: &Check) -> Vec<Event> {
        let mut events = Vec::new();
        let mut seen = Vec::new();
        let inputs = check.report.features.iter().map(|f| (Subject::Input, f));
        let outputs = check.prediction.iter().map(|f| (Subject::Output, f));
        for (subject, feature) in inputs.chain(outputs) {
            let key = (subject, feature.name.clone());
            seen.push(key.clone());
            let state = self.features.entry(key).or_default();
            if let Some(firing) = state.observe(feature.drift, self.confirm) {
                let e = FeatureEvent {
                    subject,
                    feature: feature.clone(),
                    window: check.window.clone(),
                };
                events.push(if firing {
                    Event::DriftDetected(e)
                } else {
                    Event::DriftResolved(e)
                });
            }
        }
        // A feature the check no longer has (the live model changed) counts as
        // clear, so that it cannot stay firing forever.
        for (key, state) in &mut self.features {
            if !seen.contains(key) && state.observe(false, self.confirm) == Some(false) {
                events.push(Event::DriftResolved(FeatureEvent {
                    subject: key.0,
                    feature: FeatureDrift::untested(&key.1, "none", 0, 0),
                    window: check.window.clone(),
                }));
            }
        }
        if let Some(firing) = self
            .dataset
            .observe(check.report.dataset_drift, self.confirm)
        {
            let e = DatasetEvent {
                drifted: check
                    .report
                    .features
                    .iter()
                    .filter(|f| f.drift)
                    .map(|f| f.name.clone())
                    .collect(),
                tested: check
                    .report
                    .features
                    .iter()
                    .filter(|f| f.p_value.is_some())
                    .count(),
                window: check.window.clone(),
            };
            events.push(if firing {
                Event::DatasetDriftDetected(e)
            } else {
                Event::DatasetDriftResolved(e)
            });
        }
        if let Some(rate) = &check.anomaly {
            if let Some(firing) = self
                .anomaly
                .observe(rate.p_value < self.alpha, self.confirm)
            {
                let (rate, window) = (rate.clone(), check.window.clone());
                events.push(if firing {
                    Event::AnomalyRateHigh { rate, window }
                } else {
                    Event::AnomalyRateNormal { rate, window }
                });
            }
        }
        events
    }
}

/// One labelled prediction's outcome.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Outcome {
    /// Classification: whether the predicted class was wrong.
    Class { wrong: bool },
    /// Regression: |label − prediction| in target standard deviations.
    Value { error: f64 },
}

/// Labels' prediction times and errors kept to date and confirm a change, at
/// most (the oldest are dropped beyond it; a change older than that is dated at
/// the oldest kept). 768 KiB when full.
const MAX_HISTORY: usize = 1 << 16;

/// Significance level of the test that confirms a detection.
pub const CONFIRM_ALPHA: f64 = 0.001;

/// The least rise in mean error a detection must show by default: two points
/// of error rate, or 0.02 target standard deviations of absolute error.
pub const DEFAULT_MIN_RISE: f64 = 0.02;

/// The fewest labels each side of a split that dates a detection.
const MIN_PART: usize = 10;

/// Labels a detection may wait for its confirmation before it is let go.
const CONFIRM_WITHIN: u64 = 1000;

/// The newest labels searched for a change's start (and compared across it).
const SCAN_LABELS: usize = 5000;

/// Labels ignored after a detection by default: the model adapts meanwhile.
pub const DEFAULT_SETTLE: u64 = 300;

/// Concept drift from the feedback error stream.
#[derive(Debug, Clone)]
pub struct ConceptWatch {
    ddm_template: Ddm,
    ph_template: PageHinkley,
    ddm: Ddm,
    ph: PageHinkley,
    /// The major version being watched ("3" for "3", "3.1", "3.2", ...).
    major: String,
    /// Labels since the watch started afresh, and their total error.
    labels: u64,
    error_sum: f64,
    /// `labels` when the detectors last restarted (a refused detection restarts
    /// them but keeps the history).
    base: u64,
    /// Prediction times and errors of the labels since the watch started
    /// afresh, oldest first; `dropped` older ones were let go.
    times: VecDeque<i64>,
    errors: VecDeque<f32>,
    dropped: u64,
    /// Labels still to ignore after a detection, and how many that is each time.
    settling: u64,
    settle: u64,
    min_rise: f64,
    /// A detection waiting for its confirmation.
    pending: Option<Pending>,
}

/// A detection not yet confirmed: the errors before and after the point where
/// it was dated, and how many more labels it may wait for.
#[derive(Debug, Clone, Copy)]
struct Pending {
    detector: &'static str,
    /// The level of the confirming test.
    alpha: f64,
    before: Summary,
    after: Summary,
    left: u64,
}

impl Default for ConceptWatch {
    /// DDM as River's defaults (warm-up 30, warning 2σ, drift 3σ) but waiting
    /// for 5 errors before it records a minimum, and Page-Hinkley as River's (30,
    /// δ 0.005, λ 50, α 0.9999) but upward only: a model getting better is not
    /// an alarm.
    fn default() -> Self {
        ConceptWatch::new(
            Ddm::default().with_min_errors(5),
            PageHinkley::default().with_mode(Mode::Up),
        )
    }
}

impl ConceptWatch {
    pub fn new(ddm: Ddm, ph: PageHinkley) -> ConceptWatch {
        ConceptWatch {
            ddm: ddm.clone(),
            ph: ph.clone(),
            ddm_template: ddm,
            ph_template: ph,
            major: String::new(),
            labels: 0,
            error_sum: 0.0,
            base: 0,
            times: VecDeque::new(),
            errors: VecDeque::new(),
            dropped: 0,
            settling: 0,
            settle: DEFAULT_SETTLE,
            min_rise: DEFAULT_MIN_RISE,
            pending: None,
        }
    }

    /// The same watch asking a detection to show a rise in mean error of at
    /// least `rise`.
    pub fn with_min_rise(mut self, rise: f64) -> ConceptWatch {
        self.min_rise = rise;
        self
    }

    /// The same watch ignoring `labels` labels after each detection.
    pub fn with_settle(mut self, labels: u64) -> ConceptWatch {
        self.settle = labels;
        self
    }

    fn reset(&mut self) {
        self.restart_detectors();
        self.pending = None;
        self.labels = 0;
        self.base = 0;
        self.error_sum = 0.0;
        self.times.clear();
        self.errors.clear();
        self.dropped = 0;
    }

    fn restart_detectors(&mut self) {
        self.ddm = self.ddm_template.clone();
        self.ph = self.ph_template.clone();
        self.base = self.labels;
    }

    /// Where the `n`th label since the reset (1-based) sits in the history.
    fn index_of(&self, n: u64) -> usize {
        let i = usize::try_from(n.saturating_sub(1).saturating_sub(self.dropped)).unwrap_or(0);
        i.min(self.times.len().saturating_sub(1))
    }

    /// The prediction time of the `n`th label since the reset (1-based).
    fn time_of(&self, n: u64) -> i64 {
        self.times.get(self.index_of(n)).copied().unwrap_or(0)
    }

    /// Where the change a detector just found began (1-based label count): the
    /// least-squares split of the history, or the detector's own estimate when
    /// the history is too short to split.
    fn change_start(&self, detector: &str) -> u64 {
        let own = match detector {
            "ddm" => self.ddm.change_start(),
            _ => self.ph.change_start(),
        };
        let from = self.scan_from();
        let start = rise_start(self.errors.range(from..).map(|e| f64::from(*e)), MIN_PART)
            .map_or(self.base + own, |k| self.dropped + (from + k) as u64 + 1);
        start.clamp(1, self.labels)
    }

    /// The kept errors in at most `ERROR_SERIES_POINTS` groups of equal size:
    /// (the prediction time of each group's last label, the group's mean).
    fn error_series(&self) -> Vec<(i64, f64)> {
        use crate::monitor::events::ERROR_SERIES_POINTS;
        let n = self.errors.len();
        let size = n.div_ceil(ERROR_SERIES_POINTS).max(1);
        let errors: Vec<f32> = self.errors.iter().copied().collect();
        let times: Vec<i64> = self.times.iter().copied().collect();
        errors
            .chunks(size)
            .zip(times.chunks(size))
            .map(|(e, t)| {
                let mean = e.iter().map(|x| f64::from(*x)).sum::<f64>() / e.len() as f64;
                (t.last().copied().unwrap_or(0), mean)
            })
            .collect()
    }

    /// Where in the history the search for a change's start begins.
    fn scan_from(&self) -> usize {
        self.errors.len().saturating_sub(SCAN_LABELS)
    }

    /// Whether the errors after a pending detection's split are higher than
    /// those before it, significantly and by at least `min_rise`. With fewer
    /// than two labels on a side there is nothing to test against, and the
    /// detector is trusted.
    fn rises(&self, p: &Pending) -> bool {
        match welch_greater(p.before, p.after) {
            Some(t) => t.p_value < p.alpha && p.after.mean - p.before.mean >= self.min_rise,
            None => p.after.n > 0.0,
        }
    }

    /// Reads one labelled prediction of `version`, made at `predicted` (Unix
    /// ms). Labels of another major version restart the detectors on the new
    /// model (the error streams of two trained models are not one stream); the
    /// online learner's minor versions continue the stream of their major.
    pub fn observe(
        &mut self,
        version: &str,
        outcome: Outcome,
        predicted: i64,
        time: i64,
    ) -> Option<Event> {
        let major = crate::store::registry::major(version);
        if major != self.major {
            self.reset();
            self.settling = 0;
            self.major = major.to_string();
        }
        if matches!(outcome, Outcome::Value { error } if !error.is_finite()) {
            return None;
        }
        if self.settling > 0 {
            self.settling -= 1;
            return None;
        }
        self.labels += 1;
        if self.times.len() == MAX_HISTORY {
            self.times.pop_front();
            self.errors.pop_front();
            self.dropped += 1;
        }
        let error = match outcome {
            Outcome::Class { wrong } => f64::from(u8::from(wrong)),
            Outcome::Value { error } => error,
        };
        self.times.push_back(predicted);
        self.errors.push_back(error as f32);
        self.error_sum += error;
        // The detectors keep reading while an alarm waits: a later alarm (a
        // real change during a false alarm's wait) replaces it.
        let fired = self.detect(outcome);
        if let Some(pending) = &mut self.pending {
            pending.after.push(error);
            pending.left = pending.left.saturating_sub(1);
        }
        if let Some(detector) = fired {
            // Dated now, confirmed as the labels after it come in.
            let split = self.change_start(detector);
            let (from, index) = (self.scan_from(), self.index_of(split));
            let part = |r: std::ops::Range<usize>| {
                Summary::of(self.errors.range(r).map(|e| f64::from(*e)))
            };
            // The split was chosen among as many as the scan had labels: the
            // test's level is shared among them (Bonferroni).
            let splits = (self.errors.len() - from)
                .saturating_sub(2 * MIN_PART)
                .max(1);
            self.pending = Some(Pending {
                detector,
                alpha: CONFIRM_ALPHA / splits as f64,
                before: part(from..index.max(from)),
                after: part(index.max(from)..self.errors.len()),
                left: CONFIRM_WITHIN,
            });
            self.restart_detectors();
        }
        let pending = self.pending.as_ref()?;
        if !self.rises(pending) {
            if pending.left == 0 {
                self.pending = None;
            }
            return None;
        }
        // Confirmed: dated again with the labels that came in meanwhile.
        let detector = pending.detector;
        let start = self.change_start(detector);
        let event = Event::ConceptDrift(ConceptEvent {
            detector,
            labels: self.labels,
            error: self.error_sum / self.labels as f64,
            model_version: version.to_string(),
            time,
            change_labels: self.labels - start + 1,
            change_time: self.time_of(start),
            error_series: self.error_series(),
        });
        self.reset();
        self.settling = self.settle;
        Some(event)
    }

    /// Feeds the newest outcome to the detectors; the one that fired, if any.
    fn detect(&mut self, outcome: Outcome) -> Option<&'static str> {
        match outcome {
            Outcome::Class { wrong } => {
                self.ddm.update(wrong);
                self.ph.update(f64::from(u8::from(wrong)));
                if self.ddm.drift_detected() {
                    Some("ddm")
                } else {
                    self.ph.drift_detected().then_some("page_hinkley")
                }
            }
            Outcome::Value { error } => {
                self.ph.update(error);
                self.ph.drift_detected().then_some("page_hinkley")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::Correction;

    fn feature(name: &str, drift: bool) -> FeatureDrift {
        FeatureDrift {
            name: name.into(),
            kind: "numeric",
            test: "ks",
            statistic: Some(if drift { 0.2 } else { 0.01 }),
            p_value: Some(if drift { 1e-9 } else { 0.8 }),
            p_adjusted: Some(if drift { 1e-8 } else { 1.0 }),
            psi: Some(0.0),
            drift,
            reference_values: 100,
            current_values: 100,
            histogram: None,
        }
    }

    fn check(drifting: &[bool], anomaly_p: Option<f64>) -> Check {
        let features: Vec<FeatureDrift> = drifting
            .iter()
            .enumerate()
            .map(|(i, d)| feature(&format!("f{i}"), *d))
            .collect();
        let drifted = drifting.iter().filter(|d| **d).count();
        Check {
            window: Window {
                model_version: "1".into(),
                rows: 100,
                reference_rows: 100,
                time: 0,
            },
            report: DriftReport {
                drift: drifted > 0,
                dataset_drift: drifted * 2 >= drifting.len(),
                drifted,
                features,
                alpha: 0.05,
                correction: Correction::Bonferroni,
                reference_rows: 100,
                current_rows: 100,
            },
            prediction: None,
            anomaly: anomaly_p.map(|p_value| AnomalyRate {
                anomalies: 5,
                scored: 100,
                rate: 0.05,
                expected_rate: 0.001,
                p_value,
                threshold: 20.0,
            }),
        }
    }

    fn names(events: &[Event]) -> Vec<String> {
        events
            .iter()
            .map(|e| match e {
                Event::DriftDetected(f) => format!("+{}", f.feature.name),
                Event::DriftResolved(f) => format!("-{}", f.feature.name),
                other => other.name().to_string(),
            })
            .collect()
    }

    #[test]
    fn drift_fires_after_confirm_checks_and_resolves_after_as_many_clear() {
        let mut w = DriftWatch::new(2, 0.05);
        let seq = [
            (vec![false, false, false], vec![]),
            (vec![true, false, false], vec![]),
            (vec![true, false, false], vec!["+f0"]),
            (vec![true, false, false], vec![]),
            (vec![false, false, false], vec![]),
            (vec![true, false, false], vec![]),
            (vec![false, false, false], vec![]),
            (vec![false, false, false], vec!["-f0"]),
        ];
        for (i, (d, want)) in seq.into_iter().enumerate() {
            let got = names(&w.observe(&check(&d, None)));
            assert_eq!(got, want, "check {i}");
        }
    }

    #[test]
    fn a_lone_drifting_check_raises_nothing() {
        let mut w = DriftWatch::new(2, 0.05);
        for i in 0..20 {
            let d = vec![i % 2 == 0, false];
            assert!(w.observe(&check(&d, None)).is_empty(), "check {i}");
        }
    }

    #[test]
    fn dataset_drift_and_anomaly_rate_are_one_event_each_way() {
        let mut w = DriftWatch::new(1, 0.05);
        let got = names(&w.observe(&check(&[true, true, false], Some(1e-6))));
        assert_eq!(
            got,
            vec!["+f0", "+f1", "dataset_drift_detected", "anomaly_rate_high"]
        );
        // Still drifting and still anomalous: nothing new.
        assert!(w
            .observe(&check(&[true, true, false], Some(1e-9)))
            .is_empty());
        let got = names(&w.observe(&check(&[false, false, false], Some(0.4))));
        assert_eq!(
            got,
            vec![
                "-f0",
                "-f1",
                "dataset_drift_resolved",
                "anomaly_rate_normal"
            ]
        );
    }

    #[test]
    fn a_feature_the_model_no_longer_has_resolves() {
        let mut w = DriftWatch::new(1, 0.05);
        let got = names(&w.observe(&check(&[false, false, true], None)));
        assert_eq!(got, vec!["+f2"]);
        assert_eq!(w.firing(), vec![(Subject::Input, "f2".to_string())]);
        assert_eq!(names(&w.observe(&check(&[false], None))), vec!["-f2"]);
        assert!(w.firing().is_empty());
    }

    /// Whether the `i`th label is wrong at an error rate of `rate` percent: a
    /// fixed, evenly spread pattern.
    fn wrong_at(i: u64, rate: u64) -> bool {
        (i * 37) % 100 < rate
    }

    #[test]
    fn concept_drift_is_one_event_per_change_dated_at_its_start() {
        let mut w = ConceptWatch::default();
        let mut events = Vec::new();
        // 10% errors for 3000 labels, then 40%; predictions 10 ms apart.
        for i in 0..6000u64 {
            let wrong = wrong_at(i, if i < 3000 { 10 } else { 40 });
            if let Some(e) = w.observe("1", Outcome::Class { wrong }, i as i64 * 10, 0) {
                events.push((i, e));
            }
        }
        assert_eq!(events.len(), 1, "{events:?}");
        let (at, Event::ConceptDrift(c)) = &events[0] else {
            panic!("{events:?}")
        };
        assert!(*at >= 3000 && *at < 3200, "detected at {at}");
        assert_eq!(c.model_version, "1");
        assert!(c.error > 0.1, "{c:?}");
        // Dated at the change: the first label after it was predicted at 30,000 ms.
        assert!(
            (29_000..=31_000).contains(&c.change_time),
            "change dated at {} ms, {} labels back",
            c.change_time,
            c.change_labels
        );
        assert_eq!(c.change_labels, at - (c.change_time as u64 / 10) + 1);
        // The error over time for the mail's plot: every kept label, in order,
        // about 10% before the change and about 40% after it.
        let series = &c.error_series;
        assert!(series.len() <= crate::monitor::events::ERROR_SERIES_POINTS);
        assert!(series.len() >= 50, "{}", series.len());
        assert!(series.windows(2).all(|w| w[0].0 < w[1].0));
        assert_eq!(series.last().map(|p| p.0), Some(*at as i64 * 10));
        let mean = |from: i64, to: i64| {
            let v: Vec<f64> = series
                .iter()
                .filter(|(t, _)| (from..to).contains(t))
                .map(|p| p.1)
                .collect();
            v.iter().sum::<f64>() / v.len() as f64
        };
        assert!((mean(0, 29_000) - 0.10).abs() < 0.02, "{series:?}");
        assert!((mean(31_000, i64::MAX) - 0.40).abs() < 0.06, "{series:?}");
    }

    #[test]
    fn a_model_adapting_through_minor_versions_raises_no_second_event() {
        // After the change at 3000 the online learner brings the error from 40%
        // back to 12% over 2000 labels, publishing a minor version every 100.
        let mut w = ConceptWatch::default();
        let mut events = 0;
        for i in 0..8000u64 {
            let rate = match i {
                0..3000 => 10,
                3000..5000 => 40 - (i - 3000) * 28 / 2000,
                _ => 12,
            };
            let version = if i < 3000 {
                "1".to_string()
            } else {
                format!("1.{}", (i - 3000) / 100 + 1)
            };
            let outcome = Outcome::Class {
                wrong: wrong_at(i, rate),
            };
            events += usize::from(w.observe(&version, outcome, i as i64, 0).is_some());
        }
        assert_eq!(events, 1);
    }

    #[test]
    fn a_new_major_version_restarts_the_detectors() {
        let mut w = ConceptWatch::default();
        for i in 0..100 {
            w.observe(
                "1.3",
                Outcome::Class {
                    wrong: wrong_at(i, 10),
                },
                0,
                0,
            );
        }
        assert_eq!(w.labels, 100);
        w.observe("1.4", Outcome::Class { wrong: false }, 0, 0);
        assert_eq!(w.labels, 101, "a minor version continues the stream");
        assert!(w
            .observe("2", Outcome::Class { wrong: true }, 0, 0)
            .is_none());
        assert_eq!(w.labels, 1);
    }

    #[test]
    fn regression_errors_use_page_hinkley_and_ignore_non_finite() {
        let mut w = ConceptWatch::default();
        assert!(w
            .observe("1", Outcome::Value { error: f64::NAN }, 0, 0)
            .is_none());
        assert_eq!(w.labels, 0);
        let mut at = None;
        for i in 0..2000 {
            let error = if i < 1000 { 0.5 } else { 1.5 };
            if w.observe("1", Outcome::Value { error }, 0, 0).is_some() {
                at = Some(i);
                break;
            }
        }
        let at = at.unwrap_or(usize::MAX);
        assert!((1000..1100).contains(&at), "detected at {at}");
    }

    /// `u` in [0, 1) from SplitMix64 of `i` and `salt`: random-looking, with
    /// the clusters of a real error stream.
    fn uniform(i: u64, salt: u64) -> f64 {
        let mut z = i.wrapping_add(salt.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        (z ^ (z >> 31)) as f64 / 2f64.powi(64)
    }

    #[test]
    fn ddm_alarms_on_a_near_perfect_model_are_refused_by_the_confirming_test() {
        // A retrained model right 99% of the time, for 30,000 labels: DDM alone
        // fires on runs of a few extra errors; none is a rise worth an event.
        let wrong = |i: u64| uniform(i, 4_242) < 0.01;
        let mut ddm = Ddm::default().with_min_errors(5);
        let mut alarms = 0;
        for i in 0..30_000 {
            ddm.update(wrong(i));
            alarms += usize::from(ddm.drift_detected());
        }
        assert!(alarms > 0, "the stream should fool DDM alone");
        let mut w = ConceptWatch::default();
        for i in 0..30_000 {
            let e = w.observe("2", Outcome::Class { wrong: wrong(i) }, i as i64, 0);
            assert!(e.is_none(), "label {i}: {e:?} ({alarms} DDM alarms)");
        }
        // A real rise on the same model is still one event.
        let mut events = Vec::new();
        for i in 30_000..32_000 {
            let wrong = uniform(i, 4_242) < 0.2;
            events.extend(
                w.observe("2", Outcome::Class { wrong }, i as i64, 0)
                    .map(|e| (i, e)),
            );
        }
        assert_eq!(events.len(), 1, "{events:?}");
    }

    #[test]
    fn a_regression_change_after_a_slow_creep_is_dated_at_its_step() {
        // Absolute errors creeping from 0.45 to 0.5 over 3000 labels, then 1.0.
        let mut w = ConceptWatch::default();
        let mut found = None;
        for i in 0..4000u64 {
            let level = if i < 3000 {
                0.45 + 0.05 * i as f64 / 3000.0
            } else {
                1.0
            };
            let error = level * 2.0 * (uniform(i, 12_345) + uniform(i, 999) + uniform(i, 7)) / 3.0;
            if let Some(Event::ConceptDrift(c)) =
                w.observe("1", Outcome::Value { error }, i as i64, 0)
            {
                found = Some((i, c));
                break;
            }
        }
        let (at, c) = found.expect("one event");
        assert_eq!(c.detector, "page_hinkley");
        assert!((3000..3300).contains(&at), "detected at {at}");
        assert!(
            (2950..=3050).contains(&c.change_time),
            "dated at {}",
            c.change_time
        );
    }

    #[test]
    fn a_real_change_while_a_false_alarm_waits_is_still_found() {
        // The near-perfect model of the test above: DDM alarms on a few extra
        // errors, which do not hold. Then 50% errors from 10 labels before
        // that alarm's wait for confirmation ends.
        let base = |i: u64| uniform(i, 4_242) < 0.01;
        let mut ddm = Ddm::default().with_min_errors(5);
        let alarm = (0..30_000u64)
            .find(|&i| {
                ddm.update(base(i));
                ddm.drift_detected()
            })
            .expect("the stream fools DDM");
        let change = alarm + CONFIRM_WITHIN - 10;
        let mut w = ConceptWatch::default();
        let mut events = Vec::new();
        for i in 0..change + 1000 {
            let wrong = if i < change {
                base(i)
            } else {
                uniform(i, 99) < 0.5
            };
            events.extend(
                w.observe("1", Outcome::Class { wrong }, i as i64, 0)
                    .map(|e| (i, e)),
            );
        }
        assert_eq!(events.len(), 1, "alarm at {alarm}: {events:?}");
        let (at, Event::ConceptDrift(c)) = &events[0] else {
            panic!("{events:?}")
        };
        let c_at = c.change_time as u64;
        assert!(
            (change..change + 100).contains(at),
            "change at {change}, reported at {at}"
        );
        assert!(
            (change - 10..=change + 10).contains(&c_at),
            "change at {change}: {c:?}"
        );
    }
}
