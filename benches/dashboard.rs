//! The dashboard's endpoints on a large log: the real daemon (`daemon::Serving`,
//! in this process, on loopback) over a database of 10,000,000 logged
//! predictions spread over seven days, with their rollups, feedback labels for a
//! tenth of them, 336 drift checks (one per half hour, with histograms), 500
//! alert mails, firing alerts, 40 retraining runs and six model versions. Each
//! endpoint is timed over HTTP (request sent, whole body read) with a keep-alive
//! client: `/v1/overview?minutes=60`, `?minutes=10080`, `/v1/drift/history`
//! (50 checks, and `?checks=500`), `/v1/models`, `/v1/retrain`, `/v1/alerts`. The goal (issue 18) is every one
//! under 50 ms: none may scan `predictions`.
//!
//! The database is built once and kept under the target directory
//! (`target/dashboard-bench/steward-10m.db`, about 3.5 GB; `DASHBOARD_BENCH_DIR`
//! puts it elsewhere, e.g. on a tmpfs when the disk is short): the predictions go
//! through the real log writer (`store::writer::insert`, in transactions of
//! 100,000 rows), so their rollups are the writer's own; labels are inserted
//! directly with times spread over the week and their rollups computed by the
//! migration's backfill query; drift checks through `store::drift::insert`.
//! A rerun reuses the file. The log's times are fixed when it is built, so a
//! rerun first moves the small tables the endpoints read (rollups, activations,
//! drift checks, alert state) forward by the whole minutes elapsed since, which
//! keeps the windows as full as when it was built; `predictions` keeps its
//! times (no endpoint reads it). Delete the directory to build it again.
//!
//! `cargo bench --bench dashboard` (building the database takes several
//! minutes on a 2-core machine: the time is printed; then about a minute).

// Benches build fixed data (seeded rows, a temp database): a failure there is a
// bug in the bench, and a panic with a message is the clearest way to report it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{json, Value};

use steward::store;
use steward::store::writer::{self, PredictionRow};

#[path = "common/support.rs"]
mod support;

const ROWS: usize = 10_000_000;
const DAY_MS: i64 = 86_400_000;
const SPAN_MS: i64 = 7 * DAY_MS;
/// Rows per writer transaction while building.
const BATCH: usize = 100_000;
/// One row in this many gets a label.
const LABEL_EVERY: usize = 10;
const CHECKS: i64 = 336;
const MAILS: usize = 500;
const RUNS: usize = 40;
const CLASSES: [&str; 3] = ["Adelie", "Chinstrap", "Gentoo"];

/// The model versions over the week: (version, start as a share of the span,
/// source, why it went live). The last is the real model the daemon serves.
const VERSIONS: [(&str, f64, &str, &str); 6] = [
    ("1", 0.0, "bootstrap", "bootstrap"),
    ("2", 0.2, "retrain", "retrain"),
    ("2.1", 0.4, "online", "online"),
    ("3", 0.6, "retrain", "retrain"),
    ("2.1", 0.7, "online", "rollback"),
    ("4", 0.85, "retrain", "retrain"),
];

/// `target/` (the bench runs as `target/release/deps/dashboard-<hash>`).
fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the bench's path");
    exe.ancestors()
        .nth(3)
        .expect("target/release/deps/<bench>")
        .to_path_buf()
}

/// Builds the database at `path` (through `path.partial`, renamed when complete).
fn build(rt: &tokio::runtime::Runtime, dir: &Path, path: &Path) {
    let started = Instant::now();
    let partial = path.with_extension("partial");
    for ext in ["partial", "partial-wal", "partial-shm"] {
        let _ = std::fs::remove_file(path.with_extension(ext));
    }
    let model_path = dir.join("v4.safetensors");
    let model = steward::live::bootstrap(
        steward::config::BUNDLED_DATA,
        &steward::train::select::TrainOptions::new("label", 5, 42),
    )
    .expect("train the bench model");
    steward::model::artifact::save(&model, &model_path).expect("save the bench model");
    let store = rt.block_on(store::open(&partial)).expect("open");
    let end = steward::time::now_millis();
    let start = end - SPAN_MS;
    let version_at = |t: i64| {
        let share = (t - start) as f64 / SPAN_MS as f64;
        VERSIONS
            .iter()
            .rev()
            .find(|v| v.1 <= share)
            .map_or("1", |v| v.0)
    };

    // The registry: the real model live as version 4, the others retired.
    let mut record = steward::live::record_for(&model, "4", &model_path, "retrain");
    record.created = start + (0.85 * SPAN_MS as f64) as i64 - 600_000;
    let bytes = std::fs::read(&model_path).expect("the model file");
    rt.block_on(store::registry::insert_active(
        &store, &record, &bytes, None,
    ))
    .expect("register the live model");

    // The log, through the real writer.
    let features = support::penguins();
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let outputs: Vec<(usize, String)> = (0..512)
        .map(|_| {
            let a: f32 = rng.gen_range(0.0..1.0);
            let b: f32 = rng.gen_range(0.0..(1.0 - a));
            let p = [a, b, 1.0 - a - b];
            let best = (0..3).fold(0, |best, i| if p[i] > p[best] { i } else { best });
            let out = json!({"prediction": CLASSES[best],
                "probabilities": {"Adelie": p[0], "Chinstrap": p[1], "Gentoo": p[2]}});
            (best, out.to_string())
        })
        .collect();
    let versions: BTreeMap<&str, Arc<str>> = VERSIONS.iter().map(|v| (v.0, v.0.into())).collect();
    let step = SPAN_MS as f64 / ROWS as f64;
    let mut labels: Vec<(String, i64, String)> = Vec::with_capacity(ROWS / LABEL_EVERY);
    let mut i = 0;
    while i < ROWS {
        let n = BATCH.min(ROWS - i);
        let rows: Vec<PredictionRow> = (i..i + n)
            .map(|k| {
                let time = start + (k as f64 * step) as i64;
                let (class, output) = &outputs[k % outputs.len()];
                // A few microseconds mostly, a tail to milliseconds.
                let latency_us = if rng.gen_bool(0.01) {
                    rng.gen_range(100..5_000)
                } else {
                    rng.gen_range(2..40)
                };
                let anomaly = rng.gen_bool(0.01);
                let score = if anomaly {
                    rng.gen_range(19.0..200.0)
                } else {
                    rng.gen_range(0.0..18.0)
                };
                let row = PredictionRow {
                    id: uuid::Uuid::now_v7().to_string(),
                    time,
                    model_version: versions[version_at(time)].clone(),
                    features: features[k % features.len()].clone(),
                    output: output.clone(),
                    latency_us,
                    anomaly_score: Some(score),
                    anomaly,
                };
                if k % LABEL_EVERY == 0 {
                    let right = rng.gen_bool(0.9);
                    let label = CLASSES[if right { *class } else { (class + 1) % 3 }];
                    let at = (time + rng.gen_range(1_000..3_600_000)).min(end);
                    labels.push((row.id.clone(), at, format!("\"{label}\"")));
                }
                row
            })
            .collect();
        rt.block_on(writer::insert(&store, rows)).expect("log rows");
        i += n;
        if i % 1_000_000 == 0 {
            eprintln!(
                "  {i} rows logged ({:.0} s)",
                started.elapsed().as_secs_f64()
            );
        }
    }
    rt.block_on(store.close());

    // Labels, activations, other models and retraining runs: plain SQL.
    let mut conn = rusqlite::Connection::open(&partial).expect("open for labels");
    let tx = conn.transaction().expect("tx");
    {
        let mut insert = tx
            .prepare("INSERT INTO feedback (prediction_id, time, label) VALUES (?1, ?2, ?3)")
            .expect("prepare");
        for (id, time, label) in &labels {
            insert.execute((id, time, label)).expect("label");
        }
    }
    // The rollups of those labels, as the migration's backfill computes them.
    tx.execute_batch(
        "INSERT INTO feedback_rollups (minute, model_version, labels, correct, abs_error_sum, sq_error_sum)
         SELECT (f.time / 60000) * 60000, p.model_version, COUNT(*),
                TOTAL(json_extract(p.output, '$.prediction') = json_extract(f.label, '$')), 0, 0
         FROM feedback f JOIN predictions p ON p.id = f.prediction_id GROUP BY 1, 2;",
    )
    .expect("feedback rollups");
    tx.execute("DELETE FROM activations", ()).expect("clear");
    let mut previous: Option<&str> = None;
    for (version, share, source, reason) in VERSIONS {
        let at = start + (share * SPAN_MS as f64) as i64;
        if version != "4" {
            // A version live twice keeps its first creation and its last activation.
            tx.execute(
                "INSERT INTO models (version, created, path, metrics, status, source, activated)
                 VALUES (?1, ?2, ?3, '{\"accuracy\": 0.97}', 'retired', ?4, ?5)
                 ON CONFLICT (version) DO UPDATE SET activated = excluded.activated",
                (
                    version,
                    at - 600_000,
                    format!("v{version}.safetensors"),
                    source,
                    at,
                ),
            )
            .expect("model");
        }
        tx.execute(
            "INSERT INTO activations (time, version, previous, reason) VALUES (?1, ?2, ?3, ?4)",
            (at, version, previous, reason),
        )
        .expect("activation");
        previous = Some(version);
    }
    tx.execute(
        "UPDATE models SET activated = ?1 WHERE version = '4'",
        (start + (0.85 * SPAN_MS as f64) as i64,),
    )
    .expect("activated");
    let report = json!({"rows": 4000, "cv": {"folds": 5, "mean": 0.97, "per_fold": [0.96, 0.97, 0.98, 0.97, 0.97]},
        "candidates": vec![json!({"hidden": [16], "cv_mean": 0.97}); 12]})
    .to_string();
    for r in 0..RUNS {
        let at = start + r as i64 * SPAN_MS / RUNS as i64;
        let state = ["promoted", "rejected", "skipped", "failed"][r % 4];
        tx.execute(
            "INSERT INTO retrain_runs (trigger, started, finished, state, rows, train_rows, holdout_rows,
             metric, live_version, live_metric, candidate_metric, decision, report)
             VALUES ('schedule', ?1, ?2, ?3, 5000, 4000, 1000, 'accuracy', '3', 0.96, 0.97,
             'the candidate is within the gate', ?4)",
            (at, at + 90_000, state, &report),
        )
        .expect("run");
    }
    tx.commit().expect("commit labels");
    drop(conn);

    // Drift checks (with their per-feature rows), mail and alert state.
    let store = rt.block_on(store::open(&partial)).expect("reopen");
    let names = support::FEATURES;
    for c in 0..CHECKS {
        let time = end - (CHECKS - c) * 1_800_000;
        let drifting = c > CHECKS - 20;
        let feature = |name: &str, p: f64| {
            let numeric = !matches!(name, "island" | "sex" | "prediction");
            let histogram = if numeric {
                json!({"edges": (0..=20).map(|e| 30.0 + e as f64).collect::<Vec<_>>(),
                       "reference": vec![50; 20], "current": vec![48; 20]})
            } else {
                json!({"categories": ["Biscoe", "Dream", "Torgersen"],
                       "reference": [160, 120, 60], "current": [150, 130, 60]})
            };
            json!({"name": name, "kind": if numeric {"numeric"} else {"categorical"},
                   "test": if numeric {"ks"} else {"chi2"}, "statistic": 0.1, "p_value": p,
                   "p_adjusted": (p * 6.0).min(1.0), "psi": 0.02, "drift": p < 0.001,
                   "reference_values": 344, "current_values": 5000, "histogram": histogram})
        };
        let ps: Vec<f64> = names
            .iter()
            .enumerate()
            .map(|(k, _)| {
                if drifting && k == 1 {
                    1e-9
                } else {
                    0.05 + 0.9 * ((c as f64 * 0.37 + k as f64 * 0.11) % 1.0)
                }
            })
            .collect();
        let features: Vec<Value> = names.iter().zip(&ps).map(|(n, p)| feature(n, *p)).collect();
        let prediction = feature("prediction", 0.4);
        let report = json!({"window": {"model_version": "4", "rows": 5000, "reference_rows": 344, "time": time},
            "drift": drifting, "dataset_drift": false, "drifted": usize::from(drifting),
            "features": features, "alpha": 0.05, "correction": "bonferroni",
            "reference_rows": 344, "current_rows": 5000, "time": steward::time::rfc3339(time),
            "prediction": prediction, "anomaly": {"anomalies": 50, "scored": 5000, "rate": 0.01,
            "expected_rate": 0.001, "p_value": 0.0, "threshold": 18.47}});
        let row = |subject, name: &str, p: f64| store::drift::FeatureRow {
            subject,
            feature: name.to_string(),
            statistic: Some(0.1),
            p_value: Some(p),
            p_adjusted: Some((p * 6.0).min(1.0)),
            psi: Some(0.02),
            drift: p < 0.001,
        };
        let mut rows: Vec<store::drift::FeatureRow> = names
            .iter()
            .zip(&ps)
            .map(|(n, p)| row(store::drift::Subject::Input, n, *p))
            .collect();
        rows.push(row(store::drift::Subject::Output, "prediction", 0.4));
        rt.block_on(store::drift::insert(
            &store,
            &store::drift::ReportRow {
                time,
                model_version: "4".into(),
                window_rows: 5000,
                drift: drifting,
                dataset_drift: false,
                report: report.to_string(),
                features: rows,
            },
        ))
        .expect("drift check");
    }
    for m in 0..MAILS {
        let at = end - (MAILS - m) as i64 * 1_200_000;
        let mail = store::alerts::NewMail {
            group_key: "model".into(),
            kind: "firing".into(),
            subject: format!("FIRING: feature drift, bill_length_mm (model v4) #{m}"),
            body_text: "x".repeat(2_000),
            body_html: "<p>x</p>".repeat(300),
            message_id: format!("{m}@bench"),
            thread: vec![],
            recipients: vec!["ops@example.com".into()],
            alerts: json!([]),
            state: store::alerts::MailState::Pending,
            images: vec![],
        };
        let id = rt
            .block_on(store::alerts::insert(&store, &mail, at))
            .expect("mail");
        rt.block_on(store::alerts::mark_sent(&store, id, at + 1_000))
            .expect("sent");
    }
    let alert = |rule: &str, feature: Option<&str>, since: i64| {
        let labels: BTreeMap<String, String> = feature
            .map(|f| ("feature".to_string(), f.to_string()))
            .into_iter()
            .collect();
        steward::alert::rules::Alert {
            rule: rule.into(),
            labels,
            details: json!({}),
            starts_at: since,
            ends_at: None,
            model_version: "4".into(),
        }
    };
    let mut rules = steward::alert::rules::Rules::default();
    for a in [
        alert("feature_drift", Some("bill_length_mm"), end - 9_000_000),
        alert("dataset_drift", None, end - 8_000_000),
        alert("anomaly_rate", None, end - 3_000_000),
    ] {
        rules.alerts.insert(a.fingerprint(), a);
    }
    rt.block_on(store::alerts::save_rules(
        &store,
        &serde_json::to_string(&rules).expect("rules"),
    ))
    .expect("save rules");
    rt.block_on(store.close());
    let conn = rusqlite::Connection::open(&partial).expect("open to record");
    conn.execute_batch(&format!(
        "CREATE TABLE bench_meta (built INTEGER NOT NULL, shifted INTEGER NOT NULL);
         INSERT INTO bench_meta VALUES ({end}, {end});
         PRAGMA wal_checkpoint(TRUNCATE);"
    ))
    .expect("record the build");
    drop(conn);
    std::fs::rename(&partial, path).expect("rename the finished database");
    for ext in ["partial-wal", "partial-shm"] {
        let _ = std::fs::remove_file(path.with_extension(ext));
    }
    eprintln!(
        "built {} in {:.0} s",
        path.display(),
        started.elapsed().as_secs_f64()
    );
}

/// Moves the tables the endpoints read forward by the whole minutes since the
/// last move, so the windows are as full as when the database was built.
fn shift(path: &Path) {
    let conn = rusqlite::Connection::open(path).expect("open to shift");
    let shifted: i64 = conn
        .query_row("SELECT shifted FROM bench_meta", (), |r| r.get(0))
        .expect("bench_meta");
    let now = steward::time::now_millis();
    let delta = (now - shifted) / 60_000 * 60_000;
    if delta <= 0 {
        return;
    }
    // Through negative minutes: keys moved in place would meet the keys not
    // yet moved.
    conn.execute_batch(&format!(
        "BEGIN;
         UPDATE prediction_rollups SET minute = -(minute + {delta});
         UPDATE prediction_rollups SET minute = -minute;
         UPDATE feedback_rollups SET minute = -(minute + {delta});
         UPDATE feedback_rollups SET minute = -minute;
         UPDATE activations SET time = time + {delta};
         UPDATE models SET activated = activated + {delta}, created = created + {delta};
         UPDATE drift_reports SET time = time + {delta};
         UPDATE alerts SET created = created + {delta}, sent_at = sent_at + {delta};
         UPDATE retrain_runs SET started = started + {delta}, finished = finished + {delta};
         UPDATE bench_meta SET shifted = shifted + {delta};
         COMMIT;"
    ))
    .expect("shift");
    let rules: String = conn
        .query_row("SELECT state FROM alert_rules", (), |r| r.get(0))
        .expect("rules");
    let mut rules: steward::alert::rules::Rules = serde_json::from_str(&rules).expect("rules");
    for a in rules.alerts.values_mut() {
        a.starts_at += delta;
    }
    conn.execute(
        "UPDATE alert_rules SET state = ?1",
        (serde_json::to_string(&rules).expect("rules"),),
    )
    .expect("save rules");
    eprintln!(
        "moved the dashboard tables forward by {} min",
        delta / 60_000
    );
}

fn bench_dashboard(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let dir = std::env::var_os("DASHBOARD_BENCH_DIR")
        .map_or_else(|| target_dir().join("dashboard-bench"), PathBuf::from);
    std::fs::create_dir_all(&dir).expect("bench dir");
    let path = dir.join("steward-10m.db");
    if !path.exists() {
        eprintln!(
            "building {} ({ROWS} predictions over 7 days): several minutes",
            path.display()
        );
        build(&rt, &dir, &path);
    }
    shift(&path);
    let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    eprintln!("database: {:.2} GB", size as f64 / 1e9);

    // The daemon on that file, in this process. No background job touches the
    // log while timing: drift checks hourly, retraining in January.
    let toml = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n[database]\nurl = \"sqlite://{}\"\n\
         [model]\ndir = \"{}\"\n[drift]\ninterval_secs = 3600\n\
         [training]\nschedule = \"0 0 3 1 1 *\"\ndrift_retrain = false\n\
         [online]\nenabled = false\n[alerts]\ndir = \"{}\"\n[log]\nlevel = \"warn\"\n",
        path.display(),
        dir.display(),
        dir.join("outbox").display()
    );
    let config = steward::config::Config::from_parts("dashboard-bench.toml", &toml, &[])
        .expect("bench config");
    let serving = rt
        .block_on(steward::daemon::Serving::start(&config))
        .expect("serve the bench database");
    let base = format!("http://{}", serving.addr);
    let stopper = serving.stopper();
    let finished = rt.spawn(serving.finish());
    let client = reqwest::Client::new();
    let get = |path: &str| {
        let url = format!("{base}{path}");
        let client = client.clone();
        async move {
            let r = client.get(&url).send().await.expect("request");
            assert!(r.status().is_success(), "{url}: {}", r.status());
            r.bytes().await.expect("body").len()
        }
    };

    let endpoints = [
        "/v1/overview?minutes=60",
        "/v1/overview?minutes=10080",
        "/v1/drift/history",
        "/v1/drift/history?checks=500",
        "/v1/models",
        "/v1/retrain",
        "/v1/alerts",
        // The dashboard's pages draw these charts, one request each.
        "/ui/charts/overview.svg?chart=latency_p99&minutes=60",
        "/ui/charts/overview.svg?chart=predictions&minutes=10080",
        "/ui/charts/drift.svg?feature=bill_length_mm&chart=distribution",
        "/ui/charts/drift.svg?feature=bill_length_mm&chart=p_value&checks=500",
        "/",
    ];
    for e in endpoints {
        let started = Instant::now();
        let bytes = rt.block_on(get(e));
        eprintln!(
            "{e}: {bytes} bytes, first call {:.1} ms",
            started.elapsed().as_secs_f64() * 1e3
        );
    }
    let week: Value = rt.block_on(async {
        client
            .get(format!("{base}/v1/overview?minutes=10080"))
            .send()
            .await
            .expect("overview")
            .json()
            .await
            .expect("json")
    });
    eprintln!(
        "a week: {} predictions, {} labels, {} version changes, {} alerts",
        week["totals"]["predictions"],
        week["totals"]["labels"],
        week["versions"].as_array().map_or(0, Vec::len),
        week["alerts"].as_array().map_or(0, Vec::len)
    );

    let mut g = c.benchmark_group("dashboard_10m");
    g.sample_size(20);
    g.warm_up_time(Duration::from_secs(1));
    g.measurement_time(Duration::from_secs(5));
    for e in endpoints {
        let name = e.trim_start_matches("/v1/").replace('/', "_");
        g.bench_function(name, |b| b.iter(|| rt.block_on(get(e))));
    }
    g.finish();

    stopper.cancel();
    rt.block_on(finished).expect("the daemon stops");
}

criterion_group!(benches, bench_dashboard);
criterion_main!(benches);
