//! Importance-weighted quantization (llama.cpp's `_impl` quantizers, used when an imatrix
//! is given). Each element's error is weighted by `imatrix[column] · √(σ² + x²)` (σ² the
//! row's mean square), so columns that see large activations are reproduced more
//! faithfully. Q4_0/Q5_0/Q3_K/Q6_K use the symmetric grid search, Q4_1/Q5_1/Q2_K/Q4_K/
//! Q5_K the affine one (both shared with the K-quants in `kquants.rs`); the K types then
//! fit their sub-block scales with the sub-blocks' weight sums (Q6_K max-scales them). Every type's blocks are
//! byte-identical to `llama-quantize --imatrix` (tests/quant_exact.rs). Types llama.cpp
//! quantizes without weights (Q8_0…) ignore the imatrix. (candle's imatrix K quantizers
//! give different bytes, so they are not used.)

use super::kquants::{
    finish_q2k, fit_affine, fit_symmetric, nearest_int, pack_q4k, pack_q5k, pack_scales,
    q6k_block_weighted,
};
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
            | GgmlDType::Q5K
            | GgmlDType::Q6K
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
        GgmlDType::Q2K | GgmlDType::Q3K | GgmlDType::Q4K | GgmlDType::Q5K | GgmlDType::Q6K => None,
        other => bail!("no importance-weighted quantizer for {other:?}"),
    };
    let Some(kind) = legacy else {
        return k_quant(weight, dt, imatrix);
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

/// Q2_K / Q4_K with importances: sub-blocks fitted by weighted least squares, and the
/// sub-block scales and mins themselves quantized by a weighted fit (`fit_scales`)
/// instead of max-scaling.
fn k_quant(weight: &Tensor, dt: GgmlDType, imatrix: &[f32]) -> Result<QTensor> {
    let (rows, cols) = weight.dims2()?;
    if cols % 256 != 0 {
        bail!("rows of {cols} do not divide the 256-element super-block of {dt:?}");
    }
    let bb = match dt {
        GgmlDType::Q2K => 84,
        GgmlDType::Q3K => 110,
        GgmlDType::Q4K => 144,
        GgmlDType::Q5K => 176,
        _ => 210,
    };
    let x: Vec<f32> = weight.flatten_all()?.to_vec1()?;
    let row_bytes = cols / 256 * bb;
    let mut out = vec![0u8; rows * row_bytes];
    out.par_chunks_mut(row_bytes)
        .zip(x.par_chunks(cols))
        .for_each(|(o, r)| {
            for ((xb, qw), ob) in r
                .chunks_exact(256)
                .zip(imatrix.chunks_exact(256))
                .zip(o.chunks_exact_mut(bb))
            {
                match dt {
                    GgmlDType::Q2K => q2k_weighted(xb, qw, ob),
                    GgmlDType::Q3K => q3k_weighted(xb, qw, ob),
                    GgmlDType::Q4K => affine_k_weighted(xb, qw, 15, ob),
                    GgmlDType::Q5K => affine_k_weighted(xb, qw, 31, ob),
                    _ => q6k_block_weighted(xb, Some(qw), ob),
                }
            }
        });
    Ok(candle_core::quantized::ggml_file::qtensor_from_ggml(
        dt,
        &out,
        vec![rows, cols],
        weight.device(),
    )?)
}

/// Quantizes non-negative sub-block scales (or mins) to codes 0..=nmax with weights `w`
/// (ggml's make_qp_quants): nine grids around nmax/max, then a few rounds of moving
/// single codes while the weighted least-squares fit improves. Returns the step.
fn fit_scales(x: &[f32], nmax: i32, w: &[f32], l: &mut [u8]) -> f32 {
    let max = x.iter().copied().fold(0f32, f32::max);
    if max < 1e-15 {
        l.fill(0);
        return 0.0;
    }
    let nmax_f = nmax as f32;
    let mut iscale = nmax_f / max;
    for (li, &v) in l.iter_mut().zip(x) {
        *li = nearest_int(iscale * v) as u8;
    }
    let scale = 1.0 / iscale;
    let mut best_mse = 0f32;
    for i in 0..x.len() {
        let diff = x[i] - scale * l[i] as f32;
        best_mse += w[i] * diff * diff;
    }
    for is in -4i32..=4 {
        if is == 0 {
            continue;
        }
        let iscale_is = (0.1 * is as f32 + nmax_f) / max;
        let scale_is = 1.0 / iscale_is;
        let mut mse = 0f32;
        for i in 0..x.len() {
            let q = nearest_int(iscale_is * x[i]).min(nmax);
            let diff = x[i] - scale_is * q as f32;
            mse += w[i] * diff * diff;
        }
        if mse < best_mse {
            best_mse = mse;
            iscale = iscale_is;
        }
    }
    let (mut sumlx, mut suml2) = (0f32, 0f32);
    for i in 0..x.len() {
        let q = nearest_int(iscale * x[i]).min(nmax);
        l[i] = q as u8;
        sumlx += w[i] * x[i] * q as f32;
        suml2 += w[i] * (q * q) as f32;
    }
    for _ in 0..5 {
        let mut changed = 0;
        for i in 0..x.len() {
            let li = l[i] as f32;
            let mut slx = sumlx - w[i] * x[i] * li;
            let mut sl2 = suml2 - w[i] * li * li;
            if slx > 0.0 && sl2 > 0.0 {
                let new_l = nearest_int(x[i] * sl2 / slx).min(nmax);
                if new_l != l[i] as i32 {
                    slx += w[i] * x[i] * new_l as f32;
                    sl2 += w[i] * (new_l * new_l) as f32;
                    if slx * slx * suml2 > sumlx * sumlx * sl2 {
                        l[i] = new_l as u8;
                        sumlx = slx;
                        suml2 = sl2;
                        changed += 1;
                    }
                }
            }
        }
        if changed == 0 {
            break;
        }
    }
    sumlx / suml2
}

/// Q4_K (nmax 15) or Q5_K (nmax 31): eight affine 32-element sub-blocks.
fn affine_k_weighted(x: &[f32], qw: &[f32], nmax: i32, out: &mut [u8]) {
    let sigma2 = 2.0 * x.iter().fold(0f32, |a, v| a + v * v) / 256.0;
    let mut l = [0u8; 256];
    let (mut scales, mut mins, mut sw) = ([0f32; 8], [0f32; 8], [0f32; 8]);
    fit_sub_blocks(x, qw, sigma2, nmax, &mut l, &mut scales, &mut mins, &mut sw);
    let (mut ls, mut lm) = ([0u8; 8], [0u8; 8]);
    let d = fit_scales(&scales, 63, &sw, &mut ls);
    let dmin = fit_scales(&mins, 63, &sw, &mut lm);
    for j in 0..8 {
        ls[j] = ls[j].min(63);
        lm[j] = lm[j].min(63);
    }
    let (d, dmin) = (f16::from_f32(d), f16::from_f32(dmin));
    for j in 0..8 {
        let dj = d.to_f32() * ls[j] as f32;
        if dj == 0.0 {
            continue;
        }
        let dm = dmin.to_f32() * lm[j] as f32;
        for i in 0..32 {
            l[32 * j + i] = nearest_int((x[32 * j + i] + dm) / dj).clamp(0, nmax) as u8;
        }
    }
    let packed = pack_scales(&ls, &lm);
    if nmax == 15 {
        pack_q4k(d, dmin, &packed, &l, out);
    } else {
        pack_q5k(d, dmin, &packed, &l, out);
    }
}

/// Q3_K: sixteen symmetric 16-element groups (codes −4..3), their scales fitted
/// symmetrically to 6 bits with the groups' weight sums.
fn q3k_weighted(x: &[f32], qw: &[f32], out: &mut [u8]) {
    let sigma2 = 2.0 * x.iter().fold(0f32, |a, v| a + v * v) / 256.0;
    let mut l = [0i8; 256];
    let (mut scales, mut sw) = ([0f32; 16], [0f32; 16]);
    for g in 0..16 {
        let xs = &x[16 * g..16 * (g + 1)];
        let mut w = [0f32; 16];
        for i in 0..16 {
            w[i] = qw[16 * g + i] * (sigma2 + xs[i] * xs[i]).sqrt();
        }
        sw[g] = w.iter().sum();
        scales[g] = fit_symmetric(xs, Some(&w), 4, &mut l[16 * g..16 * (g + 1)]);
    }
    let mut ls = [0i8; 16];
    let d = f16::from_f32(fit_symmetric(&scales, Some(&sw), 32, &mut ls));
    let (hmask, rest) = out.split_at_mut(32);
    let (qs, rest) = rest.split_at_mut(64);
    let (sc, dbytes) = rest.split_at_mut(12);
    sc.fill(0);
    for (j, &code) in ls.iter().enumerate() {
        let c = code as u8;
        if j < 8 {
            sc[j] = c & 0x0F;
        } else {
            sc[j - 8] |= (c & 0x0F) << 4;
        }
        sc[8 + j % 4] |= (c >> 4) << (2 * (j / 4));
    }
    dbytes.copy_from_slice(&d.to_le_bytes());
    let mut codes = [0u8; 256];
    for g in 0..16 {
        let dg = d.to_f32() * (ls[g] as i32 - 32) as f32;
        if dg == 0.0 {
            // ggml leaves such a group's codes as the first fit left them.
            for i in 0..16 {
                codes[16 * g + i] = l[16 * g + i] as u8;
            }
            continue;
        }
        for i in 0..16 {
            codes[16 * g + i] = (nearest_int(x[16 * g + i] / dg).clamp(-4, 3) + 4) as u8;
        }
    }
    hmask.fill(0);
    for (j, c) in codes.iter_mut().enumerate() {
        if *c > 3 {
            hmask[j % 32] |= 1 << (j / 32);
            *c -= 4;
        }
    }
    for half in 0..2 {
        let lh = &codes[128 * half..];
        for i in 0..32 {
            qs[32 * half + i] = lh[i] | (lh[i + 32] << 2) | (lh[i + 64] << 4) | (lh[i + 96] << 6);
        }
    }
}

fn q2k_weighted(x: &[f32], qw: &[f32], out: &mut [u8]) {
    let sigma2 = x.iter().fold(0f32, |a, v| a + v * v) / 256.0;
    let mut l = [0u8; 256];
    let (mut scales, mut mins, mut sw) = ([0f32; 16], [0f32; 16], [0f32; 16]);
    fit_sub_blocks(x, qw, sigma2, 3, &mut l, &mut scales, &mut mins, &mut sw);
    let (mut ls, mut lm) = ([0u8; 16], [0u8; 16]);
    let d = f16::from_f32(fit_scales(&scales, 15, &sw, &mut ls));
    let dmin = f16::from_f32(fit_scales(&mins, 15, &sw, &mut lm));
    let mut sc = [0u8; 16];
    for g in 0..16 {
        sc[g] = ls[g] | (lm[g] << 4);
    }
    finish_q2k(x, &sc, d, dmin, &mut l, out);
}

/// Weighted affine fits of the equal sub-blocks of one super-block (as many as `scales`
/// holds), weights `qw · √(σ² + x²)`; fills codes, scales, mins and weight sums.
#[allow(clippy::too_many_arguments)]
fn fit_sub_blocks(
    x: &[f32],
    qw: &[f32],
    sigma2: f32,
    nmax: i32,
    l: &mut [u8; 256],
    scales: &mut [f32],
    mins: &mut [f32],
    sw: &mut [f32],
) {
    let sub = 256 / scales.len();
    for j in 0..scales.len() {
        let xs = &x[sub * j..sub * (j + 1)];
        let w: Vec<f32> = (0..sub)
            .map(|i| qw[sub * j + i] * (sigma2 + xs[i] * xs[i]).sqrt())
            .collect();
        sw[j] = w.iter().sum();
        let (s, m) = fit_affine(
            xs,
            &w,
            nmax,
            -0.9,
            0.05,
            36,
            false,
            &mut l[sub * j..sub * (j + 1)],
        );
        scales[j] = s;
        mins[j] = m;
    }
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
