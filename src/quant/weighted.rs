//! Importance-weighted quantization (llama.cpp's `_impl` quantizers, used when an imatrix
//! is given). Each element's error is weighted by `imatrix[column] · √(σ² + x²)` (σ² the
//! row's mean square), so columns that see large activations are reproduced more
//! faithfully. Q4_0/Q5_0 use the symmetric grid search, Q4_1/Q5_1 the affine one (both
//! shared with the K-quants in `kquants.rs`); Q2_K/Q3_K/Q4_K go through candle's imatrix
//! quantizers. Types llama.cpp quantizes without weights (Q8_0…) ignore the imatrix.

use super::kquants::{fit_affine, fit_symmetric};
use anyhow::{bail, Result};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::Tensor;
use half::f16;
use rayon::prelude::*;

/// Whether llama.cpp uses an imatrix for this type.
pub fn uses_imatrix(dt: GgmlDType) -> bool {
    matches!(
        dt,
        GgmlDType::Q4_0
            | GgmlDType::Q4_1
            | GgmlDType::Q5_0
            | GgmlDType::Q5_1
            | GgmlDType::Q2K
            | GgmlDType::Q3K
            | GgmlDType::Q4K
    )
}

/// Quantizes a (rows, cols) f32 weight to `dt` with per-column importances `imatrix`.
pub fn quantize(weight: &Tensor, dt: GgmlDType, imatrix: &[f32]) -> Result<QTensor> {
    let (rows, cols) = weight.dims2()?;
    if imatrix.len() != cols {
        bail!(
            "the imatrix entry has {} values but the weight has {cols} columns",
            imatrix.len()
        );
    }
    let legacy = match dt {
        GgmlDType::Q4_0 => Some(Legacy::Q4_0),
        GgmlDType::Q4_1 => Some(Legacy::Q4_1),
        GgmlDType::Q5_0 => Some(Legacy::Q5_0),
        GgmlDType::Q5_1 => Some(Legacy::Q5_1),
        GgmlDType::Q2K | GgmlDType::Q3K | GgmlDType::Q4K => None,
        other => bail!("no importance-weighted quantizer for {other:?}"),
    };
    let Some(kind) = legacy else {
        return Ok(QTensor::quantize_imatrix(weight, imatrix, dt)?);
    };
    if cols % 32 != 0 {
        bail!("rows of {cols} do not divide the 32-element block of {dt:?}");
    }
    let x: Vec<f32> = weight.flatten_all()?.to_vec1()?;
    let row_bytes = cols / 32 * kind.block_bytes();
    let mut out = vec![0u8; rows * row_bytes];
    out.par_chunks_mut(row_bytes)
        .zip(x.par_chunks(cols))
        .for_each(|(o, r)| legacy_row(kind, r, imatrix, o));
    Ok(candle_core::quantized::ggml_file::qtensor_from_ggml(
        dt,
        &out,
        vec![rows, cols],
        weight.device(),
    )?)
}

#[derive(Clone, Copy)]
enum Legacy {
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
}

impl Legacy {
    fn block_bytes(self) -> usize {
        match self {
            Self::Q4_0 => 18,
            Self::Q4_1 => 20,
            Self::Q5_0 => 22,
            Self::Q5_1 => 24,
        }
    }
}

/// One row of 32-element blocks.
fn legacy_row(kind: Legacy, x: &[f32], imatrix: &[f32], out: &mut [u8]) {
    let sigma2 = x.iter().map(|v| v * v).sum::<f32>() / x.len() as f32;
    let bb = kind.block_bytes();
    for ((xb, qw), ob) in x
        .chunks_exact(32)
        .zip(imatrix.chunks_exact(32))
        .zip(out.chunks_exact_mut(bb))
    {
        let mut w = [0f32; 32];
        for j in 0..32 {
            w[j] = qw[j] * (sigma2 + xb[j] * xb[j]).sqrt();
        }
        // Codes 0..=nmax (symmetric ones offset by half the range), then packing.
        let mut codes = [0u8; 32];
        let mut header = [0u8; 4];
        match kind {
            Legacy::Q4_0 | Legacy::Q5_0 => {
                let nmax = if matches!(kind, Legacy::Q4_0) { 8 } else { 16 };
                let mut l = [0i8; 32];
                let d = fit_symmetric(xb, Some(&w), nmax, &mut l);
                for j in 0..32 {
                    codes[j] = l[j] as u8;
                }
                header[..2].copy_from_slice(&f16::from_f32(d).to_le_bytes());
            }
            Legacy::Q4_1 | Legacy::Q5_1 => {
                let nmax = if matches!(kind, Legacy::Q4_1) { 15 } else { 31 };
                let (d, min) = fit_affine(xb, &w, nmax, -0.9, 0.05, 36, false, &mut codes);
                header[..2].copy_from_slice(&f16::from_f32(d).to_le_bytes());
                header[2..].copy_from_slice(&f16::from_f32(-min).to_le_bytes());
            }
        }
        let (hdr, rest) = match kind {
            Legacy::Q4_0 | Legacy::Q5_0 => ob.split_at_mut(2),
            Legacy::Q4_1 | Legacy::Q5_1 => ob.split_at_mut(4),
        };
        hdr.copy_from_slice(&header[..hdr.len()]);
        match kind {
            Legacy::Q4_0 | Legacy::Q4_1 => {
                for j in 0..16 {
                    rest[j] = codes[j] | (codes[j + 16] << 4);
                }
            }
            Legacy::Q5_0 | Legacy::Q5_1 => {
                let mut qh = 0u32;
                for j in 0..16 {
                    let (a, b) = (codes[j], codes[j + 16]);
                    rest[4 + j] = (a & 0x0f) | ((b & 0x0f) << 4);
                    qh |= (((a & 0x10) >> 4) as u32) << j;
                    qh |= (((b & 0x10) >> 4) as u32) << (j + 16);
                }
                rest[..4].copy_from_slice(&qh.to_le_bytes());
            }
        }
    }
}
