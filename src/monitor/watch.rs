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
//!   Page-Hinkley test and raises `concept_drift` when either fires, dated where
//!   the detector places the change's start. One change is one event: after a
//!   detection both restart and ignore the next `settle` labels (the model is
//!   adapting; its falling error is the new concept being learnt, not a second
//!   change), and they restart when a new major version goes live, not for the
//!   online learner's minor versions, which continue one error stream.

use std::collections::BTreeMap;

use serde::Serialize;

use super::detect::{Ddm, Mode, PageHinkley};
use super::drift::{DriftReport, FeatureDrift};
use super::events::{
    AnomalyRate, ConceptEvent, DatasetEvent, Event, FeatureEvent, Subject, Window,
};

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

/// Labels' prediction times kept to date a change, at most (the oldest are
/// dropped beyond it; a change older than that is dated at the oldest kept).
const MAX_TIMES: usize = 1 << 20;

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
    labels: u64,
    error_sum: f64,
    /// Prediction times of the labels since the reset, oldest first; `dropped`
    /// older ones were let go.
    times: std::collections::VecDeque<i64>,
    dropped: u64,
    /// Labels still to ignore after a detection, and how many that is each time.
    settling: u64,
    settle: u64,
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
            times: std::collections::VecDeque::new(),
            dropped: 0,
            settling: 0,
            settle: DEFAULT_SETTLE,
        }
    }

    /// The same watch ignoring `labels` labels after each detection.
    pub fn with_settle(mut self, labels: u64) -> ConceptWatch {
        self.settle = labels;
        self
    }

    fn reset(&mut self) {
        self.ddm = self.ddm_template.clone();
        self.ph = self.ph_template.clone();
        self.labels = 0;
        self.error_sum = 0.0;
        self.times.clear();
        self.dropped = 0;
    }

    /// The prediction time of the `n`th label since the reset (1-based).
    fn time_of(&self, n: u64) -> i64 {
        let i = usize::try_from(n.saturating_sub(1).saturating_sub(self.dropped)).unwrap_or(0);
        self.times
            .get(i.min(self.times.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0)
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
        if self.times.len() == MAX_TIMES {
            self.times.pop_front();
            self.dropped += 1;
        }
        self.times.push_back(predicted);
        let detector = match outcome {
            Outcome::Class { wrong } => {
                let e = f64::from(u8::from(wrong));
                self.error_sum += e;
                self.ddm.update(wrong);
                self.ph.update(e);
                if self.ddm.drift_detected() {
                    Some("ddm")
                } else {
                    self.ph.drift_detected().then_some("page_hinkley")
                }
            }
            Outcome::Value { error } => {
                self.error_sum += error;
                self.ph.update(error);
                self.ph.drift_detected().then_some("page_hinkley")
            }
        }?;
        let start = match detector {
            "ddm" => self.ddm.change_start(),
            _ => self.ph.change_start(),
        }
        .clamp(1, self.labels);
        let event = Event::ConceptDrift(ConceptEvent {
            detector,
            labels: self.labels,
            error: self.error_sum / self.labels as f64,
            model_version: version.to_string(),
            time,
            change_labels: self.labels - start + 1,
            change_time: self.time_of(start),
        });
        self.reset();
        self.settling = self.settle;
        Some(event)
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
}
