//! HQQ (half-quadratic quantization, the `hqq` package's `Quantizer.quantize` with its
//! default `optimize_weights_proximal_legacy`), group 64, 4 or 8 bits, along either of
//! hqq's axes. `axis=1` groups 64 consecutive inputs of a row (`HQQ4`'s default, decoded
//! as AFQ is); `axis=0` is described next, and both are checked against the package.
//!
//! Axis 0 grouping follows hqq exactly: the weight is viewed flat as a (group, numel/group)
//! matrix and each of its columns is one group, so group g holds flat elements
//! g, g + L, g + 2L, … (L = numel/group), which is a strided run across rows, not a
//! contiguous run along the input dimension. A row's elements therefore each use a
//! different (scale, zero), which the decoder reads as a contiguous slice (`packing.rs`,
//! `affine_elements`). mistral.rs's HQQ ISQ groups the same way.
//!
//! Per group: inverse scale s = (2^b − 1)/(max − min), 1 where max − min ≤ 1e-4, at most
//! 2e4; zero z = −min·s. Then at most 20 steps on the zero only (p = 0.7, β = 10):
//! Wq = clamp(round(W·s + z)), Wr = (Wq − z)/s, We = shrink_p(W − Wr) with
//! shrink_p(x) = sign(x)·relu(|x| − |x|^(p−1)/β), z = mean over the group of
//! Wq − (W − We)·s, stopping (after that step's update) once the mean |W − Wr| over the
//! whole tensor stops falling. hqq 0.2.8 keeps β fixed across steps (its older releases,
//! and mistral.rs, grow it by κ = 1.01 each step); we follow the package. All in f32 as
//! hqq computes on the CPU, rounding half to even as `torch.round` does.
//!
//! Stored: codes packed flat in `packing.rs`'s little-endian bit stream (not hqq's own
//! bitpack layout), scale = 1/s and zero as f16 (hqq's fp16 compute dtype); dequantized
//! w = (q − zero)·scale.

use super::packing::{self, Affine, DecodeRows};
use anyhow::{ensure, Result};
use candle_core::Tensor;
use half::f16;
use rayon::prelude::*;

pub const BITS: [u32; 2] = [4, 8];
/// The grouping `HQQ4` / `HQQ8` use: whichever gave the lower perplexity on held-out
/// text (docs/QUANTIZATION.md). At 4 bits contiguous groups win clearly (−7 % and −15 %);
/// at 8 bits the two are within 0.2 %, axis 0 slightly ahead.
pub const fn default_axis(bits: u32) -> HqqAxis {
    if bits == 8 {
        HqqAxis::Strided
    } else {
        HqqAxis::Contiguous
    }
}
pub const DEFAULT_GROUP: usize = 64;
/// The optimiser's defaults in hqq (`optimize_weights_proximal_legacy`).
pub const ITERS: usize = 20;
const LP_NORM: f64 = 0.7;
const BETA: f64 = 10.0;

/// How weights are grouped, in the hqq package's terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HqqAxis {
    /// `axis=0`: the flat weight viewed as (group, numel/group), a group per column — a
    /// strided run across rows.
    Strided,
    /// `axis=1`: the flat weight viewed as (numel/group, group), a group per row — `group`
    /// consecutive inputs of one output row.
    Contiguous,
}

impl HqqAxis {
    /// hqq's `axis` argument.
    pub fn hqq_axis(self) -> u8 {
        match self {
            Self::Strided => 0,
            Self::Contiguous => 1,
        }
    }

    pub fn from_hqq_axis(a: u8) -> Result<Self> {
        match a {
            0 => Ok(Self::Strided),
            1 => Ok(Self::Contiguous),
            other => anyhow::bail!("HQQ axis must be 0 or 1, got {other}"),
        }
    }
}

#[derive(Debug, Clone)]
pub struct HqqLinear {
    rows: usize,
    cols: usize,
    bits: u32,
    group: usize,
    axis: HqqAxis,
    /// rows × cols codes, flat, packed.
    packed: Vec<u32>,
    /// One per group (numel / group): the dequantization scale 1/s and the zero.
    scales: Vec<f16>,
    zeros: Vec<f16>,
    bias: Option<Tensor>,
}

/// hqq's `axis=1` quantization: the same optimiser over groups of `group` consecutive
/// elements. Run as `axis=0` on the transposed (group, numel/group) view, which makes
/// each contiguous group a column; codes come back in the weight's order, scales and
/// zeros one per group in order.
pub fn quantize_groups_contiguous(
    w: &[f32],
    bits: u32,
    group: usize,
) -> (Vec<u8>, Vec<f32>, Vec<f32>) {
    let l = w.len() / group;
    let mut t = vec![0f32; w.len()];
    for (g, chunk) in w.chunks_exact(group).enumerate() {
        for (k, &v) in chunk.iter().enumerate() {
            t[k * l + g] = v;
        }
    }
    let (codes_t, scales, zeros) = quantize_groups(&t, bits, group);
    let mut codes = vec![0u8; w.len()];
    for (g, chunk) in codes.chunks_exact_mut(group).enumerate() {
        for (k, q) in chunk.iter_mut().enumerate() {
            *q = codes_t[k * l + g];
        }
    }
    (codes, scales, zeros)
}

/// hqq's quantization of a flat weight: (codes, scale = 1/s, zero), all groups, in f32.
pub fn quantize_groups(w: &[f32], bits: u32, group: usize) -> (Vec<u8>, Vec<f32>, Vec<f32>) {
    let l = w.len() / group;
    let max_v = ((1u32 << bits) - 1) as f32;
    let (mut mn, mut mx) = (vec![f32::INFINITY; l], vec![f32::NEG_INFINITY; l]);
    for k in 0..group {
        for ((a, b), &v) in mn.iter_mut().zip(&mut mx).zip(&w[k * l..(k + 1) * l]) {
            *a = a.min(v);
            *b = b.max(v);
        }
    }
    let scale: Vec<f32> = mn
        .iter()
        .zip(&mx)
        .map(|(&lo, &hi)| {
            let denom = hi - lo;
            let s = if denom.abs() <= 1e-4 {
                1.0
            } else {
                max_v / denom
            };
            s.min(2e4)
        })
        .collect();
    let mut zero: Vec<f32> = mn.iter().zip(&scale).map(|(&lo, &s)| -lo * s).collect();

    // Columns (groups) are independent within a step; the stopping rule is global.
    const BLOCK: usize = 256;
    let mut best = f32::INFINITY;
    for _ in 0..ITERS {
        let mut next = vec![0f32; l];
        let err: f64 = next
            .par_chunks_mut(BLOCK)
            .enumerate()
            .map(|(b, znext)| {
                let (g0, n) = (b * BLOCK, znext.len());
                let (s, z) = (&scale[g0..g0 + n], &zero[g0..g0 + n]);
                // |W − Wr| summed per column first (64 terms), then in f64.
                let mut err = [0f32; BLOCK];
                let (mut term, mut x) = ([0f32; BLOCK], [0f32; BLOCK]);
                for k in 0..group {
                    let row = &w[k * l + g0..k * l + g0 + n];
                    // Vectorisable: every element as if its shrunk error were 0 …
                    for i in 0..n {
                        let q = code(row[i], s[i], z[i], max_v);
                        let wr = (q - z[i]) / s[i];
                        x[i] = row[i] - wr;
                        err[i] += x[i].abs();
                        term[i] = q - row[i] * s[i];
                    }
                    // … then the few it is not.
                    for i in 0..n {
                        if x[i].abs() >= SHRINK_FLOOR {
                            let q = code(row[i], s[i], z[i], max_v);
                            term[i] = q - (row[i] - shrink(x[i])) * s[i];
                        }
                    }
                    for i in 0..n {
                        znext[i] += term[i];
                    }
                }
                for zn in znext.iter_mut() {
                    *zn /= group as f32;
                }
                err[..n].iter().map(|&e| f64::from(e)).sum::<f64>()
            })
            .sum();
        zero = next;
        let err = (err / w.len() as f64) as f32;
        if err < best {
            best = err;
        } else {
            break;
        }
    }

    let mut codes = vec![0u8; w.len()];
    codes
        .par_chunks_mut(l)
        .zip(w.par_chunks(l))
        .for_each(|(q, row)| {
            for i in 0..l {
                q[i] = code(row[i], scale[i], zero[i], max_v) as u8;
            }
        });
    let inv = scale.iter().map(|&s| 1.0 / s).collect();
    (codes, inv, zero)
}

/// `clamp(round(w·s + z), 0, max_v)`, rounding half to even as `torch.round` does, without
/// a libm call so that loops over it vectorise: values are first clamped to
/// [−1, max_v + 1] (which changes no result), then rounded by adding and removing 1.5·2^23.
#[inline(always)]
fn code(w: f32, s: f32, z: f32, max_v: f32) -> f32 {
    const MAGIC: f32 = 12_582_912.0;
    let v = (w * s + z).clamp(-1.0, max_v + 1.0);
    ((v + MAGIC) - MAGIC).clamp(0.0, max_v)
}

/// Below |x| = β^(−1/(2−p)) ≈ 0.1701 the shrink operator gives exactly 0 (nearly every
/// element of a real weight); the margin is far above powf's error.
const SHRINK_FLOOR: f32 = 0.169;

/// shrink_p(x) = sign(x)·relu(|x| − |x|^(p−1)/β), computed as torch does it in f32:
/// (1/β) and p − 1 rounded to f32, |0|^(p−1) = ∞ shrinking to 0.
fn shrink(x: f32) -> f32 {
    let ax = x.abs();
    let shrunk = (ax - (1.0 / BETA) as f32 * ax.powf((LP_NORM - 1.0) as f32)).max(0.0);
    if x > 0.0 {
        shrunk
    } else if x < 0.0 {
        -shrunk
    } else {
        0.0
    }
}

impl HqqLinear {
    /// Quantizes a row-major (rows, cols) f32 weight with hqq's `axis=0` grouping.
    pub fn quantize(
        weight: &[f32],
        rows: usize,
        cols: usize,
        bits: u32,
        group: usize,
        bias: Option<Tensor>,
    ) -> Result<Self> {
        Self::quantize_axis(weight, rows, cols, bits, group, HqqAxis::Strided, bias)
    }

    /// Quantizes a row-major (rows, cols) f32 weight, grouped along `axis`.
    pub fn quantize_axis(
        weight: &[f32],
        rows: usize,
        cols: usize,
        bits: u32,
        group: usize,
        axis: HqqAxis,
        bias: Option<Tensor>,
    ) -> Result<Self> {
        ensure!(
            BITS.contains(&bits),
            "HQQ has no {bits}-bit type here; bits must be one of {BITS:?}"
        );
        ensure!(group > 0, "HQQ group size must be positive");
        ensure!(rows > 0, "HQQ{bits}: the weight has no rows");
        ensure!(
            cols > 0 && cols.is_multiple_of(group),
            "HQQ{bits}: row length {cols} is not a multiple of the group size {group}"
        );
        ensure!(
            weight.len() == rows * cols,
            "weight has {} values, not {rows} × {cols}",
            weight.len()
        );
        ensure!(
            weight.iter().all(|v| v.is_finite()),
            "HQQ{bits}: the weight has non-finite values"
        );
        let (codes, scales, zeros) = match axis {
            HqqAxis::Strided => quantize_groups(weight, bits, group),
            HqqAxis::Contiguous => quantize_groups_contiguous(weight, bits, group),
        };
        Self::from_parts(
            rows,
            cols,
            bits,
            group,
            axis,
            packing::pack(&codes, bits),
            packing::to_f16_checked(&scales, "HQQ scale")?,
            packing::to_f16_checked(&zeros, "HQQ zero")?,
            bias,
        )
    }

    #[allow(clippy::too_many_arguments)]
    pub fn from_parts(
        rows: usize,
        cols: usize,
        bits: u32,
        group: usize,
        axis: HqqAxis,
        packed: Vec<u32>,
        scales: Vec<f16>,
        zeros: Vec<f16>,
        bias: Option<Tensor>,
    ) -> Result<Self> {
        ensure!(BITS.contains(&bits), "HQQ has no {bits}-bit type here");
        ensure!(
            group > 0 && cols.is_multiple_of(group) && (cols * bits as usize).is_multiple_of(32),
            "HQQ: row length {cols} is not a multiple of the group size {group}"
        );
        packing::check_parts(
            "HQQ",
            rows,
            cols,
            bits,
            group,
            packed.len(),
            scales.len(),
            zeros.len(),
            bias.as_ref(),
        )?;
        Ok(Self {
            rows,
            cols,
            bits,
            group,
            axis,
            packed,
            scales,
            zeros,
            bias,
        })
    }

    pub fn bits(&self) -> u32 {
        self.bits
    }
    pub fn group_size(&self) -> usize {
        self.group
    }
    pub fn axis(&self) -> HqqAxis {
        self.axis
    }
    /// One per group, in hqq's order (group g = column g of the (group, numel/group) view).
    pub fn scales(&self) -> &[f16] {
        &self.scales
    }
    pub fn zeros(&self) -> &[f16] {
        &self.zeros
    }
    /// Every code, unpacked, in the weight's row-major order.
    pub fn codes(&self) -> Vec<u8> {
        let mut out = vec![0u8; self.rows * self.cols];
        packing::unpack(&self.packed, self.bits, &mut out);
        out
    }
}

impl DecodeRows for HqqLinear {
    fn dims(&self) -> (usize, usize) {
        (self.rows, self.cols)
    }
    #[inline(always)]
    fn decode_row(&self, n: usize, codes: &mut [u8], out: &mut [f32]) {
        let words = self.cols * self.bits as usize / 32;
        packing::unpack(&self.packed[n * words..], self.bits, codes);
        if self.axis == HqqAxis::Contiguous {
            let groups = self.cols / self.group;
            let g = n * groups..(n + 1) * groups;
            packing::affine_groups(
                Affine::ScaleZero,
                codes,
                &self.scales[g.clone()],
                &self.zeros[g],
                self.group,
                out,
            );
            return;
        }
        // Element c of row n is flat element n·cols + c, in group (n·cols + c) mod L: a
        // contiguous run of groups that wraps around L (several times when rows < group).
        let l = self.scales.len();
        let (mut c, mut g) = (0, n * self.cols % l);
        while c < self.cols {
            let len = (self.cols - c).min(l - g);
            packing::affine_elements(
                Affine::ScaleZero,
                &codes[c..c + len],
                &self.scales[g..g + len],
                &self.zeros[g..g + len],
                &mut out[c..c + len],
            );
            c += len;
            g = 0;
        }
    }
}

packing::impl_decoded_linear!(HqqLinear, |s| weight_bytes: s.packed.len() * 4 + (s.scales.len() + s.zeros.len()) * 2, name: if s.axis == default_axis(s.bits) {
    format!("HQQ{}", s.bits)
} else {
    format!("HQQ{}_AXIS{}", s.bits, s.axis.hqq_axis())
});

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::QuantLinear;

    #[test]
    fn groups_run_down_the_flat_columns() {
        // 2 × 64 weight, group 64: L = 2, group 0 = even flat indices, group 1 = odd.
        let w: Vec<f32> = (0..128)
            .map(|i| if i % 2 == 0 { 1.0 } else { i as f32 })
            .collect();
        let (codes, scale, zero) = quantize_groups(&w, 4, 64);
        // Group 0 is constant: scale 1, zero −1, every code 0 and exact.
        assert_eq!((scale[0], zero[0]), (1.0, -1.0));
        assert!(codes.iter().step_by(2).all(|&q| q == 0));
        let lin = HqqLinear::quantize(&w, 2, 64, 4, 64, None).unwrap();
        let d: Vec<f32> = lin
            .dequantize()
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        for (i, (&a, &b)) in w.iter().zip(&d).enumerate() {
            assert!((a - b).abs() <= 127.0 / 15.0 * 0.6, "{i}: {a} vs {b}");
        }
    }

    #[test]
    fn rejects_bad_shapes_and_bits() {
        let w = vec![0.5f32; 2 * 96];
        assert!(HqqLinear::quantize(&w, 2, 96, 4, 64, None).is_err());
        assert!(HqqLinear::quantize(&w, 2, 96, 3, 32, None).is_err());
        assert!(HqqLinear::quantize(&w, 2, 96, 4, 32, None).is_ok());
    }
}
