//! The feed-forward network: dense layers with ReLU between them and a softmax,
//! sigmoid or identity output. Zero hidden layers is logistic / linear regression.
//!
//! Weights are stored `out × in` (one row per output unit), row-major, so the
//! single-row forward pass is a dot product per unit over contiguous memory and the
//! batch pass is one matrix product per layer. This module owns the f32 arithmetic
//! only; encoding lives in `schema`, persistence in `artifact`.

use ndarray::{Array1, Array2, ArrayView2, Axis};
use serde::{Deserialize, Serialize};

/// The function applied to the last layer's outputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Output {
    /// Class probabilities over two or more outputs.
    Softmax,
    /// The probability of the positive class, one output.
    Sigmoid,
    /// Regression: the raw value.
    Identity,
}

/// One dense layer: `y = W x + b`.
#[derive(Debug, Clone, PartialEq)]
pub struct Dense {
    /// `out × in`.
    pub weight: Array2<f32>,
    pub bias: Array1<f32>,
}

impl Dense {
    pub fn inputs(&self) -> usize {
        self.weight.ncols()
    }

    pub fn outputs(&self) -> usize {
        self.weight.nrows()
    }

    /// `out = W x + b` for one row.
    #[inline(always)]
    fn apply_one(&self, x: &[f32], out: &mut Vec<f32>) {
        out.clear();
        let w = self.weight.as_slice();
        let n = self.inputs();
        for (j, b) in self.bias.iter().enumerate() {
            let row = match w {
                Some(w) => &w[j * n..(j + 1) * n],
                None => unreachable_layout(),
            };
            out.push(dot(row, x) + b);
        }
    }
}

#[cold]
fn unreachable_layout() -> ! {
    // Layers are only built through `Network::new`, which makes weights standard
    // layout; reaching this is a bug in this module, not bad input.
    panic!("dense weights must be in standard (row-major) layout")
}

/// A dot product written so that the compiler vectorises it: `chunks_exact` removes
/// the bounds checks, and eight independent accumulators break the floating-point
/// dependency chain. Always inlined, so that a caller compiled for AVX2 (the
/// online learner's) gets it in 256-bit registers; the summation order is the
/// same at any vector width, so the result is too.
#[inline(always)]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [0.0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for k in 0..8 {
            acc[k] += x[k] * y[k];
        }
    }
    let mut sum: f32 = acc.iter().sum();
    for (x, y) in ra.iter().zip(rb) {
        sum += x * y;
    }
    sum
}

/// The index of the largest value (the first of equal ones); 0 for an empty slice.
pub fn argmax<'a>(values: impl IntoIterator<Item = &'a f32>) -> usize {
    values
        .into_iter()
        .enumerate()
        .fold((0, f32::NEG_INFINITY), |(b, bv), (i, v)| {
            if *v > bv || i == 0 {
                (i, *v)
            } else {
                (b, bv)
            }
        })
        .0
}

/// Why a set of layers is not a network.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum NetworkError {
    #[error("a network needs at least one layer")]
    NoLayers,
    #[error("layer {layer}: bias has {bias} entries but the weight has {rows} rows")]
    Bias {
        layer: usize,
        bias: usize,
        rows: usize,
    },
    #[error("layer {layer}: takes {inputs} inputs but the previous layer gives {previous}")]
    Chain {
        layer: usize,
        inputs: usize,
        previous: usize,
    },
    #[error("{output:?} output needs {want} units, the last layer has {got}")]
    OutputWidth {
        output: Output,
        want: &'static str,
        got: usize,
    },
}

/// A feed-forward network.
#[derive(Debug, Clone, PartialEq)]
pub struct Network {
    layers: Vec<Dense>,
    output: Output,
}

impl Network {
    /// Checks that the layers chain and that the output fits the last layer.
    pub fn new(layers: Vec<Dense>, output: Output) -> Result<Network, NetworkError> {
        let last = layers.last().ok_or(NetworkError::NoLayers)?;
        for (i, l) in layers.iter().enumerate() {
            if l.bias.len() != l.outputs() {
                return Err(NetworkError::Bias {
                    layer: i,
                    bias: l.bias.len(),
                    rows: l.outputs(),
                });
            }
            if i > 0 && l.inputs() != layers[i - 1].outputs() {
                return Err(NetworkError::Chain {
                    layer: i,
                    inputs: l.inputs(),
                    previous: layers[i - 1].outputs(),
                });
            }
        }
        let (ok, want) = match output {
            Output::Softmax => (last.outputs() >= 2, "2 or more"),
            Output::Sigmoid => (last.outputs() == 1, "exactly 1"),
            Output::Identity => (last.outputs() == 1, "exactly 1"),
        };
        if !ok {
            return Err(NetworkError::OutputWidth {
                output,
                want,
                got: last.outputs(),
            });
        }
        let layers = layers
            .into_iter()
            .map(|l| Dense {
                weight: l.weight.as_standard_layout().into_owned(),
                bias: l.bias,
            })
            .collect();
        Ok(Network { layers, output })
    }

    pub fn layers(&self) -> &[Dense] {
        &self.layers
    }

    /// Mutable access for trainers; shapes must not change.
    pub fn layers_mut(&mut self) -> &mut [Dense] {
        &mut self.layers
    }

    pub fn output(&self) -> Output {
        self.output
    }

    pub fn inputs(&self) -> usize {
        self.layers[0].inputs()
    }

    pub fn outputs(&self) -> usize {
        self.layers[self.layers.len() - 1].outputs()
    }

    /// Number of weights and biases.
    pub fn parameters(&self) -> usize {
        self.layers
            .iter()
            .map(|l| l.weight.len() + l.bias.len())
            .sum()
    }

    /// The forward pass for one row; `x` has [`Network::inputs`] entries.
    ///
    /// On x86-64 CPUs with AVX2 the pass is compiled for AVX2 (chosen at run
    /// time): the same operations in the same order in wider registers, so the
    /// result is bit-identical to the portable build's.
    pub fn forward_one(&self, x: &[f32]) -> Vec<f32> {
        #[cfg(target_arch = "x86_64")]
        if std::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU supports AVX2, checked on the line above.
            return unsafe { self.forward_one_avx2(x) };
        }
        self.forward_one_portable(x)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn forward_one_avx2(&self, x: &[f32]) -> Vec<f32> {
        self.forward_one_portable(x)
    }

    /// [`Self::forward_one`] for the build's baseline instruction set.
    #[inline(always)]
    pub fn forward_one_portable(&self, x: &[f32]) -> Vec<f32> {
        let mut a = x.to_vec();
        let mut z = Vec::with_capacity(self.layers.iter().map(Dense::outputs).max().unwrap_or(0));
        let hidden = self.layers.len() - 1;
        for (i, layer) in self.layers.iter().enumerate() {
            layer.apply_one(&a, &mut z);
            if i < hidden {
                z.iter_mut().for_each(|v| *v = v.max(0.0));
            }
            std::mem::swap(&mut a, &mut z);
        }
        finish_one(self.output, &mut a);
        a
    }

    /// The forward pass for a batch (`rows × inputs`), one matrix product per layer.
    pub fn forward_batch(&self, x: ArrayView2<f32>) -> Array2<f32> {
        let (pre, _) = self.forward_batch_trace(x);
        let mut out = pre;
        for mut row in out.axis_iter_mut(Axis(0)) {
            if let Some(r) = row.as_slice_mut() {
                finish_one(self.output, r);
            }
        }
        out
    }

    /// The batch pass keeping each layer's activations (input first, then the output
    /// of every hidden layer after ReLU); returns the last layer's pre-activation.
    /// Trainers use the activations for back-propagation.
    pub fn forward_batch_trace(&self, x: ArrayView2<f32>) -> (Array2<f32>, Vec<Array2<f32>>) {
        let mut acts = vec![x.to_owned()];
        let hidden = self.layers.len() - 1;
        for (i, layer) in self.layers.iter().enumerate() {
            let prev = &acts[acts.len() - 1];
            let mut z = prev.dot(&layer.weight.t());
            z += &layer.bias;
            if i < hidden {
                z.mapv_inplace(|v| v.max(0.0));
                acts.push(z);
            } else {
                return (z, acts);
            }
        }
        unreachable_layout()
    }
}

/// Applies the output function to one row of last-layer values in place.
pub fn finish_one(output: Output, z: &mut [f32]) {
    match output {
        Output::Identity => {}
        Output::Sigmoid => z.iter_mut().for_each(|v| *v = sigmoid(*v)),
        Output::Softmax => {
            let max = z.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let mut sum = 0.0;
            for v in z.iter_mut() {
                *v = (*v - max).exp();
                sum += *v;
            }
            z.iter_mut().for_each(|v| *v /= sum);
        }
    }
}

pub fn sigmoid(v: f32) -> f32 {
    1.0 / (1.0 + (-v).exp())
}

/// A network of the given widths with He-uniform weights and zero biases.
pub fn initial_network(
    inputs: usize,
    hidden: &[usize],
    outputs: usize,
    output: Output,
    rng: &mut impl rand::Rng,
) -> Result<Network, NetworkError> {
    let mut widths = vec![inputs];
    widths.extend(hidden.iter().copied());
    widths.push(outputs);
    let layers = widths
        .windows(2)
        .map(|w| {
            let bound = (6.0 / w[0].max(1) as f32).sqrt();
            Dense {
                weight: Array2::from_shape_simple_fn((w[1], w[0]), || rng.gen_range(-bound..bound)),
                bias: Array1::zeros(w[1]),
            }
        })
        .collect();
    Network::new(layers, output)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    fn net(output: Output) -> Network {
        let l1 = Dense {
            weight: array![[1.0, -1.0], [0.5, 2.0]],
            bias: array![0.0, -1.0],
        };
        let width = if output == Output::Softmax { 2 } else { 1 };
        let l2 = Dense {
            weight: Array2::from_shape_fn((width, 2), |(i, j)| (i + j) as f32 + 1.0),
            bias: Array1::from_elem(width, 0.5),
        };
        Network::new(vec![l1, l2], output).unwrap()
    }

    #[test]
    fn the_avx2_and_portable_passes_are_bit_identical() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
        let mut next = || rng.gen_range(-0.5f32..0.5);
        let layers = [(30, 67), (67, 64), (64, 3)]
            .iter()
            .map(|&(i, o)| Dense {
                weight: Array2::from_shape_simple_fn((o, i), &mut next),
                bias: Array1::from_shape_simple_fn(o, &mut next),
            })
            .collect();
        let n = Network::new(layers, Output::Softmax).unwrap();
        for _ in 0..50 {
            let x: Vec<f32> = (0..30).map(|_| next() * 4.0).collect();
            assert_eq!(n.forward_one(&x), n.forward_one_portable(&x));
        }
    }

    #[test]
    fn forward_one_matches_hand_computation() {
        // x = [2, 1]: hidden = relu([2 - 1, 1 + 2 - 1]) = [1, 2]; out = 1*1 + 2*2 + 0.5
        let n = net(Output::Identity);
        assert_eq!(n.forward_one(&[2.0, 1.0]), vec![5.5]);
        // x = [-1, 1]: hidden = relu([-2, 0.5]) = [0, 0.5]
        let p = n.forward_one(&[-1.0, 1.0])[0];
        assert_eq!(p, 2.0 * 0.5 + 0.5);
        let s = net(Output::Sigmoid).forward_one(&[2.0, 1.0])[0];
        assert!((s - 1.0 / (1.0 + (-5.5f32).exp())).abs() < 1e-7);
    }

    #[test]
    fn softmax_sums_to_one_and_batch_equals_rows() {
        let n = net(Output::Softmax);
        let x = array![[2.0, 1.0], [-1.0, 1.0], [0.3, -0.7]];
        let batch = n.forward_batch(x.view());
        for (i, row) in x.rows().into_iter().enumerate() {
            let one = n.forward_one(row.as_slice().unwrap());
            assert!((one.iter().sum::<f32>() - 1.0).abs() < 1e-6);
            for (a, b) in one.iter().zip(batch.row(i)) {
                assert!((a - b).abs() < 1e-6);
            }
        }
    }

    #[test]
    fn shapes_are_checked() {
        let l1 = Dense {
            weight: Array2::zeros((3, 2)),
            bias: Array1::zeros(3),
        };
        let l2 = Dense {
            weight: Array2::zeros((1, 4)),
            bias: Array1::zeros(1),
        };
        assert_eq!(
            Network::new(vec![l1.clone(), l2], Output::Identity).unwrap_err(),
            NetworkError::Chain {
                layer: 1,
                inputs: 4,
                previous: 3
            }
        );
        assert!(matches!(
            Network::new(vec![l1], Output::Sigmoid),
            Err(NetworkError::OutputWidth { .. })
        ));
    }

    #[test]
    fn dot_handles_tails() {
        let a: Vec<f32> = (0..19).map(|i| i as f32).collect();
        assert_eq!(dot(&a, &a), (0..19).map(|i| (i * i) as f32).sum::<f32>());
    }
}
