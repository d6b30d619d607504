//! The compression pipeline: neuron pruning, then magnitude pruning, each followed
//! by a short fine-tune, then int8 quantization; every step is measured on held-out
//! rows and kept only while the metric stays within `max_drop` of the uncompressed
//! model's. The result is the most compressed model within the budget.
//!
//! 1. **Neuron pruning** (networks with hidden layers): drop the least important
//!    75%, else 50%, else 25% of each hidden layer's units (importance: see
//!    `model::prune`), fine-tune, keep the first that is within budget.
//! 2. **Magnitude pruning**: a global threshold for 90%, else 80%, 70%, 50% of the
//!    weights, masked fine-tune, keep the first within budget.
//! 3. **int8**: quantize the result (see `model::quant`) and keep the int8 form if
//!    it is within budget.
//!
//! Rows: a seeded 20% of the rows is held out. The steps are chosen on the winning
//! candidate fitted to the other 80% and measured on the held-out rows it never
//! saw; the same steps are then applied to the model fitted on every row (its
//! fine-tunes use every row), each checked on every row against the same budget
//! and left out if it fails there (a step that kills every unit of a layer on the
//! full model does); the report then names the steps applied and that metric. With fewer than [`MIN_ROWS_FOR_SPLIT`] rows, the
//! model fitted on every row is both tuned and measured on every row (optimistic;
//! the report says how many rows measured).

use ndarray::{Array2, ArrayView2, Axis};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use super::metrics;
use super::sgd::{self, SgdParams, Targets};
use super::Prepared;
use crate::model::network::Network;
use crate::model::prune::{self, Masks};
use crate::model::quant::QuantNetwork;

/// Below this many rows, fine-tuning and measuring share every row.
pub const MIN_ROWS_FOR_SPLIT: usize = 50;
/// Share of rows held out to measure.
pub const HELD_OUT: f64 = 0.2;
const NEURON_SHARES: [f64; 3] = [0.75, 0.5, 0.25];
const SPARSITIES: [f64; 4] = [0.9, 0.8, 0.7, 0.5];

/// How much metric compression may cost, and the seed of its splits and fine-tunes.
#[derive(Debug, Clone, Copy)]
pub struct CompressOptions {
    pub max_drop: f64,
    pub seed: u64,
}

/// One tried step.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Step {
    /// e.g. `neurons -50%`, `magnitude 80%`, `int8`.
    pub step: String,
    pub metric: f64,
    pub size_bytes: usize,
    pub kept: bool,
}

/// What compression did (the `compressed` block of the training report).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Compression {
    /// The steps kept, joined by `+` (`none` when nothing was kept).
    pub method: String,
    /// Share of the f32 weights that are zero.
    pub sparsity: f64,
    /// 8 when the int8 form is kept, else 32.
    pub bits: u32,
    /// The uncompressed model's metric on the held-out rows.
    pub metric_before: f64,
    /// The compressed model's metric on the same rows.
    pub metric_after: f64,
    /// Serving weights of the uncompressed model: 4 bytes per weight and bias.
    pub size_bytes_f32: usize,
    /// Serving weights of the compressed model: int8 weights plus an f32 scale, zero
    /// point and bias per output unit, or 4 bytes per parameter when not quantized.
    pub size_bytes: usize,
    pub hidden_before: Vec<usize>,
    pub hidden_after: Vec<usize>,
    pub held_out_rows: usize,
    pub steps: Vec<Step>,
}

/// A compressed model.
#[derive(Debug, Clone)]
pub struct Compressed {
    /// The f32 master weights after pruning and fine-tuning.
    pub network: Network,
    pub masks: Option<Masks>,
    pub quant: Option<QuantNetwork>,
    pub report: Compression,
}

/// The report for a model that was not compressed.
pub fn uncompressed(net: &Network, metric: f64) -> Compression {
    let size = 4 * net.parameters();
    let hidden = hidden(net);
    Compression {
        method: "none".into(),
        sparsity: prune::sparsity(net),
        bits: 32,
        metric_before: metric,
        metric_after: metric,
        size_bytes_f32: size,
        size_bytes: size,
        hidden_before: hidden.clone(),
        hidden_after: hidden,
        held_out_rows: 0,
        steps: Vec::new(),
    }
}

fn hidden(net: &Network) -> Vec<usize> {
    let layers = net.layers();
    layers[..layers.len() - 1]
        .iter()
        .map(|l| l.outputs())
        .collect()
}

/// The rows that fine-tune and the rows that measure: a seeded 20% held out, or
/// every row for both below [`MIN_ROWS_FOR_SPLIT`] rows. Both in ascending order.
pub fn split(n: usize, seed: u64) -> (Vec<usize>, Vec<usize>) {
    let mut order: Vec<usize> = (0..n).collect();
    if n < MIN_ROWS_FOR_SPLIT {
        return (order.clone(), order);
    }
    order.shuffle(&mut ChaCha8Rng::seed_from_u64(seed ^ 0x00c0_4e55));
    let cut = n - ((n as f64 * HELD_OUT).round() as usize).max(1);
    let (t, h) = order.split_at(cut);
    let (mut t, mut h) = (t.to_vec(), h.to_vec());
    t.sort_unstable();
    h.sort_unstable();
    (t, h)
}

/// The steps that stayed within budget.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Plan {
    /// Share of each hidden layer's units removed.
    pub neuron_share: Option<f64>,
    /// Share of weights zeroed by magnitude.
    pub sparsity: Option<f64>,
    pub int8: bool,
}

impl Plan {
    /// How many steps the plan applies.
    fn steps(&self) -> usize {
        usize::from(self.neuron_share.is_some())
            + usize::from(self.sparsity.is_some())
            + usize::from(self.int8)
    }
}

fn fine_tune_params(seed: u64) -> SgdParams {
    SgdParams {
        learning_rate: 1e-3,
        epochs: 30,
        patience: 5,
        seed,
        ..SgdParams::default()
    }
}

/// Removes the least important `share` of every hidden layer's units (importance
/// measured on `x`) and fine-tunes; `None` if the layers cannot shrink.
fn prune_neurons(
    net: &Network,
    share: f64,
    x: ArrayView2<f32>,
    y: &Targets,
    params: &SgdParams,
) -> Option<Network> {
    let importance = prune::neuron_importance(net, x);
    let keep = prune::least_important_removed(&importance, share);
    let smaller = prune::keep_neurons(net, &keep).ok()?;
    Some(sgd::fine_tune(&smaller, x, y, params, None))
}

/// Zeroes the smallest `sparsity` of the weights (one global threshold) and
/// fine-tunes with them masked.
fn prune_weights(
    net: &Network,
    sparsity: f64,
    x: ArrayView2<f32>,
    y: &Targets,
    params: &SgdParams,
) -> (Network, Masks) {
    let mut pruned = net.clone();
    let thresholds = prune::thresholds(&pruned, sparsity, true);
    let masks = prune::prune_magnitude(&mut pruned, &thresholds);
    let tuned = sgd::fine_tune(&pruned, x, y, params, Some(&masks));
    (tuned, masks)
}

/// Compresses `full` (fitted to every row of `data`) within `options.max_drop`.
/// The steps are chosen and measured on `probe`, the same candidate fitted to the
/// `tune` rows only, against the `held` rows it never saw (with fewer rows than
/// [`MIN_ROWS_FOR_SPLIT`], `probe` is `full` and both sets are every row); then
/// the chosen steps are applied to `full`, fine-tuning on every row.
pub fn compress(
    full: &Network,
    probe: &Network,
    tune: &[usize],
    held: &[usize],
    data: &Prepared,
    options: &CompressOptions,
) -> Compressed {
    let (plan, mut report) = choose(probe, tune, held, data, options);
    report.size_bytes_f32 = 4 * full.parameters();
    report.hidden_before = hidden(full);
    let floor = score(data, full, None, data.x.view()) - options.max_drop;
    let (current, masks, quant, applied) =
        apply_plan(full, &plan, data, options, floor, &mut report);
    if applied.len() < plan.steps() {
        report.method = if applied.is_empty() {
            "none".into()
        } else {
            applied.join("+")
        };
        report.bits = if quant.is_some() { 8 } else { 32 };
        tracing::warn!(
            method = %report.method,
            "a compression step chosen on held-out rows failed on the full model and was not applied"
        );
    }
    report.size_bytes = quant
        .as_ref()
        .map_or(4 * current.parameters(), QuantNetwork::serving_bytes);
    report.sparsity = prune::sparsity(&current);
    report.hidden_after = hidden(&current);
    Compressed {
        network: current,
        masks,
        quant,
        report,
    }
}

/// Applies the steps chosen on the probe to the full model one by one, each
/// checked on every row: the full model's own fine-tune can fail where the
/// probe's did not (a pruned layer whose units all die gives a constant
/// output), and such a step is not applied but recorded in `report`. Returns
/// the model, its masks, its int8 form and the names of the steps applied.
fn apply_plan(
    full: &Network,
    plan: &Plan,
    data: &Prepared,
    options: &CompressOptions,
    floor: f64,
    report: &mut Compression,
) -> (Network, Option<Masks>, Option<QuantNetwork>, Vec<String>) {
    let params = fine_tune_params(options.seed);
    let (x, y) = (data.x.view(), &data.targets);
    let mut applied: Vec<String> = Vec::new();
    let mut check = |name: String, net: &Network, quant: Option<&QuantNetwork>| {
        let metric = score(data, net, quant, x);
        let ok = metric >= floor;
        if !ok {
            report.steps.push(Step {
                step: format!("{name} on the full model"),
                metric,
                size_bytes: quant.map_or(4 * net.parameters(), QuantNetwork::serving_bytes),
                kept: false,
            });
        } else {
            applied.push(name);
        }
        ok
    };
    let mut current = full.clone();
    if let Some(share) = plan.neuron_share {
        if let Some(smaller) = prune_neurons(&current, share, x, y, &params) {
            if check(neuron_step(share), &smaller, None) {
                current = smaller;
            }
        }
    }
    let mut masks = None;
    if let Some(sparsity) = plan.sparsity {
        let (pruned, m) = prune_weights(&current, sparsity, x, y, &params);
        if check(magnitude_step(sparsity), &pruned, None) {
            current = pruned;
            masks = Some(m);
        }
    }
    let quant = plan
        .int8
        .then(|| QuantNetwork::quantize(&current))
        .filter(|q| check(INT8.into(), &current, Some(q)));
    (current, masks, quant, applied)
}

/// The metric of `net` (or its int8 form `quant`) on every row of `data`.
fn score(data: &Prepared, net: &Network, quant: Option<&QuantNetwork>, x: ArrayView2<f32>) -> f64 {
    let out = match quant {
        Some(q) => q.forward_batch(x),
        None => net.forward_batch(x),
    };
    metric_of(&out, net, &data.classes, &data.targets)
}

/// Accuracy or R² of `net`'s outputs `out` against `targets`.
fn metric_of(out: &Array2<f32>, net: &Network, classes: &[String], targets: &Targets) -> f64 {
    match targets {
        Targets::Classes { index, .. } => {
            let p = metrics::classes_from_outputs(out, net.output());
            metrics::classification(classes, &p, index).accuracy
        }
        Targets::Values(v) => {
            let p: Vec<f64> = out.column(0).iter().map(|v| f64::from(*v)).collect();
            metrics::regression(&p, v).r2
        }
    }
}

/// Tries the steps on `net` (fine-tuning on `tune`, measuring on `held`) and keeps
/// those within budget.
fn choose(
    net: &Network,
    tune: &[usize],
    held: &[usize],
    data: &Prepared,
    options: &CompressOptions,
) -> (Plan, Compression) {
    let x_tune = data.x.select(Axis(0), tune);
    let y_tune = data.targets.subset(tune);
    let x_held = data.x.select(Axis(0), held);
    let y_held = data.targets.subset(held);
    let score = |out: Array2<f32>, net: &Network| metric_of(&out, net, &data.classes, &y_held);
    let metric_f32 = |net: &Network| score(net.forward_batch(x_held.view()), net);
    let params = fine_tune_params(options.seed);

    let base = metric_f32(net);
    let floor = base - options.max_drop;
    let mut report = uncompressed(net, base);
    report.held_out_rows = held.len();
    let mut plan = Plan::default();
    let mut trials = Trials {
        report: &mut report,
        kept: Vec::new(),
        floor,
    };
    let mut current = net.clone();

    if net.layers().len() > 1 {
        for share in NEURON_SHARES {
            let Some(tuned) = prune_neurons(&current, share, x_tune.view(), &y_tune, &params)
            else {
                continue;
            };
            let size = 4 * tuned.parameters();
            if trials.keep(neuron_step(share), metric_f32(&tuned), size) {
                current = tuned;
                plan.neuron_share = Some(share);
                break;
            }
        }
    }

    for sparsity in SPARSITIES {
        let (tuned, _) = prune_weights(&current, sparsity, x_tune.view(), &y_tune, &params);
        let size = 4 * tuned.parameters();
        if trials.keep(magnitude_step(sparsity), metric_f32(&tuned), size) {
            current = tuned;
            plan.sparsity = Some(sparsity);
            break;
        }
    }

    let quant = QuantNetwork::quantize(&current);
    let metric_q = score(quant.forward_batch(x_held.view()), &current);
    plan.int8 = trials.keep(INT8.into(), metric_q, quant.serving_bytes());
    let kept = trials.kept;
    if plan.int8 {
        report.bits = 8;
        report.metric_after = metric_q;
    } else {
        report.metric_after = metric_f32(&current);
    }
    report.method = if kept.is_empty() {
        "none".into()
    } else {
        kept.join("+")
    };
    (plan, report)
}

/// The steps tried on the probe: each is recorded in the report, and those
/// whose metric stays at or above `floor` are named in `kept`.
struct Trials<'a> {
    report: &'a mut Compression,
    kept: Vec<String>,
    floor: f64,
}

impl Trials<'_> {
    /// Records `step`; returns whether it is kept.
    fn keep(&mut self, step: String, metric: f64, size_bytes: usize) -> bool {
        let kept = metric >= self.floor;
        self.report.steps.push(Step {
            step: step.clone(),
            metric,
            size_bytes,
            kept,
        });
        if kept {
            self.kept.push(step);
        }
        kept
    }
}

/// The names of the steps, in reports and logs.
const INT8: &str = "int8";

fn neuron_step(share: f64) -> String {
    format!("neurons -{}%", (share * 100.0).round())
}

fn magnitude_step(sparsity: f64) -> String {
    format!("magnitude {}%", (sparsity * 100.0).round())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::Table;

    /// Points in the unit square, labelled by the side of the anti-diagonal, from
    /// a seeded xorshift generator.
    fn anti_diagonal(n: usize) -> Table {
        let mut s: u64 = 1;
        let mut next = move || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 11) as f64 / (1u64 << 53) as f64
        };
        let mut text = String::from("x,y,label\n");
        for _ in 0..n {
            let (x, y) = (next(), next());
            let label = if x + y > 1.0 { "hi" } else { "lo" };
            text.push_str(&format!("{x},{y},{label}\n"));
        }
        Table::parse("square.csv", text.as_bytes()).unwrap()
    }

    #[test]
    fn the_shipped_model_scores_what_the_report_says() {
        // With 3 folds this set selects a one-hidden-layer network whose 50%
        // magnitude pruning, chosen on the probe, leaves the full model with a
        // constant output: that step must not be applied.
        let table = anti_diagonal(1000);
        let options = super::super::select::TrainOptions::new("label", 3, 42);
        let trained = super::super::select::train(&table, &options).unwrap();
        let shipped = super::super::evaluate(&trained.model, &table, "label").unwrap();
        let served = shipped.value_int8.unwrap_or(shipped.value);
        let report = &trained.report;
        assert!(
            served >= report.cv.mean - 0.02,
            "the model scores {served} on its own rows, CV said {}: {:?}",
            report.cv.mean,
            report.compressed
        );
    }

    #[test]
    fn the_bundled_model_compresses_within_budget_and_masks_hold() {
        let t = Table::parse("penguins.csv", crate::BUNDLED_PENGUINS.as_bytes()).unwrap();
        let data = super::super::prepare(&t, "label", None).unwrap();
        let params = SgdParams {
            hidden: vec![32],
            ..SgdParams::default()
        };
        let net = sgd::fit(data.x.view(), &data.targets, &params).unwrap();
        let (tune, held) = split(data.x.nrows(), 42);
        let probe = sgd::fit(
            data.x.select(Axis(0), &tune).view(),
            &data.targets.subset(&tune),
            &params,
        )
        .unwrap();
        let c = compress(
            &net,
            &probe,
            &tune,
            &held,
            &data,
            &CompressOptions {
                max_drop: 0.01,
                seed: 42,
            },
        );
        let r = &c.report;
        assert!(r.metric_after >= r.metric_before - 0.01, "{r:?}");
        assert!(r.size_bytes * 10 <= r.size_bytes_f32 * 3, "≤ 30%: {r:?}");
        if let Some(masks) = &c.masks {
            for (layer, mask) in c.network.layers().iter().zip(masks) {
                for (w, m) in layer.weight.iter().zip(mask) {
                    assert!(
                        *m == 1.0 || *w == 0.0,
                        "a pruned weight moved in fine-tuning"
                    );
                }
            }
        }
        assert_eq!(r.held_out_rows, 69);
    }
}
