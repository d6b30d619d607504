//! Continuous-learning benches: what the daemon's online learner
//! (`learning::online`) spends on one feedback label, off the request path. The
//! steps, as the learner takes them, on the bundled penguins model:
//!
//! - `parse`: the logged input (JSON text, as the predictions table holds it) and
//!   the stored label (JSON text) with serde_json;
//! - `encode`: the input with the model's schema (`Schema::encode_json`);
//! - `base_predict`: the base model's answer in its serving form (the guard's
//!   comparison);
//! - `learn_one`: one SGD step of the f32 master copy (`Learner::learn_one`);
//! - `guard`: the guard's window (`Guard::observe`, then `Guard::tripped`);
//! - `per_label`: all of the above plus the guard's bookkeeping, i.e. one label
//!   end to end as `online::learn` handles it.
//!
//! The rows are the 344 bundled penguins (missing cells as `null`, as clients send
//! them), cycled in order; they and the model are built outside the timed
//! closures. `cargo bench --bench learning` takes about half a minute on a 2-core
//! machine; `cargo bench --bench learning -- --test` runs each bench once. For the
//! daemon under HTTP load see `examples/learning_load.rs`.

// Benches build fixed data (the bundled CSV, the bootstrap model): a failure there
// is a bug in the bench, and a panic with a message is the clearest report. The
// crate denies unwrap/expect outside tests, so allow it here.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use serde_json::{Map, Value};

use steward::learning::guard::{Guard, Scored};
use steward::live::LiveModel;
use steward::model::{Model, Prediction};
use steward::store::registry::ModelRecord;
use steward::train::online::{Label, Learner, OnlineParams};

const SEED: u64 = 42;
/// `online.guard_window` and `online.guard_margin` as shipped.
const GUARD_WINDOW: usize = 500;
const GUARD_MARGIN: f64 = 0.02;

/// One logged input and its stored label, as the learner's queue carries them.
struct Item {
    features: String,
    label: String,
}

/// The bundled penguins as the daemon logs them: the request's feature object as
/// JSON text (numbers as numbers, strings as strings, empty cells as `null`) and
/// the label as JSON text (`"Adelie"`).
fn logged_items() -> Vec<Item> {
    let mut reader = csv::Reader::from_reader(steward::BUNDLED_PENGUINS.as_bytes());
    let header: Vec<String> = reader
        .headers()
        .expect("penguins.csv has a header")
        .iter()
        .map(String::from)
        .collect();
    let label_at = header
        .iter()
        .position(|h| h == "label")
        .expect("penguins.csv has a label column");
    let mut items = Vec::new();
    for record in reader.records() {
        let record = record.expect("penguins.csv parses");
        let mut row = Map::new();
        let mut label = String::new();
        for (i, (name, cell)) in header.iter().zip(record.iter()).enumerate() {
            if i == label_at {
                label = Value::String(cell.to_string()).to_string();
                continue;
            }
            let v = if cell.is_empty() {
                Value::Null
            } else {
                // As a client sends the CSV cell: `181` stays an integer.
                cell.parse::<i64>()
                    .ok()
                    .map(serde_json::Number::from)
                    .or_else(|| {
                        cell.parse::<f64>()
                            .ok()
                            .and_then(serde_json::Number::from_f64)
                    })
                    .map_or_else(|| Value::String(cell.to_string()), Value::Number)
            };
            row.insert(name.clone(), v);
        }
        items.push(Item {
            features: Value::Object(row).to_string(),
            label,
        });
    }
    assert!(items.len() > 300, "expected the bundled penguins rows");
    items
}

/// The model a fresh daemon trains at start-up (same data, label and seed).
fn bundled_model() -> Model {
    steward::live::bootstrap(
        steward::config::BUNDLED_DATA,
        &steward::train::select::TrainOptions::new("label", 5, SEED),
    )
    .expect("bootstrap training on the bundled data")
}

/// The base model as the learner holds it: live, in the form it serves.
fn live(model: Model) -> LiveModel {
    let record = ModelRecord {
        version: "1".into(),
        created: 0,
        path: String::new(),
        metrics: Value::Null,
        sparsity: 0.0,
        bits: 32,
        status: steward::store::registry::ModelStatus::Active,
        parent: None,
        source: "bench".into(),
        online_updates: 0,
        activated: None,
    };
    LiveModel::new(model, record, 0.01)
}

fn parse_row(text: &str) -> Map<String, Value> {
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(row)) => row,
        other => panic!("a logged input is a JSON object, got {other:?}"),
    }
}

/// The learner's state between labels, as `online::State` keeps it.
struct Online {
    base: LiveModel,
    learner: Learner,
    guard: Guard,
    x: Vec<f32>,
}

impl Online {
    fn new(base: LiveModel) -> Online {
        Online {
            learner: Learner::new(&base.model, OnlineParams::default()),
            guard: Guard::new(GUARD_WINDOW, GUARD_MARGIN),
            x: vec![0.0; base.model.schema.width()],
            base,
        }
    }

    /// One label, the way `online::learn` takes it (without the publish and revert
    /// branches, which run once per thousands of labels).
    fn label(&mut self, item: &Item) -> bool {
        let Ok(Value::Object(row)) = serde_json::from_str::<Value>(&item.features) else {
            return false;
        };
        let model = &self.base.model;
        if model.schema.encode_json(&row, &mut self.x).is_err() {
            return false;
        }
        let Ok(Value::String(label)) = serde_json::from_str::<Value>(&item.label) else {
            return false;
        };
        let base = self.base.predict_encoded(&self.x);
        let Some(c) = model.meta.classes.iter().position(|k| *k == label) else {
            return false;
        };
        let before = self.learner.progress().correct();
        if self.learner.learn_one(&self.x, Label::Class(c)).is_err() {
            return false;
        }
        let online = self.learner.progress().correct() > before;
        let Prediction::Class { label: b, .. } = base else {
            return false;
        };
        self.guard.observe(Scored::Class {
            online,
            base: model.meta.classes.get(c) == Some(&b),
        });
        let _ = self.guard.tripped(model.meta.task);
        true
    }
}

fn bench_online(c: &mut Criterion) {
    let items = logged_items();
    let base = live(bundled_model());
    let model = &base.model;
    let width = model.schema.width();
    let rows: Vec<Map<String, Value>> = items.iter().map(|i| parse_row(&i.features)).collect();
    let encoded: Vec<Vec<f32>> = rows
        .iter()
        .map(|r| {
            let mut x = vec![0.0; width];
            model
                .schema
                .encode_json(r, &mut x)
                .expect("a penguins row encodes");
            x
        })
        .collect();
    let labels: Vec<Label> = items
        .iter()
        .map(|i| {
            let s: String = serde_json::from_str(&i.label).expect("a label is a JSON string");
            Label::Class(
                model
                    .meta
                    .classes
                    .iter()
                    .position(|k| *k == s)
                    .expect("a known class"),
            )
        })
        .collect();
    eprintln!(
        "bundled model: {} inputs, {} parameters, serving form {}; {} logged rows, input JSON {}–{} bytes",
        width,
        model.network.parameters(),
        base.form.form.as_str(),
        items.len(),
        items.iter().map(|i| i.features.len()).min().unwrap_or(0),
        items.iter().map(|i| i.features.len()).max().unwrap_or(0),
    );

    let mut g = c.benchmark_group("online");
    g.warm_up_time(Duration::from_secs(1));
    g.measurement_time(Duration::from_secs(4));
    g.throughput(Throughput::Elements(1));

    let mut i = 0usize;
    g.bench_function("parse", |b| {
        b.iter(|| {
            let item = &items[i % items.len()];
            i += 1;
            let row = serde_json::from_str::<Value>(black_box(&item.features)).expect("json");
            let label = serde_json::from_str::<Value>(black_box(&item.label)).expect("json");
            (row, label)
        })
    });

    let mut i = 0usize;
    let mut x = vec![0.0f32; width];
    g.bench_function("encode", |b| {
        b.iter(|| {
            let row = &rows[i % rows.len()];
            i += 1;
            model
                .schema
                .encode_json(black_box(row), &mut x)
                .expect("encodes");
            black_box(&x);
        })
    });

    let mut i = 0usize;
    g.bench_function("base_predict", |b| {
        b.iter(|| {
            let x = &encoded[i % encoded.len()];
            i += 1;
            base.predict_encoded(black_box(x))
        })
    });

    // The master copy keeps learning across iterations, as in the daemon.
    let mut learner = Learner::new(model, OnlineParams::default());
    let mut i = 0usize;
    g.bench_function("learn_one", |b| {
        b.iter(|| {
            let k = i % encoded.len();
            i += 1;
            learner
                .learn_one(black_box(&encoded[k]), labels[k])
                .expect("a valid row")
        })
    });

    // The guard's bookkeeping per label: add the label's two verdicts to the
    // window, then check it (a full window of `online.guard_window` labels).
    let mut guard = Guard::new(GUARD_WINDOW, GUARD_MARGIN);
    let mut i = 0usize;
    g.bench_function("guard", |b| {
        b.iter(|| {
            i += 1;
            guard.observe(black_box(Scored::Class {
                online: !i.is_multiple_of(50),
                base: !i.is_multiple_of(40),
            }));
            guard.tripped(model.meta.task)
        })
    });

    let mut online = Online::new(live(model.clone()));
    let mut i = 0usize;
    g.bench_function("per_label", |b| {
        b.iter(|| {
            let item = &items[i % items.len()];
            i += 1;
            assert!(online.label(black_box(item)), "label skipped");
        })
    });
    g.finish();
    eprintln!(
        "per_label: {} steps, progressive accuracy {:.4}",
        online.learner.updates(),
        online.learner.progressive_metric().unwrap_or(f64::NAN)
    );
}

criterion_group!(benches, bench_online);
criterion_main!(benches);
