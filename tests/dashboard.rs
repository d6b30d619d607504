//! The dashboard's endpoints against a daemon serving in this process, on SQLite
//! and on PostgreSQL (`for_each_backend!`): `GET /v1/overview` gives what SQL
//! over the same `predictions` and `feedback` rows gives (per minute and in
//! total, a replaced label moved, latency percentiles within a bucket of the
//! exact ones), and `GET /v1/drift/history` puts the drifted features first
//! after a shifted burst. Bad query values are in `api::bad_requests`; rollups
//! after `kill -9` in `reliability`.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{json, Value};

use crate::common::{client, eventually, for_each_backend, Api, Backend, Db, InProcess};
use crate::monitoring::{checks_after, predict_all, rows};
use steward::store::rollups::LATENCY_BOUNDS_US;

/// 60 kg penguins with 10 mm flippers: far outside the training data.
fn strange(r: &mut Value) {
    r["body_mass_g"] = json!(60_000);
    r["flipper_length_mm"] = json!(10);
}

/// Waits until the log holds `n` rows (and so their rollups: one transaction).
async fn logged(db: &Db, n: i64) {
    eventually(
        &format!("{n} logged predictions"),
        Duration::from_secs(30),
        || async { db.count("predictions").await == n },
    )
    .await;
}

/// The bucket a latency (µs) falls in.
fn bucket(us: f64) -> usize {
    LATENCY_BOUNDS_US.partition_point(|b| (*b as f64) < us)
}

/// The nearest-rank `q` quantile of `values` (sorted).
fn quantile(values: &[i64], q: f64) -> i64 {
    let rank = ((q * values.len() as f64).ceil() as usize).clamp(1, values.len());
    values[rank - 1]
}

/// An estimate (ms) within one bucket of the exact latency (µs).
fn assert_near(estimate: &Value, exact_us: i64, what: &str) {
    let est = estimate.as_f64().unwrap() * 1e3;
    let (a, b) = (bucket(est), bucket(exact_us as f64));
    assert!(
        a.abs_diff(b) <= 1,
        "{what}: estimate {est} µs (bucket {a}), exact {exact_us} µs (bucket {b})"
    );
}

/// Per minute: the rows' latencies, anomaly flags and scores.
async fn by_minute(db: &Db) -> BTreeMap<i64, Vec<(i64, i64, f64)>> {
    let rows: Vec<(i64, i64, i64, f64)> = db
        .rows("SELECT (time / 60000) * 60000, latency_us, anomaly, anomaly_score FROM predictions")
        .await;
    let mut out: BTreeMap<i64, Vec<(i64, i64, f64)>> = BTreeMap::new();
    for (m, l, a, s) in rows {
        out.entry(m).or_default().push((l, a, s));
    }
    out
}

/// Per minute in which labels arrived: (labels, correct). The JSON is compared
/// here, not in SQL (SQLite and PostgreSQL spell it differently).
async fn labels_by_minute(db: &Db) -> BTreeMap<i64, (i64, i64)> {
    let rows: Vec<(i64, String, String)> = db
        .rows(
            "SELECT (f.time / 60000) * 60000, p.output, f.label \
             FROM feedback f JOIN predictions p ON p.id = f.prediction_id",
        )
        .await;
    let mut out: BTreeMap<i64, (i64, i64)> = BTreeMap::new();
    for (minute, output, label) in rows {
        let output: Value = serde_json::from_str(&output).unwrap();
        let label: Value = serde_json::from_str(&label).unwrap();
        let (n, right) = out.entry(minute).or_default();
        *n += 1;
        *right += i64::from(output["prediction"] == label);
    }
    out
}

/// The overview's numbers equal SQL's over the same rows: per minute and in
/// total, counts, anomalies (the flags answered, and the scores over the
/// model's threshold), labels and accuracy; percentiles within a bucket.
async fn assert_overview_matches_sql(d: &InProcess, db: &Db, threshold: f64) {
    let c = client();
    let o = d.get_json(&c, "/v1/overview?minutes=5").await;
    let rows = by_minute(db).await;
    let labels = labels_by_minute(db).await;
    let s = &o["series"];
    let minutes: Vec<i64> = serde_json::from_value(s["minute"].clone()).unwrap();
    assert_eq!(minutes.len(), 5, "{o}");
    assert!(minutes.windows(2).all(|w| w[1] - w[0] == 60_000), "{o}");
    assert_eq!(o["to"], minutes[4]);
    assert!(rows.keys().all(|m| minutes.contains(m)), "{o}");
    let (mut all, mut total_labels, mut total_correct) = (Vec::new(), 0, 0);
    for (i, minute) in minutes.iter().enumerate() {
        let here = rows.get(minute).cloned().unwrap_or_default();
        let anomalies = here.iter().filter(|r| r.1 == 1).count() as i64;
        let over = here.iter().filter(|r| r.2 > threshold).count() as i64;
        assert_eq!(anomalies, over, "minute {minute}: flags against scores");
        assert_eq!(s["predictions"][i], here.len() as i64, "minute {minute}");
        assert_eq!(s["anomalies"][i], anomalies, "minute {minute}");
        let (n, right) = labels.get(minute).copied().unwrap_or((0, 0));
        assert_eq!(s["labels"][i], n, "minute {minute}");
        total_labels += n;
        total_correct += right;
        if here.is_empty() {
            assert_eq!(s["latency_p50_ms"][i], Value::Null);
            assert_eq!(s["anomaly_rate"][i], Value::Null);
        } else {
            let rate = s["anomaly_rate"][i].as_f64().unwrap();
            assert!((rate - anomalies as f64 / here.len() as f64).abs() < 1e-12);
            let mut lat: Vec<i64> = here.iter().map(|r| r.0).collect();
            lat.sort_unstable();
            assert_near(&s["latency_p50_ms"][i], quantile(&lat, 0.5), "p50");
            assert_near(&s["latency_p99_ms"][i], quantile(&lat, 0.99), "p99");
        }
        if n == 0 {
            assert_eq!(s["accuracy"][i], Value::Null);
        } else {
            let acc = s["accuracy"][i].as_f64().unwrap();
            assert!(
                (acc - right as f64 / n as f64).abs() < 1e-12,
                "minute {minute}"
            );
        }
        all.extend(here);
    }
    let t = &o["totals"];
    assert_eq!(t["predictions"], all.len() as i64);
    let anomalies = all.iter().filter(|r| r.1 == 1).count() as i64;
    assert_eq!(t["anomalies"], anomalies);
    assert_eq!(t["labels"], total_labels);
    let acc = t["accuracy"].as_f64().unwrap();
    assert!((acc - total_correct as f64 / total_labels as f64).abs() < 1e-12);
    let mut lat: Vec<i64> = all.iter().map(|r| r.0).collect();
    lat.sort_unstable();
    assert_near(&t["latency_p50_ms"], quantile(&lat, 0.5), "total p50");
    assert_near(&t["latency_p99_ms"], quantile(&lat, 0.99), "total p99");
    let mean = lat.iter().sum::<i64>() as f64 / lat.len() as f64 / 1e3;
    assert!((t["latency_mean_ms"].as_f64().unwrap() - mean).abs() < 1e-9);
}

for_each_backend!(
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    the_overview_gives_what_sql_over_the_logged_rows_gives
);
async fn the_overview_gives_what_sql_over_the_logged_rows_gives(backend: Backend) {
    let d = InProcess::start_on(backend, "").await;
    let c = client();
    let db = d.db();
    let card = d.get_json(&c, "/v1/model").await;
    let threshold = card["anomaly"]["threshold"].as_f64().unwrap();

    // Ordinary rows, one at a time and in batches, and strange ones.
    let mut answers = Vec::new();
    for row in rows(40, |_| {}) {
        let (status, one) = d.predict(&c, &json!({"features": row})).await;
        assert_eq!(status, 200, "{one}");
        answers.push(one);
    }
    answers.extend(predict_all(&d, &c, &rows(400, |_| {})).await);
    answers.extend(predict_all(&d, &c, &rows(30, strange)).await);
    let flagged = answers.iter().filter(|a| a["anomaly"] == true).count();
    assert!(flagged >= 30, "{flagged}");
    // Labels for every other answer: the predicted class for most, another for
    // every fifth.
    let items: Vec<Value> = answers
        .iter()
        .step_by(2)
        .enumerate()
        .map(|(i, a)| {
            let predicted = a["prediction"].as_str().unwrap();
            let label = match (i % 5, predicted) {
                (0, "Adelie") => "Gentoo",
                (0, _) => "Adelie",
                _ => predicted,
            };
            json!({"id": a["id"], "label": label})
        })
        .collect();
    for chunk in items.chunks(100) {
        let (status, body) = d.feedback(&c, &json!({"feedback": chunk})).await;
        assert_eq!(status, 202, "{body}");
    }
    logged(&db, answers.len() as i64).await;
    let flags: i64 = db
        .scalar("SELECT CAST(SUM(anomaly) AS BIGINT) FROM predictions")
        .await;
    assert_eq!(flags, flagged as i64, "the log keeps the answers' flags");
    assert_overview_matches_sql(&d, &db, threshold).await;

    // Replace 20 right labels by wrong ones (and send 10 others again): the
    // outcomes move, nothing is counted twice.
    let before = d.get_json(&c, "/v1/overview?minutes=5").await;
    let replaced: Vec<Value> = items
        .iter()
        .skip(1)
        .step_by(5)
        .take(20)
        .map(|i| {
            let wrong = if i["label"] == "Chinstrap" {
                "Gentoo"
            } else {
                "Chinstrap"
            };
            json!({"id": i["id"], "label": wrong})
        })
        .chain(items.iter().skip(2).step_by(5).take(10).cloned())
        .collect();
    let (status, body) = d.feedback(&c, &json!({"feedback": replaced})).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["replaced"], 20, "{body}");
    assert_eq!(body["unchanged"], 10, "{body}");
    let after = d.get_json(&c, "/v1/overview?minutes=5").await;
    assert_eq!(after["totals"]["labels"], before["totals"]["labels"]);
    let correct = |o: &Value| {
        (o["totals"]["accuracy"].as_f64().unwrap() * o["totals"]["labels"].as_f64().unwrap())
            .round() as i64
    };
    assert_eq!(correct(&after), correct(&before) - 20, "{after}");
    assert_overview_matches_sql(&d, &db, threshold).await;

    // The live model and the window's version changes.
    let o = &after;
    assert_eq!(o["minutes"], 5);
    assert_eq!(o["model"]["version"], "1");
    assert_eq!(o["model"]["form"], card["serving"]["form"]);
    assert_eq!(o["model"]["source"], "import");
    assert_eq!(o["model"]["metric"], "accuracy");
    assert_eq!(o["versions"][0]["version"], "1", "{o}");
    assert_eq!(o["versions"][0]["reason"], "import", "{o}");
    assert_eq!(o["alerts"], json!([]));
    assert!(o["series"].get("mae").is_none(), "{o}");
    // The last full minute's rate does not depend on the window.
    loop {
        let one = d.get_json(&c, "/v1/overview?minutes=1").await;
        let five = d.get_json(&c, "/v1/overview?minutes=5").await;
        if one["to"] != five["to"] {
            continue; // a minute began in between
        }
        let rate = |o: &Value| o["totals"]["predictions_per_second_last_minute"].as_f64();
        let previous = five["series"]["predictions"][3].as_f64().unwrap() / 60.0;
        assert_eq!(rate(&one), Some(previous), "{one}");
        assert_eq!(rate(&five), Some(previous), "{five}");
        assert_eq!(one["series"]["minute"].as_array().unwrap().len(), 1);
        break;
    }
    // The default window is an hour; the longest a week.
    let hour = d.get_json(&c, "/v1/overview").await;
    assert_eq!(hour["series"]["minute"].as_array().unwrap().len(), 60);
    assert_eq!(hour["totals"]["predictions"], answers.len());
    let week = d.get_json(&c, "/v1/overview?minutes=10080").await;
    assert_eq!(
        week["series"]["predictions"].as_array().unwrap().len(),
        10_080
    );
    assert_eq!(week["totals"]["predictions"], answers.len());

    // The alert outbox's counts by state come with the list.
    let alerts = d.get_json(&c, "/v1/alerts?state=pending").await;
    assert_eq!(alerts["alerts"], json!([]), "{alerts}");
    assert_eq!(
        alerts["counts"],
        json!({"pending": 0, "sent": 0, "failed": 0, "held": 0, "summarized": 0})
    );
    d.stop().await;
}

/// Fast checks over a small window (as tests/monitoring.rs).
const FAST: &str = "[drift]\ninterval_secs = 1\nwindow = 300\nmin_rows = 50\nconfirm_checks = 1\n";

for_each_backend!(
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    drift_history_puts_the_drifted_features_first_after_a_shifted_burst
);
async fn drift_history_puts_the_drifted_features_first_after_a_shifted_burst(backend: Backend) {
    let d = InProcess::start_on(backend, FAST).await;
    let c = client();
    let empty = d.get_json(&c, "/v1/drift/history").await;
    assert_eq!(empty, json!({"alpha": null, "checks": [], "features": []}));

    predict_all(&d, &c, &rows(300, |_| {})).await;
    checks_after(&d, &c, 1.0).await;
    let calm = d.get_json(&c, "/v1/drift/history").await;
    assert!(calm["features"]
        .as_array()
        .unwrap()
        .iter()
        .all(|f| f["drift"] == false));
    // Longer bills and heavier birds.
    let shifted = |r: &mut Value| {
        if let Some(v) = r["bill_length_mm"].as_f64() {
            r["bill_length_mm"] = json!(v + 8.0);
        }
        if let Some(v) = r["body_mass_g"].as_f64() {
            r["body_mass_g"] = json!(v + 1500.0);
        }
    };
    predict_all(&d, &c, &rows(300, shifted)).await;
    checks_after(&d, &c, 2.0).await;

    let h = d.get_json(&c, "/v1/drift/history?checks=500").await;
    let checks = h["checks"].as_array().unwrap();
    assert!(checks.len() >= 3, "{h}");
    assert!(checks
        .windows(2)
        .all(|w| w[0]["time"].as_i64() <= w[1]["time"].as_i64()));
    let features = h["features"].as_array().unwrap();
    // Six inputs and the prediction, each in every check.
    assert_eq!(features.len(), 7, "{h}");
    let names: Vec<&str> = features
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    // The drifted first (both shifted inputs among them; the prediction may
    // drift with them), then the others; each part by p-value, smallest first.
    let drifted = features.iter().take_while(|f| f["drift"] == true).count();
    assert!(
        names[..drifted].contains(&"bill_length_mm") && names[..drifted].contains(&"body_mass_g"),
        "{names:?}\n{h}"
    );
    assert!(
        features[drifted..].iter().all(|f| f["drift"] == false),
        "{h}"
    );
    for part in [&features[..drifted], &features[drifted..]] {
        let p: Vec<f64> = part
            .iter()
            .map(|f| f["p_value"].as_f64().unwrap_or(f64::INFINITY))
            .collect();
        assert!(p.windows(2).all(|w| w[0] <= w[1]), "{p:?}");
    }
    assert!(names[drifted..].contains(&"island"), "{names:?}");
    // Each series has one point per check, and its newest is the newest
    // report's; the newest histograms come along.
    let newest = d.get_json(&c, "/v1/drift").await;
    for f in features {
        let s = &f["series"];
        assert_eq!(s["time"].as_array().unwrap().len(), checks.len(), "{f}");
        assert_eq!(s["drift"].as_array().unwrap().len(), checks.len(), "{f}");
        let in_report = if f["subject"] == "output" {
            newest["prediction"].clone()
        } else {
            newest["features"]
                .as_array()
                .unwrap()
                .iter()
                .find(|x| x["name"] == f["name"])
                .unwrap()
                .clone()
        };
        assert_eq!(
            s["p_value"].as_array().unwrap().last(),
            Some(&in_report["p_value"])
        );
        assert_eq!(f["histogram"], in_report["histogram"], "{f}");
        assert!(f["histogram"]["reference"].is_array(), "{f}");
    }
    assert_eq!(
        features.iter().filter(|f| f["subject"] == "output").count(),
        1
    );
    // The first drifted check's series: the calm checks before it did not drift.
    let bill = features
        .iter()
        .find(|f| f["name"] == "bill_length_mm")
        .unwrap();
    assert_eq!(bill["series"]["drift"][0], false, "{bill}");
    // Fewer checks.
    let one = d.get_json(&c, "/v1/drift/history?checks=1").await;
    assert_eq!(one["checks"].as_array().unwrap().len(), 1);
    assert_eq!(one["checks"][0], checks[checks.len() - 1]);

    // The overview lists the drift alerts that fire, from the rules' state.
    eventually(
        "drift alerts in the overview",
        Duration::from_secs(10),
        || async {
            let o = d.get_json(&c, "/v1/overview").await;
            o["alerts"]
                .as_array()
                .unwrap()
                .iter()
                .any(|a| a["rule"] == "feature_drift" && a["labels"]["feature"] == "bill_length_mm")
        },
    )
    .await;
    let o = d.get_json(&c, "/v1/overview").await;
    let a = o["alerts"].as_array().unwrap();
    assert!(a
        .iter()
        .all(|a| a["since"].as_i64().unwrap() > 0 && a["silenced"] == false));
    d.stop().await;
}
