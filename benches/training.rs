//! Training benches: online steps (`learn_one` on a 30-feature logistic model and
//! a 30-64-64-2 MLP, `learn_batch` of 32 rows on the MLP) and `steward train`'s
//! work (5-fold CV over the default grid, then the refit) on a 20,000 × 20
//! two-class table.
//!
//! Data come from seeded RNGs and are built outside the timed closures.
//! `cargo bench --bench training` takes about three minutes on a 2-core machine;
//! `cargo bench --bench training -- online` only the online steps.

// Benches build fixed data: a failure there is a bug in the bench, and a panic with
// a message is the clearest report. The crate denies unwrap/expect outside tests.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use ndarray::{Array1, Array2};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use steward::data::Table;
use steward::model::network::{Dense, Network, Output};
use steward::model::{Model, ModelMeta, Schema, Task};
use steward::train::online::{Label, Learner, OnlineParams};
use steward::train::select::{self, TrainOptions};

const SEED: u64 = 42;
const INPUTS: usize = 30;
/// Rows cycled through by the online benches.
const POOL: usize = 4096;

fn network(widths: &[usize], output: Output, rng: &mut ChaCha8Rng) -> Network {
    let layers = widths
        .windows(2)
        .map(|w| Dense {
            weight: Array2::from_shape_simple_fn((w[1], w[0]), || rng.gen_range(-0.3..0.3)),
            bias: Array1::from_shape_simple_fn(w[1], || rng.gen_range(-0.1..0.1)),
        })
        .collect();
    Network::new(layers, output).unwrap()
}

fn model(network: Network, classes: usize) -> Model {
    Model {
        schema: Schema { features: vec![] },
        network,
        meta: ModelMeta {
            task: Task::Classification,
            label: "label".into(),
            classes: (0..classes).map(|c| c.to_string()).collect(),
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

/// Rows with a label that depends on the first inputs, so that learning happens.
fn pool(rng: &mut ChaCha8Rng) -> (Array2<f32>, Vec<Label>) {
    let x = Array2::from_shape_simple_fn((POOL, INPUTS), || rng.gen_range(-1.0f32..1.0));
    let labels = x
        .rows()
        .into_iter()
        .map(|r| Label::Class(usize::from(r[0] + 0.5 * r[1] - r[2] * r[3] > 0.0)))
        .collect();
    (x, labels)
}

fn bench_online(c: &mut Criterion) {
    let mut rng = ChaCha8Rng::seed_from_u64(SEED);
    let (x, labels) = pool(&mut rng);
    let rows: Vec<Vec<f32>> = x.rows().into_iter().map(|r| r.to_vec()).collect();
    let logistic = model(network(&[INPUTS, 1], Output::Sigmoid, &mut rng), 2);
    let mlp = model(network(&[INPUTS, 64, 64, 2], Output::Softmax, &mut rng), 2);
    let mut group = c.benchmark_group("online");
    group.throughput(Throughput::Elements(1));
    for (name, m) in [("logistic_30", &logistic), ("mlp_30_64_64_2", &mlp)] {
        let mut learner = Learner::new(m, OnlineParams::default());
        let mut i = 0;
        group.bench_function(format!("{name}/learn_one"), |b| {
            b.iter(|| {
                i = (i + 1) % POOL;
                black_box(learner.learn_one(&rows[i], labels[i]).unwrap())
            })
        });
    }
    group.throughput(Throughput::Elements(32));
    let mut learner = Learner::new(&mlp, OnlineParams::default());
    let mut i = 0;
    group.bench_function("mlp_30_64_64_2/learn_batch_32", |b| {
        b.iter(|| {
            i = (i + 32) % (POOL - 32);
            let xs = x.slice(ndarray::s![i..i + 32, ..]);
            black_box(learner.learn_batch(xs, &labels[i..i + 32]).unwrap())
        })
    });
    group.finish();
}

/// 20,000 rows × 20 features, two classes: five informative features in a
/// non-linear rule with 5% label noise, the rest noise.
fn table_20k() -> Table {
    let mut rng = ChaCha8Rng::seed_from_u64(SEED);
    let mut csv = (0..20).map(|j| format!("f{j},")).collect::<String>() + "label\n";
    for _ in 0..20_000 {
        let f: Vec<f64> = (0..20).map(|_| rng.gen_range(-2.0..2.0)).collect();
        let score = f[0] + f[1] * f[2] - 0.5 * f[3] + (f[4] * 2.0).sin();
        let flip = rng.gen_bool(0.05);
        let label = (score > 0.0) != flip;
        for v in &f {
            csv.push_str(&format!("{v:.6},"));
        }
        csv.push_str(if label { "1\n" } else { "0\n" });
    }
    Table::parse("bench_20k.csv", csv.as_bytes()).unwrap()
}

fn bench_train(c: &mut Criterion) {
    let table = table_20k();
    let options = TrainOptions::new("label", 5, SEED);
    let mut group = c.benchmark_group("train");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(60));
    group.bench_function("cv5_default_grid_20000x20", |b| {
        b.iter(|| black_box(select::train(&table, &options).unwrap().report.cv.mean))
    });
    group.finish();
}

criterion_group!(benches, bench_online, bench_train);
criterion_main!(benches);
