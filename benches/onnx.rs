//! ONNX benches: `onnx::import` of a graph of about 1.2 MB (a 30-384-384-384-2
//! network written by `onnx::export`, so the bench needs no Python), with a CSV
//! of 2,000 rows; and the forward pass of a network that came through import
//! against the same network as steward built it (the serving path is the same
//! code; the bench shows that nothing about an imported network is slower).
//!
//! `cargo bench --bench onnx` takes about half a minute on a 2-core machine.

// Benches build fixed data: a failure there is a bug in the bench.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use steward::data::Table;
use steward::model::network::Output;
use steward::model::{Model, ModelMeta, Schema, Task};
use steward::onnx::{self, ImportOptions};
use steward::train::sgd::initial_network;

const SEED: u64 = 42;
const FEATURES: usize = 30;

/// A CSV of `rows` rows: 30 numeric features and a 0/1 label.
fn csv(rows: usize) -> Table {
    let mut rng = ChaCha8Rng::seed_from_u64(SEED);
    let mut text: String = (0..FEATURES).map(|i| format!("f{i},")).collect::<String>() + "label\n";
    for r in 0..rows {
        for _ in 0..FEATURES {
            text.push_str(&format!(
                "{:.4},",
                rng.gen_range(-3.0f64..3.0) * 10.0 + 50.0
            ));
        }
        text.push_str(if r % 2 == 0 { "0\n" } else { "1\n" });
    }
    Table::parse("bench.csv", text.as_bytes()).unwrap()
}

/// A steward model of the given hidden widths on the CSV's schema.
fn model(table: &Table, hidden: &[usize]) -> Model {
    let mut rng = ChaCha8Rng::seed_from_u64(SEED);
    let schema = Schema::fit(table, FEATURES).unwrap();
    let network = initial_network(FEATURES, hidden, 2, Output::Softmax, &mut rng).unwrap();
    Model {
        schema,
        network,
        meta: ModelMeta {
            task: Task::Classification,
            label: "label".into(),
            classes: vec!["0".into(), "1".into()],
            metrics: BTreeMap::new(),
            training: serde_json::Value::Null,
            created: None,
            parent: None,
            target: None,
            online_updates: 0,
            reference: None,
            anomaly: None,
        },
        masks: None,
        quant: None,
    }
}

fn bench_import(c: &mut Criterion) {
    let table = csv(2000);
    let native = model(&table, &[384, 384, 384]);
    let (bytes, _) = onnx::export::export(&native, None).unwrap();
    eprintln!("import bench: a {}-byte ONNX file", bytes.len());
    let options = ImportOptions {
        max_metric_drop: None,
        ..ImportOptions::new("label")
    };
    let mut group = c.benchmark_group("onnx");
    group.sample_size(10);
    group.bench_function("import/1.2MB/2000-rows", |b| {
        b.iter(|| black_box(onnx::import("bench.onnx", &bytes, &table, &options).unwrap()))
    });
    group.finish();
}

fn bench_forward(c: &mut Criterion) {
    let table = csv(200);
    let native = model(&table, &[256, 256]);
    let (bytes, _) = onnx::export::export(&native, None).unwrap();
    let options = ImportOptions {
        max_metric_drop: None,
        ..ImportOptions::new("label")
    };
    let imported = onnx::import("bench.onnx", &bytes, &table, &options)
        .unwrap()
        .model;
    let mut rng = ChaCha8Rng::seed_from_u64(SEED + 1);
    let x: Vec<f32> = (0..FEATURES).map(|_| rng.gen_range(-2.0f32..2.0)).collect();
    let mut group = c.benchmark_group("forward/30-256-256-2");
    group.bench_function("native/f32/batch1", |b| {
        b.iter(|| black_box(native.network.forward_one(&x)))
    });
    group.bench_function("imported/f32/batch1", |b| {
        b.iter(|| black_box(imported.network.forward_one(&x)))
    });
    group.finish();
}

criterion_group!(benches, bench_import, bench_forward);
criterion_main!(benches);
