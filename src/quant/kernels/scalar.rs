//! Portable kernels, and the reference for the SIMD ones.
//!
//! Every 32-element block decodes to integer codes q with w = d·q + offset, so
//! w·a summed over a block = d_w·d_a·Σ q·a_q + offset·d_a·Σ a_q.

use super::{BlockKind, Q8Act, BLOCK};
use half::f16;

#[inline]
pub(super) fn f16_at(b: &[u8], i: usize) -> f32 {
    f16::from_bits(u16::from_le_bytes([b[i], b[i + 1]])).to_f32()
}

/// Integer codes of one block and its (scale, offset).
fn decode_block(kind: BlockKind, b: &[u8], q: &mut [i32; BLOCK]) -> (f32, f32) {
    let nibbles = |q: &mut [i32; BLOCK], qs: &[u8]| {
        for j in 0..16 {
            q[j] = (qs[j] & 0x0F) as i32;
            q[j + 16] = (qs[j] >> 4) as i32;
        }
    };
    let high_bits = |q: &mut [i32; BLOCK], qh: &[u8]| {
        let qh = u32::from_le_bytes([qh[0], qh[1], qh[2], qh[3]]);
        for (j, v) in q.iter_mut().enumerate() {
            *v |= (((qh >> j) & 1) << 4) as i32;
        }
    };
    let d = f16_at(b, 0);
    match kind {
        BlockKind::Q4_0 => {
            nibbles(q, &b[2..18]);
            (d, -8.0 * d)
        }
        BlockKind::Q4_1 => {
            nibbles(q, &b[4..20]);
            (d, f16_at(b, 2))
        }
        BlockKind::Q5_0 => {
            nibbles(q, &b[6..22]);
            high_bits(q, &b[2..6]);
            (d, -16.0 * d)
        }
        BlockKind::Q5_1 => {
            nibbles(q, &b[8..24]);
            high_bits(q, &b[4..8]);
            (d, f16_at(b, 2))
        }
        BlockKind::Q8_0 => {
            for (j, v) in q.iter_mut().enumerate() {
                *v = b[2 + j] as i8 as i32;
            }
            (d, 0.0)
        }
        BlockKind::Q2K | BlockKind::Q3K | BlockKind::Q4K | BlockKind::Q5K | BlockKind::Q6K => {
            unreachable!("K-quants decode per sub-block")
        }
    }
}

/// The 6-bit (scale, min) of sub-block `j` of a Q4_K/Q5_K super-block (ggml's
/// `get_scale_min_k4`).
pub(super) fn k_scale_min(scales: &[u8], j: usize) -> (u8, u8) {
    if j < 4 {
        (scales[j] & 63, scales[j + 4] & 63)
    } else {
        (
            (scales[j + 4] & 0x0F) | ((scales[j - 4] >> 6) << 4),
            (scales[j + 4] >> 4) | ((scales[j] >> 6) << 4),
        )
    }
}

/// Signed codes (q − 32) of 32-element group `j` (0..8) of a Q6_K super-block and the
/// two 16-element scales (as d·scale) covering it.
pub(super) fn decode_q6k_group(b: &[u8], j: usize, q: &mut [i32; BLOCK]) -> (f32, f32) {
    let (half, part) = (j / 4, j % 4);
    let ql = &b[64 * half..64 * half + 64];
    let qh = &b[128 + 32 * half..128 + 32 * half + 32];
    let sc = &b[192 + 8 * half..192 + 8 * half + 8];
    let d = f16_at(b, 208);
    for (l, v) in q.iter_mut().enumerate() {
        let low = match part {
            0 => ql[l] & 0x0F,
            1 => ql[l + 32] & 0x0F,
            2 => ql[l] >> 4,
            _ => ql[l + 32] >> 4,
        };
        let high = (qh[l] >> (2 * part)) & 3;
        *v = (low | (high << 4)) as i32 - 32;
    }
    (
        d * sc[2 * part] as i8 as f32,
        d * sc[2 * part + 1] as i8 as f32,
    )
}

/// Q3_K's sixteen 6-bit scales (stored offset by 32), unpacked from their 12 bytes.
pub(super) fn q3k_scales(packed: &[u8]) -> [i8; 16] {
    let word = |i: usize| {
        u32::from_le_bytes([
            packed[4 * i],
            packed[4 * i + 1],
            packed[4 * i + 2],
            packed[4 * i + 3],
        ])
    };
    let (a0, a1, tmp) = (word(0), word(1), word(2));
    let (k1, k2) = (0x0303_0303u32, 0x0f0f_0f0fu32);
    let aux = [
        (a0 & k2) | ((tmp & k1) << 4),
        (a1 & k2) | (((tmp >> 2) & k1) << 4),
        ((a0 >> 4) & k2) | (((tmp >> 4) & k1) << 4),
        ((a1 >> 4) & k2) | (((tmp >> 6) & k1) << 4),
    ];
    let mut out = [0i8; 16];
    for (i, w) in aux.iter().enumerate() {
        for (k, byte) in w.to_le_bytes().iter().enumerate() {
            out[4 * i + k] = (*byte as i8).wrapping_sub(32);
        }
    }
    out
}

/// Signed codes of 32-element group `g` (0..8) of a Q3_K super-block: two bits from `qs`
/// and a high bit from `hmask` (clear means −4), with the two 16-element scales (d·scale).
pub(super) fn decode_q3k_group(b: &[u8], g: usize, q: &mut [i32; BLOCK]) -> (f32, f32) {
    let (half, j) = (g / 4, g % 4);
    let (hmask, qs) = (&b[0..32], &b[32 + 32 * half..64 + 32 * half]);
    let scales = q3k_scales(&b[96..108]);
    let d = f16_at(b, 108);
    for (l, v) in q.iter_mut().enumerate() {
        let low = ((qs[l] >> (2 * j)) & 3) as i32;
        *v = low - if (hmask[l] >> g) & 1 == 1 { 0 } else { 4 };
    }
    (d * scales[2 * g] as f32, d * scales[2 * g + 1] as f32)
}

/// Decodes group g of a super-block into signed codes; returns its two 16-element scales.
type GroupDecoder = fn(&[u8], usize, &mut [i32; BLOCK]) -> (f32, f32);

/// Σ over K-quant super-blocks whose 32-element groups carry two 16-element scales.
fn dot_two_scale(kind: BlockKind, row: &[u8], act: &[Q8Act], decode: GroupDecoder) -> f32 {
    let mut q = [0i32; BLOCK];
    let mut total = 0f32;
    for (b, acts) in row
        .chunks_exact(kind.block_bytes())
        .zip(act.chunks_exact(8))
    {
        for (g, a) in acts.iter().enumerate() {
            let (s0, s1) = decode(b, g, &mut q);
            let half =
                |r: std::ops::Range<usize>| -> i32 { r.map(|l| q[l] * a.qs[l] as i32).sum() };
            total += a.d * (s0 * half(0..16) as f32 + s1 * half(16..32) as f32);
        }
    }
    total
}

/// Q2_K: 2-bit codes, and per 16 elements a 4-bit scale and 4-bit min against f16 `d`
/// and `dmin`: w = d·sc·q − dmin·m.
fn dot_q2k(row: &[u8], act: &[Q8Act]) -> f32 {
    let mut total = 0f32;
    for (b, acts) in row.chunks_exact(84).zip(act.chunks_exact(8)) {
        let (d, dmin) = (f16_at(b, 80), f16_at(b, 82));
        for (g, a) in acts.iter().enumerate() {
            let (half, j) = (g / 4, g % 4);
            let qs = &b[16 + 32 * half..48 + 32 * half];
            for h in 0..2 {
                let sc = b[2 * g + h];
                let (mut isum, mut asum) = (0i32, 0i32);
                let range = 16 * h..16 * h + 16;
                for (&q, &x) in qs[range.clone()].iter().zip(&a.qs[range]) {
                    isum += ((q >> (2 * j)) & 3) as i32 * x as i32;
                    asum += x as i32;
                }
                total += a.d
                    * (d * (sc & 0x0F) as f32 * isum as f32
                        - dmin * (sc >> 4) as f32 * asum as f32);
            }
        }
    }
    total
}

pub(super) fn dot(kind: BlockKind, row: &[u8], act: &[Q8Act]) -> f32 {
    match kind {
        BlockKind::Q2K => return dot_q2k(row, act),
        BlockKind::Q3K => return dot_two_scale(kind, row, act, decode_q3k_group),
        BlockKind::Q6K => return super::kdot::dot_ref(kind, row, act),
        _ => {}
    }
    if matches!(kind, BlockKind::Q4K | BlockKind::Q5K) {
        return super::kdot::dot_ref(kind, row, act);
    }
    let bb = kind.block_bytes();
    let mut q = [0i32; BLOCK];
    let mut total = 0f32;
    for (b, a) in row.chunks_exact(bb).zip(act) {
        let (d, offset) = decode_block(kind, b, &mut q);
        let isum: i32 = q.iter().zip(&a.qs).map(|(&w, &x)| w * x as i32).sum();
        total += d * a.d * isum as f32 + offset * a.dsum;
    }
    total
}

pub(super) fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let chunks = a.len() / 8;
    for c in 0..chunks {
        for l in 0..8 {
            acc[l] += a[c * 8 + l] * b[c * 8 + l];
        }
    }
    acc.iter().sum::<f32>() + (chunks * 8..a.len()).map(|i| a[i] * b[i]).sum::<f32>()
}
