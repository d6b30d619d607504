//! The feed-forward network: dense layers with an activation after each hidden
//! layer (ReLU unless the network says otherwise: leaky ReLU, tanh or sigmoid, as
//! imported models need) and a softmax, sigmoid or identity output. Zero hidden
//! layers is logistic / linear regression.
//!
//! Weights are stored `out × in` (one row per output unit), row-major, so the
//! single-row forward pass is a dot product per unit over contiguous memory and the
//! batch pass is one matrix product per layer. This module owns the f32 arithmetic
//! only; encoding lives in `schema`, persistence in `artifact`.

use std::sync::OnceLock;

use ndarray::{Array1, Array2, ArrayView2, Axis};
use serde::{Deserialize, Serialize};

use super::packed::{PackedLayer, BLOCK};

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

/// The function applied to a hidden layer's outputs.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Activation {
    /// `max(z, 0)`.
    Relu,
    /// `z` above 0, `alpha·z` below; `alpha` is finite and above 0 in a
    /// [`Network`] (a 0 is [`Activation::Relu`]).
    LeakyRelu {
        alpha: f32,
    },
    Tanh,
    /// The logistic function `1 / (1 + e^-z)`.
    Sigmoid,
}

impl Activation {
    /// The function at `v`.
    #[inline(always)]
    pub fn apply(self, v: f32) -> f32 {
        match self {
            Activation::Relu => v.max(0.0),
            Activation::LeakyRelu { alpha } => {
                if v > 0.0 {
                    v
                } else {
                    alpha * v
                }
            }
            Activation::Tanh => v.tanh(),
            Activation::Sigmoid => sigmoid(v),
        }
    }

    /// The derivative expressed through the activation's output `a = f(z)`, which
    /// is what back-propagation keeps: ReLU 1 if `a > 0` else 0; leaky ReLU 1 if
    /// `a > 0` else `alpha` (with `alpha > 0`, `a` has the sign of `z`; at 0 the
    /// lower slope, as ReLU); tanh `1 − a²`; sigmoid `a (1 − a)`.
    #[inline(always)]
    pub fn derivative_at_output(self, a: f32) -> f32 {
        match self {
            Activation::Relu => f32::from(u8::from(a > 0.0)),
            Activation::LeakyRelu { alpha } => {
                if a > 0.0 {
                    1.0
                } else {
                    alpha
                }
            }
            Activation::Tanh => 1.0 - a * a,
            Activation::Sigmoid => a * (1.0 - a),
        }
    }

    /// The name cards and logs show: `relu`, `leaky_relu`, `tanh`, `sigmoid`.
    pub fn name(self) -> &'static str {
        match self {
            Activation::Relu => "relu",
            Activation::LeakyRelu { .. } => "leaky_relu",
            Activation::Tanh => "tanh",
            Activation::Sigmoid => "sigmoid",
        }
    }

    /// [`Self::apply`] to every value in place. The `match` is outside the loop:
    /// each arm is a plain loop over one known function (which the compiler can
    /// vectorise), and the formulas stay those of [`Self::apply`].
    #[inline(always)]
    pub fn apply_in_place(self, values: &mut [f32]) {
        let each = |f: Activation, values: &mut [f32]| {
            values.iter_mut().for_each(|v| *v = f.apply(*v));
        };
        match self {
            Activation::Relu => each(Activation::Relu, values),
            Activation::LeakyRelu { alpha } => each(Activation::LeakyRelu { alpha }, values),
            Activation::Tanh => each(Activation::Tanh, values),
            Activation::Sigmoid => each(Activation::Sigmoid, values),
        }
    }

    /// The chain rule through this activation in place: each gradient with
    /// respect to an output becomes the gradient with respect to its input,
    /// multiplied by [`Self::derivative_at_output`] of the matching entry of
    /// `outputs` (the `match` outside the loop, as in [`Self::apply_in_place`]).
    /// ReLU sets the gradient to 0 where the output is ≤ 0 and leaves it as it is
    /// elsewhere, as steward always has (no multiplication, so an infinite
    /// gradient stays infinite rather than becoming NaN).
    #[inline(always)]
    pub fn chain_in_place(self, grads: &mut [f32], outputs: &[f32]) {
        let each = |f: Activation, grads: &mut [f32]| {
            for (g, a) in grads.iter_mut().zip(outputs) {
                *g *= f.derivative_at_output(*a);
            }
        };
        match self {
            Activation::Relu => {
                for (g, a) in grads.iter_mut().zip(outputs) {
                    if *a <= 0.0 {
                        *g = 0.0;
                    }
                }
            }
            Activation::LeakyRelu { alpha } => each(Activation::LeakyRelu { alpha }, grads),
            Activation::Tanh => each(Activation::Tanh, grads),
            Activation::Sigmoid => each(Activation::Sigmoid, grads),
        }
    }
}

/// Checks that `activations` has one entry per hidden layer of a network of
/// `layers` layers, and that every leaky ReLU's alpha is finite and above 0: its
/// derivative is read from the sign of its output.
pub(crate) fn check_activations(
    layers: usize,
    activations: &[Activation],
) -> Result<(), NetworkError> {
    let want = layers.saturating_sub(1);
    if activations.len() != want {
        return Err(NetworkError::ActivationCount {
            layers,
            want,
            got: activations.len(),
        });
    }
    for (layer, a) in activations.iter().enumerate() {
        if let Activation::LeakyRelu { alpha } = *a {
            if !(alpha.is_finite() && alpha > 0.0) {
                return Err(NetworkError::LeakyAlpha { layer, alpha });
            }
        }
    }
    Ok(())
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
    // Layers are only built through `Network::with_activations`, which makes
    // weights standard layout; reaching this is a bug in this module, not bad input.
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
    #[error(
        "{layers} layers take {want} hidden-layer activations (one per layer but the last), {got} given"
    )]
    ActivationCount {
        layers: usize,
        want: usize,
        got: usize,
    },
    #[error(
        "hidden layer {layer}: leaky ReLU alpha {alpha} must be finite and above 0 (a ReLU is `relu`)"
    )]
    LeakyAlpha { layer: usize, alpha: f32 },
}

/// Which f32 kernel runs the one-row forward pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum F32Kernel {
    /// A dot product per output over the `out × in` rows, plain Rust (compiled
    /// for AVX2 where the CPU has it: the same bits in wider registers).
    Portable,
    /// The packed weights ([`super::packed`]), 256-bit fused multiply-add
    /// (x86-64 with AVX2 and FMA).
    Avx2Fma,
    /// The packed weights, 512-bit fused multiply-add (x86-64 with AVX-512 F).
    Avx512,
}

impl F32Kernel {
    /// Every kernel.
    pub const ALL: [F32Kernel; 3] = [F32Kernel::Portable, F32Kernel::Avx2Fma, F32Kernel::Avx512];

    /// The widest kernel this CPU runs.
    pub fn detect() -> F32Kernel {
        if F32Kernel::Avx512.supported() {
            F32Kernel::Avx512
        } else if F32Kernel::Avx2Fma.supported() {
            F32Kernel::Avx2Fma
        } else {
            F32Kernel::Portable
        }
    }

    /// Whether this CPU can run the kernel.
    pub fn supported(self) -> bool {
        match self {
            F32Kernel::Portable => true,
            #[cfg(target_arch = "x86_64")]
            F32Kernel::Avx2Fma => {
                std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma")
            }
            #[cfg(target_arch = "x86_64")]
            F32Kernel::Avx512 => {
                std::is_x86_feature_detected!("avx512f") && std::is_x86_feature_detected!("fma")
            }
            #[cfg(not(target_arch = "x86_64"))]
            _ => false,
        }
    }

    /// The kernel's name, as benches and `/metrics` write it.
    pub fn as_str(self) -> &'static str {
        match self {
            F32Kernel::Portable => "portable",
            F32Kernel::Avx2Fma => "avx2fma",
            F32Kernel::Avx512 => "avx512",
        }
    }
}

/// The packed form of a network's layers ([`super::packed`]), built on the first
/// one-row pass that needs it and dropped when the layers are handed out
/// mutably. It is derived from the layers, so it takes no part in equality.
#[derive(Clone, Default)]
struct Packing(OnceLock<Vec<Option<PackedLayer>>>);

impl PartialEq for Packing {
    fn eq(&self, _: &Packing) -> bool {
        true
    }
}

impl std::fmt::Debug for Packing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.get().is_some() {
            "Packing(built)"
        } else {
            "Packing(not built)"
        })
    }
}

/// A feed-forward network.
#[derive(Debug, Clone, PartialEq)]
pub struct Network {
    layers: Vec<Dense>,
    /// One per hidden layer (`layers.len() - 1`).
    activations: Vec<Activation>,
    output: Output,
    packing: Packing,
}

impl Network {
    /// Checks that the layers chain and that the output fits the last layer; every
    /// hidden layer is ReLU.
    pub fn new(layers: Vec<Dense>, output: Output) -> Result<Network, NetworkError> {
        let activations = vec![Activation::Relu; layers.len().saturating_sub(1)];
        Self::with_activations(layers, activations, output)
    }

    /// As [`Network::new`], with one activation per hidden layer
    /// (`layers.len() - 1` of them); a leaky ReLU's alpha must be finite and above 0.
    pub fn with_activations(
        layers: Vec<Dense>,
        activations: Vec<Activation>,
        output: Output,
    ) -> Result<Network, NetworkError> {
        let last = layers.last().ok_or(NetworkError::NoLayers)?;
        check_activations(layers.len(), &activations)?;
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
        Ok(Network {
            layers,
            activations,
            output,
            packing: Packing::default(),
        })
    }

    pub fn layers(&self) -> &[Dense] {
        &self.layers
    }

    /// The activation of each hidden layer.
    pub fn activations(&self) -> &[Activation] {
        &self.activations
    }

    /// Mutable access for trainers; shapes must not change. Drops the packed
    /// weights, which the next one-row pass builds again from the new ones.
    pub fn layers_mut(&mut self) -> &mut [Dense] {
        self.packing = Packing::default();
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

    /// The forward pass for one row; `x` has [`Network::inputs`] entries, with the
    /// fastest kernel this CPU has ([`F32Kernel::detect`]).
    pub fn forward_one(&self, x: &[f32]) -> Vec<f32> {
        self.forward_one_with(F32Kernel::detect(), x)
    }

    /// The forward pass for one row with a chosen kernel (a kernel the CPU lacks
    /// runs as the portable one). The packed kernels use fused multiply-add, so
    /// their outputs can differ from the portable pass's in the last bits.
    pub fn forward_one_with(&self, kernel: F32Kernel, x: &[f32]) -> Vec<f32> {
        match kernel {
            #[cfg(target_arch = "x86_64")]
            F32Kernel::Avx512 if kernel.supported() => {
                let packed = self.packed();
                // SAFETY: the CPU has AVX-512 F and FMA (checked on the match arm).
                unsafe { self.forward_packed_avx512(packed, x) }
            }
            #[cfg(target_arch = "x86_64")]
            F32Kernel::Avx2Fma if kernel.supported() => {
                let packed = self.packed();
                // SAFETY: the CPU has AVX2 and FMA (checked on the match arm).
                unsafe { self.forward_packed_avx2(packed, x) }
            }
            _ => self.forward_one_dot(x),
        }
    }

    /// The packed layers, built on first use.
    fn packed(&self) -> &[Option<PackedLayer>] {
        self.packing
            .0
            .get_or_init(|| self.layers.iter().map(PackedLayer::pack).collect())
    }

    /// The portable kernel: on x86-64 CPUs with AVX2 it is compiled for AVX2
    /// (chosen at run time): the same operations in the same order in wider
    /// registers, so the result is bit-identical to the baseline build's.
    fn forward_one_dot(&self, x: &[f32]) -> Vec<f32> {
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

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx2,fma")]
    unsafe fn forward_packed_avx512(&self, packed: &[Option<PackedLayer>], x: &[f32]) -> Vec<f32> {
        self.forward_packed_in(packed, x, |p, a, z| {
            // SAFETY: this function is compiled for, and only called on CPUs
            // with, AVX-512 F and FMA.
            unsafe { p.gemv_avx512(a, z) }
        })
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn forward_packed_avx2(&self, packed: &[Option<PackedLayer>], x: &[f32]) -> Vec<f32> {
        self.forward_packed_in(packed, x, |p, a, z| {
            // SAFETY: this function is compiled for, and only called on CPUs
            // with, AVX2 and FMA.
            unsafe { p.gemv_avx2(a, z) }
        })
    }

    /// The pass over packed layers, inlined into each instruction set's copy;
    /// `gemv` is the kernel's packed product. Layers too narrow to pack take the
    /// dot products.
    #[inline(always)]
    fn forward_packed_in(
        &self,
        packed: &[Option<PackedLayer>],
        x: &[f32],
        gemv: impl Fn(&PackedLayer, &[f32], &mut [f32]),
    ) -> Vec<f32> {
        let widest = self.layers.iter().map(Dense::outputs).max().unwrap_or(0);
        let mut a = Vec::with_capacity(widest.next_multiple_of(BLOCK).max(x.len()));
        a.extend_from_slice(x);
        let mut z = Vec::with_capacity(a.capacity());
        let hidden = self.layers.len() - 1;
        for (i, layer) in self.layers.iter().enumerate() {
            match packed.get(i) {
                Some(Some(p)) => {
                    z.clear();
                    z.resize(p.blocks() * BLOCK, 0.0);
                    gemv(p, &a, &mut z);
                    z.truncate(p.outputs);
                }
                _ => layer.apply_one(&a, &mut z),
            }
            if i < hidden {
                self.activations[i].apply_in_place(&mut z);
            }
            std::mem::swap(&mut a, &mut z);
        }
        finish_one(self.output, &mut a);
        a
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
                self.activations[i].apply_in_place(&mut z);
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
    /// of every hidden layer after its activation function); returns the last
    /// layer's pre-activation.
    /// Trainers use the activations for back-propagation.
    pub fn forward_batch_trace(&self, x: ArrayView2<f32>) -> (Array2<f32>, Vec<Array2<f32>>) {
        let mut acts = vec![x.to_owned()];
        let hidden = self.layers.len() - 1;
        for (i, layer) in self.layers.iter().enumerate() {
            let prev = &acts[acts.len() - 1];
            let mut z = prev.dot(&layer.weight.t());
            z += &layer.bias;
            if i < hidden {
                match z.as_slice_mut() {
                    Some(values) => self.activations[i].apply_in_place(values),
                    None => {
                        let f = self.activations[i];
                        z.mapv_inplace(|v| f.apply(v));
                    }
                }
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

    /// For every activation (and a mix of them), the portable kernel's AVX2 build
    /// gives the baseline build's bits.
    #[test]
    fn the_avx2_and_portable_passes_are_bit_identical() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
        let mut next = || rng.gen_range(-0.5f32..0.5);
        let layers: Vec<Dense> = [(30, 67), (67, 64), (64, 3)]
            .iter()
            .map(|&(i, o)| Dense {
                weight: Array2::from_shape_simple_fn((o, i), &mut next),
                bias: Array1::from_shape_simple_fn(o, &mut next),
            })
            .collect();
        let leaky = Activation::LeakyRelu { alpha: 0.01 };
        for activations in [
            [Activation::Relu; 2],
            [Activation::Tanh; 2],
            [leaky; 2],
            [Activation::Sigmoid; 2],
            [Activation::Tanh, leaky],
        ] {
            let n =
                Network::with_activations(layers.clone(), activations.to_vec(), Output::Softmax)
                    .unwrap();
            for _ in 0..50 {
                let x: Vec<f32> = (0..30).map(|_| next() * 4.0).collect();
                assert_eq!(
                    n.forward_one_with(F32Kernel::Portable, &x),
                    n.forward_one_portable(&x),
                    "{activations:?}"
                );
            }
        }
    }

    /// Every f32 kernel this CPU has against the portable pass, for every
    /// activation and output, on shapes with full and partial blocks of 16 and
    /// a layer too narrow to pack. The packed kernels sum in another order, with
    /// fused multiply-add, so the outputs are not bit-identical: they agree
    /// within 2e-6 of the output's magnitude (at least 1), a few units in the
    /// last place of f32 after three layers of up to 256 terms.
    #[test]
    fn the_f32_kernels_agree_with_the_portable_pass() {
        use rand::{Rng, SeedableRng};
        let kernels: Vec<F32Kernel> = F32Kernel::ALL
            .into_iter()
            .filter(|k| k.supported())
            .collect();
        eprintln!("f32 kernels on this CPU: {kernels:?}");
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(12);
        let leaky = Activation::LeakyRelu { alpha: 0.01 };
        for (widths, output) in [
            (&[30, 256, 256, 2][..], Output::Softmax),
            (&[30, 256, 256, 1][..], Output::Identity),
            (&[64, 64, 64][..], Output::Softmax),
            (&[7, 67, 9, 1][..], Output::Sigmoid),
            (&[5, 3][..], Output::Softmax),
            (&[300, 140, 20][..], Output::Softmax),
        ] {
            let relu = initial_network(
                widths[0],
                &widths[1..widths.len() - 1],
                widths[widths.len() - 1],
                output,
                &mut rng,
            )
            .unwrap();
            let mut layers = relu.layers().to_vec();
            for l in &mut layers {
                l.bias.mapv_inplace(|_| rng.gen_range(-0.5..0.5));
            }
            let hidden = widths.len() - 2;
            for f in [
                Activation::Relu,
                Activation::Tanh,
                leaky,
                Activation::Sigmoid,
            ] {
                let n = Network::with_activations(layers.clone(), vec![f; hidden], output).unwrap();
                for _ in 0..20 {
                    let x: Vec<f32> = (0..widths[0]).map(|_| rng.gen_range(-2.0..2.0)).collect();
                    let want = n.forward_one_portable(&x);
                    for &kernel in &kernels {
                        let got = n.forward_one_with(kernel, &x);
                        assert_eq!(got.len(), want.len());
                        for (a, b) in want.iter().zip(&got) {
                            assert!(
                                (a - b).abs() <= 2e-6 * a.abs().max(1.0),
                                "{kernel:?} {widths:?} {f:?}: {a} vs {b}"
                            );
                        }
                    }
                }
            }
        }
    }

    /// The packed weights follow the layers: changed through `layers_mut`, the
    /// next pass uses the new weights.
    #[test]
    fn the_packed_weights_follow_changes_to_the_layers() {
        let mut rng = <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(3);
        let mut n = initial_network(4, &[32], 2, Output::Softmax, &mut rng).unwrap();
        let x = [0.5, -1.0, 2.0, 0.25];
        let before = n.forward_one(&x);
        n.layers_mut()[0].weight.mapv_inplace(|w| -w);
        let after = n.forward_one(&x);
        assert_ne!(before, after);
        for (a, b) in after.iter().zip(n.forward_one_portable(&x)) {
            assert!((a - b).abs() <= 2e-6);
        }
        assert_eq!(n.clone(), n);
    }

    #[test]
    fn each_activation_and_its_derivative_by_the_output() {
        let leaky = Activation::LeakyRelu { alpha: 0.1 };
        let cases = [
            (Activation::Relu, "relu", [0.0, 0.0, 2.0]),
            (leaky, "leaky_relu", [-0.2, 0.0, 2.0]),
            (Activation::Tanh, "tanh", [(-2f32).tanh(), 0.0, 2f32.tanh()]),
            (
                Activation::Sigmoid,
                "sigmoid",
                [sigmoid(-2.0), 0.5, sigmoid(2.0)],
            ),
        ];
        for (f, name, want) in cases {
            assert_eq!(f.name(), name);
            let mut values = [-2.0f32, 0.0, 2.0];
            assert_eq!(values.map(|v| f.apply(v)), want, "{name}");
            f.apply_in_place(&mut values);
            assert_eq!(values, want, "{name}");
            // The derivative through the output equals a central difference of f.
            for z in [-1.3f32, -0.2, 0.4, 1.7] {
                let h = 1e-3;
                let numeric = (f.apply(z + h) - f.apply(z - h)) / (2.0 * h);
                let analytic = f.derivative_at_output(f.apply(z));
                assert!(
                    (numeric - analytic).abs() < 1e-3,
                    "{name} at {z}: {numeric} vs {analytic}"
                );
                let mut g = [3.0f32];
                f.chain_in_place(&mut g, &[f.apply(z)]);
                assert_eq!(g[0], 3.0 * analytic, "{name} at {z}");
            }
        }
        // At 0 both ReLUs take their lower slope.
        assert_eq!(Activation::Relu.derivative_at_output(0.0), 0.0);
        assert_eq!(leaky.derivative_at_output(0.0), 0.1);
    }

    #[test]
    fn activations_serialise_by_kind() {
        let all = vec![
            Activation::Relu,
            Activation::LeakyRelu { alpha: 0.01 },
            Activation::Tanh,
            Activation::Sigmoid,
        ];
        let json = serde_json::to_string(&all).unwrap();
        assert_eq!(
            json,
            r#"[{"kind":"relu"},{"kind":"leaky_relu","alpha":0.01},{"kind":"tanh"},{"kind":"sigmoid"}]"#
        );
        assert_eq!(serde_json::from_str::<Vec<Activation>>(&json).unwrap(), all);
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
    fn hidden_activations_are_applied_per_layer() {
        // x = [-1, 1]: pre-activations [-2, 0.5]; out = 1·h0 + 2·h1 + 0.5.
        let n = net(Output::Identity);
        let with = |f: Activation| {
            Network::with_activations(n.layers().to_vec(), vec![f], Output::Identity).unwrap()
        };
        let out = |f: Activation| with(f).forward_one(&[-1.0, 1.0])[0];
        assert_eq!(out(Activation::LeakyRelu { alpha: 0.1 }), -0.2 + 1.0 + 0.5);
        let t = out(Activation::Tanh);
        assert!((t - ((-2f32).tanh() + 2.0 * 0.5f32.tanh() + 0.5)).abs() < 1e-6);
        let s = out(Activation::Sigmoid);
        assert!((s - (sigmoid(-2.0) + 2.0 * sigmoid(0.5) + 0.5)).abs() < 1e-6);
        assert_eq!(with(Activation::Tanh).activations(), &[Activation::Tanh]);
        assert_eq!(n.activations(), &[Activation::Relu]);
    }

    #[test]
    fn softmax_sums_to_one_and_batch_equals_rows() {
        let x = array![[2.0, 1.0], [-1.0, 1.0], [0.3, -0.7]];
        let relu = net(Output::Softmax);
        for f in [
            Activation::Relu,
            Activation::LeakyRelu { alpha: 0.2 },
            Activation::Tanh,
            Activation::Sigmoid,
        ] {
            let n = Network::with_activations(relu.layers().to_vec(), vec![f], Output::Softmax)
                .unwrap();
            let batch = n.forward_batch(x.view());
            let (_, acts) = n.forward_batch_trace(x.view());
            for (i, row) in x.rows().into_iter().enumerate() {
                let one = n.forward_one(row.as_slice().unwrap());
                assert!((one.iter().sum::<f32>() - 1.0).abs() < 1e-6);
                for (a, b) in one.iter().zip(batch.row(i)) {
                    assert!((a - b).abs() < 1e-6, "{f:?}");
                }
                // The trace keeps the hidden layer's output after its activation.
                let l = &n.layers()[0];
                for (j, a) in acts[1].row(i).iter().enumerate() {
                    let z = dot(l.weight.row(j).as_slice().unwrap(), row.as_slice().unwrap())
                        + l.bias[j];
                    assert!((a - f.apply(z)).abs() < 1e-6, "{f:?}");
                }
            }
        }
    }

    #[test]
    fn activations_are_checked() {
        let layers = net(Output::Identity).layers().to_vec();
        assert_eq!(
            Network::with_activations(layers.clone(), vec![], Output::Identity).unwrap_err(),
            NetworkError::ActivationCount {
                layers: 2,
                want: 1,
                got: 0
            }
        );
        let err = Network::with_activations(
            layers.clone(),
            vec![Activation::Relu, Activation::Tanh],
            Output::Identity,
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "2 layers take 1 hidden-layer activations (one per layer but the last), 2 given"
        );
        for alpha in [0.0, -0.01, f32::NAN, f32::INFINITY] {
            let err = Network::with_activations(
                layers.clone(),
                vec![Activation::LeakyRelu { alpha }],
                Output::Identity,
            )
            .unwrap_err();
            assert!(
                matches!(err, NetworkError::LeakyAlpha { layer: 0, .. }),
                "{alpha}: {err}"
            );
        }
        assert_eq!(
            Network::with_activations(vec![], vec![], Output::Identity).unwrap_err(),
            NetworkError::NoLayers
        );
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
