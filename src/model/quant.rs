//! int8 inference: a network's weights quantized per output channel, and the
//! integer kernels that run it.
//!
//! **Weights** (the project's method): each output row `w` is shifted by its mean
//! `m`, scaled to [-1, 1] by its largest deviation `d`, and rounded to
//! `q = round((w − m) / d × 127)`, so `w ≈ s·q + m` with `s = d / 127`. The scale `s`
//! and the zero point `m` (a float) are stored per row.
//!
//! **Activations** are quantized per row of input ("dynamic"): the range
//! `[min(x, 0), max(x, 0)]` is mapped onto 0..=127 with a zero point `z`, so
//! `x ≈ sx·(u − z)`. Seven bits, not eight, because AVX2's `maddubs` adds two u8×i8
//! products into an i16, and 2·127·127 = 32,258 cannot saturate where 2·255·127 can:
//! the sums are exact, so the AVX2 kernel and the portable one agree to the bit.
//!
//! **A layer** is then `y_j = sx·(s_j·(Σ q_ji·u_i − z·Σ q_ji) + m_j·(Σ u_i − n·z)) + b_j`:
//! i32 accumulation, requantised to f32 at the layer boundary, the hidden layer's
//! activation (the f32 network's: ReLU, leaky ReLU, tanh or sigmoid) in f32, and the
//! next layer quantizes its input again.

use ndarray::{Array2, ArrayView2};
use serde::{Deserialize, Serialize};

use super::network::{check_activations, finish_one, Activation, Network, Output};

/// The largest quantized activation (7 bits; see the module documentation).
pub const ACT_MAX: f32 = 127.0;
/// The largest quantized weight magnitude.
pub const WEIGHT_MAX: f32 = 127.0;
/// Rows are padded to a multiple of this many inputs (one AVX2 register of u8).
pub const LANES: usize = 32;

/// One layer's int8 weights and what it takes to turn their sums into f32.
#[derive(Debug, Clone, PartialEq)]
pub struct QuantLayer {
    pub inputs: usize,
    pub outputs: usize,
    /// `outputs × padded` row-major, zero in the padding.
    pub weight: Vec<i8>,
    /// Per-row scale `s`.
    pub scale: Vec<f32>,
    /// Per-row zero point `m` (the row's mean weight).
    pub zero: Vec<f32>,
    pub bias: Vec<f32>,
    /// Per-row `Σ q` (cached; derived from `weight`).
    row_sum: Vec<i32>,
    /// The weights again in the SIMD kernels' layout (derived from `weight`;
    /// `None` for a layer narrower than [`PACKED_MIN_OUTPUTS`]).
    packed: Option<PackedI8>,
    /// `scale`, `zero`, `bias` and `row_sum` again, zero-padded to a multiple
    /// of [`BLOCK`] outputs, for the AVX-512 requantization.
    padded_parts: PaddedParts,
}

/// Per-output parts padded with zeros to whole blocks (a padding output
/// requantizes to 0).
#[derive(Debug, Clone, PartialEq)]
struct PaddedParts {
    scale: Vec<f32>,
    zero: Vec<f32>,
    bias: Vec<f32>,
    row_sum: Vec<i32>,
}

/// Outputs of a packed block: sixteen i32 sums, one AVX-512 register.
pub const BLOCK: usize = 16;
/// Layers with fewer outputs keep the row-major kernels: a block of 16 would
/// mostly multiply padding.
pub const PACKED_MIN_OUTPUTS: usize = 8;

/// Blocks a kernel step runs together (see [`PackedI8::at`]).
pub const CHUNK: usize = 8;

/// 64 weights on a 64-byte boundary: four consecutive inputs of each of a
/// block's 16 outputs (`[k·4 + t]` = output `k`, input `t`).
#[derive(Debug, Clone, Copy, PartialEq)]
#[repr(C, align(64))]
pub struct I8Block(pub [i8; 4 * BLOCK]);

/// A layer's int8 weights for the one-row SIMD kernels. Row-major weights make
/// every output a dot product ending in a sum across the register's lanes;
/// packed, a step broadcasts four inputs and `vpdpbusd` (or AVX2's
/// `vpmaddubsw` + `vpmaddwd`) adds their products into sixteen outputs, one per
/// i32 lane, so there are no reductions and the sums come out in output order.
/// The integer sums are exact either way, so the results are the same bits.
#[derive(Debug, Clone, PartialEq)]
pub struct PackedI8 {
    /// Groups of four inputs (the padded width / 4).
    groups: usize,
    /// `blocks × groups`: entry [`PackedI8::at`]`(b, g)` holds inputs
    /// `4g .. 4g + 4` of outputs `16b .. 16b + 16` (zero past the layer's
    /// outputs).
    weight: Vec<I8Block>,
}

impl PackedI8 {
    /// The packed form of `outputs` rows of `p` padded weights (`p` a multiple
    /// of 4), or `None` when there are fewer than [`PACKED_MIN_OUTPUTS`] rows.
    fn pack(weight: &[i8], outputs: usize, p: usize) -> Option<PackedI8> {
        if outputs < PACKED_MIN_OUTPUTS || !p.is_multiple_of(4) || weight.len() != outputs * p {
            return None;
        }
        let (groups, blocks) = (p / 4, outputs.div_ceil(BLOCK));
        let mut packed = vec![I8Block([0; 4 * BLOCK]); blocks * groups];
        for (j, row) in weight.chunks_exact(p).enumerate() {
            for (i, &q) in row.iter().enumerate() {
                packed[Self::at(blocks, groups, j / BLOCK, i / 4)].0[(j % BLOCK) * 4 + i % 4] = q;
            }
        }
        Some(PackedI8 {
            groups,
            weight: packed,
        })
    }

    /// Where block `b`'s inputs `4g .. 4g + 4` are: blocks go in chunks of
    /// [`CHUNK`] (fewer in the last), and within a chunk group `g` of every
    /// block comes before group `g + 1`, so a kernel that runs a chunk reads
    /// its weights as one sequential stream (`CHUNK` × 64 bytes a step),
    /// which the prefetchers follow, rather than `CHUNK` streams.
    fn at(blocks: usize, groups: usize, b: usize, g: usize) -> usize {
        let start = b / CHUNK * CHUNK;
        let width = (blocks - start).min(CHUNK);
        start * groups + g * width + (b - start)
    }

    fn blocks(&self) -> usize {
        self.weight.len() / self.groups.max(1)
    }

    /// Whether the kernels' reads and writes stay inside the slices.
    fn fits(&self, u: &[u8], out: &[i32]) -> bool {
        self.groups > 0 && u.len() >= 4 * self.groups && out.len() >= BLOCK * self.blocks()
    }
}

impl QuantLayer {
    /// `inputs` rounded up to [`LANES`].
    pub fn padded(&self) -> usize {
        padded(self.inputs)
    }

    /// Builds a layer from stored parts, checking their lengths.
    pub fn from_parts(
        inputs: usize,
        outputs: usize,
        weight: Vec<i8>,
        scale: Vec<f32>,
        zero: Vec<f32>,
        bias: Vec<f32>,
    ) -> Result<QuantLayer, String> {
        let p = padded(inputs);
        if weight.len() != outputs * inputs {
            return Err(format!(
                "{} int8 weights for a {outputs}×{inputs} layer",
                weight.len()
            ));
        }
        for (what, len) in [
            ("scales", scale.len()),
            ("zero points", zero.len()),
            ("biases", bias.len()),
        ] {
            if len != outputs {
                return Err(format!("{len} {what} for {outputs} outputs"));
            }
        }
        let mut padded_weight = vec![0i8; outputs * p];
        for (dst, src) in padded_weight
            .chunks_exact_mut(p)
            .zip(weight.chunks_exact(inputs.max(1)))
        {
            dst[..inputs].copy_from_slice(&src[..inputs]);
        }
        let row_sum: Vec<i32> = padded_weight
            .chunks_exact(p.max(1))
            .map(|r| r.iter().map(|&q| i32::from(q)).sum())
            .collect();
        let packed = PackedI8::pack(&padded_weight, outputs, p);
        let whole = outputs.next_multiple_of(BLOCK);
        let pad = |v: &[f32]| {
            let mut v = v.to_vec();
            v.resize(whole, 0.0);
            v
        };
        let mut padded_sums: Vec<i32> = row_sum.clone();
        padded_sums.resize(whole, 0);
        let padded_parts = PaddedParts {
            scale: pad(&scale),
            zero: pad(&zero),
            bias: pad(&bias),
            row_sum: padded_sums,
        };
        Ok(QuantLayer {
            inputs,
            outputs,
            weight: padded_weight,
            scale,
            zero,
            bias,
            row_sum,
            packed,
            padded_parts,
        })
    }

    /// The unpadded `outputs × inputs` weights, as stored in an artifact.
    pub fn unpadded_weight(&self) -> Vec<i8> {
        let p = self.padded();
        self.weight
            .chunks_exact(p.max(1))
            .flat_map(|r| r[..self.inputs].iter().copied())
            .collect()
    }

    /// The f32 weights these int8 ones stand for (`s·q + m`).
    pub fn dequantized(&self) -> Array2<f32> {
        let p = self.padded();
        Array2::from_shape_fn((self.outputs, self.inputs), |(j, i)| {
            self.scale[j] * f32::from(self.weight[j * p + i]) + self.zero[j]
        })
    }

    /// Bytes this layer takes when serving: int8 weights plus f32 scale, zero
    /// point and bias per output.
    pub fn serving_bytes(&self) -> usize {
        self.inputs * self.outputs + 12 * self.outputs
    }
}

fn padded(n: usize) -> usize {
    n.div_ceil(LANES) * LANES
}

/// A network with int8 layers.
#[derive(Debug, Clone, PartialEq)]
pub struct QuantNetwork {
    layers: Vec<QuantLayer>,
    /// One per hidden layer, as in the f32 network.
    activations: Vec<Activation>,
    output: Output,
    /// Static activation ranges per layer input, when calibrated; `None` quantizes
    /// each row with its own range (dynamic, what steward serves).
    ranges: Option<Vec<(f32, f32)>>,
}

/// Scratch space for one forward pass, so that serving allocates nothing per row.
#[derive(Debug, Default)]
pub struct Scratch {
    act: Vec<f32>,
    next: Vec<f32>,
    u: Vec<u8>,
    acc: Vec<i32>,
}

impl QuantNetwork {
    /// Quantizes every layer of `net`; the activations are `net`'s.
    pub fn quantize(net: &Network) -> QuantNetwork {
        let layers = net
            .layers()
            .iter()
            .map(|l| {
                let (outputs, inputs) = l.weight.dim();
                let mut weight = Vec::with_capacity(outputs * inputs);
                let mut scale = Vec::with_capacity(outputs);
                let mut zero = Vec::with_capacity(outputs);
                for row in l.weight.rows() {
                    let m = row.sum() / inputs.max(1) as f32;
                    let d = row.iter().fold(0.0f32, |a, w| a.max((w - m).abs()));
                    let s = if d > 0.0 { d / WEIGHT_MAX } else { 1.0 };
                    weight.extend(
                        row.iter()
                            .map(|w| ((w - m) / s).round().clamp(-WEIGHT_MAX, WEIGHT_MAX) as i8),
                    );
                    scale.push(s);
                    zero.push(m);
                }
                let bias = l.bias.to_vec();
                // Lengths agree by construction.
                QuantLayer::from_parts(inputs, outputs, weight, scale, zero, bias)
                    .unwrap_or_else(|_| unreachable_lengths())
            })
            .collect();
        QuantNetwork {
            layers,
            activations: net.activations().to_vec(),
            output: net.output(),
            ranges: None,
        }
    }

    /// The int8 form of `net` with static activation ranges: each layer's input
    /// range is calibrated as the min and max (with 0) over the f32 activations of
    /// `rows`. Kept to measure against the dynamic form (docs/BENCHMARKS.md);
    /// artifacts store and serve the dynamic form.
    pub fn quantize_static(net: &Network, rows: ArrayView2<f32>) -> QuantNetwork {
        let mut q = Self::quantize(net);
        let (_, acts) = net.forward_batch_trace(rows);
        q.ranges = Some(
            acts.iter()
                .map(|a| {
                    a.iter()
                        .fold((0.0f32, 0.0f32), |(lo, hi), v| (lo.min(*v), hi.max(*v)))
                })
                .collect(),
        );
        q
    }

    /// A network from stored layers and one activation per hidden layer; checks
    /// that consecutive widths chain and the activations as
    /// [`Network::with_activations`] does.
    pub fn from_layers(
        layers: Vec<QuantLayer>,
        activations: Vec<Activation>,
        output: Output,
    ) -> Result<QuantNetwork, String> {
        if layers.is_empty() {
            return Err("no layers".into());
        }
        check_activations(layers.len(), &activations).map_err(|e| e.to_string())?;
        for (i, w) in layers.windows(2).enumerate() {
            if w[0].outputs != w[1].inputs {
                return Err(format!(
                    "layer {i} has {} outputs but layer {} takes {} inputs",
                    w[0].outputs,
                    i + 1,
                    w[1].inputs
                ));
            }
        }
        Ok(QuantNetwork {
            layers,
            activations,
            output,
            ranges: None,
        })
    }

    pub fn layers(&self) -> &[QuantLayer] {
        &self.layers
    }

    /// The activation of each hidden layer.
    pub fn activations(&self) -> &[Activation] {
        &self.activations
    }

    pub fn output(&self) -> Output {
        self.output
    }

    pub fn inputs(&self) -> usize {
        self.layers.first().map_or(0, |l| l.inputs)
    }

    pub fn outputs(&self) -> usize {
        self.layers.last().map_or(0, |l| l.outputs)
    }

    /// Bytes of the serving weights (see [`QuantLayer::serving_bytes`]).
    pub fn serving_bytes(&self) -> usize {
        self.layers.iter().map(QuantLayer::serving_bytes).sum()
    }

    /// The f32 network the int8 weights stand for, with the same activations.
    pub fn dequantized(&self) -> Result<Network, super::network::NetworkError> {
        let layers = self
            .layers
            .iter()
            .map(|l| super::network::Dense {
                weight: l.dequantized(),
                bias: ndarray::Array1::from(l.bias.clone()),
            })
            .collect();
        Network::with_activations(layers, self.activations.clone(), self.output)
    }

    /// The outputs (probabilities or values) for one encoded row.
    pub fn forward_one(&self, x: &[f32], scratch: &mut Scratch) -> Vec<f32> {
        let kernel = Kernel::detect();
        self.forward_with(kernel, x, scratch)
    }

    /// [`Self::forward_one`] for every row.
    pub fn forward_batch(&self, x: ArrayView2<f32>) -> Array2<f32> {
        let kernel = Kernel::detect();
        let mut scratch = Scratch::default();
        let mut out = Array2::zeros((x.nrows(), self.outputs()));
        let mut row = Vec::with_capacity(x.ncols());
        for (r, mut o) in x.rows().into_iter().zip(out.rows_mut()) {
            row.clear();
            row.extend(r.iter().copied());
            let y = self.forward_with(kernel, &row, &mut scratch);
            o.iter_mut().zip(y).for_each(|(d, v)| *d = v);
        }
        out
    }

    /// The forward pass with a chosen kernel (tests compare the kernels).
    pub fn forward_with(&self, kernel: Kernel, x: &[f32], s: &mut Scratch) -> Vec<f32> {
        match kernel {
            // The element-wise steps around the integer kernel (the input's
            // range, its quantization, the requantization) are compiled again
            // for the kernel's instruction set, where they vectorise; the
            // arithmetic is the same, so the results are the same bits.
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2 if kernel.supported() => {
                // SAFETY: AVX2 is present (checked on the match arm).
                unsafe { self.forward_avx2(x, s) }
            }
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512Vnni if kernel.supported() => {
                // SAFETY: AVX-512 F/BW/VL and VNNI are present (checked on the
                // match arm).
                unsafe { self.forward_avx512(x, s) }
            }
            _ => self.forward_in(Kernel::Portable, x, s),
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn forward_avx2(&self, x: &[f32], s: &mut Scratch) -> Vec<f32> {
        self.forward_in(Kernel::Avx2, x, s)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,avx512f,avx512bw,avx512vl,avx512vnni")]
    unsafe fn forward_avx512(&self, x: &[f32], s: &mut Scratch) -> Vec<f32> {
        self.forward_in(Kernel::Avx512Vnni, x, s)
    }

    /// The pass itself, inlined into each instruction set's copy. The
    /// element-wise steps are plain indexed loops over slices of one length, so
    /// that they vectorise in each copy.
    #[inline(always)]
    fn forward_in(&self, kernel: Kernel, x: &[f32], s: &mut Scratch) -> Vec<f32> {
        s.act.clear();
        s.act.extend_from_slice(x);
        let last = self.layers.len() - 1;
        // The largest output of the previous layer when its requantization
        // found it (ReLU outputs are ≥ 0, so their range is [0, that]).
        #[cfg_attr(not(target_arch = "x86_64"), allow(unused_mut))]
        let mut known_hi = None;
        for (l, layer) in self.layers.iter().enumerate() {
            let (n, p, m) = (layer.inputs, layer.padded(), layer.outputs);
            // Quantize the input row: [lo, hi] ∋ 0 onto 0..=ACT_MAX.
            let (lo, hi) = match (&self.ranges, known_hi.take()) {
                (Some(r), _) => r[l],
                (None, Some(hi)) => (0.0, hi),
                (None, None) => range(&s.act[..n]),
            };
            let sx = if hi > lo { (hi - lo) / ACT_MAX } else { 1.0 };
            let inv = 1.0 / sx;
            // Values are ≥ 0 once shifted by z, so adding ½ and truncating rounds
            // them (f32::round is a library call on CPUs without SSE4.1).
            let z = ((-lo * inv + 0.5) as i32).clamp(0, ACT_MAX as i32) as f32;
            let shift_half = z + 0.5;
            s.u.clear();
            s.u.resize(p, z as u8);
            let sum_u = quantize_row(kernel, &s.act[..n], inv, shift_half, &mut s.u[..n]);
            let zi = z as i32;
            let shift = (sum_u - n as i32 * zi) as f32;
            // A ReLU layer with VNNI: the packed sums requantized in registers
            // as each group of blocks ends (no pass over stored sums), which
            // also finds the next layer's range.
            #[cfg(target_arch = "x86_64")]
            if kernel == Kernel::Avx512Vnni
                && l < last
                && self.activations[l] == Activation::Relu
                && kernel.supported()
            {
                if let Some(packed) = &layer.packed {
                    let parts = &layer.padded_parts;
                    // Every value is written before it is read: no clear.
                    s.next.resize(parts.scale.len(), 0.0);
                    let c = Requant { zi, sx, shift };
                    // SAFETY: the CPU has AVX-512 F/BW/VL and VNNI
                    // (`kernel.supported()` above); the slices' lengths are
                    // checked inside.
                    let hi = unsafe { packed_relu_vnni(packed, &s.u, parts, c, &mut s.next) };
                    if let Some(hi) = hi {
                        s.next.truncate(m);
                        known_hi = Some(hi);
                        std::mem::swap(&mut s.act, &mut s.next);
                        continue;
                    }
                }
            }
            // The kernels write every sum and the loop below every output, so
            // neither buffer is cleared first (that was a memset of each per
            // layer).
            match &layer.packed {
                Some(packed) if kernel != Kernel::Portable => {
                    s.acc.resize(packed.blocks() * BLOCK, 0);
                    kernel.gemv_packed(packed, &s.u, &mut s.acc);
                }
                _ => {
                    s.acc.resize(m, 0);
                    kernel.gemv(&layer.weight, p, &s.u, &mut s.acc);
                }
            }
            s.next.resize(m, 0.0);
            let (y, acc, row_sum) = (&mut s.next[..m], &s.acc[..m], &layer.row_sum[..m]);
            let (scale, zero, bias) = (&layer.scale[..m], &layer.zero[..m], &layer.bias[..m]);
            for j in 0..m {
                let dot = (acc[j] - zi * row_sum[j]) as f32;
                y[j] = sx * (scale[j] * dot + zero[j] * shift) + bias[j];
            }
            if l < last {
                self.activations[l].apply_in_place(&mut s.next);
            }
            std::mem::swap(&mut s.act, &mut s.next);
        }
        let mut out = s.act.clone();
        finish_one(self.output, &mut out);
        out
    }
}

/// `(min(x, 0), max(x, 0))`, NaN ignored. Sixteen running minima and maxima,
/// not one: `f32::min` is not associative when NaN is involved, so a single
/// chain cannot be reordered into vector lanes and runs one compare at a time;
/// independent lanes vectorise, and the result is the same (the order of
/// minima does not change their value).
#[inline(always)]
fn range(x: &[f32]) -> (f32, f32) {
    const W: usize = 16;
    let (mut lo, mut hi) = ([0.0f32; W], [0.0f32; W]);
    let mut chunks = x.chunks_exact(W);
    for c in &mut chunks {
        for k in 0..W {
            lo[k] = lo[k].min(c[k]);
            hi[k] = hi[k].max(c[k]);
        }
    }
    for &v in chunks.remainder() {
        lo[0] = lo[0].min(v);
        hi[0] = hi[0].max(v);
    }
    (
        lo.iter().fold(0.0f32, |a, &b| a.min(b)),
        hi.iter().fold(0.0f32, |a, &b| a.max(b)),
    )
}

#[cold]
fn unreachable_lengths() -> ! {
    panic!("quantize builds every part with the layer's own lengths")
}

/// Which integer kernel runs the sums.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kernel {
    /// Plain Rust; any CPU.
    Portable,
    /// `vpmaddubsw` / `vpmaddwd` on 32 inputs at a time (x86-64 with AVX2).
    Avx2,
    /// `vpdpbusd` on 64 inputs at a time (x86-64 with AVX-512 F, BW, VL and
    /// VNNI): one instruction multiplies and adds four u8×i8 products into each
    /// i32 lane, where AVX2 takes two and a widening step.
    Avx512Vnni,
}

impl Kernel {
    /// Every kernel.
    pub const ALL: [Kernel; 3] = [Kernel::Portable, Kernel::Avx2, Kernel::Avx512Vnni];

    /// The kernel the daemon serves with: the widest the CPU has. With the
    /// packed layout and the element-wise steps vectorised, VNNI measured 2.0 µs
    /// against 3.1 µs for AVX2 on 30-256-256-2 at batch 1
    /// (`cargo bench --bench compression`, docs/BENCHMARKS.md).
    pub fn detect() -> Kernel {
        if Kernel::Avx512Vnni.supported() {
            Kernel::Avx512Vnni
        } else if Kernel::Avx2.supported() {
            Kernel::Avx2
        } else {
            Kernel::Portable
        }
    }

    /// Whether this CPU can run the kernel.
    pub fn supported(self) -> bool {
        match self {
            Kernel::Portable => true,
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2 => std::is_x86_feature_detected!("avx2"),
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512Vnni => {
                std::is_x86_feature_detected!("avx512f")
                    && std::is_x86_feature_detected!("avx512bw")
                    && std::is_x86_feature_detected!("avx512vl")
                    && std::is_x86_feature_detected!("avx512vnni")
            }
            #[cfg(not(target_arch = "x86_64"))]
            _ => false,
        }
    }

    /// The kernel's name, as `/metrics` writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Kernel::Portable => "portable",
            Kernel::Avx2 => "avx2",
            Kernel::Avx512Vnni => "avx512vnni",
        }
    }

    /// `out[j] = Σ_i w[j·p + i] · u[i]` for every row `j`, `p` = the padded width.
    pub fn gemv(self, w: &[i8], p: usize, u: &[u8], out: &mut [i32]) {
        match self {
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2 if self.supported() => {
                if check_gemv(w, p, u, out) {
                    // SAFETY: AVX2 is present (checked on the match arm); `gemv_avx2`
                    // reads `w[j·p .. j·p + p]` and `u[..p]`, which `check_gemv`
                    // guarantees.
                    unsafe { gemv_avx2(w, p, u, out) }
                } else {
                    // Never for a layer built by `QuantLayer`; the portable kernel
                    // answers, or panics naming the shapes, rather than leaving
                    // `out` as it was.
                    gemv_portable(w, p, u, out)
                }
            }
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512Vnni if self.supported() && check_gemv(w, p, u, out) => {
                // SAFETY: the CPU has AVX-512 F/BW/VL and VNNI (checked on the
                // match arm), and `check_gemv` guarantees `gemv_vnni`'s reads.
                unsafe { gemv_vnni(w, p, u, out) }
            }
            _ => gemv_portable(w, p, u, out),
        }
    }
}

impl Kernel {
    /// `out[j] = Σ_i w_ji · u[i]` for every output `j` of a packed layer, and 0
    /// for the padding outputs up to `16·blocks`. The same sums as
    /// [`Kernel::gemv`] over the row-major weights.
    pub fn gemv_packed(self, w: &PackedI8, u: &[u8], out: &mut [i32]) {
        match self {
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512Vnni if self.supported() && w.fits(u, out) => {
                // SAFETY: the CPU has AVX-512 F/BW/VL and VNNI (checked on the
                // match arm), and `fits` guarantees `packed_vnni`'s reads and
                // writes.
                unsafe { packed_vnni(w, u, out) }
            }
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2 if self.supported() && w.fits(u, out) => {
                // SAFETY: the CPU has AVX2 (checked on the match arm), and `fits`
                // guarantees `packed_avx2`'s reads and writes.
                unsafe { packed_avx2(w, u, out) }
            }
            _ => packed_portable(w, u, out),
        }
    }
}

/// What turns a layer's integer sums into f32: the input's zero point `zi`,
/// its scale `sx`, and `shift` = `Σ u − n·zi`.
#[cfg(target_arch = "x86_64")]
#[derive(Debug, Clone, Copy)]
struct Requant {
    zi: i32,
    sx: f32,
    shift: f32,
}

/// A packed ReLU layer with VNNI, the requantization fused: each group of
/// blocks' sums, still in registers, goes through the portable loop's
/// operations in its order (no fused multiply-add, so the same bits) and ReLU,
/// and is stored as f32 in `y`; also the largest output (at least 0), which is
/// the next layer's range. `None`, leaving `y` unspecified, when the slices do
/// not fit the layer.
///
/// # Safety
/// The CPU must have AVX-512 F/BW/VL and VNNI.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn packed_relu_vnni(
    w: &PackedI8,
    u: &[u8],
    parts: &PaddedParts,
    c: Requant,
    y: &mut [f32],
) -> Option<f32> {
    use std::arch::x86_64::*;
    let blocks = w.blocks();
    let whole = blocks * BLOCK;
    let lengths = [
        parts.scale.len(),
        parts.zero.len(),
        parts.bias.len(),
        parts.row_sum.len(),
    ];
    if w.groups == 0
        || u.len() < 4 * w.groups
        || lengths.iter().any(|&l| l != whole)
        || y.len() < whole
    {
        return None;
    }
    let mut hi = _mm512_setzero_ps();
    let mut b = 0;
    while b < blocks {
        let g = (blocks - b).min(CHUNK);
        // SAFETY: the features are enabled for this function; `u` holds
        // `4·groups` bytes, blocks `b .. b + g` exist, and `y` and the parts
        // hold `16·blocks` values (all checked above).
        unsafe {
            match g {
                8 => group_relu_vnni::<8>(w, b, u, parts, c, y, &mut hi),
                7 => group_relu_vnni::<7>(w, b, u, parts, c, y, &mut hi),
                6 => group_relu_vnni::<6>(w, b, u, parts, c, y, &mut hi),
                5 => group_relu_vnni::<5>(w, b, u, parts, c, y, &mut hi),
                4 => group_relu_vnni::<4>(w, b, u, parts, c, y, &mut hi),
                3 => group_relu_vnni::<3>(w, b, u, parts, c, y, &mut hi),
                2 => group_relu_vnni::<2>(w, b, u, parts, c, y, &mut hi),
                _ => group_relu_vnni::<1>(w, b, u, parts, c, y, &mut hi),
            }
        }
        b += g;
    }
    Some(_mm512_reduce_max_ps(hi))
}

/// Blocks `b .. b + G` of [`packed_relu_vnni`]: one chunk.
///
/// # Safety
/// AVX-512 F/BW/VL and VNNI; `u` holds `4·w.groups` bytes, `b` is a multiple
/// of [`CHUNK`] and `G` that chunk's width, and `y` and every part hold
/// `16·w.blocks()` values.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn group_relu_vnni<const G: usize>(
    w: &PackedI8,
    b: usize,
    u: &[u8],
    parts: &PaddedParts,
    c: Requant,
    y: &mut [f32],
    hi: &mut std::arch::x86_64::__m512,
) {
    use std::arch::x86_64::*;
    // SAFETY: the contract above: `sums_vnni`'s is part of it, and
    // the parts and `y` are read and written 16 at a time at offsets below
    // `16·(b + G)`.
    unsafe {
        let acc = sums_vnni::<G>(w, b, u);
        let (vzi, vsx, vshift, zeros) = (
            _mm512_set1_epi32(c.zi),
            _mm512_set1_ps(c.sx),
            _mm512_set1_ps(c.shift),
            _mm512_setzero_ps(),
        );
        for (k, a) in acc.iter().enumerate() {
            let o = (b + k) * BLOCK;
            let rs = _mm512_loadu_si512(parts.row_sum.as_ptr().add(o).cast());
            let dot = _mm512_cvtepi32_ps(_mm512_sub_epi32(*a, _mm512_mullo_epi32(vzi, rs)));
            let scale = _mm512_loadu_ps(parts.scale.as_ptr().add(o));
            let zero = _mm512_loadu_ps(parts.zero.as_ptr().add(o));
            let bias = _mm512_loadu_ps(parts.bias.as_ptr().add(o));
            let t = _mm512_add_ps(_mm512_mul_ps(scale, dot), _mm512_mul_ps(zero, vshift));
            let v = _mm512_add_ps(_mm512_mul_ps(vsx, t), bias);
            // ReLU as `f32::max(v, 0)`: `vmaxps` gives its second operand (0)
            // when the first is NaN.
            let v = _mm512_max_ps(v, zeros);
            _mm512_storeu_ps(y.as_mut_ptr().add(o), v);
            *hi = _mm512_max_ps(*hi, v);
        }
    }
}

/// Quantizes `act` into `u` (same length) as `trunc(min(max(a·inv +
/// shift_half, 0), ACT_MAX))` and returns `Σ u`. The portable loop, or with
/// the VNNI kernel the same operations sixteen lanes at a time (a masked
/// step for the tail), so the same bytes.
#[inline(always)]
fn quantize_row(kernel: Kernel, act: &[f32], inv: f32, shift_half: f32, u: &mut [u8]) -> i32 {
    #[cfg(target_arch = "x86_64")]
    if kernel == Kernel::Avx512Vnni && kernel.supported() && u.len() == act.len() {
        // SAFETY: the CPU has AVX-512 F/BW (`supported()` for the VNNI
        // kernel), and the slices have one length (checked above).
        return unsafe { quantize_avx512(act, inv, shift_half, u) };
    }
    let _ = kernel;
    // Clamped as floats, then truncated: the same integers as truncating and
    // clamping. `max` first turns NaN into 0, so the value is a number in
    // [0, ACT_MAX] and converts without the checks of a saturating `as`
    // (which kept this loop scalar).
    let n = act.len().min(u.len());
    let (u, act) = (&mut u[..n], &act[..n]);
    for i in 0..n {
        // Not `clamp`: it keeps NaN, which the conversion below must not see.
        #[allow(clippy::manual_clamp)]
        let v = (act[i] * inv + shift_half).max(0.0).min(ACT_MAX);
        // SAFETY: no CPU feature involved: `v` is not NaN and lies in
        // [0, 127] (the `max` and `min` above), so it fits an i32.
        u[i] = unsafe { v.to_int_unchecked::<i32>() } as u8;
    }
    let mut sum_u = 0i32;
    for &v in u.iter() {
        sum_u += i32::from(v);
    }
    sum_u
}

/// [`quantize_row`] in 512-bit registers.
///
/// # Safety
/// AVX-512 F and BW; `act.len() == u.len()`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw")]
unsafe fn quantize_avx512(act: &[f32], inv: f32, shift_half: f32, u: &mut [u8]) -> i32 {
    use std::arch::x86_64::*;
    let n = act.len();
    // SAFETY: the features are enabled; lanes at or past `n` are masked off
    // in the loads and stores, so every access is inside the slices (of one
    // length, the contract).
    unsafe {
        let (vinv, vhalf, zeros, top) = (
            _mm512_set1_ps(inv),
            _mm512_set1_ps(shift_half),
            _mm512_setzero_ps(),
            _mm512_set1_ps(ACT_MAX),
        );
        let mut sum = _mm512_setzero_si512();
        let mut i = 0;
        while i < n {
            let left = n - i;
            let mask: __mmask16 = if left >= 16 {
                0xffff
            } else {
                (1u16 << left) - 1
            };
            let a = _mm512_maskz_loadu_ps(mask, act.as_ptr().add(i));
            // `max` with 0 second: NaN becomes 0, as `f32::max` does.
            let v = _mm512_max_ps(_mm512_add_ps(_mm512_mul_ps(a, vinv), vhalf), zeros);
            let v = _mm512_cvttps_epi32(_mm512_min_ps(v, top));
            let v = _mm512_maskz_mov_epi32(mask, v);
            _mm512_mask_cvtepi32_storeu_epi8(u.as_mut_ptr().add(i).cast(), mask, v);
            sum = _mm512_add_epi32(sum, v);
            i += 16;
        }
        _mm512_reduce_add_epi32(sum)
    }
}

/// [`Kernel::gemv_packed`] in plain Rust.
fn packed_portable(w: &PackedI8, u: &[u8], out: &mut [i32]) {
    assert!(
        w.fits(u, out),
        "packed int8 gemv: {} blocks of {} inputs, got {} inputs and {} outputs",
        w.blocks(),
        4 * w.groups,
        u.len(),
        out.len()
    );
    for (b, o) in out.chunks_exact_mut(BLOCK).take(w.blocks()).enumerate() {
        let mut acc = [0i32; BLOCK];
        let blocks = w.blocks();
        for (g, v) in u.chunks_exact(4).take(w.groups).enumerate() {
            let q = &w.weight[PackedI8::at(blocks, w.groups, b, g)];
            for (a, q) in acc.iter_mut().zip(q.0.chunks_exact(4)) {
                for (&q, &v) in q.iter().zip(v) {
                    *a += i32::from(q) * i32::from(v);
                }
            }
        }
        o.copy_from_slice(&acc);
    }
}

/// The sums of the chunk of blocks `b .. b + G`, one register per block.
///
/// # Safety
/// AVX-512 F/BW/VL and VNNI; `u` holds `4·w.groups` bytes, `b` is a multiple
/// of [`CHUNK`] and `G` that chunk's width (`min(CHUNK, blocks − b)`).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn sums_vnni<const G: usize>(
    w: &PackedI8,
    b: usize,
    u: &[u8],
) -> [std::arch::x86_64::__m512i; G] {
    use std::arch::x86_64::*;
    let n = w.groups;
    // SAFETY: the contract above: `u` holds `4n` bytes (read four at a time,
    // unaligned), and the chunk of blocks `b .. b + G` is the `G·n`
    // 64-byte-aligned entries from `b·n`, read in order.
    unsafe {
        let q = w.weight.as_ptr().add(b * n);
        let up = u.as_ptr();
        let mut acc = [_mm512_setzero_si512(); G];
        for g in 0..n {
            let v = _mm512_set1_epi32(up.add(4 * g).cast::<i32>().read_unaligned());
            for (k, a) in acc.iter_mut().enumerate() {
                *a = _mm512_dpbusd_epi32(*a, v, _mm512_load_si512(q.add(g * G + k).cast()));
            }
        }
        acc
    }
}

/// Blocks `b .. b + G` of the packed weights with `vpdpbusd`: one chunk
/// (see [`PackedI8::at`]), read in order.
///
/// # Safety
/// AVX-512 F/BW/VL and VNNI; `w.fits(u, out)`, `b` a multiple of [`CHUNK`]
/// and `G` that chunk's width (`min(CHUNK, blocks − b)`).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn group_vnni<const G: usize>(w: &PackedI8, b: usize, u: &[u8], out: &mut [i32]) {
    use std::arch::x86_64::*;
    // SAFETY: the contract above: `sums_vnni`'s is part of it, and `out` has
    // room for `16·(b + G)` sums.
    unsafe {
        let acc = sums_vnni::<G>(w, b, u);
        let o = out.as_mut_ptr().add(b * BLOCK);
        for (k, a) in acc.iter().enumerate() {
            _mm512_storeu_si512(o.add(k * BLOCK).cast(), *a);
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn packed_vnni(w: &PackedI8, u: &[u8], out: &mut [i32]) {
    let blocks = w.blocks();
    let mut b = 0;
    // Eight blocks (128 outputs) a pass over the input: eight independent
    // accumulators cover `vpdpbusd`'s latency.
    while b < blocks {
        let g = (blocks - b).min(CHUNK);
        // SAFETY: the caller checked `w.fits(u, out)`, `b + g ≤ blocks`, and
        // the features are enabled for this function.
        unsafe {
            match g {
                8 => group_vnni::<8>(w, b, u, out),
                7 => group_vnni::<7>(w, b, u, out),
                6 => group_vnni::<6>(w, b, u, out),
                5 => group_vnni::<5>(w, b, u, out),
                4 => group_vnni::<4>(w, b, u, out),
                3 => group_vnni::<3>(w, b, u, out),
                2 => group_vnni::<2>(w, b, u, out),
                _ => group_vnni::<1>(w, b, u, out),
            }
        }
        b += g;
    }
}

/// Blocks `b .. b + G` with AVX2: a block is two registers of eight outputs;
/// `vpmaddubsw` adds the products of input pairs into i16 (exact with 7-bit
/// inputs, see the module documentation) and `vpmaddwd` by ones adds the two
/// pairs of each output into its i32 lane.
///
/// # Safety
/// AVX2; `w.fits(u, out)`, `b` a multiple of 4 and `b + G ≤ w.blocks()`
/// (so the blocks lie in one chunk of [`CHUNK`]).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn group_avx2<const G: usize>(w: &PackedI8, b: usize, u: &[u8], out: &mut [i32]) {
    use std::arch::x86_64::*;
    let n = w.groups;
    // SAFETY: as in `group_vnni`, within the chunk from `start`: entry
    // `(k, g)` of these blocks is `start·n + (b − start) + g·width + k`, below
    // the chunk's end as `b − start + k < width`; each 64-byte block's halves
    // are 32-byte aligned.
    unsafe {
        let start = b / CHUNK * CHUNK;
        let width = (w.blocks() - start).min(CHUNK);
        let q = w
            .weight
            .as_ptr()
            .add(start * n + b - start)
            .cast::<__m256i>();
        let up = u.as_ptr();
        let ones = _mm256_set1_epi16(1);
        let mut lo = [_mm256_setzero_si256(); G];
        let mut hi = [_mm256_setzero_si256(); G];
        for g in 0..n {
            let v = _mm256_set1_epi32(up.add(4 * g).cast::<i32>().read_unaligned());
            for k in 0..G {
                let p = q.add(2 * (g * width + k));
                let a = _mm256_maddubs_epi16(v, _mm256_load_si256(p));
                let c = _mm256_maddubs_epi16(v, _mm256_load_si256(p.add(1)));
                lo[k] = _mm256_add_epi32(lo[k], _mm256_madd_epi16(a, ones));
                hi[k] = _mm256_add_epi32(hi[k], _mm256_madd_epi16(c, ones));
            }
        }
        let o = out.as_mut_ptr().add(b * BLOCK);
        for k in 0..G {
            _mm256_storeu_si256(o.add(k * BLOCK).cast(), lo[k]);
            _mm256_storeu_si256(o.add(k * BLOCK + 8).cast(), hi[k]);
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn packed_avx2(w: &PackedI8, u: &[u8], out: &mut [i32]) {
    let blocks = w.blocks();
    let mut b = 0;
    while b < blocks {
        let g = (blocks - b).min(4);
        // SAFETY: as in `packed_vnni`; AVX2 is enabled for this function.
        unsafe {
            match g {
                4 => group_avx2::<4>(w, b, u, out),
                3 => group_avx2::<3>(w, b, u, out),
                2 => group_avx2::<2>(w, b, u, out),
                _ => group_avx2::<1>(w, b, u, out),
            }
        }
        b += g;
    }
}

fn check_gemv(w: &[i8], p: usize, u: &[u8], out: &[i32]) -> bool {
    p.is_multiple_of(LANES) && u.len() >= p && w.len() >= out.len() * p
}

fn gemv_portable(w: &[i8], p: usize, u: &[u8], out: &mut [i32]) {
    assert!(
        u.len() >= p && w.len() >= out.len() * p,
        "int8 gemv: {} outputs of {p} inputs need {} weights and {p} inputs, got {} and {}",
        out.len(),
        out.len() * p,
        w.len(),
        u.len()
    );
    for (o, row) in out.iter_mut().zip(w.chunks_exact(p.max(1))) {
        *o = row
            .iter()
            .zip(&u[..p])
            .map(|(&q, &v)| i32::from(q) * i32::from(v))
            .sum();
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn gemv_avx2(w: &[i8], p: usize, u: &[u8], out: &mut [i32]) {
    // SAFETY: the caller checked `check_gemv`: `p` is a multiple of LANES,
    // `u` holds at least `p` bytes and `w` at least `out.len() * p`, so every
    // 32-byte load below (`u[i..i + 32]`, `w[row·p + i..+ 32]` with `i < p`)
    // stays inside its slice; AVX2 is enabled for this function.
    unsafe {
        use std::arch::x86_64::*;
        let ones = _mm256_set1_epi16(1);
        let hsum = |v: __m256i| -> i32 {
            let s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256::<1>(v));
            let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b01_00_11_10>(s));
            let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b10_11_00_01>(s));
            _mm_cvtsi128_si32(s)
        };
        let up = u.as_ptr();
        let rows = out.len();
        let mut j = 0;
        // Four rows at a time share each load of the input.
        while j + 4 <= rows {
            let r = [0, 1, 2, 3].map(|k| w.as_ptr().add((j + k) * p));
            let mut acc = [_mm256_setzero_si256(); 4];
            let mut i = 0;
            while i < p {
                let x = _mm256_loadu_si256(up.add(i).cast());
                for k in 0..4 {
                    let q = _mm256_loadu_si256(r[k].add(i).cast());
                    let pairs = _mm256_maddubs_epi16(x, q);
                    acc[k] = _mm256_add_epi32(acc[k], _mm256_madd_epi16(pairs, ones));
                }
                i += LANES;
            }
            for k in 0..4 {
                out[j + k] = hsum(acc[k]);
            }
            j += 4;
        }
        while j < rows {
            let r = w.as_ptr().add(j * p);
            let mut acc = _mm256_setzero_si256();
            let mut i = 0;
            while i < p {
                let x = _mm256_loadu_si256(up.add(i).cast());
                let q = _mm256_loadu_si256(r.add(i).cast());
                acc = _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(x, q), ones));
                i += LANES;
            }
            out[j] = hsum(acc);
            j += 1;
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn gemv_vnni(w: &[i8], p: usize, u: &[u8], out: &mut [i32]) {
    // SAFETY: the caller checked `check_gemv`: `p` is a multiple of LANES (32),
    // `u` holds at least `p` bytes and `w` at least `out.len() * p`. The loads
    // below read 64 bytes at `i` only while `i + 64 <= p`, then 32 at `i` when
    // `i < p`, so every load stays inside its row and `u[..p]`; the features
    // are enabled for this function.
    unsafe {
        use std::arch::x86_64::*;
        let up = u.as_ptr();
        let rows = out.len();
        let wide = p - p % 64;
        // The four rows' sums at once: interleave and add pairs of
        // accumulators until each 128-bit lane holds [r0, r1, r2, r3], then add
        // the four lanes. A 512-bit reduction per row would cost as much as the
        // products of a 256-wide row.
        let sums4 = |acc: [__m512i; 4], tail: [__m256i; 4]| -> __m128i {
            let a = [0, 1, 2, 3].map(|k| _mm512_add_epi32(acc[k], _mm512_zextsi256_si512(tail[k])));
            let ab = _mm512_add_epi32(
                _mm512_unpacklo_epi32(a[0], a[1]),
                _mm512_unpackhi_epi32(a[0], a[1]),
            );
            let cd = _mm512_add_epi32(
                _mm512_unpacklo_epi32(a[2], a[3]),
                _mm512_unpackhi_epi32(a[2], a[3]),
            );
            let abcd =
                _mm512_add_epi32(_mm512_unpacklo_epi64(ab, cd), _mm512_unpackhi_epi64(ab, cd));
            let half = _mm256_add_epi32(
                _mm512_castsi512_si256(abcd),
                _mm512_extracti64x4_epi64::<1>(abcd),
            );
            _mm_add_epi32(
                _mm256_castsi256_si128(half),
                _mm256_extracti128_si256::<1>(half),
            )
        };
        let mut j = 0;
        // Four rows at a time share each load of the input; a last group of
        // fewer repeats its last row and keeps only its own sums.
        while j < rows {
            let n = (rows - j).min(4);
            let r = [0, 1, 2, 3].map(|k| w.as_ptr().add((j + k.min(n - 1)) * p));
            let mut acc = [_mm512_setzero_si512(); 4];
            let mut tail = [_mm256_setzero_si256(); 4];
            let mut i = 0;
            while i < wide {
                let x = _mm512_loadu_si512(up.add(i).cast());
                for k in 0..4 {
                    let q = _mm512_loadu_si512(r[k].add(i).cast());
                    acc[k] = _mm512_dpbusd_epi32(acc[k], x, q);
                }
                i += 64;
            }
            if i < p {
                let x = _mm256_loadu_si256(up.add(i).cast());
                for k in 0..4 {
                    let q = _mm256_loadu_si256(r[k].add(i).cast());
                    tail[k] = _mm256_dpbusd_epi32(tail[k], x, q);
                }
            }
            let mut four = [0i32; 4];
            _mm_storeu_si128(four.as_mut_ptr().cast(), sums4(acc, tail));
            out[j..j + n].copy_from_slice(&four[..n]);
            j += n;
        }
    }
}
#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    fn random_network(widths: &[usize], output: Output, seed: u64) -> Network {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let (inputs, hidden, outputs) = (
            widths[0],
            &widths[1..widths.len() - 1],
            widths[widths.len() - 1],
        );
        crate::model::network::initial_network(inputs, hidden, outputs, output, &mut rng).unwrap()
    }

    fn rows(n: usize, width: usize, seed: u64) -> Array2<f32> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        Array2::from_shape_simple_fn((n, width), || rng.gen_range(-2.0..2.0))
    }

    /// The kernels this CPU runs (the portable one always); the test logs them.
    fn kernels() -> Vec<Kernel> {
        let k: Vec<Kernel> = Kernel::ALL.into_iter().filter(|k| k.supported()).collect();
        eprintln!("kernels on this CPU: {k:?}");
        k
    }

    #[test]
    fn the_kernels_agree_exactly() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        for (rows, inputs) in [
            (1, 32),
            (3, 64),
            (4, 96),
            (5, 128),
            (7, 256),
            (13, 32),
            (6, 160),
        ] {
            let w: Vec<i8> = (0..rows * inputs)
                .map(|_| rng.gen_range(-127..=127))
                .collect();
            let u: Vec<u8> = (0..inputs).map(|_| rng.gen_range(0..=127)).collect();
            let mut a = vec![0; rows];
            gemv_portable(&w, inputs, &u, &mut a);
            for kernel in kernels() {
                let mut b = vec![0; rows];
                kernel.gemv(&w, inputs, &u, &mut b);
                assert_eq!(a, b, "{kernel:?} {rows}×{inputs}");
                // The extremes cannot saturate.
                let w = vec![-127i8; rows * inputs];
                let u = vec![127u8; inputs];
                kernel.gemv(&w, inputs, &u, &mut b);
                assert!(
                    b.iter().all(|&v| v == -127 * 127 * inputs as i32),
                    "{kernel:?}"
                );
            }
        }
        // The packed layout gives the row-major sums, and 0 in the padding
        // outputs, through every kernel (shapes with full and partial blocks,
        // and fewer than eight blocks a pass).
        for (rows, inputs) in [(8, 32), (16, 32), (17, 64), (40, 96), (130, 64), (256, 256)] {
            let w: Vec<i8> = (0..rows * inputs)
                .map(|_| rng.gen_range(-127..=127))
                .collect();
            let u: Vec<u8> = (0..inputs).map(|_| rng.gen_range(0..=127)).collect();
            let mut want = vec![0; rows];
            gemv_portable(&w, inputs, &u, &mut want);
            let packed = PackedI8::pack(&w, rows, inputs).unwrap();
            want.resize(rows.next_multiple_of(BLOCK), 0);
            for kernel in kernels() {
                let mut got = vec![-1; want.len()];
                kernel.gemv_packed(&packed, &u, &mut got);
                assert_eq!(want, got, "packed {kernel:?} {rows}×{inputs}");
                let extremes = PackedI8::pack(&vec![-127; rows * inputs], rows, inputs).unwrap();
                kernel.gemv_packed(&extremes, &[127; 256][..inputs], &mut got);
                assert!(
                    got[..rows].iter().all(|&v| v == -127 * 127 * inputs as i32),
                    "packed {kernel:?}"
                );
            }
        }
        assert!(PackedI8::pack(&[0; 7 * 32], 7, 32).is_none());
        // And whole networks give the same bits through every kernel.
        for widths in [vec![30, 256, 256, 2], vec![11, 40, 17, 3]] {
            let net = QuantNetwork::quantize(&random_network(&widths, Output::Softmax, 3));
            let x = rows(20, widths[0], 4);
            let mut s = Scratch::default();
            for r in x.rows() {
                let r = r.to_vec();
                let portable = net.forward_with(Kernel::Portable, &r, &mut s);
                for kernel in kernels() {
                    assert_eq!(portable, net.forward_with(kernel, &r, &mut s), "{kernel:?}");
                }
            }
        }
    }

    /// A shape the SIMD kernel cannot take (inputs not a multiple of its lanes)
    /// is computed by the portable one, never left as it was; an impossible one
    /// panics naming the shapes.
    #[test]
    fn a_shape_the_simd_kernel_cannot_take_is_still_computed() {
        let (w, u) = (vec![2i8; 3 * 5], vec![3u8; 5]);
        for kernel in kernels() {
            let mut out = vec![-1; 3];
            kernel.gemv(&w, 5, &u, &mut out);
            assert_eq!(out, vec![30; 3], "{kernel:?}");
            let short = std::panic::catch_unwind(|| {
                kernel.gemv(&w, 5, &u[..2], &mut [0; 3]);
            });
            assert!(short.is_err(), "{kernel:?}");
        }
    }

    /// The documented tolerance: on random He-initialised networks and inputs in
    /// [-2, 2], int8 outputs stay within 2% of the f32 output range (pre-activation
    /// values for identity outputs, probabilities for softmax/sigmoid).
    #[test]
    fn int8_outputs_are_close_to_f32() {
        for (widths, output) in [
            (vec![11, 16, 3], Output::Softmax),
            (vec![64, 64, 64], Output::Softmax),
            (vec![64, 64, 1], Output::Identity),
            (vec![30, 256, 256, 2], Output::Softmax),
            (vec![20, 8, 1], Output::Sigmoid),
            (vec![5, 1], Output::Identity),
        ] {
            let f = random_network(&widths, output, 7);
            let x = rows(200, widths[0], 8);
            let a = f.forward_batch(x.view());
            let range = a.iter().fold(0.0f32, |m, v| m.max(v.abs())).max(1.0);
            let worst = |q: &QuantNetwork| {
                let b = q.forward_batch(x.view());
                a.iter()
                    .zip(b.iter())
                    .fold(0.0f32, |m, (p, q)| m.max((p - q).abs()))
                    / range
            };
            let dynamic = worst(&QuantNetwork::quantize(&f));
            // Static ranges calibrated on other rows from the same distribution.
            let calibration = rows(200, widths[0], 9);
            let fixed = worst(&QuantNetwork::quantize_static(&f, calibration.view()));
            println!("{widths:?}: worst relative error dynamic {dynamic:.4}, static {fixed:.4}");
            assert!(dynamic <= 0.02, "{widths:?}: dynamic {dynamic}");
            assert!(fixed <= 0.05, "{widths:?}: static {fixed}");
        }
    }

    /// The int8 form runs the f32 network's hidden activations: for each of them
    /// its probabilities stay within 3% (dynamic) and 5% (static) of the f32 ones,
    /// as the ReLU network of the same weights does (2.6% and 3.7%; tanh, leaky
    /// and sigmoid measured 1.4–2.4% and 0.7–3.8%), one row at a time equals the
    /// batch, and either kernel gives the same bits.
    #[test]
    fn int8_follows_the_hidden_activations() {
        let leaky = Activation::LeakyRelu { alpha: 0.01 };
        let relu = random_network(&[30, 64, 32, 3], Output::Softmax, 5);
        let x = rows(100, 30, 6);
        let calibration = rows(100, 30, 7);
        for activations in [
            [Activation::Relu; 2],
            [Activation::Tanh; 2],
            [leaky; 2],
            [Activation::Sigmoid; 2],
            [Activation::Tanh, leaky],
        ] {
            let f = Network::with_activations(
                relu.layers().to_vec(),
                activations.to_vec(),
                Output::Softmax,
            )
            .unwrap();
            let a = f.forward_batch(x.view());
            for q in [
                QuantNetwork::quantize(&f),
                QuantNetwork::quantize_static(&f, calibration.view()),
            ] {
                assert_eq!(q.activations(), activations.as_slice());
                assert_eq!(
                    q.dequantized().unwrap().activations(),
                    activations.as_slice()
                );
                let b = q.forward_batch(x.view());
                let worst = a
                    .iter()
                    .zip(b.iter())
                    .fold(0.0f32, |m, (p, q)| m.max((p - q).abs()));
                let bound = if q.ranges.is_some() { 0.05 } else { 0.03 };
                assert!(worst <= bound, "{activations:?}: {worst}");
                let mut s = Scratch::default();
                for (r, want) in x.rows().into_iter().zip(b.rows()) {
                    let r = r.to_vec();
                    let one = q.forward_with(Kernel::Portable, &r, &mut s);
                    assert_eq!(one, q.forward_with(Kernel::detect(), &r, &mut s));
                    assert_eq!(one, want.to_vec());
                }
            }
            // A ReLU network quantizes to different answers: the activation is used.
            let r = QuantNetwork::quantize(&relu).forward_batch(x.view());
            if activations != [Activation::Relu; 2] {
                assert_ne!(r, QuantNetwork::quantize(&f).forward_batch(x.view()));
            }
        }
    }

    #[test]
    fn stored_layers_need_one_valid_activation_per_hidden_layer() {
        let q = QuantNetwork::quantize(&random_network(&[4, 3, 2], Output::Softmax, 1));
        let layers = q.layers().to_vec();
        let err = QuantNetwork::from_layers(layers.clone(), vec![], Output::Softmax).unwrap_err();
        assert_eq!(
            err,
            "2 layers take 1 hidden-layer activations (one per layer but the last), 0 given"
        );
        let err = QuantNetwork::from_layers(
            layers.clone(),
            vec![Activation::LeakyRelu { alpha: -1.0 }],
            Output::Softmax,
        )
        .unwrap_err();
        assert!(
            err.starts_with("hidden layer 0: leaky ReLU alpha -1"),
            "{err}"
        );
        let ok =
            QuantNetwork::from_layers(layers, vec![Activation::Tanh], Output::Softmax).unwrap();
        assert_eq!(ok.activations(), &[Activation::Tanh]);
    }

    #[test]
    fn dequantized_weights_are_within_half_a_step() {
        let f = random_network(&[10, 6, 2], Output::Softmax, 9);
        let q = QuantNetwork::quantize(&f);
        for (fl, ql) in f.layers().iter().zip(q.layers()) {
            let d = ql.dequantized();
            for ((j, i), a) in fl.weight.indexed_iter() {
                assert!((a - d[(j, i)]).abs() <= ql.scale[j] * 0.5 + 1e-6);
            }
        }
    }

    #[test]
    fn stored_parts_with_wrong_lengths_are_refused() {
        let err =
            QuantLayer::from_parts(3, 2, vec![0; 5], vec![1.0; 2], vec![0.0; 2], vec![0.0; 2])
                .unwrap_err();
        assert_eq!(err, "5 int8 weights for a 2×3 layer");
        let err =
            QuantLayer::from_parts(3, 2, vec![0; 6], vec![1.0; 1], vec![0.0; 2], vec![0.0; 2])
                .unwrap_err();
        assert_eq!(err, "1 scales for 2 outputs");
    }
}
