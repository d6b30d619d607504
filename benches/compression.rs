//! Compression benches: the forward pass of the f32 network against its int8 form
//! (and the pruned forms), at batch 1 and 64, for a 64-64-64 and a 30-256-256-2
//! network with seeded random weights and inputs.
//!
//! `cargo bench --bench compression` takes about a minute on a 2-core machine.

// Benches build fixed data: a failure there is a bug in the bench, and a panic with
// a message is the clearest report. The crate denies unwrap/expect outside tests.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use ndarray::Array2;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use steward::model::network::{F32Kernel, Network, Output};
use steward::model::prune;
use steward::model::quant::{Kernel, QuantNetwork, Scratch};
use steward::train::sgd::initial_network;

const SEED: u64 = 42;
const BATCH: usize = 64;

fn network(widths: &[usize], output: Output) -> Network {
    let mut rng = ChaCha8Rng::seed_from_u64(SEED);
    let (inputs, hidden, outputs) = (
        widths[0],
        &widths[1..widths.len() - 1],
        widths[widths.len() - 1],
    );
    initial_network(inputs, hidden, outputs, output, &mut rng).unwrap()
}

fn bench_forms(c: &mut Criterion) {
    for (name, widths, output) in [
        ("64-64-64", vec![64, 64, 64], Output::Softmax),
        ("30-256-256-2", vec![30, 256, 256, 2], Output::Softmax),
    ] {
        let f32_net = network(&widths, output);
        let int8 = QuantNetwork::quantize(&f32_net);
        // Neuron pruning that keeps half of every hidden layer (the layers shrink),
        // and magnitude pruning of 90% of the weights (served dense: same work).
        let half: Vec<Vec<usize>> = widths[1..widths.len() - 1]
            .iter()
            .map(|&w| (0..w / 2).collect())
            .collect();
        let neurons = prune::keep_neurons(&f32_net, &half).unwrap();
        let neurons_int8 = QuantNetwork::quantize(&neurons);
        let mut magnitude = f32_net.clone();
        let t = prune::thresholds(&magnitude, 0.9, true);
        prune::prune_magnitude(&mut magnitude, &t);
        let mut rng = ChaCha8Rng::seed_from_u64(SEED + 1);
        let x = Array2::from_shape_simple_fn((BATCH, widths[0]), || rng.gen_range(-2.0f32..2.0));
        let one = x.row(0).to_vec();
        let mut group = c.benchmark_group(format!("forward/{name}"));
        group.throughput(Throughput::Elements(1));
        group.bench_function("f32/batch1", |b| {
            b.iter(|| black_box(f32_net.forward_one(&one)))
        });
        // Each f32 kernel this CPU runs, by name (f32 above is the fastest).
        for kernel in F32Kernel::ALL.into_iter().filter(|k| k.supported()) {
            group.bench_function(format!("f32_{}/batch1", kernel.as_str()), |b| {
                b.iter(|| black_box(f32_net.forward_one_with(kernel, &one)))
            });
        }
        let mut scratch = Scratch::default();
        group.bench_function("int8/batch1", |b| {
            b.iter(|| black_box(int8.forward_one(&one, &mut scratch)))
        });
        // Each integer kernel this CPU runs, by name (int8 above is the fastest).
        for kernel in Kernel::ALL.into_iter().filter(|k| k.supported()) {
            group.bench_function(format!("int8_{}/batch1", kernel.as_str()), |b| {
                b.iter(|| black_box(int8.forward_with(kernel, &one, &mut scratch)))
            });
        }
        let int8_static = QuantNetwork::quantize_static(&f32_net, x.view());
        group.bench_function("int8_static/batch1", |b| {
            b.iter(|| black_box(int8_static.forward_one(&one, &mut scratch)))
        });
        group.bench_function("f32_neurons50/batch1", |b| {
            b.iter(|| black_box(neurons.forward_one(&one)))
        });
        group.bench_function("int8_neurons50/batch1", |b| {
            b.iter(|| black_box(neurons_int8.forward_one(&one, &mut scratch)))
        });
        group.bench_function("f32_magnitude90/batch1", |b| {
            b.iter(|| black_box(magnitude.forward_one(&one)))
        });
        group.throughput(Throughput::Elements(BATCH as u64));
        group.bench_function("f32/batch64", |b| {
            b.iter(|| black_box(f32_net.forward_batch(x.view())))
        });
        group.bench_function("int8/batch64", |b| {
            b.iter(|| black_box(int8.forward_batch(x.view())))
        });
        group.bench_function("f32_neurons50/batch64", |b| {
            b.iter(|| black_box(neurons.forward_batch(x.view())))
        });
        group.bench_function("int8_neurons50/batch64", |b| {
            b.iter(|| black_box(neurons_int8.forward_batch(x.view())))
        });
        group.finish();
    }
}

criterion_group!(benches, bench_forms);
criterion_main!(benches);
