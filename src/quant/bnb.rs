//! bitsandbytes storage, as its checkpoints hold it.
//!
//! 4-bit (NF4 / FP4): the weight is flattened row-major and cut into blocks of `blocksize`
//! elements; each element is a 4-bit index into a 16-entry codebook (`quant_map`), two to a
//! byte with the first element in the high nibble, and each block has one f32 `absmax`:
//! w = quant_map[code] · absmax[i / blocksize]. Blocks may run across rows.
//!
//! LLM.int8: one i8 code per element and one f32 `SCB` per row (its absmax):
//! w = code · SCB / 127.

use super::packing::{self, DecodeRows};
use anyhow::{ensure, Result};
use candle_core::Tensor;

/// The codebook family of a 4-bit layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bnb4Kind {
    Nf4,
    Fp4,
}

impl Bnb4Kind {
    pub fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_lowercase().as_str() {
            "nf4" => Some(Self::Nf4),
            "fp4" => Some(Self::Fp4),
            _ => None,
        }
    }
    /// bitsandbytes' codebook, for checkpoints that do not store their `quant_map`.
    pub fn default_codebook(self) -> [f32; 16] {
        match self {
            // The 16 quantiles of N(0, 1) normalised to [-1, 1], as in the QLoRA paper.
            Self::Nf4 => [
                -1.0,
                -0.696_192_8,
                -0.525_073_05,
                -0.394_917_5,
                -0.284_441_38,
                -0.184_773_43,
                -0.091_050_036,
                0.0,
                0.079_580_3,
                0.160_930_2,
                0.246_112_3,
                0.337_915_24,
                0.440_709_83,
                0.562_617,
                0.722_956_84,
                1.0,
            ],
            // 1 sign, 2 exponent and 1 mantissa bit, scaled so the largest is 1.
            Self::Fp4 => {
                let pos = [
                    0.0,
                    0.005_208_333,
                    0.666_666_7,
                    1.0,
                    0.333_333_34,
                    0.5,
                    0.166_666_67,
                    0.25,
                ];
                std::array::from_fn(|i| if i < 8 { pos[i] } else { -pos[i - 8] })
            }
        }
    }
}

#[derive(Debug, Clone)]
pub struct Bnb4Linear {
    rows: usize,
    cols: usize,
    kind: Bnb4Kind,
    /// Two codes a byte, the earlier element in the high nibble.
    packed: Vec<u8>,
    /// One scale per block of `blocksize` flat elements.
    absmax: Vec<f32>,
    blocksize: usize,
    codebook: [f32; 16],
    bias: Option<Tensor>,
}

impl Bnb4Linear {
    #[allow(clippy::too_many_arguments)]
    pub fn from_parts(
        rows: usize,
        cols: usize,
        kind: Bnb4Kind,
        packed: Vec<u8>,
        absmax: Vec<f32>,
        blocksize: usize,
        codebook: [f32; 16],
        bias: Option<Tensor>,
    ) -> Result<Self> {
        let n = rows * cols;
        ensure!(blocksize > 0, "bitsandbytes block size must be positive");
        ensure!(
            packed.len() == n.div_ceil(2),
            "a {rows} × {cols} 4-bit weight needs {} bytes, got {}",
            n.div_ceil(2),
            packed.len()
        );
        ensure!(
            absmax.len() == n.div_ceil(blocksize),
            "a {rows} × {cols} weight in blocks of {blocksize} needs {} absmax values, got {}",
            n.div_ceil(blocksize),
            absmax.len()
        );
        ensure!(
            absmax.iter().chain(&codebook).all(|v| v.is_finite()),
            "bitsandbytes absmax or quant_map has non-finite values"
        );
        packing::check_bias(bias.as_ref(), rows)?;
        Ok(Self {
            rows,
            cols,
            kind,
            packed,
            absmax,
            blocksize,
            codebook,
            bias,
        })
    }
}

impl DecodeRows for Bnb4Linear {
    fn dims(&self) -> (usize, usize) {
        (self.rows, self.cols)
    }
    fn decode_row(&self, n: usize, _codes: &mut [u8], out: &mut [f32]) {
        let (start, end) = (n * self.cols, (n + 1) * self.cols);
        let mut i = start;
        while i < end {
            // One block (or the part of it inside this row): its codebook scaled once.
            let block = i / self.blocksize;
            let stop = ((block + 1) * self.blocksize).min(end);
            let a = self.absmax[block];
            let lut: [f32; 16] = std::array::from_fn(|c| self.codebook[c] * a);
            for j in i..stop {
                let byte = self.packed[j / 2];
                let code = if j % 2 == 0 { byte >> 4 } else { byte & 0xf };
                out[j - start] = lut[code as usize];
            }
            i = stop;
        }
    }
}

packing::impl_decoded_linear!(Bnb4Linear, |s| weight_bytes: s.packed.len() + s.absmax.len() * 4 + 64, name: match s.kind {
    Bnb4Kind::Nf4 => "NF4".to_string(),
    Bnb4Kind::Fp4 => "FP4".to_string(),
});

/// LLM.int8 weights: w = code · SCB / 127.
#[derive(Debug, Clone)]
pub struct BnbInt8Linear {
    rows: usize,
    cols: usize,
    codes: Vec<i8>,
    /// Per row: SCB / 127.
    row_scales: Vec<f32>,
    bias: Option<Tensor>,
}

impl BnbInt8Linear {
    pub fn from_parts(
        rows: usize,
        cols: usize,
        codes: Vec<i8>,
        scb: &[f32],
        bias: Option<Tensor>,
    ) -> Result<Self> {
        ensure!(
            codes.len() == rows * cols,
            "a {rows} × {cols} int8 weight needs {} codes, got {}",
            rows * cols,
            codes.len()
        );
        ensure!(
            scb.len() == rows,
            "SCB has {} values for {rows} rows",
            scb.len()
        );
        ensure!(
            scb.iter().all(|v| v.is_finite()),
            "SCB has non-finite values"
        );
        packing::check_bias(bias.as_ref(), rows)?;
        Ok(Self {
            rows,
            cols,
            codes,
            row_scales: scb.iter().map(|s| s / 127.0).collect(),
            bias,
        })
    }
}

impl DecodeRows for BnbInt8Linear {
    fn dims(&self) -> (usize, usize) {
        (self.rows, self.cols)
    }
    fn decode_row(&self, n: usize, _codes: &mut [u8], out: &mut [f32]) {
        let s = self.row_scales[n];
        for (o, &c) in out
            .iter_mut()
            .zip(&self.codes[n * self.cols..(n + 1) * self.cols])
        {
            *o = c as f32 * s;
        }
    }
}

packing::impl_decoded_linear!(BnbInt8Linear, |s| weight_bytes: s.codes.len() + s.row_scales.len() * 4, name: "INT8".to_string());

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::QuantLinear;

    #[test]
    fn blocks_run_across_rows_and_high_nibble_comes_first() {
        // 3 × 4 weight in blocks of 8: the second block holds the end of row 1 and row 2.
        let codes: Vec<u8> = (0..12).map(|i| (i * 5 % 16) as u8).collect();
        let packed: Vec<u8> = codes.chunks(2).map(|p| p[0] << 4 | p[1]).collect();
        let book = Bnb4Kind::Nf4.default_codebook();
        let l = Bnb4Linear::from_parts(3, 4, Bnb4Kind::Nf4, packed, vec![2.0, 0.5], 8, book, None)
            .unwrap();
        let w: Vec<f32> = l
            .dequantize()
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        for (i, v) in w.iter().enumerate() {
            let a = if i < 8 { 2.0 } else { 0.5 };
            assert_eq!(*v, book[codes[i] as usize] * a, "element {i}");
        }
        assert_eq!(l.storage_name(), "NF4");
    }

    #[test]
    fn wrong_sizes_are_errors() {
        let book = Bnb4Kind::Fp4.default_codebook();
        assert!(
            Bnb4Linear::from_parts(2, 4, Bnb4Kind::Fp4, vec![0; 3], vec![1.0], 8, book, None)
                .is_err()
        );
        assert!(Bnb4Linear::from_parts(
            2,
            4,
            Bnb4Kind::Fp4,
            vec![0; 4],
            vec![1.0; 2],
            8,
            book,
            None
        )
        .is_err());
        assert!(
            Bnb4Linear::from_parts(2, 4, Bnb4Kind::Fp4, vec![0; 4], vec![1.0], 0, book, None)
                .is_err()
        );
        assert!(BnbInt8Linear::from_parts(2, 2, vec![1; 4], &[1.0], None).is_err());
        let l = BnbInt8Linear::from_parts(1, 2, vec![127, -64], &[2.0], None).unwrap();
        let w: Vec<f32> = l
            .dequantize()
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        assert_eq!(w, vec![2.0, -64.0 * 2.0 / 127.0]);
    }
}
