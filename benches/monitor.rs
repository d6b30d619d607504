//! Monitoring benches: one drift check of a 10,000-row window × 30 numeric
//! features against a 5,000-row reference (KS with exact p-values, PSI, the
//! correction), on one thread, with and without a shift; and the KS test alone on
//! one of those features (sorting, the statistic and the exact p-value).
//!
//! `cargo bench --bench monitor` takes about a minute.

// Benches build fixed data: a failure there is a bug in the bench, and a panic with
// a message is the clearest report. The crate denies unwrap/expect outside tests.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use steward::monitor::drift::{compare, DriftOptions, Values};
use steward::stats::ks_2samp;

const SEED: u64 = 42;

fn sample(rows: usize, features: usize, shift: f64, seed: u64) -> Vec<Values> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..features)
        .map(|_| {
            // Sums of uniforms: near-normal, values rounded to 3 decimals as logged
            // inputs often are (so there are ties).
            Values::Numeric(
                (0..rows)
                    .map(|_| {
                        let v: f64 = (0..4).map(|_| rng.gen_range(-1.0..1.0)).sum::<f64>() + shift;
                        (v * 1000.0).round() / 1000.0
                    })
                    .collect(),
            )
        })
        .collect()
}

fn bench_drift(c: &mut Criterion) {
    let names: Vec<String> = (0..30).map(|i| format!("f{i}")).collect();
    let reference = sample(5000, 30, 0.0, SEED);
    let same = sample(10_000, 30, 0.0, SEED + 1);
    let shifted = sample(10_000, 30, 0.3, SEED + 2);
    let options = DriftOptions::default();
    let mut group = c.benchmark_group("drift");
    group.sample_size(20);
    group.bench_function("window10000x30_vs_5000/no_shift", |b| {
        b.iter(|| {
            black_box(
                compare(&names, &reference, &same, &options)
                    .unwrap()
                    .drifted,
            )
        })
    });
    group.bench_function("window10000x30_vs_5000/shift_0.3sd", |b| {
        b.iter(|| {
            black_box(
                compare(&names, &reference, &shifted, &options)
                    .unwrap()
                    .drifted,
            )
        })
    });
    group.finish();
}

fn bench_ks(c: &mut Criterion) {
    let numeric = |v: Vec<Values>| match v.into_iter().next() {
        Some(Values::Numeric(x)) => x,
        _ => unreachable!("sample() builds numeric features"),
    };
    let reference = numeric(sample(5000, 1, 0.0, SEED));
    let current = numeric(sample(10_000, 1, 0.0, SEED + 1));
    let mut group = c.benchmark_group("ks_2samp");
    group.sample_size(20);
    group.bench_function("10000_vs_5000", |b| {
        b.iter(|| black_box(ks_2samp(&reference, &current).unwrap().p_value))
    });
    group.finish();
}

criterion_group!(benches, bench_drift, bench_ks);
criterion_main!(benches);
