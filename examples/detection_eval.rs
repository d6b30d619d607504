//! Replays steward's detectors over the evaluation streams of `monitor::eval`
//! for several seeds, prints what each detected, and writes the streams as CSV
//! (with steward's detections in `streams.json`) so that
//! `scripts/compare/river_detectors.py DIR` can run River's detectors on exactly
//! the same data.
//!
//! `cargo run --release --example detection_eval -- DIR [SEEDS]` (default 10
//! seeds; about a minute).

// An example that fails should say why and stop: unwrap with context is that.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use serde_json::{json, Value};

use steward::model::Reference;
use steward::monitor::detect::{Ddm, Mode, PageHinkley};
use steward::monitor::drift::{DriftOptions, Values};
#[path = "support/eval.rs"]
mod eval;

use eval::Change;
use steward::monitor::events::Event;
use steward::monitor::watch::ConceptWatch;

const ROWS: usize = 50_000;
const CHANGE: usize = 25_000;
const EVERY: usize = 1_000;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let dir = Path::new(args.get(1).expect("usage: detection_eval DIR [SEEDS]"));
    let seeds: u64 = args
        .get(2)
        .map_or(10, |s| s.parse().expect("SEEDS is a number"));
    let mut steward: BTreeMap<&str, BTreeMap<String, BTreeMap<&str, Vec<usize>>>> = BTreeMap::new();
    let feature_streams = [
        ("features_stationary", Change::None),
        (
            "features_shift",
            Change::Shift {
                feature: 3,
                sd: 0.25,
                at: CHANGE,
            },
        ),
        (
            "features_new_category",
            Change::NewCategory {
                share: 0.1,
                at: CHANGE,
            },
        ),
    ];
    for seed in 0..seeds {
        let seed_dir = dir.join(format!("seed{seed}"));
        std::fs::create_dir_all(&seed_dir).unwrap();
        let reference = eval::features(1_000 + seed, Reference::MAX_ROWS, Change::None);
        for (name, change) in feature_streams {
            let stream = eval::features(seed, ROWS, change);
            let raised = eval::replay_checks(
                &reference,
                &stream,
                EVERY,
                EVERY,
                &DriftOptions::default(),
                2,
            );
            let rows: Vec<usize> = raised
                .iter()
                .filter(|r| matches!(r.event, Event::DriftDetected(_)))
                .map(|r| r.row)
                .collect();
            steward
                .entry(name)
                .or_default()
                .entry(seed.to_string())
                .or_default()
                .insert("drift_check", dedup(rows));
            write_features(&seed_dir.join(format!("{name}.csv")), &stream);
        }
        let model = eval::fit_sea(&eval::sea(5_000 + seed, 2_000, 0, 0, usize::MAX), seed).unwrap();
        for (name, at) in [("concept_stationary", usize::MAX), ("concept_sea", CHANGE)] {
            let errors = eval::errors(&model, &eval::sea(seed, ROWS, 0, 3, at));
            // The daemon's watch, then its detectors alone (no dating, no
            // confirmation, no settling), as River runs them.
            let mut ddm5 = Ddm::default().with_min_errors(5);
            let mut ddm = Ddm::default();
            let mut ph = PageHinkley::default().with_mode(Mode::Up);
            let detectors = [
                (
                    "concept_watch",
                    eval::replay_concept(&errors, ConceptWatch::default()),
                ),
                (
                    "ddm_min_errors_5",
                    alone(&errors, |e| {
                        ddm5.update(e);
                        ddm5.drift_detected()
                    }),
                ),
                (
                    "ddm_river_defaults",
                    alone(&errors, |e| {
                        ddm.update(e);
                        ddm.drift_detected()
                    }),
                ),
                (
                    "page_hinkley_up",
                    alone(&errors, |e| {
                        ph.update(f64::from(u8::from(e)));
                        ph.drift_detected()
                    }),
                ),
            ];
            for (detector, rows) in detectors {
                steward
                    .entry(name)
                    .or_default()
                    .entry(seed.to_string())
                    .or_default()
                    .insert(detector, rows);
            }
            let mut csv = String::from("error\n");
            for e in &errors {
                let _ = writeln!(csv, "{}", u8::from(*e));
            }
            std::fs::write(seed_dir.join(format!("{name}.csv")), csv).unwrap();
        }
        eprintln!("seed {seed} done");
    }
    let streams = json!({
        "features_stationary": {"kind": "features", "rows": ROWS, "change_at": Value::Null,
            "description": "10 standard normal features and a categorical one, no change; checks every 1,000 rows over the last 1,000 against a 5,000-row reference"},
        "features_shift": {"kind": "features", "rows": ROWS, "change_at": CHANGE,
            "description": "f3 moves by 0.25 sd at change_at"},
        "features_new_category": {"kind": "features", "rows": ROWS, "change_at": CHANGE,
            "description": "a new category takes 10% of c at change_at"},
        "concept_stationary": {"kind": "concept", "rows": ROWS, "change_at": Value::Null,
            "description": "errors of a logistic model fitted on 2,000 SEA variant-0 rows, on variant 0"},
        "concept_sea": {"kind": "concept", "rows": ROWS, "change_at": CHANGE,
            "description": "the same model's errors, SEA variant 0 then 3 from change_at"},
    });
    let out = json!({
        "seeds": (0..seeds).collect::<Vec<_>>(),
        "streams": streams,
        "steward": steward,
    });
    std::fs::write(
        dir.join("streams.json"),
        serde_json::to_string_pretty(&out).unwrap(),
    )
    .unwrap();
    println!("{}", serde_json::to_string_pretty(&out["steward"]).unwrap());
}

/// Rows once each (several features can fire at the same check).
fn dedup(mut rows: Vec<usize>) -> Vec<usize> {
    rows.sort_unstable();
    rows.dedup();
    rows
}

/// The rows where a detector fed `errors` one by one fires.
fn alone(errors: &[bool], mut fires: impl FnMut(bool) -> bool) -> Vec<usize> {
    (0..errors.len()).filter(|&i| fires(errors[i])).collect()
}

fn write_features(path: &Path, columns: &[Values]) {
    let names = eval::names();
    let mut csv = names.join(",");
    csv.push('\n');
    for r in 0..steward::monitor::drift::rows(columns) {
        let cells: Vec<String> = columns
            .iter()
            .map(|c| match c {
                Values::Numeric(v) => v[r].to_string(),
                Values::Categorical(v) => v[r].clone(),
            })
            .collect();
        csv.push_str(&cells.join(","));
        csv.push('\n');
    }
    std::fs::write(path, csv).unwrap();
}
