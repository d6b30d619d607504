//! Alert state and notification decisions with Prometheus Alertmanager's
//! semantics, as plain data and functions of the current time (milliseconds), so
//! that every rule can be tested without a clock.
//!
//! - An **alert** is identified by its rule and labels (its fingerprint), e.g.
//!   `feature_drift{feature="alcohol"}`. Monitoring events open and close alerts.
//! - Alerts are **grouped** by `alerts.group_by` ([`GroupBy`]); by default by the
//!   model, so everything one burst of traffic sets off (drifting features, the
//!   data set, the anomaly rate) is one incident and one mail.
//! - A new group is first notified `group_wait` after its first alert (to collect
//!   the others of the same check); after that the group is looked at every
//!   `group_interval`, and notified only if what it would say differs from what it
//!   last said (an alert started firing, or resolved), or if it is still firing
//!   and `repeat_interval` has passed since its last mail. An alert that fires,
//!   resolves and fires again between two looks therefore sends nothing new.
//! - **Resolved** alerts are announced once (when `send_resolved`) and dropped; a
//!   group with no alert left ends, and the next alert starts a new group (and a
//!   new mail thread).
//! - **Silenced** alerts (a silence whose matchers all match the alert's rule and
//!   labels, and whose end is in the future) are left out of notifications.
//! - **One-shot** rules (concept drift: a detection, not a condition; and the
//!   outcomes of retraining and of the online guard: news, not conditions) fire
//!   once and are dropped after their notification, without a resolved mail. A
//!   promoted model fires too: it is not a problem, but people must hear of it.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::monitor::events::{Event, Subject};

/// One alert: a rule, labels, and the numbers a person needs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    pub rule: String,
    pub labels: BTreeMap<String, String>,
    /// The event's details as the monitoring events carry them.
    pub details: serde_json::Value,
    pub starts_at: i64,
    /// Set when the alert resolved.
    pub ends_at: Option<i64>,
    /// The model version the alert is about.
    pub model_version: String,
}

impl Alert {
    /// `rule{k="v",...}`: the alert's identity.
    pub fn fingerprint(&self) -> String {
        fingerprint(&self.rule, &self.labels)
    }

    pub fn is_firing(&self) -> bool {
        self.ends_at.is_none()
    }
}

pub fn fingerprint(rule: &str, labels: &BTreeMap<String, String>) -> String {
    let inner: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
    format!("{rule}{{{}}}", inner.join(","))
}

/// Rules whose alerts are single detections or outcomes.
pub fn one_shot(rule: &str) -> bool {
    matches!(
        rule,
        "concept_drift"
            | "retrain_promoted"
            | "retrain_rejected"
            | "retrain_failed"
            | "online_reverted"
    )
}

/// What an event does to the alerts: opens (`Some(alert)` firing) or closes
/// (`ends_at` set) one.
pub fn from_event(event: &Event, now: i64) -> Alert {
    let details = serde_json::to_value(event).unwrap_or_default();
    let mut labels = BTreeMap::new();
    let (rule, firing, version) = match event {
        Event::DriftDetected(f) | Event::DriftResolved(f) => {
            labels.insert("feature".to_string(), f.feature.name.clone());
            let rule = match f.subject {
                Subject::Input => "feature_drift",
                Subject::Output => "prediction_drift",
            };
            (
                rule,
                matches!(event, Event::DriftDetected(_)),
                f.window.model_version.clone(),
            )
        }
        Event::DatasetDriftDetected(d) | Event::DatasetDriftResolved(d) => (
            "dataset_drift",
            matches!(event, Event::DatasetDriftDetected(_)),
            d.window.model_version.clone(),
        ),
        Event::AnomalyRateHigh { window, .. } | Event::AnomalyRateNormal { window, .. } => (
            "anomaly_rate",
            matches!(event, Event::AnomalyRateHigh { .. }),
            window.model_version.clone(),
        ),
        Event::ConceptDrift(c) => {
            labels.insert("detector".to_string(), c.detector.to_string());
            ("concept_drift", true, c.model_version.clone())
        }
        // A retraining run's outcome is about the version it leaves serving: the
        // promoted candidate, or the live model it kept.
        Event::RetrainPromoted(r) => {
            labels.insert("trigger".to_string(), r.trigger.clone());
            let version = r.candidate_version.as_ref().unwrap_or(&r.live_version);
            ("retrain_promoted", true, version.clone())
        }
        Event::RetrainRejected(r) => {
            labels.insert("trigger".to_string(), r.trigger.clone());
            ("retrain_rejected", true, r.live_version.clone())
        }
        Event::RetrainFailed(r) => {
            labels.insert("trigger".to_string(), r.trigger.clone());
            ("retrain_failed", true, r.live_version.clone())
        }
        // About the online copy the guard gave up.
        Event::OnlineReverted(o) => ("online_reverted", true, o.from_version.clone()),
    };
    Alert {
        rule: rule.to_string(),
        labels,
        details,
        starts_at: now,
        ends_at: (!firing).then_some(now),
        model_version: version,
    }
}

/// A matcher of a silence: label `name` (or `rule`) equal to `value`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Matcher {
    pub name: String,
    pub value: String,
}

/// A silence: alerts matching every matcher are not notified until `ends_at`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Silence {
    pub id: String,
    pub matchers: Vec<Matcher>,
    pub starts_at: i64,
    pub ends_at: i64,
    pub created_by: String,
    pub comment: String,
}

impl Silence {
    pub fn active(&self, now: i64) -> bool {
        self.starts_at <= now && now < self.ends_at
    }

    pub fn matches(&self, alert: &Alert) -> bool {
        self.matchers.iter().all(|m| {
            if m.name == "rule" {
                alert.rule == m.value
            } else {
                alert.labels.get(&m.name) == Some(&m.value)
            }
        })
    }
}

/// What makes two alerts one group (one incident, one mail thread):
/// `alerts.group_by`, a list of `model`, `rule` and the label names `feature`,
/// `detector`, `trigger`. Alerts agree on every name listed share a group.
/// `model` is the model this daemon keeps: every alert agrees on it, so the
/// default `["model"]` makes all that fires together one incident, whatever
/// version a retraining puts in between.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupBy {
    pub model: bool,
    pub rule: bool,
    pub feature: bool,
    pub detector: bool,
    pub trigger: bool,
}

impl Default for GroupBy {
    fn default() -> Self {
        GroupBy::MODEL
    }
}

impl GroupBy {
    /// The default: one group for the model.
    pub const MODEL: GroupBy = GroupBy {
        model: true,
        rule: false,
        feature: false,
        detector: false,
        trigger: false,
    };
    /// The names `alerts.group_by` accepts.
    pub const NAMES: [&'static str; 5] = crate::config::GROUP_BY_NAMES;

    /// From the configured names; the first name not in [`GroupBy::NAMES`] is
    /// the error. An empty list is one group for everything, like `["model"]`.
    pub fn from_names<S: AsRef<str>>(names: &[S]) -> Result<GroupBy, String> {
        let mut g = GroupBy {
            model: names.is_empty(),
            rule: false,
            feature: false,
            detector: false,
            trigger: false,
        };
        for name in names {
            let flag = match name.as_ref() {
                "model" => &mut g.model,
                "rule" => &mut g.rule,
                "feature" => &mut g.feature,
                "detector" => &mut g.detector,
                "trigger" => &mut g.trigger,
                other => return Err(other.to_string()),
            };
            *flag = true;
        }
        Ok(g)
    }

    /// The key of the group `alert` belongs to, e.g. `model` or
    /// `rule=feature_drift,feature=alcohol`.
    pub fn key(&self, alert: &Alert) -> String {
        let mut parts: Vec<String> = Vec::new();
        if self.model {
            parts.push("model".into());
        }
        if self.rule {
            parts.push(format!("rule={}", alert.rule));
        }
        for (on, name) in [
            (self.feature, "feature"),
            (self.detector, "detector"),
            (self.trigger, "trigger"),
        ] {
            if on {
                let value = alert.labels.get(name).map_or("", String::as_str);
                parts.push(format!("{name}={value}"));
            }
        }
        if parts.is_empty() {
            "model".into()
        } else {
            parts.join(",")
        }
    }
}

/// Timing settings, in milliseconds, and the grouping.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Timing {
    pub group_wait: i64,
    pub group_interval: i64,
    pub repeat_interval: i64,
    pub send_resolved: bool,
    pub group_by: GroupBy,
}

/// What a group last said, and when it is looked at next.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GroupState {
    /// Fingerprints notified as firing in the last notification.
    pub notified: BTreeSet<String>,
    /// When the last notification was made (0: never).
    pub last_sent: i64,
    /// When the group is looked at next.
    pub next_look: i64,
    /// Message-IDs of this group's mails so far (the thread).
    pub thread: Vec<String>,
}

/// A notification the rules decided on: a group's alerts at this moment.
#[derive(Debug, Clone, PartialEq)]
pub struct Notification {
    pub group: String,
    /// Alerts firing (not silenced).
    pub firing: Vec<Alert>,
    /// Alerts resolved since the last notification.
    pub resolved: Vec<Alert>,
    /// Earlier Message-IDs of the group's thread (oldest first).
    pub thread: Vec<String>,
}

/// All alerts and groups.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Rules {
    /// Alerts by fingerprint.
    pub alerts: BTreeMap<String, Alert>,
    /// Groups by key ([`GroupBy::key`]).
    pub groups: BTreeMap<String, GroupState>,
}

impl Rules {
    /// Puts every alert in the group `group_by` gives it, after a restart with a
    /// different `alerts.group_by` (or state saved when groups were by rule). A
    /// new group takes over what its alerts' old groups had said (so nothing is
    /// mailed again), their threads, and the earliest of their next looks;
    /// groups left without alerts end.
    pub fn regroup(&mut self, group_by: GroupBy) {
        let mut old = std::mem::take(&mut self.groups);
        let mut by_key: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (fp, a) in &self.alerts {
            by_key.entry(group_by.key(a)).or_default().push(fp.clone());
        }
        for (key, members) in by_key {
            if let Some(state) = old.remove(&key) {
                self.groups.insert(key, state);
                continue;
            }
            let mut state = GroupState::default();
            // Old groups that had said something about these alerts. (Which
            // alerts a group that had said nothing yet held is not saved: its
            // alerts are looked at now.)
            for g in old
                .values()
                .filter(|g| members.iter().any(|fp| g.notified.contains(fp)))
            {
                state
                    .notified
                    .extend(g.notified.iter().filter(|fp| members.contains(fp)).cloned());
                state.last_sent = state.last_sent.max(g.last_sent);
                if g.next_look > 0 && (state.next_look == 0 || g.next_look < state.next_look) {
                    state.next_look = g.next_look;
                }
                state.thread.extend(g.thread.iter().cloned());
            }
            if state.next_look == 0 {
                state.next_look = 1;
            }
            self.groups.insert(key, state);
        }
    }

    /// Applies an event's alert.
    pub fn ingest(&mut self, alert: Alert, timing: &Timing, now: i64) {
        let group = timing.group_by.key(&alert);
        let fp = alert.fingerprint();
        match (self.alerts.get_mut(&fp), alert.ends_at) {
            // Still firing, or firing again: keep the start, take the numbers.
            (Some(existing), None) => {
                if existing.ends_at.is_some() {
                    existing.ends_at = None;
                }
                existing.details = alert.details;
                existing.model_version = alert.model_version;
            }
            (Some(existing), Some(end)) => {
                if existing.ends_at.is_none() {
                    existing.ends_at = Some(end);
                    existing.details = alert.details;
                }
            }
            (None, None) => {
                self.alerts.insert(fp, alert);
            }
            // A resolution of an alert we do not know (e.g. fired before a
            // database was reset): nothing to say.
            (None, Some(_)) => return,
        }
        let state = self.groups.entry(group).or_default();
        if state.next_look == 0 {
            state.next_look = now + timing.group_wait;
        }
    }

    /// When the next group is due, if any.
    pub fn next_due(&self) -> Option<i64> {
        self.groups.values().map(|g| g.next_look).min()
    }

    /// The notifications due at `now`; updates the groups as if they were sent
    /// (the caller stores them in the outbox in the same step).
    pub fn flush(&mut self, timing: &Timing, silences: &[Silence], now: i64) -> Vec<Notification> {
        let mut out = Vec::new();
        let due: Vec<String> = self
            .groups
            .iter()
            .filter(|(_, g)| g.next_look <= now)
            .map(|(k, _)| k.clone())
            .collect();
        let group_by = timing.group_by;
        let member = |a: &Alert, key: &str| group_by.key(a) == key;
        for key in due {
            let members: Vec<&Alert> = self.alerts.values().filter(|a| member(a, &key)).collect();
            let silenced = |a: &Alert| silences.iter().any(|s| s.active(now) && s.matches(a));
            let firing: Vec<Alert> = members
                .iter()
                .filter(|a| a.is_firing() && !silenced(a))
                .map(|a| (*a).clone())
                .collect();
            let Some(state) = self.groups.get_mut(&key) else {
                continue;
            };
            let resolved: Vec<Alert> = members
                .iter()
                .filter(|a| !a.is_firing() && state.notified.contains(&a.fingerprint()))
                .map(|a| (*a).clone())
                .collect();
            let now_firing: BTreeSet<String> = firing.iter().map(Alert::fingerprint).collect();
            let changed = now_firing != state.notified
                && (!now_firing.is_subset(&state.notified) || timing.send_resolved);
            let repeat = !now_firing.is_empty()
                && state.last_sent > 0
                && now - state.last_sent >= timing.repeat_interval;
            let say = changed || repeat;
            if say {
                out.push(Notification {
                    group: key.clone(),
                    firing: firing.clone(),
                    resolved: if timing.send_resolved {
                        resolved.clone()
                    } else {
                        Vec::new()
                    },
                    thread: state.thread.clone(),
                });
                state.last_sent = now;
            }
            // What the group has said is what is firing now (also when nothing
            // was sent because only resolutions happened and they are not sent).
            // One-shot alerts are done once said: they leave the group and what
            // it has said, so that the next one is news again.
            let said_once: BTreeSet<String> = firing
                .iter()
                .filter(|a| say && one_shot(&a.rule))
                .map(Alert::fingerprint)
                .collect();
            state.notified = now_firing.difference(&said_once).cloned().collect();
            state.next_look = now + timing.group_interval;
            // Resolved alerts are done once looked at.
            self.alerts
                .retain(|fp, a| !member(a, &key) || (a.is_firing() && !said_once.contains(fp)));
            if !self.alerts.values().any(|a| member(a, &key)) {
                self.groups.remove(&key);
            }
        }
        out
    }

    /// Records the Message-ID sent for a group (for threading).
    pub fn sent(&mut self, group: &str, message_id: &str) {
        if let Some(g) = self.groups.get_mut(group) {
            g.thread.push(message_id.to_string());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::monitor::events::{OnlineEvent, RetrainEvent};

    const S: i64 = 1000;

    fn timing() -> Timing {
        Timing {
            group_wait: 30 * S,
            group_interval: 300 * S,
            repeat_interval: 4 * 3600 * S,
            send_resolved: true,
            // The tests below are of the timing within one group: group by rule,
            // as alerts were grouped before `alerts.group_by`.
            group_by: GroupBy::from_names(&["rule"]).expect("a known name"),
        }
    }

    fn of_rule(rule: &str, labels: &[(&str, &str)], firing: bool, now: i64) -> Alert {
        Alert {
            rule: rule.into(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            details: serde_json::json!({}),
            starts_at: now,
            ends_at: (!firing).then_some(now),
            model_version: "7".into(),
        }
    }

    #[test]
    fn by_default_everything_one_burst_fires_is_one_incident() {
        let t = Timing {
            group_by: GroupBy::default(),
            ..timing()
        };
        let mut r = Rules::default();
        let burst = [
            of_rule("feature_drift", &[("feature", "a")], true, 0),
            of_rule("feature_drift", &[("feature", "b")], true, 2 * S),
            of_rule(
                "prediction_drift",
                &[("feature", "prediction")],
                true,
                2 * S,
            ),
            of_rule("dataset_drift", &[], true, 3 * S),
            of_rule("anomaly_rate", &[], true, 10 * S),
        ];
        for a in burst {
            let now = a.starts_at;
            r.ingest(a, &t, now);
        }
        assert!(r.flush(&t, &[], 29 * S).is_empty());
        let n = r.flush(&t, &[], 30 * S);
        assert_eq!(n.len(), 1, "{n:?}");
        assert_eq!(n[0].group, "model");
        assert_eq!(n[0].firing.len(), 5);
        // A concept drift detection later joins the same incident, is said once
        // at the next look, and leaves; the conditions go on firing.
        r.ingest(
            of_rule("concept_drift", &[("detector", "ddm")], true, 100 * S),
            &t,
            100 * S,
        );
        let n = r.flush(&t, &[], 330 * S);
        assert_eq!(n.len(), 1);
        assert_eq!(n[0].firing.len(), 6);
        assert_eq!(n[0].thread.len(), 0, "the caller records the Message-IDs");
        assert!(!r.alerts.keys().any(|fp| fp.starts_with("concept_drift")));
        assert_eq!(r.alerts.len(), 5);
        assert!(r.flush(&t, &[], 630 * S).is_empty(), "nothing new");
        // Grouped by rule instead, the same burst makes four mails.
        let mut by_rule = Rules::default();
        for a in [
            of_rule("feature_drift", &[("feature", "a")], true, 0),
            of_rule("feature_drift", &[("feature", "b")], true, 0),
            of_rule("prediction_drift", &[("feature", "prediction")], true, 0),
            of_rule("dataset_drift", &[], true, 0),
            of_rule("anomaly_rate", &[], true, 0),
        ] {
            by_rule.ingest(a, &timing(), 0);
        }
        assert_eq!(by_rule.flush(&timing(), &[], 30 * S).len(), 4);
    }

    #[test]
    fn regrouping_keeps_what_was_said_and_the_threads() {
        // State saved while alerts were grouped by rule: two groups, both mailed.
        let t = timing();
        let mut r = Rules::default();
        r.ingest(
            of_rule("feature_drift", &[("feature", "a")], true, 0),
            &t,
            0,
        );
        r.ingest(of_rule("anomaly_rate", &[], true, 0), &t, 0);
        for n in r.flush(&t, &[], 30 * S) {
            r.sent(&n.group, &format!("<{}@x>", n.group));
        }
        assert_eq!(r.groups.len(), 2);
        // Restarted with the default grouping.
        let model = Timing {
            group_by: GroupBy::default(),
            ..t
        };
        r.regroup(model.group_by);
        assert_eq!(r.groups.keys().collect::<Vec<_>>(), ["model"]);
        let g = &r.groups["model"];
        assert_eq!(g.notified.len(), 2);
        assert_eq!(g.thread.len(), 2);
        assert_eq!(g.next_look, 330 * S);
        // Nothing changed: nothing is mailed again.
        assert!(r.flush(&model, &[], 330 * S).is_empty());
        // A change is mailed in the merged thread.
        r.ingest(
            of_rule("dataset_drift", &[], true, 400 * S),
            &model,
            400 * S,
        );
        let n = r.flush(&model, &[], 630 * S);
        assert_eq!(n.len(), 1);
        assert_eq!(n[0].firing.len(), 3);
        assert_eq!(n[0].thread.len(), 2);
    }

    #[test]
    fn group_by_names_are_checked_and_make_keys() {
        assert_eq!(GroupBy::from_names(&["rul"]), Err("rul".to_string()));
        let empty: [&str; 0] = [];
        assert_eq!(GroupBy::from_names(&empty), Ok(GroupBy::MODEL));
        let g = GroupBy::from_names(&["rule", "feature"]).expect("known names");
        let a = of_rule("feature_drift", &[("feature", "alcohol")], true, 0);
        assert_eq!(g.key(&a), "rule=feature_drift,feature=alcohol");
        let d = of_rule("dataset_drift", &[], true, 0);
        assert_eq!(g.key(&d), "rule=dataset_drift,feature=");
        assert_eq!(GroupBy::MODEL.key(&a), "model");
    }

    fn alert(feature: &str, firing: bool, now: i64) -> Alert {
        Alert {
            rule: "feature_drift".into(),
            labels: BTreeMap::from([("feature".to_string(), feature.to_string())]),
            details: serde_json::json!({}),
            starts_at: now,
            ends_at: (!firing).then_some(now),
            model_version: "7".into(),
        }
    }

    fn names(n: &Notification) -> (Vec<String>, Vec<String>) {
        let f = |v: &[Alert]| v.iter().map(|a| a.labels["feature"].clone()).collect();
        (f(&n.firing), f(&n.resolved))
    }

    #[test]
    fn alerts_of_one_check_make_one_notification_after_group_wait() {
        let (t, mut r) = (timing(), Rules::default());
        for f in ["a", "b", "c"] {
            r.ingest(alert(f, true, 0), &t, 0);
        }
        assert!(r.flush(&t, &[], 29 * S).is_empty());
        let n = r.flush(&t, &[], 30 * S);
        assert_eq!(n.len(), 1);
        assert_eq!(names(&n[0]).0, vec!["a", "b", "c"]);
        // Nothing new: nothing at the next look.
        assert!(r.flush(&t, &[], 330 * S).is_empty());
    }

    #[test]
    fn a_flapping_alert_sends_nothing_new_within_the_group_interval() {
        let (t, mut r) = (timing(), Rules::default());
        r.ingest(alert("a", true, 0), &t, 0);
        assert_eq!(r.flush(&t, &[], 30 * S).len(), 1);
        // Resolve, fire, resolve, fire between two looks.
        for (i, firing) in [false, true, false, true].into_iter().enumerate() {
            let now = (40 + i as i64 * 10) * S;
            r.ingest(alert("a", firing, now), &t, now);
        }
        assert!(r.flush(&t, &[], 330 * S).is_empty());
        // It finally resolves: one resolved notification at the next look.
        r.ingest(alert("a", false, 400 * S), &t, 400 * S);
        let n = r.flush(&t, &[], 630 * S);
        assert_eq!(n.len(), 1);
        assert_eq!(names(&n[0]), (vec![], vec!["a".to_string()]));
        // The group has ended; a new alert starts over with group_wait.
        assert!(r.groups.is_empty());
        r.ingest(alert("b", true, 700 * S), &t, 700 * S);
        assert_eq!(r.next_due(), Some(730 * S));
    }

    #[test]
    fn a_firing_group_repeats_after_repeat_interval() {
        let (t, mut r) = (timing(), Rules::default());
        r.ingest(alert("a", true, 0), &t, 0);
        assert_eq!(r.flush(&t, &[], 30 * S).len(), 1);
        let mut sent = Vec::new();
        let mut now = 30 * S;
        while now < 30 * S + 9 * 3600 * S {
            now += t.group_interval;
            if !r.flush(&t, &[], now).is_empty() {
                sent.push(now);
            }
        }
        assert_eq!(sent.len(), 2, "{sent:?}");
        assert!(sent[0] - 30 * S >= t.repeat_interval);
    }

    #[test]
    fn a_new_alert_joins_the_group_at_the_next_interval() {
        let (t, mut r) = (timing(), Rules::default());
        r.ingest(alert("a", true, 0), &t, 0);
        r.flush(&t, &[], 30 * S);
        r.ingest(alert("b", true, 100 * S), &t, 100 * S);
        assert!(r.flush(&t, &[], 200 * S).is_empty());
        let n = r.flush(&t, &[], 330 * S);
        assert_eq!(names(&n[0]).0, vec!["a", "b"]);
    }

    #[test]
    fn silenced_alerts_are_left_out_and_resolutions_need_send_resolved() {
        let mut t = timing();
        let mut r = Rules::default();
        let silence = Silence {
            id: "s".into(),
            matchers: vec![Matcher {
                name: "feature".into(),
                value: "a".into(),
            }],
            starts_at: 0,
            ends_at: 1000 * S,
            created_by: "ops".into(),
            comment: String::new(),
        };
        r.ingest(alert("a", true, 0), &t, 0);
        assert!(r
            .flush(&t, std::slice::from_ref(&silence), 30 * S)
            .is_empty());
        r.ingest(alert("b", true, 40 * S), &t, 40 * S);
        let n = r.flush(&t, std::slice::from_ref(&silence), 330 * S);
        assert_eq!(names(&n[0]).0, vec!["b"]);
        // Without send_resolved a resolution alone says nothing.
        t.send_resolved = false;
        r.ingest(alert("b", false, 400 * S), &t, 400 * S);
        assert!(r
            .flush(&t, std::slice::from_ref(&silence), 630 * S)
            .is_empty());
        // The silence over, the still-firing `a` is notified.
        let n = r.flush(&t, std::slice::from_ref(&silence), 1200 * S);
        assert_eq!(names(&n[0]).0, vec!["a"]);
    }

    #[test]
    fn one_shot_alerts_are_said_once() {
        let (t, mut r) = (timing(), Rules::default());
        let mut a = alert("x", true, 0);
        a.rule = "concept_drift".into();
        r.ingest(a, &t, 0);
        assert_eq!(r.flush(&t, &[], 30 * S).len(), 1);
        assert!(r.alerts.is_empty() && r.groups.is_empty());
        assert!(r.flush(&t, &[], 5 * 3600 * S).is_empty());
    }

    fn retrain(candidate: Option<&str>) -> RetrainEvent {
        RetrainEvent {
            run_id: 12,
            trigger: "concept_drift".into(),
            metric: Some("accuracy".into()),
            live_version: "3.2".into(),
            live_metric: Some(0.91),
            candidate_metric: Some(0.93),
            candidate_version: candidate.map(str::to_string),
            reason: "candidate 0.9300 ≥ live 0.9100 − 0".into(),
            rows: Some(1200),
            holdout_rows: Some(240),
            time: 5,
        }
    }

    fn reverted() -> OnlineEvent {
        OnlineEvent {
            from_version: "3.4".into(),
            to_version: "3".into(),
            metric: "accuracy",
            online_metric: 0.85,
            base_metric: 0.9,
            margin: 0.02,
            window: 500,
            updates: 4000,
            time: 5,
        }
    }

    #[test]
    fn retrain_and_online_events_open_one_shot_alerts_about_the_right_version() {
        let trigger = BTreeMap::from([("trigger".to_string(), "concept_drift".to_string())]);
        let cases = [
            (
                Event::RetrainPromoted(retrain(Some("4"))),
                "retrain_promoted",
                &trigger,
                "4",
            ),
            (
                Event::RetrainRejected(retrain(None)),
                "retrain_rejected",
                &trigger,
                "3.2",
            ),
            (
                Event::RetrainFailed(retrain(None)),
                "retrain_failed",
                &trigger,
                "3.2",
            ),
            (
                Event::OnlineReverted(reverted()),
                "online_reverted",
                &BTreeMap::new(),
                "3.4",
            ),
        ];
        for (event, rule, labels, version) in cases {
            let a = from_event(&event, 7);
            assert_eq!(a.rule, rule);
            assert_eq!(&a.labels, labels, "{rule}");
            assert_eq!(a.model_version, version, "{rule}");
            // Firing when raised, good news included.
            assert!(a.is_firing() && a.starts_at == 7, "{rule}");
            assert!(one_shot(rule), "{rule}");
            assert_eq!(a.details["event"], rule);
        }
        // A promotion without a registered version names the live one.
        let a = from_event(&Event::RetrainPromoted(retrain(None)), 7);
        assert_eq!(a.model_version, "3.2");
    }

    #[test]
    fn conditions_are_not_one_shot() {
        for rule in [
            "feature_drift",
            "prediction_drift",
            "dataset_drift",
            "anomaly_rate",
        ] {
            assert!(!one_shot(rule), "{rule}");
        }
        assert!(one_shot("concept_drift"));
    }

    #[test]
    fn a_promotion_is_mailed_once_and_never_resolved() {
        let (t, mut r) = (timing(), Rules::default());
        r.ingest(
            from_event(&Event::RetrainPromoted(retrain(Some("4"))), 0),
            &t,
            0,
        );
        let n = r.flush(&t, &[], 30 * S);
        assert_eq!(n.len(), 1);
        assert_eq!((n[0].firing.len(), n[0].resolved.len()), (1, 0));
        assert_eq!(n[0].group, "rule=retrain_promoted");
        assert!(r.alerts.is_empty() && r.groups.is_empty());
        assert!(r.flush(&t, &[], 5 * 3600 * S).is_empty());
    }
}
