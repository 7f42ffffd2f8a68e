//! MXFP4 (OCP microscaling FP4): blocks of 32 E2M1 values sharing one E8M0 power-of-two
//! scale, stored in ggml's layout — per block one scale byte, then 16 bytes whose low
//! nibbles hold values 0..16 and high nibbles values 16..32 (17 bytes per 32 weights,
//! 4.25 bits). The quantizer is byte-identical to ggml's reference (gguf-py's
//! `quants.MXFP4`, tested); the CPU kernel decodes a row once and dots it with every
//! input row.

use super::{add_bias, IsqType, QuantLinear};
use anyhow::{ensure, Result};
use candle_core::{Device, Tensor};
use rayon::prelude::*;
use std::sync::Arc;

pub const BLOCK: usize = 32;
pub const BLOCK_BYTES: usize = 17;

/// E2M1 values, doubled (ggml's `kvalues_mxfp4`); the scale is halved to match.
const KVALUES: [f32; 16] = [
    0.0, 1.0, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0, 0.0, -1.0, -2.0, -3.0, -4.0, -6.0, -8.0, -12.0,
];

/// `2^(e - 127) / 2` as ggml's `ggml_e8m0_to_fp32_half` forms it.
pub fn e8m0_to_f32_half(e: u8) -> f32 {
    let bits = if e < 2 {
        0x0020_0000u32 << e
    } else {
        ((e as u32) - 1) << 23
    };
    f32::from_bits(bits)
}

/// One block of 32 values → 17 bytes.
fn quantize_block(x: &[f32], out: &mut [u8]) {
    let amax = x.iter().fold(0f32, |m, v| m.max(v.abs()));
    // floor(log2(amax)) - 2 + 127, as ggml computes it (0 for an all-zero block; clamped
    // where a tiny block would go below the E8M0 range).
    let e = if amax > 0.0 {
        (amax.log2().floor() - 2.0 + 127.0).clamp(0.0, 255.0) as u8
    } else {
        0
    };
    let d = e8m0_to_f32_half(e);
    out[0] = e;
    let best = |v: f32| -> u8 {
        let mut best = 0;
        let mut err = f32::INFINITY;
        for (i, k) in KVALUES.iter().enumerate() {
            let e = (d * k - v).abs();
            if e < err {
                err = e;
                best = i as u8;
            }
        }
        best
    };
    for j in 0..BLOCK / 2 {
        out[1 + j] = best(x[j]) | (best(x[j + BLOCK / 2]) << 4);
    }
}

/// Rows of f32 (each a multiple of 32 long) → MXFP4 bytes.
pub fn quantize(data: &[f32]) -> Vec<u8> {
    let mut out = vec![0u8; data.len() / BLOCK * BLOCK_BYTES];
    out.par_chunks_exact_mut(BLOCK_BYTES)
        .zip(data.par_chunks_exact(BLOCK))
        .for_each(|(o, x)| quantize_block(x, o));
    out
}

/// MXFP4 bytes → f32 values.
pub fn dequantize_into(bytes: &[u8], out: &mut [f32]) {
    for (b, o) in bytes
        .chunks_exact(BLOCK_BYTES)
        .zip(out.chunks_exact_mut(BLOCK))
    {
        let d = e8m0_to_f32_half(b[0]);
        for j in 0..BLOCK / 2 {
            o[j] = d * KVALUES[(b[1 + j] & 0x0F) as usize];
            o[j + BLOCK / 2] = d * KVALUES[(b[1 + j] >> 4) as usize];
        }
    }
}

/// An MXFP4 linear layer (out_features × in_features, in_features a multiple of 32).
#[derive(Debug)]
pub struct Mxfp4Linear {
    rows: usize,
    cols: usize,
    data: Vec<u8>,
    bias: Option<Tensor>,
}

impl Mxfp4Linear {
    pub fn from_bytes(
        data: Vec<u8>,
        rows: usize,
        cols: usize,
        bias: Option<Tensor>,
    ) -> Result<Self> {
        ensure!(
            cols.is_multiple_of(BLOCK),
            "MXFP4 rows must hold whole blocks of {BLOCK}, not {cols} values"
        );
        ensure!(
            data.len() == rows * cols / BLOCK * BLOCK_BYTES,
            "MXFP4 data of {} bytes does not fit {rows}×{cols}",
            data.len()
        );
        Ok(Self {
            rows,
            cols,
            data,
            bias,
        })
    }

    pub fn quantize(
        weight: &[f32],
        rows: usize,
        cols: usize,
        bias: Option<Tensor>,
    ) -> Result<Self> {
        ensure!(weight.len() == rows * cols, "weight is not {rows}×{cols}");
        Self::from_bytes(quantize(weight), rows, cols, bias)
    }

    /// The stored bytes (ggml layout).
    pub fn bytes(&self) -> &[u8] {
        &self.data
    }

    fn row_bytes(&self) -> usize {
        self.cols / BLOCK * BLOCK_BYTES
    }
}

impl QuantLinear for Mxfp4Linear {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let dims = x.dims().to_vec();
        let cols = *dims.last().unwrap_or(&0);
        ensure!(
            cols == self.cols,
            "input has {cols} features, the layer {}",
            self.cols
        );
        let xs: Vec<f32> = x
            .to_dtype(candle_core::DType::F32)?
            .flatten_all()?
            .to_vec1()?;
        let t = xs.len() / cols.max(1);
        // out[i][r]: each thread decodes its rows once and dots them with every input row.
        let mut by_row = vec![0f32; self.rows * t];
        let rb = self.row_bytes();
        by_row
            .par_chunks_mut(t)
            .zip(self.data.par_chunks(rb))
            .for_each_init(
                || vec![0f32; self.cols],
                |w, (o, bytes)| {
                    dequantize_into(bytes, w);
                    for (i, o) in o.iter_mut().enumerate() {
                        *o = crate::quant::kernels::dot_f32(w, &xs[i * cols..(i + 1) * cols]);
                    }
                },
            );
        let mut out = vec![0f32; t * self.rows];
        for r in 0..self.rows {
            for i in 0..t {
                out[i * self.rows + r] = by_row[r * t + i];
            }
        }
        let mut shape = dims;
        *shape.last_mut().expect("non-empty") = self.rows;
        add_bias(
            Tensor::from_vec(out, shape, &Device::Cpu)?,
            self.bias.as_ref(),
        )
    }

    fn dequantize(&self) -> Result<Tensor> {
        let mut w = vec![0f32; self.rows * self.cols];
        dequantize_into(&self.data, &mut w);
        Ok(Tensor::from_vec(w, (self.rows, self.cols), &Device::Cpu)?)
    }

    fn size_in_bytes(&self) -> usize {
        self.data.len() + self.bias.as_ref().map_or(0, |b| b.elem_count() * 4)
    }

    fn storage_name(&self) -> String {
        "MXFP4".into()
    }

    fn shape(&self) -> (usize, usize) {
        (self.rows, self.cols)
    }

    fn bias(&self) -> Option<&Tensor> {
        self.bias.as_ref()
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }

    fn apply_isq(&self, ty: IsqType) -> Result<Arc<dyn QuantLinear>> {
        super::isq::quantize_linear(&self.dequantize()?, self.bias.clone(), ty)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scales_and_values_follow_the_spec() {
        assert_eq!(e8m0_to_f32_half(127), 0.5);
        assert_eq!(e8m0_to_f32_half(128), 1.0);
        assert_eq!(e8m0_to_f32_half(1), f32::from_bits(0x0040_0000));
        // amax 6 → e = floor(log2 6) - 2 + 127 = 127, half-scale 0.5: 6 = 0.5 · 12.
        let mut x = [0f32; 32];
        x[0] = 6.0;
        x[1] = -1.0;
        x[17] = 0.2;
        let q = quantize(&x);
        assert_eq!(q[0], 127);
        let mut back = [0f32; 32];
        dequantize_into(&q, &mut back);
        assert_eq!((back[0], back[1], back[17]), (6.0, -1.0, 0.0));
        assert!(quantize(&[0f32; 32]).iter().all(|&b| b == 0));
    }
}
