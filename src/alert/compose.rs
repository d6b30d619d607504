//! What a mail says: subject, plain text and HTML for a group's notification.
//!
//! Subject: `[steward] FIRING: feature drift on 3 features (model v7)`, or
//! `RESOLVED: ...`, or `FIRING: ..., 1 resolved`, or `INFO: model promoted ...`. The body lists each alert with
//! its numbers (test, statistic, p-value, PSI, window, time; for a retraining
//! run its trigger, both models' metric, the rows and a link to the run; for the
//! online guard both metrics and the versions), the model version, what the
//! daemon is doing about it, and links to the dashboard pages of its alerts.

use serde_json::Value;

use super::rules::{Alert, Notification};
use crate::plot::{Distribution, Histogram, Marker, Size, TimeSeries, Verdict};
use crate::store::alerts::MailImage;

/// Settings the text needs.
#[derive(Debug, Clone)]
pub struct Context {
    /// Where people can look (`alerts.base_url`), without a trailing slash.
    pub base_url: String,
    pub interval_secs: f64,
    pub confirm_checks: u32,
    /// `training.drift_retrain`: dataset and concept drift start a retraining run.
    pub drift_retrain: bool,
    /// `training.drift_cooldown_secs`: the least time between two such runs.
    pub drift_cooldown_secs: f64,
}

/// A composed mail.
#[derive(Debug, Clone, PartialEq)]
pub struct Composed {
    pub kind: &'static str,
    pub subject: String,
    pub text: String,
    pub html: String,
    /// PNG charts the HTML shows inline (`cid:`): what moved.
    pub images: Vec<MailImage>,
}

/// The most distribution charts in one mail: the features with the smallest
/// p-values.
pub const MAX_DISTRIBUTIONS: usize = 4;

/// A chart for the mail: its image, and what it shows in words (the `alt`).
struct Figure {
    image: MailImage,
    alt: String,
}

/// The charts of a notification's firing alerts: reference against current for
/// the drifting features (worst first, at most [`MAX_DISTRIBUTIONS`]), and the
/// error over time with the change marked for a concept drift. A chart that
/// cannot be drawn is named in the second list instead.
fn figures(n: &Notification) -> (Vec<Figure>, Vec<String>) {
    let mut drifting: Vec<&Alert> = n
        .firing
        .iter()
        .filter(|a| matches!(a.rule.as_str(), "feature_drift" | "prediction_drift"))
        .filter(|a| a.details["feature"]["histogram"].is_object())
        .collect();
    drifting.sort_by(|a, b| {
        let p = |a: &Alert| a.details["feature"]["p_value"].as_f64().unwrap_or(1.0);
        p(a).total_cmp(&p(b))
    });
    let mut charts: Vec<(String, Result<Vec<u8>, String>)> = Vec::new();
    for a in drifting.into_iter().take(MAX_DISTRIBUTIONS) {
        let f = &a.details["feature"];
        let name = f["name"].as_str().unwrap_or("?").to_string();
        // The feature as the drift result gives it: its histogram and verdict.
        let parts = serde_json::from_value::<Histogram>(f["histogram"].clone())
            .and_then(|h| Ok((h, serde_json::from_value::<Verdict>(f.clone())?)));
        let png = parts
            .map_err(|e| e.to_string())
            .and_then(|(histogram, verdict)| {
                Distribution {
                    feature: name.clone(),
                    histogram,
                    verdict,
                }
                .png(Size::MAIL)
                .map_err(|e| e.to_string())
            });
        charts.push((
            format!("{name}: reference against current distribution"),
            png,
        ));
    }
    for a in n.firing.iter().filter(|a| a.rule == "concept_drift") {
        let d = &a.details;
        let points: Vec<(i64, f64)> = d["error_series"]
            .as_array()
            .map(|v| {
                v.iter()
                    .filter_map(|p| Some((p[0].as_i64()?, p[1].as_f64()?)))
                    .collect()
            })
            .unwrap_or_default();
        if points.is_empty() {
            continue;
        }
        let detector = d["detector"].as_str().unwrap_or("?");
        let series = TimeSeries {
            title: format!(
                "Error on labelled predictions, model v{} ({detector})",
                a.model_version
            ),
            y_label: "error".into(),
            points,
            markers: d["change_time"]
                .as_i64()
                .map(|at| Marker {
                    at,
                    label: "change".into(),
                })
                .into_iter()
                .collect(),
            threshold: None,
            y_range: None,
        };
        charts.push((
            format!("error over time ({detector}), the change marked"),
            series.png(Size::MAIL).map_err(|e| e.to_string()),
        ));
    }
    let (mut done, mut failed) = (Vec::new(), Vec::new());
    for (alt, png) in charts {
        match png {
            Ok(png) => {
                let cid = format!("chart-{}@steward", done.len() + 1);
                done.push(Figure {
                    image: MailImage { cid, png },
                    alt,
                });
            }
            Err(e) => failed.push(format!("{alt}: not drawn ({e})")),
        }
    }
    (done, failed)
}

fn title(rule: &str) -> &str {
    match rule {
        "feature_drift" => "feature drift",
        "prediction_drift" => "prediction drift",
        "dataset_drift" => "dataset drift",
        "anomaly_rate" => "anomaly rate high",
        "concept_drift" => "concept drift",
        "retrain_promoted" => "model promoted",
        "retrain_rejected" => "candidate rejected",
        "retrain_failed" => "retraining failed",
        "online_reverted" => "online updates reverted",
        other => other,
    }
}

/// What the alert is about, in a few words (`on bill_length_mm`, `on 3 features`).
fn scope(rule: &str, alerts: &[&Alert]) -> String {
    match rule {
        "feature_drift" | "prediction_drift" if alerts.len() == 1 => {
            format!(" on {}", alerts[0].labels.get("feature").map_or("?", |s| s))
        }
        "feature_drift" => format!(" on {} features", alerts.len()),
        _ => String::new(),
    }
}

/// Rules from the worst to the mildest: the order of a mixed incident's subject
/// and sections. A failed retraining and the data set as a whole drifting come
/// first; good news last.
const SEVERITY: [&str; 9] = [
    "retrain_failed",
    "dataset_drift",
    "feature_drift",
    "concept_drift",
    "prediction_drift",
    "anomaly_rate",
    "online_reverted",
    "retrain_rejected",
    "retrain_promoted",
];

fn severity(rule: &str) -> usize {
    SEVERITY
        .iter()
        .position(|r| *r == rule)
        .unwrap_or(SEVERITY.len())
}

/// The distinct rules of `alerts`, worst first.
fn rules_of<'a>(alerts: &[&'a Alert]) -> Vec<&'a str> {
    let mut rules: Vec<&str> = alerts.iter().map(|a| a.rule.as_str()).collect();
    rules.sort_by_key(|r| (severity(r), *r));
    rules.dedup();
    rules
}

/// One rule's part of a mixed incident's subject: `dataset drift`,
/// `2 features` (after dataset drift) or `feature drift on alcohol`,
/// `anomaly rate 3.1%`.
fn part(rule: &str, alerts: &[&Alert], with_dataset: bool) -> String {
    let mine: Vec<&Alert> = alerts.iter().copied().filter(|a| a.rule == rule).collect();
    match rule {
        "feature_drift" if with_dataset && mine.len() > 1 => format!("{} features", mine.len()),
        "prediction_drift" => title(rule).to_string(),
        "anomaly_rate" => match mine.first().and_then(|a| a.details["rate"].as_f64()) {
            Some(rate) => format!("anomaly rate {}%", (rate * 1000.0).round() / 10.0),
            None => title(rule).to_string(),
        },
        _ => format!("{}{}", title(rule), scope(rule, &mine)),
    }
}

/// The dashboard pages of an incident's alerts (`alerts.base_url` + `/ui/...`),
/// the page of its worst rule first: the drift page (at the feature, for one
/// drifting feature), the models page (at the run, for a retrain), the overview;
/// then the alerts page.
fn links(rules: &[&str], alerts: &[&Alert], base: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    let mut add = |what: &str, path: String| {
        if !out.iter().any(|(_, url)| url.ends_with(&path)) {
            out.push((what.to_string(), format!("{base}{path}")));
        }
    };
    for rule in rules {
        match *rule {
            "dataset_drift" | "feature_drift" | "prediction_drift" => {
                let features: Vec<&&Alert> = alerts
                    .iter()
                    .filter(|a| a.rule == "feature_drift" || a.rule == "prediction_drift")
                    .collect();
                match (
                    features.as_slice(),
                    features.first().and_then(|a| a.labels.get("feature")),
                ) {
                    ([one], Some(name)) => add(&format!("Drift of {name}"), page_of(one)),
                    _ => add("Drift, per feature", "/ui/drift".into()),
                }
            }
            "retrain_failed" | "retrain_rejected" | "retrain_promoted" => {
                if let Some(a) = alerts.iter().find(|a| a.rule == *rule) {
                    let label = match a.details["run_id"].as_i64() {
                        Some(run) => format!("Retrain run {run}"),
                        None => "Models and retrain runs".into(),
                    };
                    add(&label, page_of(a));
                }
            }
            _ => add("Overview", "/ui/overview".into()),
        }
    }
    add("Alerts and their delivery", "/ui/alerts".into());
    out
}

/// The dashboard page (a path under `alerts.base_url`) of one alert.
fn page_of(a: &Alert) -> String {
    match a.rule.as_str() {
        "feature_drift" | "prediction_drift" => match a.labels.get("feature") {
            Some(f) => format!("/ui/drift#feature-{}", uri_component(f)),
            None => "/ui/drift".into(),
        },
        "dataset_drift" => "/ui/drift".into(),
        "retrain_failed" | "retrain_rejected" | "retrain_promoted" => {
            match a.details["run_id"].as_i64() {
                Some(run) => format!("/ui/models#run-{run}"),
                None => "/ui/models".into(),
            }
        }
        _ => "/ui/overview".into(),
    }
}

/// `s` as JavaScript's `encodeURIComponent` writes it, which is how the
/// dashboard names a feature's section.
fn uri_component(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.!~*'()".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// At most this many rules are named in a subject; the rest are counted.
const SUBJECT_PARTS: usize = 3;

/// The mail for `n`: one group's alerts, of one rule or of several (an incident
/// of the model: `alerts.group_by`).
pub fn compose(n: &Notification, cx: &Context) -> Composed {
    let all: Vec<&Alert> = n.firing.iter().chain(&n.resolved).collect();
    let shown: Vec<&Alert> = if n.firing.is_empty() {
        n.resolved.iter().collect()
    } else {
        n.firing.iter().collect()
    };
    let version = all
        .iter()
        .map(|a| a.model_version.as_str())
        .max_by_key(|v| (v.len(), *v))
        .unwrap_or("?");
    let (status, kind) = if n.firing.is_empty() {
        ("RESOLVED", "resolved")
    } else if n.firing.iter().all(|a| a.rule == "retrain_promoted") {
        // News, not a problem: nobody needs to act on it.
        ("INFO", "firing")
    } else {
        ("FIRING", "firing")
    };
    let more = if !n.firing.is_empty() && !n.resolved.is_empty() {
        format!(", {} resolved", n.resolved.len())
    } else {
        String::new()
    };
    let rules = rules_of(&shown);
    let what = match rules.as_slice() {
        [rule] => format!("{}{}", title(rule), scope(rule, &shown)),
        _ => {
            let with_dataset = rules.contains(&"dataset_drift");
            let mut parts: Vec<String> = rules
                .iter()
                .take(SUBJECT_PARTS)
                .map(|r| part(r, &shown, with_dataset))
                .collect();
            if rules.len() > SUBJECT_PARTS {
                parts.push(format!("{} more", rules.len() - SUBJECT_PARTS));
            }
            parts.join(", ")
        }
    };
    let subject = format!("[steward] {status}: {what}{more} (model v{version})");
    // Each alert with its numbers: the worst rule first, firing before resolved.
    let mut lines: Vec<(&str, usize, Vec<String>, String)> = Vec::new();
    for (state, alerts) in [("firing", &n.firing), ("resolved", &n.resolved)] {
        for a in alerts {
            lines.push((state, severity(&a.rule), describe(a, cx), page_of(a)));
        }
    }
    lines.sort_by_key(|(state, sev, _, _)| (*state != "firing", *sev));
    // What the daemon does, per rule of the incident (worst first), once each.
    let mut doing_lines: Vec<(&str, String)> = Vec::new();
    for rule in rules_of(&all) {
        let d = doing(rule, version, &all, cx);
        if !doing_lines.iter().any(|(_, seen)| *seen == d) {
            doing_lines.push((title(rule), d));
        }
    }
    let links = links(&rules_of(&all), &all, &cx.base_url);
    let link_text: Vec<String> = links
        .iter()
        .map(|(what, url)| format!("{what}: {url}"))
        .collect();
    let mut text = format!("{subject}\n\n");
    for (state, _, ls, _) in &lines {
        text.push_str(&format!("[{state}] {}\n", ls[0]));
        for l in &ls[1..] {
            text.push_str(&format!("    {l}\n"));
        }
        text.push('\n');
    }
    match doing_lines.as_slice() {
        [(_, d)] => text.push_str(&format!("What steward is doing: {d}\n\n")),
        several => {
            text.push_str("What steward is doing:\n");
            for (what, d) in several {
                text.push_str(&format!("- {what}: {d}\n"));
            }
            text.push('\n');
        }
    }
    let (figures, undrawn) = figures(n);
    if !figures.is_empty() || !undrawn.is_empty() {
        text.push_str("Charts (in the HTML part):\n");
        for f in &figures {
            text.push_str(&format!("- {}\n", f.alt));
        }
        for u in &undrawn {
            text.push_str(&format!("- {u}\n"));
        }
        text.push('\n');
    }
    text.push_str(&format!("{}\n", link_text.join("\n")));
    let mut html = format!(
        "<html><body><h2>{}</h2>\n<table border=\"1\" cellpadding=\"4\" cellspacing=\"0\">\n",
        esc(&subject)
    );
    for (state, _, ls, page) in &lines {
        html.push_str(&format!(
            "<tr><td>{}</td><td><a href=\"{}{}\"><b>{}</b></a><br>{}</td></tr>\n",
            esc(state),
            esc(&cx.base_url),
            esc(page),
            esc(&ls[0]),
            ls[1..]
                .iter()
                .map(|l| esc(l))
                .collect::<Vec<_>>()
                .join("<br>")
        ));
    }
    html.push_str("</table>\n");
    match doing_lines.as_slice() {
        [(_, d)] => html.push_str(&format!("<p>What steward is doing: {}</p>\n", esc(d))),
        several => {
            html.push_str("<p>What steward is doing:</p>\n<ul>\n");
            for (what, d) in several {
                html.push_str(&format!("<li><b>{}</b>: {}</li>\n", esc(what), esc(d)));
            }
            html.push_str("</ul>\n");
        }
    }
    for f in &figures {
        html.push_str(&format!(
            "<p><img src=\"cid:{}\" alt=\"{}\" width=\"{}\" height=\"{}\"></p>\n",
            esc(&f.image.cid),
            esc(&f.alt),
            Size::MAIL.width,
            Size::MAIL.height
        ));
    }
    for u in &undrawn {
        html.push_str(&format!("<p>{}</p>\n", esc(u)));
    }
    let anchors: Vec<String> = links
        .iter()
        .map(|(what, url)| format!("<a href=\"{}\">{}</a>", esc(url), esc(what)))
        .collect();
    html.push_str(&format!("<p>{}</p>\n</body></html>\n", anchors.join(" · ")));
    Composed {
        kind,
        subject,
        text,
        html,
        images: figures.into_iter().map(|f| f.image).collect(),
    }
}

/// A number for people: 4 significant digits, scientific when tiny.
fn num(v: &Value) -> String {
    match v.as_f64() {
        Some(x) if x != 0.0 && x.abs() < 1e-3 => format!("{x:.3e}"),
        Some(x) => format!("{}", (x * 1e4).round() / 1e4),
        None => "n/a".into(),
    }
}

/// A model's metric: 4 decimals, so that two of them line up.
fn metric(v: &Value) -> String {
    v.as_f64()
        .map_or_else(|| "n/a".into(), |x| format!("{x:.4}"))
}

fn when(v: &Value) -> String {
    v.as_i64().map_or_else(|| "?".into(), crate::time::rfc3339)
}

/// An alert's headline and detail lines.
fn describe(a: &Alert, cx: &Context) -> Vec<String> {
    let d = &a.details;
    let window = |w: &Value| {
        format!(
            "window: {} predictions against {} reference rows, checked {} (model v{})",
            w["rows"],
            w["reference_rows"],
            when(&w["time"]),
            a.model_version
        )
    };
    match a.rule.as_str() {
        "feature_drift" | "prediction_drift" => {
            let mut lines = describe_feature(&d["feature"]);
            lines.push(window(&d["window"]));
            lines
        }
        "dataset_drift" => vec![
            format!(
                "{} of {} features drifting",
                d["drifted"].as_array().map_or(0, Vec::len),
                d["tested"]
            ),
            format!("drifting: {}", names(&d["drifted"])),
            window(&d["window"]),
        ],
        "anomaly_rate" => vec![
            format!(
                "{} of {} inputs anomalous (rate {}, expected {})",
                d["anomalies"],
                d["scored"],
                num(&d["rate"]),
                num(&d["expected_rate"])
            ),
            format!(
                "binomial test p-value {}, score threshold {}",
                num(&d["p_value"]),
                num(&d["threshold"])
            ),
            window(&d["window"]),
        ],
        "concept_drift" => vec![
            format!(
                "{} detected a rise in the error on labelled predictions",
                d["detector"].as_str().unwrap_or("?")
            ),
            format!(
                "error {} over {} labels since the detector's last reset, at {} (model v{})",
                num(&d["error"]),
                d["labels"],
                when(&d["time"]),
                a.model_version
            ),
        ],
        "retrain_promoted" | "retrain_rejected" | "retrain_failed" => describe_retrain(a, cx),
        "online_reverted" => describe_revert(d),
        other => vec![other.to_string(), d.to_string()],
    }
}

/// A drifting feature's name and its test's numbers.
fn describe_feature(f: &Value) -> Vec<String> {
    let test = match f["test"].as_str() {
        Some("ks") => "KS statistic",
        Some("chi2") => "chi-square",
        _ => "statistic",
    };
    vec![
        f["name"].as_str().unwrap_or("?").to_string(),
        format!(
            "{test} {}, p-value {} (corrected {}), PSI {}",
            num(&f["statistic"]),
            num(&f["p_value"]),
            num(&f["p_adjusted"]),
            num(&f["psi"])
        ),
    ]
}

/// The strings of a JSON array, comma-separated.
fn names(list: &Value) -> String {
    list.as_array()
        .map(|v| {
            v.iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default()
}

/// A retraining run's end: what went live (or did not), the scores, the data.
fn describe_retrain(a: &Alert, cx: &Context) -> Vec<String> {
    let d = &a.details;
    let run = &d["run_id"];
    let live = d["live_version"].as_str().unwrap_or("?");
    let headline = match a.rule.as_str() {
        "retrain_promoted" => format!(
            "retraining run {run} promoted its candidate as model v{}, replacing v{live}",
            d["candidate_version"].as_str().unwrap_or("?")
        ),
        "retrain_rejected" => {
            format!("retraining run {run}: the gate rejected the candidate and kept model v{live}")
        }
        _ => format!("retraining run {run} failed; model v{live} was left serving"),
    };
    let scores = match d["metric"].as_str() {
        Some(name) => format!(
            "{name} on the held-out rows: live v{live} {}, candidate {}",
            metric(&d["live_metric"]),
            metric(&d["candidate_metric"])
        ),
        None => "not scored: the run ended before the gate".into(),
    };
    let data = match (d["rows"].as_u64(), d["holdout_rows"].as_u64()) {
        (Some(rows), Some(held)) => {
            format!("data: {rows} labelled rows, the newest {held} held out for the gate")
        }
        (Some(rows), None) => format!("data: {rows} labelled rows"),
        _ => "data: not read".into(),
    };
    vec![
        headline,
        format!(
            "trigger: {}, run {run}, ended {}",
            d["trigger"].as_str().unwrap_or("?"),
            when(&d["time"])
        ),
        scores,
        data,
        format!("reason: {}", d["reason"].as_str().unwrap_or("?")),
        format!("run: {}/v1/retrain/{run}", cx.base_url),
    ]
}

/// The online guard going back to the base version.
fn describe_revert(d: &Value) -> Vec<String> {
    let (from, to) = (
        d["from_version"].as_str().unwrap_or("?"),
        d["to_version"].as_str().unwrap_or("?"),
    );
    vec![
        format!("the online guard went back from v{from} to v{to}"),
        format!(
            "{} over the last {} labels: online v{from} {}, v{to} {} (margin {})",
            d["metric"].as_str().unwrap_or("metric"),
            d["window"],
            metric(&d["online_metric"]),
            metric(&d["base_metric"]),
            num(&d["margin"])
        ),
        format!(
            "v{from} → v{to} after {} online updates, at {}",
            d["updates"],
            when(&d["time"])
        ),
    ]
}

/// The daemon's part, per rule; `version` is the newest of `alerts`.
fn doing(rule: &str, version: &str, alerts: &[&Alert], cx: &Context) -> String {
    let keeps = format!("it keeps serving model v{version}");
    // A detail of the alert about `version` (the group's newest).
    let detail = |key: &str| {
        alerts
            .iter()
            .find(|a| a.model_version == version)
            .and_then(|a| a.details[key].as_str())
            .unwrap_or("?")
            .to_string()
    };
    let retrain = if cx.drift_retrain {
        format!(
            "steward starts a retraining run on recent labelled data, unless drift started one in \
             the last {} s (training.drift_cooldown_secs); its outcome comes in a separate mail.",
            cx.drift_cooldown_secs
        )
    } else {
        "Drift does not start retraining here (training.drift_retrain = false): if the change is \
         real, retrain on recent labelled data with POST /v1/retrain."
            .to_string()
    };
    let checks = format!(
        "{keeps} and checks again every {} s; the alert resolves after {} clean checks in a row.",
        cx.interval_secs, cx.confirm_checks
    );
    match rule {
        "dataset_drift" => format!("{checks} {retrain}"),
        // Single features do not start a run; the data set as a whole does.
        "feature_drift" | "prediction_drift" if cx.drift_retrain => format!(
            "{checks} Drifting features alone do not retrain: a run starts when the data set as a \
             whole drifts or concept drift is detected (at most one every {} s); to retrain now, \
             POST /v1/retrain.",
            cx.drift_cooldown_secs
        ),
        "feature_drift" | "prediction_drift" => format!("{checks} {retrain}"),
        "anomaly_rate" => format!(
            "{keeps} and answers these inputs (each answer says anomaly: true); the prediction log \
             holds every input with its anomaly_score."
        ),
        "concept_drift" => format!(
            "{keeps}; the detectors have restarted and will alert again on a further rise. {retrain}"
        ),
        "retrain_promoted" => {
            let previous = detail("live_version");
            format!(
                "it now serves model v{version}; the previous version (v{previous}) stays in the \
                 registry and can be re-activated with POST /v1/models/{previous}/activate."
            )
        }
        "retrain_rejected" => format!(
            "{keeps}; the candidate does not go live. The next run comes with the schedule \
             (training.schedule){}, or with POST /v1/retrain.",
            if cx.drift_retrain { " or a drift" } else { "" }
        ),
        "retrain_failed" => format!(
            "{keeps}; nothing was changed. The next run comes with the schedule (training.schedule){}, or with POST /v1/retrain.",
            if cx.drift_retrain { " or a drift" } else { "" }
        ),
        "online_reverted" => format!(
            "it serves v{} again and publishes no online updates until a new model goes live.",
            detail("to_version")
        ),
        _ => keeps,
    }
}

/// Escapes text for HTML (one escaping for every page and mail steward writes).
pub use crate::report::esc;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::rules::from_event;
    use crate::monitor::events::{ConceptEvent, Event, OnlineEvent, RetrainEvent};
    use std::collections::BTreeMap;

    fn drift(feature: &str, p: f64) -> Alert {
        Alert {
            rule: "feature_drift".into(),
            labels: BTreeMap::from([("feature".into(), feature.into())]),
            details: serde_json::json!({
                "event": "drift_detected", "subject": "input",
                "feature": {"name": feature, "test": "ks", "statistic": 0.41234, "p_value": p,
                            "p_adjusted": p * 6.0, "psi": 1.3721},
                "window": {"model_version": "7", "rows": 300, "reference_rows": 344, "time": 0}
            }),
            starts_at: 0,
            ends_at: None,
            model_version: "7".into(),
        }
    }

    fn cx() -> Context {
        Context {
            base_url: "http://steward.example:8080".into(),
            interval_secs: 60.0,
            confirm_checks: 2,
            drift_retrain: true,
            drift_cooldown_secs: 3600.0,
        }
    }

    #[test]
    fn durations_are_written_as_configured_fractions_included() {
        let n = Notification {
            group: "feature_drift".into(),
            firing: vec![drift("a", 1e-9)],
            resolved: vec![],
            thread: vec![],
        };
        let whole = compose(&n, &cx());
        assert!(
            whole.text.contains("checks again every 60 s;"),
            "{}",
            whole.text
        );
        let fast = Context {
            interval_secs: 0.5,
            ..cx()
        };
        let m = compose(&n, &fast);
        assert!(m.text.contains("checks again every 0.5 s;"), "{}", m.text);
        assert!(m.text.contains("at most one every 3600 s"), "{}", m.text);
    }

    #[test]
    fn subject_names_the_state_rule_scope_and_version() {
        let mut n = Notification {
            group: "feature_drift".into(),
            firing: vec![drift("a", 1e-9), drift("b", 2e-5), drift("c", 1e-3)],
            resolved: vec![],
            thread: vec![],
        };
        let m = compose(&n, &cx());
        assert_eq!(
            m.subject,
            "[steward] FIRING: feature drift on 3 features (model v7)"
        );
        assert_eq!(m.kind, "firing");
        assert!(m
            .text
            .contains("KS statistic 0.4123, p-value 1.000e-9 (corrected 6.000e-9), PSI 1.3721"));
        assert!(m
            .text
            .contains("window: 300 predictions against 344 reference rows"));
        // The links open the dashboard: the drift page, then the alerts page.
        assert!(m
            .text
            .contains("Drift, per feature: http://steward.example:8080/ui/drift\n"));
        assert!(m.html.contains(
            "<a href=\"http://steward.example:8080/ui/alerts\">Alerts and their delivery</a>"
        ));
        // Each alert's name opens its own place on the dashboard.
        assert!(m
            .html
            .contains("<a href=\"http://steward.example:8080/ui/drift#feature-a\"><b>a</b></a>"));
        // One drifting feature: its section of the drift page, named as the
        // page's script names it (encodeURIComponent).
        let one = Notification {
            firing: vec![drift("bill length (mm)/2", 1e-9)],
            ..n.clone()
        };
        assert!(compose(&one, &cx()).text.contains(
            "Drift of bill length (mm)/2: http://steward.example:8080/ui/drift#feature-bill%20length%20(mm)%2F2\n"
        ));
        n.resolved = n.firing.split_off(1);
        assert_eq!(
            compose(&n, &cx()).subject,
            "[steward] FIRING: feature drift on a, 2 resolved (model v7)"
        );
        n.firing.clear();
        assert_eq!(
            compose(&n, &cx()).subject,
            "[steward] RESOLVED: feature drift on 2 features (model v7)"
        );
    }

    fn of_rule(rule: &str, details: serde_json::Value) -> Alert {
        Alert {
            rule: rule.into(),
            labels: BTreeMap::new(),
            details,
            starts_at: 0,
            ends_at: None,
            model_version: "4".into(),
        }
    }

    #[test]
    fn an_incident_of_several_rules_is_one_mail_named_by_the_worst() {
        let window = serde_json::json!({"model_version": "4", "rows": 300,
                                        "reference_rows": 344, "time": 0});
        let mut a = drift("alcohol", 1e-9);
        a.model_version = "4".into();
        let mut b = drift("ash", 1e-6);
        b.model_version = "4".into();
        let dataset = of_rule(
            "dataset_drift",
            serde_json::json!({"drifted": ["alcohol", "ash"], "tested": 13, "window": window}),
        );
        let anomaly = of_rule(
            "anomaly_rate",
            serde_json::json!({"anomalies": 31, "scored": 1000, "rate": 0.031,
                               "expected_rate": 0.001, "p_value": 1e-12, "threshold": 30.5,
                               "window": window}),
        );
        let mut n = Notification {
            group: "model".into(),
            // As the rules give them: by fingerprint, not by severity.
            firing: vec![anomaly.clone(), dataset.clone(), a.clone(), b.clone()],
            resolved: vec![],
            thread: vec![],
        };
        let m = compose(&n, &cx());
        assert_eq!(
            m.subject,
            "[steward] FIRING: dataset drift, 2 features, anomaly rate 3.1% (model v4)"
        );
        // The worst first in the body too, and what steward does per rule.
        let at = |needle: &str| m.text.find(needle).unwrap_or(usize::MAX);
        assert!(at("[firing] 2 of 13 features drifting") < at("[firing] alcohol"));
        assert!(at("[firing] ash") < at("[firing] 31 of 1000 inputs anomalous"));
        assert!(
            m.text.contains("What steward is doing:\n- dataset drift: "),
            "{}",
            m.text
        );
        assert!(m
            .text
            .contains("\n- anomaly rate high: it keeps serving model v4 and answers"));
        assert!(m.html.contains("<li><b>dataset drift</b>: "));
        // More rules than the subject names are counted.
        n.firing
            .push(of_rule("prediction_drift", serde_json::json!({})));
        n.firing
            .push(of_rule("retrain_failed", serde_json::json!({})));
        assert_eq!(
            compose(&n, &cx()).subject,
            "[steward] FIRING: retraining failed, dataset drift, 2 features, 2 more (model v4)"
        );
        // Without the data set, drifting features are named as before.
        n.firing = vec![a, anomaly];
        assert_eq!(
            compose(&n, &cx()).subject,
            "[steward] FIRING: feature drift on alcohol, anomaly rate 3.1% (model v4)"
        );
    }

    /// Width and height of a PNG.
    fn png_size(png: &[u8]) -> (u32, u32) {
        let reader = png::Decoder::new(std::io::Cursor::new(png))
            .read_info()
            .expect("a PNG");
        (reader.info().width, reader.info().height)
    }

    #[test]
    fn concept_drift_is_drawn_as_the_error_over_time_with_the_change_marked() {
        let event = Event::ConceptDrift(ConceptEvent {
            detector: "ddm",
            labels: 800,
            error: 0.21,
            model_version: "7".into(),
            time: 7_200_000,
            change_labels: 300,
            change_time: 3_600_000,
            error_series: (0..60)
                .map(|k| (k * 120_000, if k < 30 { 0.1 } else { 0.4 }))
                .collect(),
        });
        let m = mail(&event, &cx());
        assert_eq!(m.images.len(), 1);
        assert_eq!(png_size(&m.images[0].png), (700, 350));
        assert!(m
            .html
            .contains(&format!("<img src=\"cid:{}\"", m.images[0].cid)));
        assert!(m
            .text
            .contains("- error over time (ddm), the change marked"));
        // Without the series there is nothing to draw, and nothing is claimed.
        let bare = Event::ConceptDrift(ConceptEvent {
            error_series: Vec::new(),
            ..match event {
                Event::ConceptDrift(c) => c,
                _ => unreachable!(),
            }
        });
        let m = mail(&bare, &cx());
        assert!(m.images.is_empty() && !m.html.contains("cid:"));
    }

    #[test]
    fn at_most_four_drifting_features_are_drawn_the_smallest_p_values_first() {
        let feature = |name: &str, p: f64| {
            let mut a = drift(name, p);
            a.details["feature"]["histogram"] = serde_json::json!({
                "edges": [0.0, 1.0, 2.0], "reference": [10, 5], "current": [2, 13]});
            a
        };
        let n = Notification {
            group: "model".into(),
            firing: ["a", "b", "c", "d", "e"]
                .iter()
                .enumerate()
                .map(|(i, f)| feature(f, 10f64.powi(-(i as i32) - 2)))
                .collect(),
            resolved: vec![],
            thread: vec![],
        };
        let m = compose(&n, &cx());
        assert_eq!(m.images.len(), MAX_DISTRIBUTIONS);
        for (k, name) in ["e", "d", "c", "b"].iter().enumerate() {
            assert!(m
                .text
                .contains(&format!("- {name}: reference against current")));
            assert_eq!(png_size(&m.images[k].png), (700, 350));
        }
        assert!(!m.text.contains("- a: reference"));
    }

    #[test]
    fn html_is_escaped() {
        let mut a = drift("<script>", 0.01);
        a.labels.insert("feature".into(), "<script>".into());
        let n = Notification {
            group: "feature_drift".into(),
            firing: vec![a],
            resolved: vec![],
            thread: vec![],
        };
        let m = compose(&n, &cx());
        assert!(!m.html.contains("<script>"));
        assert!(m.html.contains("&lt;script&gt;"));
    }

    fn retrain(candidate_version: Option<&str>, candidate_metric: f64) -> RetrainEvent {
        RetrainEvent {
            run_id: 12,
            trigger: "dataset_drift".into(),
            metric: Some("accuracy".into()),
            live_version: "3".into(),
            live_metric: Some(0.91),
            candidate_metric: Some(candidate_metric),
            candidate_version: candidate_version.map(str::to_string),
            reason: "gate: candidate against live − 0.01".into(),
            rows: Some(1200),
            holdout_rows: Some(240),
            time: 0,
        }
    }

    /// The mail for one event's alert, as the rules would make it.
    fn mail(event: &Event, cx: &Context) -> Composed {
        let a = from_event(event, 0);
        let n = Notification {
            group: a.rule.clone(),
            firing: vec![a],
            resolved: vec![],
            thread: vec![],
        };
        compose(&n, cx)
    }

    fn assert_has(m: &Composed, needles: &[&str]) {
        for needle in needles {
            assert!(m.text.contains(needle), "missing {needle:?} in\n{}", m.text);
        }
    }

    #[test]
    fn a_promotion_names_both_metrics_the_run_and_the_way_back() {
        let m = mail(&Event::RetrainPromoted(retrain(Some("4"), 0.93456)), &cx());
        assert_eq!(m.subject, "[steward] INFO: model promoted (model v4)");
        assert_has(
            &m,
            &[
                "[firing] retraining run 12 promoted its candidate as model v4, replacing v3",
                "trigger: dataset_drift, run 12",
                "accuracy on the held-out rows: live v3 0.9100, candidate 0.9346",
                "data: 1200 labelled rows, the newest 240 held out for the gate",
                "reason: gate: candidate against live − 0.01",
                "run: http://steward.example:8080/v1/retrain/12",
                "What steward is doing: it now serves model v4; the previous version (v3) stays in \
                 the registry and can be re-activated with POST /v1/models/3/activate.",
            ],
        );
        assert!(m.html.contains("live v3 0.9100, candidate 0.9346"));
        assert!(m.html.contains("http://steward.example:8080/v1/retrain/12"));
    }

    #[test]
    fn a_rejection_says_the_live_model_keeps_serving() {
        let m = mail(&Event::RetrainRejected(retrain(None, 0.8)), &cx());
        assert_eq!(m.subject, "[steward] FIRING: candidate rejected (model v3)");
        assert_has(
            &m,
            &[
                "the gate rejected the candidate and kept model v3",
                "accuracy on the held-out rows: live v3 0.9100, candidate 0.8000",
                "run: http://steward.example:8080/v1/retrain/12",
                "What steward is doing: it keeps serving model v3; the candidate does not go live.",
            ],
        );
    }

    #[test]
    fn a_failed_run_before_the_gate_says_what_it_did_not_reach() {
        let mut e = retrain(None, f64::NAN);
        e.metric = None;
        e.live_metric = None;
        e.rows = None;
        e.holdout_rows = None;
        e.reason = "time limit of 1800 s reached".into();
        let m = mail(&Event::RetrainFailed(e), &cx());
        assert_eq!(m.subject, "[steward] FIRING: retraining failed (model v3)");
        assert_has(
            &m,
            &[
                "retraining run 12 failed; model v3 was left serving",
                "not scored: the run ended before the gate",
                "data: not read",
                "reason: time limit of 1800 s reached",
                "it keeps serving model v3; nothing was changed.",
            ],
        );
    }

    #[test]
    fn an_online_revert_names_both_metrics_and_versions() {
        let e = OnlineEvent {
            from_version: "3.4".into(),
            to_version: "3".into(),
            metric: "accuracy",
            online_metric: 0.85,
            base_metric: 0.9012,
            margin: 0.02,
            window: 500,
            updates: 4000,
            time: 0,
        };
        let m = mail(&Event::OnlineReverted(e), &cx());
        assert_eq!(
            m.subject,
            "[steward] FIRING: online updates reverted (model v3.4)"
        );
        assert_has(
            &m,
            &[
                "accuracy over the last 500 labels: online v3.4 0.8500, v3 0.9012 (margin 0.02)",
                "v3.4 → v3 after 4000 online updates",
                "What steward is doing: it serves v3 again and publishes no online updates until a \
                 new model goes live.",
            ],
        );
    }

    #[test]
    fn drift_mails_say_whether_drift_starts_a_retrain() {
        let concept = Event::ConceptDrift(ConceptEvent {
            detector: "ddm",
            labels: 800,
            error: 0.21,
            model_version: "7".into(),
            time: 0,
            change_labels: 300,
            change_time: 0,
            error_series: Vec::new(),
        });
        let on = mail(&concept, &cx());
        assert_has(
            &on,
            &["steward starts a retraining run", "in the last 3600 s"],
        );
        assert!(!on.text.contains("not automatic"));
        let off = Context {
            drift_retrain: false,
            ..cx()
        };
        let m = mail(&concept, &off);
        assert_has(&m, &["training.drift_retrain = false", "POST /v1/retrain"]);
        assert!(!m.text.contains("starts a retraining run"));
        // Single drifting features never start a run themselves.
        let n = Notification {
            group: "feature_drift".into(),
            firing: vec![drift("a", 1e-4)],
            resolved: vec![],
            thread: vec![],
        };
        let m = compose(&n, &cx());
        assert_has(&m, &["Drifting features alone do not retrain"]);
        assert!(compose(&n, &off)
            .text
            .contains("training.drift_retrain = false"));
    }
}
