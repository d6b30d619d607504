//! A plain mini-batch trainer for [`Network`]: Adam on cross-entropy (softmax,
//! sigmoid) or squared error (identity), L2 weight decay, He-uniform initialisation,
//! seeded shuffling, early stopping on a held-out share of the rows and optional
//! balanced class weights. Deterministic for a given seed.
//!
//! Regression targets are standardised during training and the scale folded back
//! into the last layer afterwards, so the network outputs values in label units.
//!
//! New networks are ReLU throughout; [`fine_tune`] and [`gradients`] follow the
//! hidden activations of the network they are given (an imported model's tanh,
//! say), back-propagating through each by its derivative at its output.

use ndarray::{Array1, Array2, ArrayView1, ArrayView2, Axis};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::model::network::{finish_one, Activation, Dense, Network, NetworkError, Output};

/// Hyper-parameters of one fit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SgdParams {
    /// Widths of the hidden layers; empty is a linear (logistic) model.
    pub hidden: Vec<usize>,
    /// The most passes over the data.
    pub epochs: usize,
    pub batch_size: usize,
    pub learning_rate: f32,
    /// L2 penalty on weights (not biases).
    pub l2: f32,
    /// Stop after this many epochs without a lower validation loss and keep the
    /// best weights seen; 0 trains for all `epochs` on every row.
    pub patience: usize,
    /// Share of the rows held out to decide early stopping.
    pub validation: f64,
    /// Weigh each class by `rows / (classes × rows of the class)` ("balanced").
    pub class_weight: bool,
    pub seed: u64,
}

impl Default for SgdParams {
    fn default() -> Self {
        Self {
            hidden: vec![32],
            epochs: 200,
            batch_size: 64,
            learning_rate: 3e-3,
            l2: 1e-4,
            patience: 10,
            validation: 0.1,
            class_weight: false,
            seed: 42,
        }
    }
}

/// Fewer rows than this train without an early-stopping split.
pub const MIN_ROWS_FOR_VALIDATION: usize = 20;

/// How a fit went.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct FitInfo {
    /// Epochs run.
    pub epochs: usize,
    /// The epoch whose weights were kept (1-based).
    pub best_epoch: usize,
}

/// The training targets.
#[derive(Debug, Clone)]
pub enum Targets {
    /// Class indices and the number of classes (2 gives a sigmoid output).
    Classes { index: Vec<usize>, classes: usize },
    /// Real values.
    Values(Vec<f64>),
}

impl Targets {
    /// Number of rows.
    pub fn len(&self) -> usize {
        match self {
            Targets::Classes { index, .. } => index.len(),
            Targets::Values(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The rows `idx`, in that order.
    pub fn subset(&self, idx: &[usize]) -> Targets {
        match self {
            Targets::Classes { index, classes } => Targets::Classes {
                index: idx.iter().map(|&i| index[i]).collect(),
                classes: *classes,
            },
            Targets::Values(v) => Targets::Values(idx.iter().map(|&i| v[i]).collect()),
        }
    }

    /// Rows per class (empty for values).
    pub fn class_counts(&self) -> Vec<usize> {
        match self {
            Targets::Classes { index, classes } => {
                let mut counts = vec![0; *classes];
                for &c in index {
                    counts[c] += 1;
                }
                counts
            }
            Targets::Values(_) => Vec::new(),
        }
    }

    fn output(&self) -> (Output, usize) {
        match self {
            Targets::Classes { classes: 2, .. } => (Output::Sigmoid, 1),
            Targets::Classes { classes, .. } => (Output::Softmax, *classes),
            Targets::Values(_) => (Output::Identity, 1),
        }
    }

    /// The mean and standard deviation of values (0 and 1 for classes).
    pub fn scale(&self) -> (f64, f64) {
        match self {
            Targets::Values(v) => {
                let n = v.len().max(1) as f64;
                let mean = v.iter().sum::<f64>() / n;
                let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n;
                (mean, if var > 0.0 { var.sqrt() } else { 1.0 })
            }
            Targets::Classes { .. } => (0.0, 1.0),
        }
    }

    /// The target matrix the loss compares against (one-hot, 0/1 or values
    /// standardised with `scale`).
    pub fn matrix(&self, (mean, std): (f64, f64)) -> Array2<f32> {
        match self {
            Targets::Classes { index, classes: 2 } => {
                Array2::from_shape_fn((index.len(), 1), |(i, _)| index[i] as f32)
            }
            Targets::Classes { index, classes } => {
                Array2::from_shape_fn((index.len(), *classes), |(i, k)| {
                    f32::from(u8::from(index[i] == k))
                })
            }
            Targets::Values(v) => {
                Array2::from_shape_fn((v.len(), 1), |(i, _)| ((v[i] - mean) / std) as f32)
            }
        }
    }

    /// Per-row weights that balance the classes, or `None`.
    fn balanced_weights(&self) -> Option<Array1<f32>> {
        let Targets::Classes { index, classes } = self else {
            return None;
        };
        let counts = self.class_counts();
        let n = index.len() as f32;
        Some(
            index
                .iter()
                .map(|&c| n / (*classes as f32 * counts[c].max(1) as f32))
                .collect(),
        )
    }
}

pub use crate::model::network::initial_network;

/// Fits a new network to `x` (`rows × inputs`, encoded) and `y`.
pub fn fit(x: ArrayView2<f32>, y: &Targets, params: &SgdParams) -> Result<Network, NetworkError> {
    fit_with_info(x, y, params).map(|(net, _)| net)
}

/// [`fit`], also saying how many epochs ran.
pub fn fit_with_info(
    x: ArrayView2<f32>,
    y: &Targets,
    params: &SgdParams,
) -> Result<(Network, FitInfo), NetworkError> {
    let mut rng = ChaCha8Rng::seed_from_u64(params.seed);
    let (output, outputs) = y.output();
    let net = initial_network(x.ncols(), &params.hidden, outputs, output, &mut rng)?;
    let scale = y.scale();
    let (net, info) = run(net, x, y, scale, params, None, &mut rng);
    Ok((fold_scale(net, y, scale), info))
}

/// Continues training `net` (in label units, as [`fit`] returns it) for at most
/// `params.epochs`, with early stopping; weights where `masks` hold 0 stay zero.
/// Only `learning_rate`, `l2`, `batch_size`, `epochs`, `patience`, `validation`,
/// `class_weight` and `seed` of `params` are used.
pub fn fine_tune(
    net: &Network,
    x: ArrayView2<f32>,
    y: &Targets,
    params: &SgdParams,
    masks: Option<&[Array2<f32>]>,
) -> Network {
    let mut rng = ChaCha8Rng::seed_from_u64(params.seed);
    let scale = y.scale();
    let mut start = net.clone();
    if let Targets::Values(_) = y {
        let (mean, std) = scale;
        let last = start.layers_mut().len() - 1;
        let l = &mut start.layers_mut()[last];
        l.weight.mapv_inplace(|w| w / std as f32);
        l.bias
            .mapv_inplace(|b| ((f64::from(b) - mean) / std) as f32);
    }
    let (tuned, _) = run(start, x, y, scale, params, masks, &mut rng);
    fold_scale(tuned, y, scale)
}

/// The training loop on standardised targets; returns the best network seen.
fn run(
    mut net: Network,
    x: ArrayView2<f32>,
    y: &Targets,
    scale: (f64, f64),
    params: &SgdParams,
    masks: Option<&[Array2<f32>]>,
    rng: &mut ChaCha8Rng,
) -> (Network, FitInfo) {
    let targets = y.matrix(scale);
    let weights = if params.class_weight {
        y.balanced_weights()
    } else {
        None
    };
    let mut order: Vec<usize> = (0..x.nrows()).collect();
    let held = if params.patience > 0 && x.nrows() >= MIN_ROWS_FOR_VALIDATION {
        order.shuffle(rng);
        ((x.nrows() as f64 * params.validation).round() as usize).clamp(1, x.nrows() / 2)
    } else {
        0
    };
    let (valid, train) = order.split_at(held);
    let (valid, mut train) = (valid.to_vec(), train.to_vec());
    let (xv, yv) = (x.select(Axis(0), &valid), targets.select(Axis(0), &valid));

    let mut adam = Adam::new(&net);
    let batch = params.batch_size.max(1);
    let mut best = (f64::INFINITY, net.clone(), 0);
    let mut epochs = 0;
    for epoch in 1..=params.epochs {
        epochs = epoch;
        train.shuffle(rng);
        for chunk in train.chunks(batch) {
            let xb = x.select(Axis(0), chunk);
            let yb = targets.select(Axis(0), chunk);
            let wb = weights.as_ref().map(|w| w.select(Axis(0), chunk));
            let grads = gradients(
                &net,
                xb.view(),
                yb.view(),
                wb.as_ref().map(|w| w.view()),
                params.l2,
            );
            adam.step(&mut net, &grads, params.learning_rate);
            if let Some(masks) = masks {
                for (layer, mask) in net.layers_mut().iter_mut().zip(masks) {
                    layer.weight *= mask;
                }
            }
        }
        if held > 0 {
            let l = loss(&net, xv.view(), yv.view());
            // A relative tolerance keeps noise from resetting the patience.
            if l < best.0 - 1e-4 * best.0.abs().min(1.0) || !best.0.is_finite() {
                best = (l, net.clone(), epoch);
            } else if epoch - best.2 >= params.patience {
                break;
            }
        }
    }
    if held > 0 {
        (
            best.1,
            FitInfo {
                epochs,
                best_epoch: best.2,
            },
        )
    } else {
        (
            net,
            FitInfo {
                epochs,
                best_epoch: epochs,
            },
        )
    }
}

/// Folds the label scale into the last layer (regression), so the network
/// outputs label units.
fn fold_scale(mut net: Network, y: &Targets, (mean, std): (f64, f64)) -> Network {
    if let Targets::Values(_) = y {
        let last = net.layers_mut().len() - 1;
        let l = &mut net.layers_mut()[last];
        l.weight.mapv_inplace(|w| w * std as f32);
        l.bias.mapv_inplace(|b| (f64::from(b) * std + mean) as f32);
    }
    net
}

/// Gradients of the mean (optionally row-weighted) loss over a batch, plus L2 on
/// weights, one per layer.
pub fn gradients(
    net: &Network,
    x: ArrayView2<f32>,
    y: ArrayView2<f32>,
    weights: Option<ArrayView1<f32>>,
    l2: f32,
) -> Vec<Dense> {
    let (z, acts) = net.forward_batch_trace(x);
    let mut p = z;
    for mut row in p.axis_iter_mut(Axis(0)) {
        if let Some(r) = row.as_slice_mut() {
            finish_one(net.output(), r);
        }
    }
    // For softmax/sigmoid with cross-entropy and identity with squared error / 2,
    // the gradient at the last pre-activation is (p - y).
    let mut dz = (p - y) / x.nrows().max(1) as f32;
    if let Some(w) = weights {
        for (mut row, w) in dz.axis_iter_mut(Axis(0)).zip(w) {
            row *= *w;
        }
    }
    let layers = net.layers();
    let mut grads = Vec::with_capacity(layers.len());
    for l in (0..layers.len()).rev() {
        let a = &acts[l];
        let dw = dz.t().dot(a) + &(&layers[l].weight * l2);
        let db = dz.sum_axis(Axis(0));
        if l > 0 {
            let mut da = dz.dot(&layers[l].weight);
            chain_through(net.activations()[l - 1], &mut da, a);
            dz = da;
        }
        grads.push(Dense {
            weight: dw,
            bias: db,
        });
    }
    grads.reverse();
    grads
}

/// Turns `da`, the gradient at a hidden layer's outputs `a`, into the gradient at
/// its pre-activations (see [`Activation::chain_in_place`]; ReLU zeroes where
/// `a ≤ 0`).
fn chain_through(activation: Activation, da: &mut Array2<f32>, a: &Array2<f32>) {
    if let (Some(d), Some(a)) = (da.as_slice_mut(), a.as_slice()) {
        activation.chain_in_place(d, a);
        return;
    }
    // Not reached for arrays `forward_batch_trace` and `dot` make (row-major).
    da.zip_mut_with(a, |d, a| {
        activation.chain_in_place(std::slice::from_mut(d), std::slice::from_ref(a));
    });
}

/// Adam's moment estimates.
struct Adam {
    m: Vec<Dense>,
    v: Vec<Dense>,
    t: i32,
}

impl Adam {
    const B1: f32 = 0.9;
    const B2: f32 = 0.999;
    const EPS: f32 = 1e-8;

    fn new(net: &Network) -> Adam {
        let zeros = || {
            net.layers()
                .iter()
                .map(|l| Dense {
                    weight: Array2::zeros(l.weight.raw_dim()),
                    bias: Array1::zeros(l.bias.len()),
                })
                .collect()
        };
        Adam {
            m: zeros(),
            v: zeros(),
            t: 0,
        }
    }

    fn step(&mut self, net: &mut Network, grads: &[Dense], lr: f32) {
        self.t += 1;
        let c1 = 1.0 - Self::B1.powi(self.t);
        let c2 = 1.0 - Self::B2.powi(self.t);
        for (i, layer) in net.layers_mut().iter_mut().enumerate() {
            let update = |p: &mut f32, g: f32, m: &mut f32, v: &mut f32| {
                *m = Self::B1 * *m + (1.0 - Self::B1) * g;
                *v = Self::B2 * *v + (1.0 - Self::B2) * g * g;
                *p -= lr * (*m / c1) / ((*v / c2).sqrt() + Self::EPS);
            };
            let (m, v) = (&mut self.m[i], &mut self.v[i]);
            ndarray::Zip::from(&mut layer.weight)
                .and(&grads[i].weight)
                .and(&mut m.weight)
                .and(&mut v.weight)
                .for_each(|p, &g, m, v| update(p, g, m, v));
            ndarray::Zip::from(&mut layer.bias)
                .and(&grads[i].bias)
                .and(&mut m.bias)
                .and(&mut v.bias)
                .for_each(|p, &g, m, v| update(p, g, m, v));
        }
    }
}

/// The mean loss over a data set (for tests and reports).
pub fn loss(net: &Network, x: ArrayView2<f32>, y: ArrayView2<f32>) -> f64 {
    let p = net.forward_batch(x);
    let n = x.nrows().max(1) as f64;
    let total: f64 = match net.output() {
        Output::Identity => p
            .iter()
            .zip(y.iter())
            .map(|(a, b)| 0.5 * f64::from(a - b).powi(2))
            .sum(),
        Output::Sigmoid => p
            .iter()
            .zip(y.iter())
            .map(|(a, b)| {
                let a = f64::from(*a).clamp(1e-12, 1.0 - 1e-12);
                -(f64::from(*b) * a.ln() + (1.0 - f64::from(*b)) * (1.0 - a).ln())
            })
            .sum(),
        Output::Softmax => p
            .iter()
            .zip(y.iter())
            .map(|(a, b)| -f64::from(*b) * f64::from(*a).max(1e-12).ln())
            .sum(),
    };
    total / n
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use ndarray::array;

    /// The objective `gradients` differentiates: the row-weighted mean loss plus
    /// `l2/2 · Σ w²` over weights (not biases), computed one row at a time.
    fn objective(net: &Network, x: &Array2<f32>, y: &Array2<f32>, w: &[f32], l2: f32) -> f64 {
        let n = x.nrows() as f64;
        let data: f64 = (0..x.nrows())
            .map(|i| {
                let (xi, yi) = (
                    x.slice(ndarray::s![i..=i, ..]),
                    y.slice(ndarray::s![i..=i, ..]),
                );
                f64::from(w[i]) * loss(net, xi, yi)
            })
            .sum::<f64>()
            / n;
        let penalty: f64 = net
            .layers()
            .iter()
            .flat_map(|l| l.weight.iter())
            .map(|v| f64::from(*v).powi(2))
            .sum();
        data + 0.5 * f64::from(l2) * penalty
    }

    /// Checks every weight and bias gradient of `net` against a central finite
    /// difference of [`objective`].
    fn check_gradients(net: &Network, x: &Array2<f32>, ym: &Array2<f32>, rows: &[f32], l2: f32) {
        let weights = Array1::from(rows.to_vec());
        let grads = gradients(net, x.view(), ym.view(), Some(weights.view()), l2);
        let h = 1e-3f32;
        let numeric = |change: &dyn Fn(&mut Network, f32)| {
            let (mut plus, mut minus) = (net.clone(), net.clone());
            change(&mut plus, h);
            change(&mut minus, -h);
            (objective(&plus, x, ym, rows, l2) - objective(&minus, x, ym, rows, l2))
                / (2.0 * f64::from(h))
        };
        let what = format!("{:?} {:?}", net.output(), net.activations());
        let mut checked = 0;
        let mut compare = |n: f64, analytic: f32, at: String| {
            let d = (n - f64::from(analytic)).abs();
            // The differences seen are at most 1.1e-4 (f32 arithmetic); the
            // smallest gradients of sigmoid layers are a few 1e-3, so a looser
            // bound could miss a wrong derivative there.
            assert!(d < 5e-4, "{what} {at}: {n} vs {analytic}");
            checked += 1;
        };
        for (l, grad) in grads.iter().enumerate() {
            for (idx, analytic) in grad.weight.indexed_iter() {
                let n = numeric(&|net: &mut Network, d| net.layers_mut()[l].weight[idx] += d);
                compare(n, *analytic, format!("layer {l} weight {idx:?}"));
            }
            for (j, analytic) in grad.bias.iter().enumerate() {
                let n = numeric(&|net: &mut Network, d| net.layers_mut()[l].bias[j] += d);
                compare(n, *analytic, format!("layer {l} bias {j}"));
            }
        }
        assert_eq!(checked, net.parameters());
    }

    /// Every weight and bias of a 2-4-3-k network, for each output type and each
    /// hidden activation (the same in both layers, and mixed), with row weights and
    /// an L2 penalty, against central finite differences.
    #[test]
    fn analytic_gradients_match_finite_differences() {
        let leaky = Activation::LeakyRelu { alpha: 0.1 };
        let (tanh, sigmoid) = (Activation::Tanh, Activation::Sigmoid);
        let hidden = [
            [Activation::Relu; 2],
            [tanh; 2],
            [leaky; 2],
            [sigmoid; 2],
            [tanh, leaky],
            [leaky, sigmoid],
            [sigmoid, tanh],
        ];
        for output in [
            Targets::Values(vec![0.3, -1.2, 2.0]),
            Targets::Classes {
                index: vec![0, 1, 1],
                classes: 2,
            },
            Targets::Classes {
                index: vec![0, 2, 1],
                classes: 3,
            },
        ] {
            let x = array![[0.5f32, -1.0], [1.5, 0.2], [-0.3, 0.8]];
            let rows = [1.0f32, 2.5, 0.5];
            let params = SgdParams {
                hidden: vec![4, 3],
                epochs: 0,
                ..SgdParams::default()
            };
            let relu = fit(x.view(), &output, &params).unwrap();
            let ym = output.matrix(output.scale());
            for activations in hidden {
                let net = Network::with_activations(
                    relu.layers().to_vec(),
                    activations.to_vec(),
                    relu.output(),
                )
                .unwrap();
                check_gradients(&net, &x, &ym, &rows, 0.05);
            }
        }
    }

    #[test]
    fn balanced_class_weights_match_scikit_learn() {
        // sklearn.utils.class_weight.compute_class_weight("balanced",
        //     classes=[0, 1, 2], y=[0]*6 + [1]*3 + [2]) = [0.5556, 1.1111, 3.3333]
        let mut index = vec![0; 6];
        index.extend([1, 1, 1, 2]);
        let t = Targets::Classes { index, classes: 3 };
        let w = t.balanced_weights().unwrap();
        for (got, want) in [(w[0], 10.0 / 18.0), (w[6], 10.0 / 9.0), (w[9], 10.0 / 3.0)] {
            assert!((got - want).abs() < 1e-6, "{got} vs {want}");
        }
    }

    #[test]
    fn fits_a_separable_problem_and_is_deterministic() {
        let x = Array2::from_shape_fn((40, 2), |(i, j)| ((i * 7 + j * 3) % 11) as f32 / 5.0 - 1.0);
        let index: Vec<usize> = x
            .rows()
            .into_iter()
            .map(|r| usize::from(r[0] + r[1] > 0.0))
            .collect();
        let y = Targets::Classes {
            index: index.clone(),
            classes: 2,
        };
        let params = SgdParams {
            hidden: vec![],
            epochs: 300,
            patience: 0,
            batch_size: 32,
            learning_rate: 0.01,
            ..SgdParams::default()
        };
        let net = fit(x.view(), &y, &params).unwrap();
        let p = net.forward_batch(x.view());
        let correct = p
            .iter()
            .zip(&index)
            .filter(|(p, c)| usize::from(**p >= 0.5) == **c)
            .count();
        assert_eq!(correct, 40);
        assert_eq!(fit(x.view(), &y, &params).unwrap(), net);
    }

    /// `n` rows of two inputs in [-1, 1] and the labels `100 + 3a - 2b`.
    pub(crate) fn linear_truth(n: usize) -> (Array2<f32>, Vec<f64>) {
        let x = Array2::from_shape_fn((n, 2), |(i, j)| ((i * 13 + j * 29) % 17) as f32 / 8.0 - 1.0);
        let v = x
            .rows()
            .into_iter()
            .map(|r| 100.0 + 3.0 * f64::from(r[0]) - 2.0 * f64::from(r[1]))
            .collect();
        (x, v)
    }

    #[test]
    fn regression_recovers_a_linear_truth_in_label_units() {
        let (x, v) = linear_truth(100);
        let params = SgdParams {
            hidden: vec![],
            epochs: 400,
            l2: 0.0,
            patience: 0,
            batch_size: 32,
            learning_rate: 0.01,
            ..SgdParams::default()
        };
        let net = fit(x.view(), &Targets::Values(v), &params).unwrap();
        let l = &net.layers()[0];
        assert!((l.weight[(0, 0)] - 3.0).abs() < 0.05, "{}", l.weight);
        assert!((l.weight[(0, 1)] + 2.0).abs() < 0.05, "{}", l.weight);
        assert!((l.bias[0] - 100.0).abs() < 0.05, "{}", l.bias);
    }
}
