//! Anomaly-score bench: the squared Mahalanobis distance of one encoded input with
//! 30 features (f32, as the serving encoder produces it) from a Gaussian fitted on
//! 5,000 correlated rows; and a model's scorer on a 36-slot encoded row (30
//! numeric features and a one-hot categorical one), as the serving path calls it.
//!
//! `cargo bench --bench anomaly` takes a few seconds.

// Benches build fixed data: a failure there is a bug in the bench, and a panic with
// a message is the clearest report. The crate denies unwrap/expect outside tests.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use ndarray::Array2;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use steward::model::schema::{Feature, FeatureKind, Schema};
use steward::model::scorer::Scorer;
use steward::stats::gaussian::{Gaussian, DEFAULT_LEVEL};

const SEED: u64 = 42;
const FEATURES: usize = 30;

/// Rows `A·u`, u a sum of four uniforms per coordinate, A random: correlated
/// near-normal features.
fn correlated(rows: usize, rng: &mut ChaCha8Rng) -> Array2<f32> {
    let a = Array2::from_shape_fn((FEATURES, FEATURES), |_| rng.gen_range(-1.0f32..1.0));
    let u = Array2::from_shape_fn((rows, FEATURES), |_| {
        (0..4).map(|_| rng.gen_range(-1.0f32..1.0)).sum::<f32>()
    });
    u.dot(&a.t())
}

fn bench_score(c: &mut Criterion) {
    let mut rng = ChaCha8Rng::seed_from_u64(SEED);
    let train = correlated(5000, &mut rng);
    let model = Gaussian::fit(train.view(), DEFAULT_LEVEL).unwrap();
    let live = correlated(1, &mut rng);
    let x: Vec<f32> = live.row(0).to_vec();
    let mut group = c.benchmark_group("anomaly");
    group.bench_function("score_30", |b| {
        b.iter(|| black_box(model.score(black_box(&x))))
    });
    // What the serving path runs: a model's scorer on an encoded row of 30
    // numeric features and one categorical feature (5 categories: 6 one-hot
    // slots), picking the numeric slots out first.
    let mut features: Vec<Feature> = (0..FEATURES)
        .map(|i| Feature {
            name: format!("x{i}"),
            kind: FeatureKind::Numeric {
                mean: 0.0,
                std: 1.0,
            },
        })
        .collect();
    features.push(Feature {
        name: "c".into(),
        kind: FeatureKind::Categorical {
            categories: (0..5).map(|i| i.to_string()).collect(),
            mode: "0".into(),
        },
    });
    let schema = Schema { features };
    let mut encoded = Array2::<f32>::zeros((5000, FEATURES + 6));
    encoded
        .slice_mut(ndarray::s![.., ..FEATURES])
        .assign(&train);
    for (r, mut row) in encoded.rows_mut().into_iter().enumerate() {
        row[FEATURES + r % 6] = 1.0;
    }
    let scorer = Scorer::fit(&schema, encoded.view(), DEFAULT_LEVEL)
        .unwrap()
        .unwrap();
    let mut row = x.clone();
    row.extend([0.0, 0.0, 1.0, 0.0, 0.0, 0.0]);
    group.bench_function("scorer_30_numeric_of_36_slots", |b| {
        b.iter(|| black_box(scorer.score(black_box(&row))))
    });
    group.finish();
}

criterion_group!(benches, bench_score);
criterion_main!(benches);
