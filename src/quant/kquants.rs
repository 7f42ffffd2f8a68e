//! Our Q2_K, Q4_K, Q5_K and Q6_K quantizers, producing the same bytes as ggml's reference ones
//! (llama-quantize without an imatrix). candle's follow an older ggml algorithm: their
//! blocks differ and a constant positive block comes out as zeros.
//!
//! Per 256-element super-block: each 32-element sub-block gets an affine fit
//! x ≈ scale·q − min, searched over a few candidate scales with importance weights
//! √(mean x²) + |x|; the eight scales and mins are then quantized to 6 bits against the
//! block's largest (f16 `d`, `dmin`), and the codes recomputed with the rounded values.
//! Arithmetic is plain f32 in ggml's order, so results match bit for bit.

use half::f16;
use rayon::prelude::*;

const QK_K: usize = 256;
const SUB: usize = 32;

/// ggml's round-to-nearest via the 1.5·2²³ trick (ties to even), valid for |x| < 2²².
#[inline]
pub(crate) fn nearest_int(x: f32) -> i32 {
    let v = x + 12_582_912.0;
    (v.to_bits() as i32 & 0x007f_ffff) - 0x0040_0000
}

/// Weighted affine fit of one sub-block: codes in `l`, returns (scale, min) with
/// x ≈ scale·l − min. Tries the plain max−min grid, then `nstep + 1` stretched grids,
/// each refined by weighted least squares, keeping the lowest weighted squared error.
/// `abs_error` scores candidates by weighted |error| instead of squared error (Q2_K).
#[allow(clippy::too_many_arguments)]
pub(crate) fn fit_affine(
    x: &[f32],
    w: &[f32],
    nmax: i32,
    rmin: f32,
    rdelta: f32,
    nstep: i32,
    abs_error: bool,
    l: &mut [u8],
) -> (f32, f32) {
    let err = |diff: f32| if abs_error { diff.abs() } else { diff * diff };
    let n = x.len();
    let (mut min, mut max) = (x[0], x[0]);
    let mut sum_w = w[0];
    let mut sum_x = sum_w * x[0];
    for i in 1..n {
        if x[i] < min {
            min = x[i];
        }
        if x[i] > max {
            max = x[i];
        }
        sum_w += w[i];
        sum_x += w[i] * x[i];
    }
    if min > 0.0 {
        min = 0.0;
    }
    if max == min {
        l.fill(0);
        return (0.0, -min);
    }
    let nmax_f = nmax as f32;
    let mut iscale = nmax_f / (max - min);
    let mut scale = 1.0 / iscale;
    let mut best_error = 0f32;
    for i in 0..n {
        let q = nearest_int(iscale * (x[i] - min)).clamp(0, nmax);
        l[i] = q as u8;
        let diff = scale * q as f32 + min - x[i];
        best_error += w[i] * err(diff);
    }
    let mut aux = [0u8; SUB];
    for is in 0..=nstep {
        iscale = (rmin + rdelta * is as f32 + nmax_f) / (max - min);
        let (mut sum_l, mut sum_l2, mut sum_xl) = (0f32, 0f32, 0f32);
        for i in 0..n {
            let q = nearest_int(iscale * (x[i] - min)).clamp(0, nmax);
            aux[i] = q as u8;
            let qf = q as f32;
            sum_l += w[i] * qf;
            sum_l2 += w[i] * qf * qf;
            sum_xl += w[i] * qf * x[i];
        }
        let d = sum_w * sum_l2 - sum_l * sum_l;
        if d > 0.0 {
            let mut this_scale = (sum_w * sum_xl - sum_x * sum_l) / d;
            let mut this_min = (sum_l2 * sum_x - sum_l * sum_xl) / d;
            if this_min > 0.0 {
                this_min = 0.0;
                this_scale = sum_xl / sum_l2;
            }
            let mut cur_error = 0f32;
            for i in 0..n {
                let diff = this_scale * aux[i] as f32 + this_min - x[i];
                cur_error += w[i] * err(diff);
            }
            if cur_error < best_error {
                l[..n].copy_from_slice(&aux[..n]);
                best_error = cur_error;
                scale = this_scale;
                min = this_min;
            }
        }
    }
    (scale, -min)
}

/// The 6-bit (scale, min) pairs of the eight sub-blocks, packed as ggml packs them.
pub(crate) fn pack_scales(ls: &[u8; 8], lm: &[u8; 8]) -> [u8; 12] {
    let mut s = [0u8; 12];
    for j in 0..8 {
        if j < 4 {
            s[j] = ls[j];
            s[j + 4] = lm[j];
        } else {
            s[j + 4] = (ls[j] & 0x0F) | ((lm[j] & 0x0F) << 4);
            s[j - 4] |= (ls[j] >> 4) << 6;
            s[j] |= (lm[j] >> 4) << 6;
        }
    }
    s
}

/// One super-block: (d, dmin, packed scales, 256 codes in 0..=nmax).
fn affine_superblock(
    x: &[f32],
    nmax: i32,
    rmin: f32,
    nstep: i32,
) -> (f16, f16, [u8; 12], [u8; QK_K]) {
    let mut l = [0u8; QK_K];
    let (mut scales, mut mins) = ([0f32; 8], [0f32; 8]);
    let (mut max_scale, mut max_min) = (0f32, 0f32);
    for j in 0..8 {
        let xs = &x[SUB * j..SUB * (j + 1)];
        let sum_x2: f32 = xs.iter().fold(0f32, |a, v| a + v * v);
        let av_x = (sum_x2 / SUB as f32).sqrt();
        let mut w = [0f32; SUB];
        for (wi, v) in w.iter_mut().zip(xs) {
            *wi = av_x + v.abs();
        }
        let (s, m) = fit_affine(
            xs,
            &w,
            nmax,
            rmin,
            0.1,
            nstep,
            false,
            &mut l[SUB * j..SUB * (j + 1)],
        );
        scales[j] = s;
        mins[j] = m;
        if s > max_scale {
            max_scale = s;
        }
        if m > max_min {
            max_min = m;
        }
    }
    let inv_scale = if max_scale > 0.0 {
        63.0 / max_scale
    } else {
        0.0
    };
    let inv_min = if max_min > 0.0 { 63.0 / max_min } else { 0.0 };
    let (mut ls, mut lm) = ([0u8; 8], [0u8; 8]);
    for j in 0..8 {
        // ggml stores the rounded int in a u8 before clamping to 63.
        ls[j] = (nearest_int(inv_scale * scales[j]) as u8).min(63);
        lm[j] = (nearest_int(inv_min * mins[j]) as u8).min(63);
    }
    let packed = pack_scales(&ls, &lm);
    let d = f16::from_f32(max_scale / 63.0);
    let dmin = f16::from_f32(max_min / 63.0);
    for j in 0..8 {
        let dj = d.to_f32() * ls[j] as f32;
        if dj == 0.0 {
            continue;
        }
        let dm = dmin.to_f32() * lm[j] as f32;
        for i in 0..SUB {
            l[SUB * j + i] = nearest_int((x[SUB * j + i] + dm) / dj).clamp(0, nmax) as u8;
        }
    }
    (d, dmin, packed, l)
}

fn q4k_block(x: &[f32], out: &mut [u8]) {
    let (d, dmin, scales, l) = affine_superblock(x, 15, -1.0, 20);
    pack_q4k(d, dmin, &scales, &l, out);
}

/// Q4_K layout: d, dmin, 12 scale bytes, then 4-bit codes two sub-blocks per 32 bytes.
pub(crate) fn pack_q4k(d: f16, dmin: f16, scales: &[u8; 12], l: &[u8; QK_K], out: &mut [u8]) {
    out[0..2].copy_from_slice(&d.to_le_bytes());
    out[2..4].copy_from_slice(&dmin.to_le_bytes());
    out[4..16].copy_from_slice(scales);
    for (c, chunk) in out[16..144].chunks_exact_mut(32).enumerate() {
        for (i, q) in chunk.iter_mut().enumerate() {
            *q = l[64 * c + i] | (l[64 * c + 32 + i] << 4);
        }
    }
}

fn q5k_block(x: &[f32], out: &mut [u8]) {
    let (d, dmin, scales, l) = affine_superblock(x, 31, -0.5, 15);
    pack_q5k(d, dmin, &scales, &l, out);
}

/// Q5_K layout: d, dmin, 12 scale bytes, 32 bytes of fifth bits, 4-bit low parts.
pub(crate) fn pack_q5k(d: f16, dmin: f16, scales: &[u8; 12], l: &[u8; QK_K], out: &mut [u8]) {
    out[0..2].copy_from_slice(&d.to_le_bytes());
    out[2..4].copy_from_slice(&dmin.to_le_bytes());
    out[4..16].copy_from_slice(scales);
    let (qh, qs) = out[16..176].split_at_mut(32);
    qh.fill(0);
    for c in 0..4 {
        for i in 0..32 {
            let (lo, hi) = (l[64 * c + i], l[64 * c + 32 + i]);
            qh[i] |= ((lo >> 4) << (2 * c)) | ((hi >> 4) << (2 * c + 1));
            qs[32 * c + i] = (lo & 0x0F) | ((hi & 0x0F) << 4);
        }
    }
}

/// Q2_K: sixteen 16-element groups, 2-bit codes, 4-bit scales and mins against f16 `d`
/// and `dmin`, groups fitted by weighted absolute error with weights |x|.
fn q2k_block(x: &[f32], out: &mut [u8]) {
    let mut l = [0u8; QK_K];
    let (mut scales, mut mins) = ([0f32; 16], [0f32; 16]);
    let (mut max_scale, mut max_min) = (0f32, 0f32);
    for g in 0..16 {
        let xs = &x[16 * g..16 * (g + 1)];
        let mut w = [0f32; 16];
        for (wi, v) in w.iter_mut().zip(xs) {
            *wi = v.abs();
        }
        let (s, m) = fit_affine(xs, &w, 3, -0.5, 0.1, 15, true, &mut l[16 * g..16 * (g + 1)]);
        scales[g] = s;
        mins[g] = m;
        if s > max_scale {
            max_scale = s;
        }
        if m > max_min {
            max_min = m;
        }
    }
    let mut sc = [0u8; 16];
    let mut d = f16::from_f32(0.0);
    if max_scale > 0.0 {
        let iscale = 15.0 / max_scale;
        for g in 0..16 {
            sc[g] = nearest_int(iscale * scales[g]) as u8;
        }
        d = f16::from_f32(max_scale / 15.0);
    }
    let mut dmin = f16::from_f32(0.0);
    if max_min > 0.0 {
        let iscale = 15.0 / max_min;
        for g in 0..16 {
            sc[g] |= (nearest_int(iscale * mins[g]) << 4) as u8;
        }
        dmin = f16::from_f32(max_min / 15.0);
    }
    finish_q2k(x, &sc, d, dmin, &mut l, out);
}

/// Q2_K's last step, shared with the weighted quantizer: codes recomputed against the
/// stored (rounded) scales and mins, then the block written out.
pub(crate) fn finish_q2k(
    x: &[f32],
    sc: &[u8; 16],
    d: f16,
    dmin: f16,
    l: &mut [u8; QK_K],
    out: &mut [u8],
) {
    for g in 0..16 {
        let dg = d.to_f32() * (sc[g] & 0x0F) as f32;
        if dg == 0.0 {
            continue;
        }
        let dm = dmin.to_f32() * (sc[g] >> 4) as f32;
        for i in 0..16 {
            l[16 * g + i] = nearest_int((x[16 * g + i] + dm) / dg).clamp(0, 3) as u8;
        }
    }
    out[..16].copy_from_slice(sc);
    for half in 0..2 {
        let lh = &l[128 * half..];
        for i in 0..32 {
            out[16 + 32 * half + i] =
                lh[i] | (lh[i + 32] << 2) | (lh[i + 64] << 4) | (lh[i + 96] << 6);
        }
    }
    out[80..82].copy_from_slice(&d.to_le_bytes());
    out[82..84].copy_from_slice(&dmin.to_le_bytes());
}

/// Symmetric fit of a group (ggml's make_qx_quants): codes l ∈ [−nmax, nmax−1] with
/// x ≈ scale·l, weighted by `w` (x² when None), trying 19 grids around nmax/max and
/// keeping the one with the best weighted least-squares fit. Codes come back offset by
/// nmax.
pub(crate) fn fit_symmetric(x: &[f32], w: Option<&[f32]>, nmax: i32, l: &mut [i8]) -> f32 {
    let (mut max, mut amax) = (0f32, 0f32);
    for &v in x {
        if v.abs() > amax {
            amax = v.abs();
            max = v;
        }
    }
    if amax < 1e-15 {
        l.fill(0);
        return 0.0;
    }
    let nmax_f = nmax as f32;
    let sums = |iscale: f32| {
        let (mut sumlx, mut suml2) = (0f32, 0f32);
        for (i, &v) in x.iter().enumerate() {
            let q = nearest_int(iscale * v).clamp(-nmax, nmax - 1) as f32;
            let w = w.map_or(v * v, |w| w[i]);
            sumlx += w * v * q;
            suml2 += w * q * q;
        }
        (sumlx, suml2)
    };
    let fill = |iscale: f32, l: &mut [i8]| {
        for (li, &v) in l.iter_mut().zip(x) {
            *li = (nmax + nearest_int(iscale * v).clamp(-nmax, nmax - 1)) as i8;
        }
    };
    let iscale = -nmax_f / max;
    fill(iscale, l);
    let (sumlx, suml2) = sums(iscale);
    let mut scale = if suml2 != 0.0 { sumlx / suml2 } else { 0.0 };
    let mut best = scale * sumlx;
    for is in -9i32..=9 {
        if is == 0 {
            continue;
        }
        let iscale = -(nmax_f + 0.1 * is as f32) / max;
        let (sumlx, suml2) = sums(iscale);
        if suml2 > 0.0 && sumlx * sumlx > best * suml2 {
            fill(iscale, l);
            scale = sumlx / suml2;
            best = scale * sumlx;
        }
    }
    scale
}

fn q6k_block(x: &[f32], out: &mut [u8]) {
    q6k_block_weighted(x, None, out)
}

/// Q6_K, its sixteen groups fitted with importance weights `qw` when given (llama.cpp
/// uses the imatrix values as they are here, without the √(σ² + x²) factor), else x².
pub(crate) fn q6k_block_weighted(x: &[f32], qw: Option<&[f32]>, out: &mut [u8]) {
    let mut l = [0i8; QK_K];
    let mut scales = [0f32; 16];
    let (mut max_scale, mut max_abs_scale) = (0f32, 0f32);
    for g in 0..16 {
        let s = fit_symmetric(
            &x[16 * g..16 * (g + 1)],
            qw.map(|w| &w[16 * g..16 * (g + 1)]),
            32,
            &mut l[16 * g..16 * (g + 1)],
        );
        scales[g] = s;
        if s.abs() > max_abs_scale {
            max_abs_scale = s.abs();
            max_scale = s;
        }
    }
    out.fill(0);
    if max_abs_scale < 1e-15 {
        return;
    }
    let iscale = -128.0 / max_scale;
    let d = f16::from_f32(1.0 / iscale);
    let mut sc = [0i8; 16];
    for g in 0..16 {
        sc[g] = nearest_int(iscale * scales[g]).min(127) as i8;
    }
    for g in 0..16 {
        let dg = d.to_f32() * sc[g] as f32;
        if dg == 0.0 {
            continue;
        }
        for i in 0..16 {
            l[16 * g + i] = (nearest_int(x[16 * g + i] / dg).clamp(-32, 31) + 32) as i8;
        }
    }
    let (ql, rest) = out.split_at_mut(128);
    let (qh, rest) = rest.split_at_mut(64);
    let (scale_bytes, d_bytes) = rest.split_at_mut(16);
    for half in 0..2 {
        let (lh, qlh, qhh) = (&l[128 * half..], &mut ql[64 * half..], &mut qh[32 * half..]);
        for i in 0..32 {
            let q = [
                lh[i] as u8,
                lh[i + 32] as u8,
                lh[i + 64] as u8,
                lh[i + 96] as u8,
            ];
            qlh[i] = (q[0] & 0x0F) | ((q[2] & 0x0F) << 4);
            qlh[i + 32] = (q[1] & 0x0F) | ((q[3] & 0x0F) << 4);
            qhh[i] = (q[0] >> 4) | ((q[1] >> 4) << 2) | ((q[2] >> 4) << 4) | ((q[3] >> 4) << 6);
        }
    }
    for (b, s) in scale_bytes.iter_mut().zip(sc) {
        *b = s as u8;
    }
    d_bytes.copy_from_slice(&d.to_le_bytes());
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KQuant {
    Q2K,
    Q4K,
    Q5K,
    Q6K,
}

impl KQuant {
    fn block_bytes(self) -> usize {
        match self {
            Self::Q2K => 84,
            Self::Q4K => 144,
            Self::Q5K => 176,
            Self::Q6K => 210,
        }
    }
}

/// Quantizes rows of `cols` f32 values (cols a multiple of 256) to ggml blocks, rows in
/// parallel.
pub fn quantize(kind: KQuant, x: &[f32], cols: usize) -> Vec<u8> {
    assert_eq!(cols % QK_K, 0);
    let bb = kind.block_bytes();
    let row_bytes = cols / QK_K * bb;
    let mut out = vec![0u8; x.len() / cols * row_bytes];
    out.par_chunks_mut(row_bytes)
        .zip(x.par_chunks(cols))
        .for_each(|(o, r)| {
            for (ob, xb) in o.chunks_exact_mut(bb).zip(r.chunks_exact(QK_K)) {
                match kind {
                    KQuant::Q2K => q2k_block(xb, ob),
                    KQuant::Q4K => q4k_block(xb, ob),
                    KQuant::Q5K => q5k_block(xb, ob),
                    KQuant::Q6K => q6k_block(xb, ob),
                }
            }
        });
    out
}
