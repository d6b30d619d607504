//! Anomaly-score bench: the squared Mahalanobis distance of one encoded input with
//! 30 features (f32, as the serving encoder produces it) from a Gaussian fitted on
//! 5,000 correlated rows.
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

use steward::monitor::anomaly::{Gaussian, DEFAULT_LEVEL};

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
    group.finish();
}

criterion_group!(benches, bench_score);
criterion_main!(benches);
