//! The f32 network's weights repacked for the one-row forward pass, and the
//! kernels that run them (chosen at run time for what the CPU has).
//!
//! A dense layer is stored `out × in`, one row per output, which makes the
//! portable pass a dot product per output followed by a horizontal sum. For one
//! row at a time that shape is slow on wide vectors: every output ends in a
//! reduction across lanes. Packed, the outputs go in blocks of 16: for each
//! input `i`, the 16 weights of one block's outputs are contiguous and 64-byte
//! aligned, so a step broadcasts `x[i]` and multiply-adds it into 16 outputs at
//! once, with several blocks' accumulators independent of each other (no
//! reduction at all). The layout lives only in memory: artifacts keep `out × in`.
//!
//! The kernels use fused multiply-add and sum in input order (starting from the
//! bias), so their results may differ from the portable pass in the last bits;
//! tests hold them to a tight tolerance. This module owns the layout and the
//! kernels; `network` decides when to use them.

use super::network::Dense;

/// The outputs of a block: one 512-bit register, two 256-bit ones.
pub const BLOCK: usize = 16;

/// Layers narrower than this keep the row-major dot products: a block of 16
/// outputs would mostly multiply padding.
pub const MIN_OUTPUTS: usize = 8;

/// Sixteen f32 on a 64-byte boundary (one cache line, one AVX-512 register).
#[derive(Debug, Clone, Copy, PartialEq)]
#[repr(C, align(64))]
pub struct Block(pub [f32; BLOCK]);

/// One layer, packed.
#[derive(Debug, Clone, PartialEq)]
pub struct PackedLayer {
    pub inputs: usize,
    pub outputs: usize,
    /// `blocks × inputs`: entry `b·inputs + i` holds the weights from input `i`
    /// to outputs `16b .. 16b + 16` (zero past `outputs`).
    pub weight: Vec<Block>,
    /// `blocks`: the biases of each block's outputs (zero past `outputs`).
    pub bias: Vec<Block>,
}

impl PackedLayer {
    /// The packed form of `layer`; `None` for a layer narrower than
    /// [`MIN_OUTPUTS`].
    pub fn pack(layer: &Dense) -> Option<PackedLayer> {
        let (outputs, inputs) = layer.weight.dim();
        if outputs < MIN_OUTPUTS {
            return None;
        }
        let blocks = outputs.div_ceil(BLOCK);
        let mut weight = vec![Block([0.0; BLOCK]); blocks * inputs];
        let mut bias = vec![Block([0.0; BLOCK]); blocks];
        for ((j, i), &w) in layer.weight.indexed_iter() {
            weight[(j / BLOCK) * inputs + i].0[j % BLOCK] = w;
        }
        for (j, &b) in layer.bias.iter().enumerate() {
            bias[j / BLOCK].0[j % BLOCK] = b;
        }
        Some(PackedLayer {
            inputs,
            outputs,
            weight,
            bias,
        })
    }

    pub fn blocks(&self) -> usize {
        self.bias.len()
    }

    /// Whether the SIMD kernels may run on these slices: the weights are
    /// `blocks × inputs`, `x` has the inputs and `out` room for every block.
    fn fits(&self, x: &[f32], out: &[f32]) -> bool {
        self.weight.len() == self.blocks() * self.inputs
            && x.len() >= self.inputs
            && out.len() >= self.blocks() * BLOCK
    }

    /// `out[..blocks·16] = W x + b` (the padding outputs are 0) with the kernel
    /// compiled for AVX-512 F (fused multiply-add on 16 lanes).
    ///
    /// # Safety
    /// The CPU must have AVX-512 F ([`super::network::F32Kernel::supported`]).
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    pub unsafe fn gemv_avx512(&self, x: &[f32], out: &mut [f32]) {
        if !self.fits(x, out) {
            return self.gemv_portable(x, out);
        }
        let blocks = self.blocks();
        let mut b = 0;
        // Eight blocks (128 outputs) a pass over the input: eight independent
        // accumulators cover the FMA's latency.
        while b < blocks {
            let g = (blocks - b).min(8);
            // SAFETY: the caller guarantees AVX-512 F; `fits` checked that
            // blocks `b .. b + g` (g ≤ blocks − b) and their biases exist, that
            // `x` has `inputs` values and `out` room for `16·(b + g)`.
            unsafe {
                match g {
                    8 => group512::<8>(self, b, x, out),
                    7 => group512::<7>(self, b, x, out),
                    6 => group512::<6>(self, b, x, out),
                    5 => group512::<5>(self, b, x, out),
                    4 => group512::<4>(self, b, x, out),
                    3 => group512::<3>(self, b, x, out),
                    2 => group512::<2>(self, b, x, out),
                    _ => group512::<1>(self, b, x, out),
                }
            }
            b += g;
        }
    }

    /// As [`Self::gemv_avx512`] with 256-bit registers (AVX2 and FMA): a block
    /// is two registers, four blocks a pass.
    ///
    /// # Safety
    /// The CPU must have AVX2 and FMA.
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    pub unsafe fn gemv_avx2(&self, x: &[f32], out: &mut [f32]) {
        if !self.fits(x, out) {
            return self.gemv_portable(x, out);
        }
        let blocks = self.blocks();
        let mut b = 0;
        while b < blocks {
            let g = (blocks - b).min(4);
            // SAFETY: as in `gemv_avx512`; the caller guarantees AVX2 and FMA.
            unsafe {
                match g {
                    4 => group256::<4>(self, b, x, out),
                    3 => group256::<3>(self, b, x, out),
                    2 => group256::<2>(self, b, x, out),
                    _ => group256::<1>(self, b, x, out),
                }
            }
            b += g;
        }
    }

    /// The packed product in plain Rust, the same order as the kernels but
    /// without fused multiply-add (for slices the kernels cannot take; never
    /// for a pass `Network` runs).
    pub fn gemv_portable(&self, x: &[f32], out: &mut [f32]) {
        for (b, (bias, o)) in self
            .bias
            .iter()
            .zip(out.chunks_exact_mut(BLOCK))
            .enumerate()
        {
            let mut acc = bias.0;
            let rows = self.weight.iter().skip(b * self.inputs).take(self.inputs);
            for (w, &v) in rows.zip(x) {
                for (a, &w) in acc.iter_mut().zip(&w.0) {
                    *a += w * v;
                }
            }
            o.copy_from_slice(&acc);
        }
    }
}

/// Blocks `b .. b + G` of `layer` into `out[16b ..]`.
///
/// # Safety
/// AVX-512 F; blocks `b + G ≤ layer.blocks()`, `x.len() ≥ inputs`,
/// `out.len() ≥ 16·(b + G)`, and the weights `blocks × inputs`.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn group512<const G: usize>(layer: &PackedLayer, b: usize, x: &[f32], out: &mut [f32]) {
    use std::arch::x86_64::*;
    let n = layer.inputs;
    // SAFETY: see the function's contract; `Block` is 64-byte aligned, so the
    // aligned loads of weights and biases are too.
    unsafe {
        let w = layer.weight.as_ptr().add(b * n);
        let mut acc = [_mm512_setzero_ps(); G];
        for (k, a) in acc.iter_mut().enumerate() {
            *a = _mm512_load_ps(layer.bias.as_ptr().add(b + k).cast());
        }
        let xp = x.as_ptr();
        for i in 0..n {
            let v = _mm512_set1_ps(*xp.add(i));
            for (k, a) in acc.iter_mut().enumerate() {
                *a = _mm512_fmadd_ps(_mm512_load_ps(w.add(k * n + i).cast()), v, *a);
            }
        }
        let o = out.as_mut_ptr().add(b * BLOCK);
        for (k, a) in acc.iter().enumerate() {
            _mm512_storeu_ps(o.add(k * BLOCK), *a);
        }
    }
}

/// [`group512`] in 256-bit registers, two per block.
///
/// # Safety
/// AVX2 and FMA; the slices as for [`group512`].
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn group256<const G: usize>(layer: &PackedLayer, b: usize, x: &[f32], out: &mut [f32]) {
    use std::arch::x86_64::*;
    let n = layer.inputs;
    // SAFETY: see the function's contract; each block is 64-byte aligned, so
    // both of its 32-byte halves are aligned for `_mm256_load_ps`.
    unsafe {
        let w = layer.weight.as_ptr().add(b * n).cast::<f32>();
        let mut lo = [_mm256_setzero_ps(); G];
        let mut hi = [_mm256_setzero_ps(); G];
        for k in 0..G {
            let bias = layer.bias.as_ptr().add(b + k).cast::<f32>();
            lo[k] = _mm256_load_ps(bias);
            hi[k] = _mm256_load_ps(bias.add(8));
        }
        let xp = x.as_ptr();
        for i in 0..n {
            let v = _mm256_set1_ps(*xp.add(i));
            for k in 0..G {
                let p = w.add((k * n + i) * BLOCK);
                lo[k] = _mm256_fmadd_ps(_mm256_load_ps(p), v, lo[k]);
                hi[k] = _mm256_fmadd_ps(_mm256_load_ps(p.add(8)), v, hi[k]);
            }
        }
        let o = out.as_mut_ptr().add(b * BLOCK);
        for k in 0..G {
            _mm256_storeu_ps(o.add(k * BLOCK), lo[k]);
            _mm256_storeu_ps(o.add(k * BLOCK + 8), hi[k]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{Array1, Array2};

    #[test]
    fn packing_places_each_weight_and_pads_with_zeros() {
        let layer = Dense {
            weight: Array2::from_shape_fn((20, 3), |(j, i)| (j * 10 + i) as f32),
            bias: Array1::from_shape_fn(20, |j| -(j as f32)),
        };
        let p = PackedLayer::pack(&layer).unwrap();
        assert_eq!((p.blocks(), p.weight.len()), (2, 6));
        assert_eq!(p.weight[3 + 2].0[3], 192.0); // output 19, input 2
        assert_eq!(p.weight[3 + 2].0[4], 0.0); // output 20: padding
        assert_eq!(p.bias[1].0[3], -19.0);
        let x = [1.0, -2.0, 0.5];
        let mut out = vec![f32::NAN; 32];
        p.gemv_portable(&x, &mut out);
        for (j, &got) in out[..20].iter().enumerate() {
            let want = (j * 10) as f32 - 2.0 * (j * 10 + 1) as f32 + 0.5 * (j * 10 + 2) as f32;
            assert_eq!(got, want - j as f32);
        }
        assert!(out[20..].iter().all(|&v| v == 0.0));
        let narrow = Dense {
            weight: Array2::zeros((MIN_OUTPUTS - 1, 4)),
            bias: Array1::zeros(MIN_OUTPUTS - 1),
        };
        assert!(PackedLayer::pack(&narrow).is_none());
    }
}
