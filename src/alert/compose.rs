//! What a mail says: subject, plain text and HTML for a group's notification.
//!
//! Subject: `[steward] FIRING: feature drift on 3 features (model v7)`, or
//! `RESOLVED: ...`, or `FIRING: ..., 1 resolved`. The body lists each alert with
//! its numbers (test, statistic, p-value, PSI, window, time), the model version,
//! what the daemon is doing about it, and links to the API.

use serde_json::Value;

use super::rules::{Alert, Notification};

/// Settings the text needs.
#[derive(Debug, Clone)]
pub struct Context {
    /// Where people can look (`alerts.base_url`), without a trailing slash.
    pub base_url: String,
    pub interval_secs: u64,
    pub confirm_checks: u32,
}

/// A composed mail.
#[derive(Debug, Clone, PartialEq)]
pub struct Composed {
    pub kind: &'static str,
    pub subject: String,
    pub text: String,
    pub html: String,
}

fn title(rule: &str) -> &str {
    match rule {
        "feature_drift" => "feature drift",
        "prediction_drift" => "prediction drift",
        "dataset_drift" => "dataset drift",
        "anomaly_rate" => "anomaly rate high",
        "concept_drift" => "concept drift",
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

/// The mail for `n`.
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
    } else {
        ("FIRING", "firing")
    };
    let more = if !n.firing.is_empty() && !n.resolved.is_empty() {
        format!(", {} resolved", n.resolved.len())
    } else {
        String::new()
    };
    let subject = format!(
        "[steward] {status}: {}{}{more} (model v{version})",
        title(&n.group),
        scope(&n.group, &shown)
    );
    let mut lines: Vec<(String, Vec<String>)> = Vec::new();
    for a in &n.firing {
        lines.push(("firing".into(), describe(a)));
    }
    for a in &n.resolved {
        lines.push(("resolved".into(), describe(a)));
    }
    let doing = doing(&n.group, version, cx);
    let links = format!(
        "Drift report: {0}/v1/drift\nAlerts and their delivery: {0}/v1/alerts\nModel: {0}/v1/model",
        cx.base_url
    );
    let mut text = format!("{subject}\n\n");
    for (state, ls) in &lines {
        text.push_str(&format!("[{state}] {}\n", ls[0]));
        for l in &ls[1..] {
            text.push_str(&format!("    {l}\n"));
        }
        text.push('\n');
    }
    text.push_str(&format!("What steward is doing: {doing}\n\n{links}\n"));
    let mut html = format!(
        "<html><body><h2>{}</h2>\n<table border=\"1\" cellpadding=\"4\" cellspacing=\"0\">\n",
        esc(&subject)
    );
    for (state, ls) in &lines {
        html.push_str(&format!(
            "<tr><td>{}</td><td><b>{}</b><br>{}</td></tr>\n",
            esc(state),
            esc(&ls[0]),
            ls[1..]
                .iter()
                .map(|l| esc(l))
                .collect::<Vec<_>>()
                .join("<br>")
        ));
    }
    html.push_str(&format!(
        "</table>\n<p>What steward is doing: {}</p>\n<p><a href=\"{1}/v1/drift\">Drift report</a> · \
         <a href=\"{1}/v1/alerts\">Alerts</a> · <a href=\"{1}/v1/model\">Model</a></p>\n</body></html>\n",
        esc(&doing),
        esc(&cx.base_url)
    ));
    Composed {
        kind,
        subject,
        text,
        html,
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

fn when(v: &Value) -> String {
    v.as_i64().map_or_else(|| "?".into(), crate::time::rfc3339)
}

/// An alert's headline and detail lines.
fn describe(a: &Alert) -> Vec<String> {
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
            let f = &d["feature"];
            let test = match f["test"].as_str() {
                Some("ks") => "KS statistic",
                Some("chi2") => "chi-square",
                _ => "statistic",
            };
            vec![
                format!("{}", f["name"].as_str().unwrap_or("?")),
                format!(
                    "{test} {}, p-value {} (corrected {}), PSI {}",
                    num(&f["statistic"]),
                    num(&f["p_value"]),
                    num(&f["p_adjusted"]),
                    num(&f["psi"])
                ),
                window(&d["window"]),
            ]
        }
        "dataset_drift" => vec![
            format!(
                "{} of {} features drifting",
                d["drifted"].as_array().map_or(0, Vec::len),
                d["tested"]
            ),
            format!(
                "drifting: {}",
                d["drifted"]
                    .as_array()
                    .map(|v| v
                        .iter()
                        .filter_map(Value::as_str)
                        .collect::<Vec<_>>()
                        .join(", "))
                    .unwrap_or_default()
            ),
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
        other => vec![other.to_string(), d.to_string()],
    }
}

/// The daemon's part, per rule.
fn doing(rule: &str, version: &str, cx: &Context) -> String {
    let keeps = format!("it keeps serving model v{version}");
    match rule {
        "feature_drift" | "prediction_drift" | "dataset_drift" => format!(
            "{keeps} and checks again every {} s; the alert resolves after {} clean checks in a row. \
             Retraining is not automatic in this version: if the change is real, retrain on recent \
             labelled data.",
            cx.interval_secs, cx.confirm_checks
        ),
        "anomaly_rate" => format!(
            "{keeps} and answers these inputs (each answer says anomaly: true); the prediction log \
             holds every input with its anomaly_score."
        ),
        "concept_drift" => format!(
            "{keeps}; the detectors have restarted and will alert again on a further rise. \
             Retraining is not automatic in this version."
        ),
        _ => keeps,
    }
}

/// Escapes text for HTML.
pub fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;
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
            interval_secs: 60,
            confirm_checks: 2,
        }
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
        assert!(m.text.contains("http://steward.example:8080/v1/drift"));
        assert!(m.html.contains("<b>a</b>"));
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
}
