//! Monitoring in the running daemon: the drift job and `GET /v1/drift`, anomaly
//! scores in answers and the log, the anomaly-rate event, concept drift from
//! feedback, and the events in the daemon's log. Every test runs on SQLite and
//! on PostgreSQL (`for_each_backend!`).
//!
//! The daemon is a separate process, so its interval cannot run on paused time:
//! the tests use a one-second interval and wait for the number of completed
//! checks on /metrics to move (never a fixed sleep).

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::common::{client, for_each_backend, metrics_text, Api, Backend, Daemon, InProcess};

/// Fast checks over a small window; one check is enough to change state.
const FAST: &str = "[drift]\ninterval_secs = 1\nwindow = 300\nmin_rows = 50\nconfirm_checks = 1\n";

/// The bundled data's rows as request features (label left out), `n` of them,
/// with `f` applied to each.
pub fn rows(n: usize, f: impl Fn(&mut Value)) -> Vec<Value> {
    let mut reader = csv::Reader::from_reader(steward::BUNDLED_PENGUINS.as_bytes());
    let headers = reader.headers().unwrap().clone();
    let all: Vec<Value> = reader
        .records()
        .map(|r| {
            let r = r.unwrap();
            let mut m = serde_json::Map::new();
            for (h, v) in headers.iter().zip(r.iter()) {
                let v = match (h, v) {
                    ("label", _) => continue,
                    (_, "") => Value::Null,
                    ("island" | "sex", s) => json!(s),
                    (_, s) => json!(s.parse::<f64>().unwrap()),
                };
                m.insert(h.to_string(), v);
            }
            Value::Object(m)
        })
        .collect();
    // Every 7th row, wrapping (7 and 344 are coprime): any 100 rows are a spread
    // sample of the file, which is sorted by species and island.
    (0..n)
        .map(|i| {
            let mut row = all[(i * 7) % all.len()].clone();
            f(&mut row);
            row
        })
        .collect()
}

/// The bundled data's labels, in row order.
fn labels() -> Vec<String> {
    let mut reader = csv::Reader::from_reader(steward::BUNDLED_PENGUINS.as_bytes());
    reader
        .records()
        .map(|r| r.unwrap().iter().next_back().unwrap().to_string())
        .collect()
}

/// Predicts `rows` in batches; returns the answers.
pub async fn predict_all(d: &impl Api, c: &reqwest::Client, rows: &[Value]) -> Vec<Value> {
    let mut answers = Vec::new();
    for chunk in rows.chunks(200) {
        let (status, body) = d.predict(c, &json!({"instances": chunk})).await;
        assert_eq!(status, 200, "{body}");
        answers.extend(body["predictions"].as_array().unwrap().iter().cloned());
    }
    answers
}

/// A metric's value on /metrics (0 when absent).
pub async fn metric(d: &impl Api, c: &reqwest::Client, series: &str) -> f64 {
    metrics_text(c, d.base())
        .await
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

/// Waits until `n` more drift checks have completed.
pub async fn checks_after(d: &impl Api, c: &reqwest::Client, n: f64) {
    let start = metric(d, c, "steward_drift_checks_total").await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while metric(d, c, "steward_drift_checks_total").await < start + n {
        assert!(Instant::now() < deadline, "no drift check within 30 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Log lines of event `name`, parsed.
pub fn events(log: &str, name: &str) -> Vec<Value> {
    log.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["fields"]["event"] == name)
        .map(|v| serde_json::from_str(v["fields"]["details"].as_str().unwrap()).unwrap())
        .collect()
}

for_each_backend!(
    #[tokio::test]
    the_drift_job_reports_a_shifted_feature_once_on_the_api_metrics_and_log
);
async fn the_drift_job_reports_a_shifted_feature_once_on_the_api_metrics_and_log(backend: Backend) {
    let d = Daemon::start_on(backend, FAST, &[]);
    let c = client();
    let none = c.get(format!("{}/v1/drift", d.url)).send().await.unwrap();
    assert_eq!(none.status(), 404);
    let body: Value = none.json().await.unwrap();
    assert_eq!(body["error"]["code"], "no_drift_report", "{body}");
    let last = "steward_drift_last_success_timestamp_seconds";
    let text = metrics_text(&c, &d.url).await;
    assert!(!text.contains(last), "before any check:\n{text}");

    // The training distribution itself: no drift.
    predict_all(&d, &c, &rows(300, |_| {})).await;
    checks_after(&d, &c, 1.0).await;
    let report = d.get_json(&c, "/v1/drift").await;
    assert_eq!(report["drift"], false, "{report}");
    let ran = report["window"]["time"].as_f64().unwrap() / 1000.0;
    let stamp = metric(&d, &c, last).await;
    assert!(
        stamp >= ran && stamp <= unix_now(),
        "{last} {stamp}, check at {ran}"
    );
    assert_eq!(report["window"]["rows"], 300);
    assert_eq!(report["window"]["model_version"], "1");
    assert_eq!(report["correction"], "bonferroni");
    let features = report["features"].as_array().unwrap();
    assert_eq!(features.len(), 6);
    for f in features {
        let p = f["p_value"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&p), "{f}");
        assert!(f["psi"].as_f64().unwrap().is_finite(), "{f}");
    }
    assert_eq!(report["prediction"]["name"], "prediction");
    assert_eq!(report["prediction"]["test"], "chi2");

    // Bills 8 mm longer (about 1.5 standard deviations): that feature drifts.
    predict_all(
        &d,
        &c,
        &rows(300, |r| {
            if let Some(v) = r["bill_length_mm"].as_f64() {
                r["bill_length_mm"] = json!(v + 8.0);
            }
        }),
    )
    .await;
    checks_after(&d, &c, 1.0).await;
    let report = d.get_json(&c, "/v1/drift").await;
    assert_eq!(report["drift"], true, "{report}");
    let drifted: Vec<&str> = report["features"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["drift"] == true)
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    assert_eq!(drifted, vec!["bill_length_mm"], "{report}");
    assert_eq!(
        metric(
            &d,
            &c,
            "steward_drift_drifted{feature=\"bill_length_mm\",subject=\"input\"}"
        )
        .await,
        1.0
    );
    assert_eq!(
        metric(
            &d,
            &c,
            "steward_drift_drifted{feature=\"island\",subject=\"input\"}"
        )
        .await,
        0.0
    );
    // Two more checks of the same window: still one event.
    checks_after(&d, &c, 2.0).await;
    let detected = events(&d.log_text(), "drift_detected");
    let bill: Vec<&Value> = detected
        .iter()
        .filter(|e| e["feature"]["name"] == "bill_length_mm")
        .collect();
    assert_eq!(bill.len(), 1, "{detected:?}");
    let e = bill[0];
    assert_eq!(e["subject"], "input");
    assert_eq!(e["window"]["model_version"], "1");
    assert_eq!(e["window"]["rows"], 300);
    assert!(e["feature"]["p_value"].as_f64().unwrap() < 1e-6, "{e}");
    assert!(e["feature"]["statistic"].as_f64().unwrap() > 0.3, "{e}");

    let (status, _, stopped) = d.halt();
    assert!(status.success());
    let db = stopped.db();
    assert!(db.count("drift_reports").await >= 4);
    let flagged: i64 = db
        .scalar("SELECT COUNT(*) FROM drift_reports WHERE drift = 1")
        .await;
    assert!(flagged >= 3, "{flagged}");

    // After a restart (and before its first check) the last success is the
    // newest stored check's time, not absent: an alert on a stalled job must
    // not fire because the daemon restarted.
    let newest: i64 = db.scalar("SELECT MAX(time) FROM drift_reports").await;
    let d = stopped.start(&[("STEWARD_DRIFT__INTERVAL_SECS", "3600")]);
    assert_eq!(metric(&d, &c, last).await, newest as f64 / 1000.0);
}

/// Seconds since the Unix epoch.
fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

for_each_backend!(
    #[tokio::test]
    anomaly_scores_answer_every_row_and_a_burst_is_one_event
);
async fn anomaly_scores_answer_every_row_and_a_burst_is_one_event(backend: Backend) {
    let d = Daemon::start_on(backend, FAST, &[]);
    let c = client();
    let card = d.get_json(&c, "/v1/model").await;
    let threshold = card["anomaly"]["threshold"].as_f64().unwrap();
    // Four numeric features: the chi-square(4) quantile at 0.999 is 18.4668
    // (scipy.stats.chi2.ppf(0.999, 4)).
    assert_eq!(card["anomaly"]["features"], 4);
    assert!((threshold - 18.4668).abs() < 1e-3, "{card}");

    let normal = rows(1, |_| {}).remove(0);
    let (status, one) = d.predict(&c, &json!({"features": normal})).await;
    assert_eq!(status, 200, "{one}");
    assert_eq!(one["anomaly"], false, "{one}");
    let score = one["anomaly_score"].as_f64().unwrap();
    assert!(score >= 0.0 && score < threshold, "{one}");

    // A 60 kg penguin with a 10 mm flipper is far outside the training data.
    let strange = |r: &mut Value| {
        r["body_mass_g"] = json!(60_000);
        r["flipper_length_mm"] = json!(10);
    };
    let (status, odd) = d
        .predict(&c, &json!({"features": rows(1, strange).remove(0)}))
        .await;
    assert_eq!(status, 200, "{odd}");
    assert_eq!(odd["anomaly"], true, "{odd}");
    assert!(odd["anomaly_score"].as_f64().unwrap() > threshold, "{odd}");

    // 250 ordinary rows and a burst of 50 strange ones: one event, not fifty.
    predict_all(&d, &c, &rows(250, |_| {})).await;
    predict_all(&d, &c, &rows(50, strange)).await;
    checks_after(&d, &c, 2.0).await;
    let high = events(&d.log_text(), "anomaly_rate_high");
    assert_eq!(high.len(), 1, "{high:?}");
    assert_eq!(high[0]["scored"], 300);
    assert!(
        high[0]["anomalies"].as_u64().unwrap() >= 50,
        "{:?}",
        high[0]
    );
    assert!(
        high[0]["p_value"].as_f64().unwrap() < 1e-10,
        "{:?}",
        high[0]
    );
    assert!(metric(&d, &c, "steward_anomaly_ratio").await > 0.15);

    // The log rows hold the scores that were answered.
    let db = d.db();
    let (status, _dir, _) = d.stop();
    assert!(status.success());
    let mut conn = db.connect().await;
    let stored: f64 = sqlx::query_scalar("SELECT anomaly_score FROM predictions WHERE id = $1")
        .bind(odd["id"].as_str().unwrap())
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(stored, odd["anomaly_score"].as_f64().unwrap());
    let unscored: i64 = db
        .scalar("SELECT COUNT(*) FROM predictions WHERE anomaly_score IS NULL")
        .await;
    assert_eq!(unscored, 0);
}

for_each_backend!(
    #[tokio::test]
    wrong_labels_after_right_ones_raise_concept_drift
);
async fn wrong_labels_after_right_ones_raise_concept_drift(backend: Backend) {
    let d = Daemon::start_on(backend, "", &[]);
    let c = client();
    let n = 340;
    let answers = predict_all(&d, &c, &rows(n, |_| {})).await;
    let truth = labels();
    let feedback = |from: usize, to: usize, wrong: bool| -> Value {
        let items: Vec<Value> = (from..to)
            .map(|i| {
                let label = if wrong {
                    // Any class but the predicted one.
                    match answers[i]["prediction"].as_str().unwrap() {
                        "Adelie" => "Gentoo",
                        _ => "Adelie",
                    }
                } else {
                    truth[(i * 7) % truth.len()].as_str()
                };
                json!({"id": answers[i]["id"], "label": label})
            })
            .collect();
        json!({ "feedback": items })
    };
    let (status, body) = d.feedback(&c, &feedback(0, 200, false)).await;
    assert_eq!(status, 202, "{body}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while metric(&d, &c, "steward_concept_labels_total").await < 200.0 {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(events(&d.log_text(), "concept_drift").is_empty());

    let (status, body) = d.feedback(&c, &feedback(200, n, true)).await;
    assert_eq!(status, 202, "{body}");
    let deadline = Instant::now() + Duration::from_secs(30);
    let found = loop {
        let found = events(&d.log_text(), "concept_drift");
        if !found.is_empty() {
            break found;
        }
        assert!(Instant::now() < deadline, "no concept_drift event");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let e = &found[0];
    assert_eq!(e["model_version"], "1");
    assert!(["ddm", "page_hinkley"].contains(&e["detector"].as_str().unwrap()));
    assert!(e["error"].as_f64().unwrap() > 0.0, "{e}");
    assert_eq!(
        metric(
            &d,
            &c,
            "steward_monitoring_events_total{event=\"concept_drift\"}"
        )
        .await,
        found.len() as f64
    );
}

for_each_backend!(
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    a_feature_missing_from_every_row_is_reported_untested_never_nan
);
async fn a_feature_missing_from_every_row_is_reported_untested_never_nan(backend: Backend) {
    let d = InProcess::start_on(backend, FAST).await;
    let c = client();
    // Every row without a bill length, and every flipper the same length.
    predict_all(
        &d,
        &c,
        &rows(120, |r| {
            r["bill_length_mm"] = Value::Null;
            r["flipper_length_mm"] = json!(200);
        }),
    )
    .await;
    checks_after(&d, &c, 1.0).await;
    let report = d.get_json(&c, "/v1/drift").await;
    let feature = |name: &str| {
        report["features"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["name"] == name)
            .unwrap()
            .clone()
    };
    let bill = feature("bill_length_mm");
    assert_eq!(bill["test"], "none", "{bill}");
    assert_eq!(bill["p_value"], Value::Null);
    assert_eq!(bill["drift"], false);
    assert_eq!(bill["current_values"], 0);
    // A constant window is a defined (and here significant) KS result.
    let flipper = feature("flipper_length_mm");
    assert_eq!(flipper["test"], "ks");
    assert_eq!(flipper["drift"], true, "{flipper}");
    let text = metrics_text(&c, &d.url).await;
    assert!(!text.contains("NaN"), "{text}");
    // No p-value to export: the series is left out, the drifted flag is 0.
    assert!(!text.contains("steward_drift_p_value{feature=\"bill_length_mm\""));
    assert!(
        text.contains("steward_drift_drifted{feature=\"bill_length_mm\",subject=\"input\"} 0\n")
    );
}
