//! FP8 E4M3 (the "fn" variant: no infinities, one NaN, max 448) with f32 scales. ISQ
//! uses one scale per row: scale = absmax/448 (1 for an all-zero row), code =
//! e4m3(w / scale), rounding to nearest even, subnormals kept, values past 448 saturating
//! to ±448. Blockwise checkpoints bring one scale per [bo, bi] block; they are kept as one
//! scale per row per run of `scale_cols` columns (a block's scale repeated over its rows).
//! Dequantized w = e4m3_value(code) · scale.

use super::packing::{self, DecodeRows};
use anyhow::{ensure, Result};
use candle_core::Tensor;
use rayon::prelude::*;
use std::sync::OnceLock;

pub const E4M3_MAX: f32 = 448.0;

/// The E4M3 code of `x`, rounded to nearest even; beyond ±448 saturates, NaN stays NaN.
pub fn f32_to_e4m3(x: f32) -> u8 {
    let sign = if x.is_sign_negative() { 0x80u8 } else { 0 };
    let a = x.abs();
    if a.is_nan() {
        return sign | 0x7f;
    }
    // 464 lies halfway between 448 (the largest code) and 480 (which E4M3 cannot hold).
    if a >= 464.0 {
        return sign | 0x7e;
    }
    if a < 2f32.powi(-6) {
        // Subnormals m·2^-9 (m = 0..7); m = 8 is the smallest normal, code 0x08 as well.
        return sign | (a * 512.0).round_ties_even() as u8;
    }
    // Round the 23-bit mantissa to 3 bits, half to even; a carry moves into the exponent.
    let bits = a.to_bits();
    let rounded = (bits + 0x7_ffff + ((bits >> 20) & 1)) >> 20;
    // f32 exponent bias 127 → E4M3 bias 7.
    let code = rounded - (120 << 3);
    sign | code.min(0x7e) as u8
}

/// The value of an E4M3 code.
pub fn e4m3_to_f32(code: u8) -> f32 {
    e4m3_table()[code as usize]
}

/// The value of any E4M3 code but NaN (0x7f, 0xff), as integer and float operations that
/// vectorise: the 7 low bits shifted into an f32's exponent and mantissa read as 2^-120
/// times the value (subnormals included), which one exact multiplication rescales.
#[inline(always)]
pub fn e4m3_finite_to_f32(code: u8) -> f32 {
    let c = u32::from(code);
    let v = f32::from_bits((c & 0x7f) << 20) * f32::from_bits(0x7b80_0000); // 2^120
    f32::from_bits(v.to_bits() | (c & 0x80) << 24)
}

/// All 256 code values.
pub fn e4m3_table() -> &'static [f32; 256] {
    static TABLE: OnceLock<[f32; 256]> = OnceLock::new();
    TABLE.get_or_init(|| {
        let mut t = [0f32; 256];
        for (c, v) in t.iter_mut().enumerate() {
            let (e, m) = ((c >> 3) & 0xf, c & 7);
            let mag = if e == 0xf && m == 7 {
                f32::NAN
            } else if e == 0 {
                m as f32 * 2f32.powi(-9)
            } else {
                (1.0 + m as f32 / 8.0) * 2f32.powi(e as i32 - 7)
            };
            *v = if c & 0x80 != 0 { -mag } else { mag };
        }
        t
    })
}

/// The per-row scale: absmax/448, or 1 for an all-zero row.
pub fn row_scale(row: &[f32]) -> f32 {
    let absmax = row.iter().fold(0f32, |m, v| m.max(v.abs()));
    if absmax > 0.0 {
        absmax / E4M3_MAX
    } else {
        1.0
    }
}

#[derive(Debug, Clone)]
pub struct Fp8Linear {
    rows: usize,
    cols: usize,
    codes: Vec<u8>,
    /// `rows × ceil(cols / scale_cols)` scales, row-major.
    scales: Vec<f32>,
    /// Columns each scale covers in its row (`cols`: one scale per row).
    scale_cols: usize,
    bias: Option<Tensor>,
}

impl Fp8Linear {
    /// Quantizes a row-major (rows, cols) f32 weight.
    pub fn quantize(
        weight: &[f32],
        rows: usize,
        cols: usize,
        bias: Option<Tensor>,
    ) -> Result<Self> {
        ensure!(
            weight.len() == rows * cols && cols > 0,
            "weight has {} values, not {rows} × {cols}",
            weight.len()
        );
        ensure!(
            weight.iter().all(|v| v.is_finite()),
            "FP8: the weight has non-finite values"
        );
        let (codes, scales): (Vec<Vec<u8>>, Vec<f32>) = weight
            .par_chunks(cols)
            .map(|row| {
                let scale = row_scale(row);
                (row.iter().map(|&v| f32_to_e4m3(v / scale)).collect(), scale)
            })
            .unzip();
        Self::from_parts(rows, cols, codes.concat(), scales, bias)
    }

    /// One scale per row.
    pub fn from_parts(
        rows: usize,
        cols: usize,
        codes: Vec<u8>,
        scales: Vec<f32>,
        bias: Option<Tensor>,
    ) -> Result<Self> {
        Self::from_column_blocks(rows, cols, codes, scales, cols.max(1), bias)
    }

    /// One scale per row per run of `scale_cols` columns (the last run may be shorter):
    /// `scales` has `rows × ceil(cols / scale_cols)` values, row-major.
    pub fn from_column_blocks(
        rows: usize,
        cols: usize,
        codes: Vec<u8>,
        scales: Vec<f32>,
        scale_cols: usize,
        bias: Option<Tensor>,
    ) -> Result<Self> {
        ensure!(scale_cols > 0, "FP8 scale block width must be positive");
        ensure!(
            codes.len() == rows * cols && scales.len() == rows * cols.div_ceil(scale_cols),
            "FP8 parts do not match a {rows} × {cols} weight with a scale per {scale_cols} columns"
        );
        ensure!(
            scales.iter().all(|s| s.is_finite()),
            "FP8 scales have non-finite values"
        );
        ensure!(
            codes.iter().all(|&c| c & 0x7f != 0x7f),
            "FP8 weight has NaN codes"
        );
        packing::check_bias(bias.as_ref(), rows)?;
        Ok(Self {
            rows,
            cols,
            codes,
            scales,
            scale_cols,
            bias,
        })
    }

    /// The E4M3 codes, row-major.
    pub fn codes(&self) -> &[u8] {
        &self.codes
    }
    /// The dequantization scales: per row, one per run of [`Self::scale_cols`] columns.
    pub fn scales(&self) -> &[f32] {
        &self.scales
    }
    /// Columns each scale covers (`cols` for one scale per row).
    pub fn scale_cols(&self) -> usize {
        self.scale_cols
    }
}

impl DecodeRows for Fp8Linear {
    fn dims(&self) -> (usize, usize) {
        (self.rows, self.cols)
    }
    #[inline(always)]
    fn decode_row(&self, n: usize, _codes: &mut [u8], out: &mut [f32]) {
        // Never NaN: `from_parts` rejects NaN codes.
        let per_row = self.cols.div_ceil(self.scale_cols);
        let row_scales = &self.scales[n * per_row..(n + 1) * per_row];
        let codes = &self.codes[n * self.cols..(n + 1) * self.cols];
        for ((o, c), &scale) in out
            .chunks_mut(self.scale_cols)
            .zip(codes.chunks(self.scale_cols))
            .zip(row_scales)
        {
            for (o, &c) in o.iter_mut().zip(c) {
                *o = e4m3_finite_to_f32(c) * scale;
            }
        }
    }
}

packing::impl_decoded_linear!(Fp8Linear, |s| weight_bytes: s.codes.len() + s.scales.len() * 4, name: if s.scale_cols >= s.cols { "FP8".to_string() } else { format!("FP8 (scale per {} columns)", s.scale_cols) });

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_round_trips() {
        for c in 0..=255u8 {
            let v = e4m3_to_f32(c);
            if v.is_nan() {
                assert_eq!(c & 0x7f, 0x7f);
                continue;
            }
            // −0 keeps its sign bit.
            assert_eq!(f32_to_e4m3(v), c, "{c:#04x} = {v}");
            assert_eq!(e4m3_finite_to_f32(c).to_bits(), v.to_bits(), "{c:#04x}");
        }
    }

    #[test]
    fn rounds_half_to_even_and_saturates() {
        assert_eq!(e4m3_to_f32(0x7e), 448.0);
        assert_eq!(f32_to_e4m3(1000.0), 0x7e);
        assert_eq!(f32_to_e4m3(-463.9), 0xfe);
        // Between 1.0 (0x38) and 1.125 (0x39): the tie goes to the even mantissa.
        assert_eq!(f32_to_e4m3(1.0625), 0x38);
        assert_eq!(f32_to_e4m3(1.1875), 0x3a);
        // Smallest subnormal 2^-9: a half of it rounds to 0, three halves to 2·2^-9.
        assert_eq!(f32_to_e4m3(2f32.powi(-10)), 0);
        assert_eq!(f32_to_e4m3(3.0 * 2f32.powi(-10)), 2);
        // Largest subnormal rounding up into the smallest normal.
        assert_eq!(f32_to_e4m3(7.6 * 2f32.powi(-9)), 0x08);
    }
}
