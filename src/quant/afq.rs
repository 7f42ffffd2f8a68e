//! AFQ: MLX's affine quantization (`mx.quantize`, mode "affine"). Groups of `group_size`
//! consecutive weights along the input dimension, `w ≈ scale·q + bias` with
//! q ∈ [0, 2^bits − 1], codes packed into u32 words as MLX packs them (`packing.rs`), one
//! f16 scale and bias per group (MLX stores them in the model's dtype).
//!
//! The parameters are MLX's (mlx/backend/cpu/quantized.cpp): not a plain min/max fit but
//! one anchored on the group's larger-magnitude edge, which is then reproduced exactly:
//! scale = ±max((max − min)/(2^bits − 1), 1e-7), negative when |max| ≥ |min|;
//! q0 = rint(edge/scale); unless q0 is 0, scale = edge/q0 and bias = edge (else bias 0);
//! q = clamp(rint((w − bias)/scale), 0, 2^bits − 1). All in f32, rounding half to even.
//! Codes are chosen with the f32 scale and the parameters rounded to f16 on store, as MLX
//! does for f16 models.

use super::kernels;
use super::packing::{self, Affine, DecodeRows};
use anyhow::{ensure, Result};
use candle_core::Tensor;
use half::f16;
use rayon::prelude::*;

pub const BITS: [u32; 5] = [2, 3, 4, 6, 8];
pub const GROUP_SIZES: [usize; 3] = [32, 64, 128];
pub const DEFAULT_GROUP: usize = 64;

#[derive(Debug, Clone)]
pub struct AfqLinear {
    rows: usize,
    cols: usize,
    bits: u32,
    group: usize,
    /// rows × (cols · bits / 32) words.
    packed: Vec<u32>,
    /// rows × (cols / group).
    scales: Vec<f16>,
    biases: Vec<f16>,
    bias: Option<Tensor>,
}

/// MLX's parameters of one group: (scale, bias), in f32.
pub fn group_params(w: &[f32], bits: u32) -> (f32, f32) {
    let n_bins = ((1u32 << bits) - 1) as f32;
    let (mut w_min, mut w_max) = (f32::INFINITY, f32::NEG_INFINITY);
    for &v in w {
        w_max = w_max.max(v);
        w_min = w_min.min(v);
    }
    let mask = w_min.abs() > w_max.abs();
    let mut scale = ((w_max - w_min) / n_bins).max(1e-7);
    if !mask {
        scale = -scale;
    }
    let edge = if mask { w_min } else { w_max };
    let q0 = (edge / scale).round_ties_even();
    if q0 != 0.0 {
        (edge / q0, edge)
    } else {
        (scale, 0.0)
    }
}

impl AfqLinear {
    /// Quantizes a row-major (rows, cols) f32 weight.
    pub fn quantize(
        weight: &[f32],
        rows: usize,
        cols: usize,
        bits: u32,
        group: usize,
        bias: Option<Tensor>,
    ) -> Result<Self> {
        ensure!(
            BITS.contains(&bits),
            "AFQ has no {bits}-bit type; bits must be one of {BITS:?}"
        );
        ensure!(
            GROUP_SIZES.contains(&group),
            "AFQ group size must be one of {GROUP_SIZES:?}, got {group}"
        );
        ensure!(
            cols > 0 && cols.is_multiple_of(group),
            "AFQ{bits}: row length {cols} is not a multiple of the group size {group}"
        );
        ensure!(
            weight.len() == rows * cols,
            "weight has {} values, not {rows} × {cols}",
            weight.len()
        );
        ensure!(
            weight.iter().all(|v| v.is_finite()),
            "AFQ{bits}: the weight has non-finite values"
        );
        let n_bins = ((1u32 << bits) - 1) as f32;
        let per_row: Vec<(Vec<u32>, Vec<f32>, Vec<f32>)> = weight
            .par_chunks(cols)
            .map(|row| {
                let mut codes = vec![0u8; cols];
                let (mut scales, mut biases) = (Vec::new(), Vec::new());
                for (w, q) in row.chunks(group).zip(codes.chunks_mut(group)) {
                    let (scale, bias) = group_params(w, bits);
                    for (&v, q) in w.iter().zip(q) {
                        *q = ((v - bias) / scale).round_ties_even().clamp(0.0, n_bins) as u8;
                    }
                    scales.push(scale);
                    biases.push(bias);
                }
                (packing::pack(&codes, bits), scales, biases)
            })
            .collect();
        let mut packed = Vec::with_capacity(packing::packed_words(rows * cols, bits));
        let (mut scales, mut biases) = (Vec::new(), Vec::new());
        for (p, s, b) in per_row {
            packed.extend(p);
            scales.extend(s);
            biases.extend(b);
        }
        Self::from_parts(
            rows,
            cols,
            bits,
            group,
            packed,
            packing::to_f16_checked(&scales, "AFQ scale")?,
            packing::to_f16_checked(&biases, "AFQ bias")?,
            bias,
        )
    }

    /// A layer from MLX-layout parts (checked for consistent sizes).
    #[allow(clippy::too_many_arguments)]
    pub fn from_parts(
        rows: usize,
        cols: usize,
        bits: u32,
        group: usize,
        packed: Vec<u32>,
        scales: Vec<f16>,
        biases: Vec<f16>,
        bias: Option<Tensor>,
    ) -> Result<Self> {
        ensure!(BITS.contains(&bits), "AFQ has no {bits}-bit type");
        ensure!(
            group > 0 && cols.is_multiple_of(group) && (group * bits as usize).is_multiple_of(32),
            "AFQ: row length {cols} is not a multiple of the group size {group}"
        );
        packing::check_parts(
            "AFQ",
            rows,
            cols,
            bits,
            group,
            packed.len(),
            scales.len(),
            biases.len(),
            bias.as_ref(),
        )?;
        Ok(Self {
            rows,
            cols,
            bits,
            group,
            packed,
            scales,
            biases,
            bias,
        })
    }

    pub fn bits(&self) -> u32 {
        self.bits
    }
    pub fn group_size(&self) -> usize {
        self.group
    }
    /// The packed codes, MLX's `weight` (rows × cols·bits/32 u32).
    pub fn packed(&self) -> &[u32] {
        &self.packed
    }
    pub fn scales(&self) -> &[f16] {
        &self.scales
    }
    pub fn biases(&self) -> &[f16] {
        &self.biases
    }
    /// Every code, unpacked (rows × cols).
    pub fn codes(&self) -> Vec<u8> {
        let mut out = vec![0u8; self.rows * self.cols];
        packing::unpack(&self.packed, self.bits, &mut out);
        out
    }
}

impl DecodeRows for AfqLinear {
    fn dims(&self) -> (usize, usize) {
        (self.rows, self.cols)
    }
    #[inline(always)]
    fn decode_row(&self, n: usize, codes: &mut [u8], out: &mut [f32]) {
        let words = self.cols * self.bits as usize / 32;
        let groups = self.cols / self.group;
        packing::unpack(&self.packed[n * words..], self.bits, codes);
        let g = n * groups..(n + 1) * groups;
        packing::affine_groups(
            Affine::ScaleBias,
            codes,
            &self.scales[g.clone()],
            &self.biases[g],
            self.group,
            out,
        );
    }

    fn fused_group(&self) -> Option<usize> {
        kernels::affine_kernel(self.bits, self.group).then_some(self.group)
    }
    fn fused_dot(&self, n: usize, x: &[f32], xsums: &[f32], out: &mut [f32]) {
        let words = self.cols * self.bits as usize / 32;
        let groups = self.cols / self.group;
        let g = n * groups..(n + 1) * groups;
        for (t, o) in out.iter_mut().enumerate() {
            *o = kernels::affine_row_dot(
                self.bits,
                &self.packed[n * words..(n + 1) * words],
                &self.scales[g.clone()],
                &self.biases[g.clone()],
                self.group,
                &x[t * self.cols..(t + 1) * self.cols],
                &xsums[t * groups..(t + 1) * groups],
            )
            .expect("fused_group said there is a kernel");
        }
    }
}

packing::impl_decoded_linear!(AfqLinear, |s| weight_bytes: s.packed.len() * 4 + (s.scales.len() + s.biases.len()) * 2, name: format!("AFQ{}", s.bits));

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::QuantLinear;

    #[test]
    fn anchors_the_larger_edge_exactly() {
        // max 3 is the larger edge: scale negative, bias = 3, code 0 gives 3 back exactly.
        let w: Vec<f32> = (0..64).map(|i| [1.0, 2.0, 3.0][i % 3]).collect();
        let (s, b) = group_params(&w, 4);
        assert_eq!(b, 3.0);
        assert!(s < 0.0);
        assert_eq!(s, 3.0 / (3.0f32 / -(2.0f32 / 15.0)).round_ties_even());
        // All zeros: scale −1e-7, bias 0, codes 0.
        assert_eq!(group_params(&[0.0; 64], 4), (-1e-7, 0.0));
    }

    /// The fused kernel (where this CPU has one) against decoding rows.
    #[test]
    fn fused_kernel_matches_decoded_rows() {
        let (rows, cols, m) = (40, 256, 3);
        let w = crate::quant::kernels::test_data(rows * cols, 21, 0.3);
        let x = crate::quant::kernels::test_data(m * cols, 22, 4.0);
        for bits in BITS {
            let lin = AfqLinear::quantize(&w, rows, cols, bits, 64, None).unwrap();
            if lin.fused_group().is_none() {
                continue;
            }
            let fused = packing::matmul(&lin, &x, m);
            let deq: Vec<f32> = lin
                .dequantize()
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            for t in 0..m {
                for n in 0..rows {
                    let (row, xt) = (&deq[n * cols..(n + 1) * cols], &x[t * cols..(t + 1) * cols]);
                    let want: f32 = row.iter().zip(xt).map(|(a, b)| a * b).sum();
                    let mag: f32 = row.iter().zip(xt).map(|(a, b)| (a * b).abs()).sum();
                    let got = fused[t * rows + n];
                    assert!(
                        (got - want).abs() <= 1e-5 * mag,
                        "AFQ{bits} t={t} n={n}: {got} vs {want}"
                    );
                }
            }
        }
    }

    #[test]
    fn rejects_bad_shapes_and_bits() {
        let w = vec![0.5f32; 2 * 96];
        assert!(AfqLinear::quantize(&w, 2, 96, 4, 64, None).is_err());
        assert!(AfqLinear::quantize(&w, 2, 96, 5, 32, None).is_err());
        assert!(AfqLinear::quantize(&w, 2, 96, 4, 32, None).is_ok());
    }
}
