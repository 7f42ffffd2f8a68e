//! NEON kernels for aarch64: the same products as `avx2.rs`, with the same arithmetic as
//! `scalar.rs` (integer code × activation sums, one float multiply-add per block or
//! 16-element scale group), only the order of float additions differs.
//!
//! Every kernel comes in two builds: plain NEON (`vmull_s8`/`vpadalq_s16` for the 8-bit
//! products, baseline on every aarch64 CPU) and one with the Armv8.2 dot-product
//! instruction `sdot`, taken where the CPU reports `dotprod`. `sdot` is written as inline
//! assembly because its intrinsic (`vdotq_s32`) is not stable in Rust yet; the assembly
//! only appears inside functions compiled with `target_feature(enable = "dotprod")`.
//! Likewise f16 → f32 widening uses `fcvtl` (baseline Armv8, but its intrinsic needs the
//! unstable `f16` type).

use super::{BlockKind, Q8Act};
use std::arch::aarch64::*;
use std::arch::asm;

/// `acc` plus, per i32 lane, four adjacent products of `w` and `a` (Armv8.2 `sdot`).
#[inline(always)]
unsafe fn sdot(acc: int32x4_t, w: int8x16_t, a: int8x16_t) -> int32x4_t {
    let mut acc = acc;
    asm!(
        "sdot {acc:v}.4s, {w:v}.16b, {a:v}.16b",
        acc = inout(vreg) acc,
        w = in(vreg) w,
        a = in(vreg) a,
        options(pure, nomem, nostack, preserves_flags)
    );
    acc
}

/// `acc` plus Σ w·a over 16 signed bytes, spread over the four i32 lanes (which lane holds
/// which products differs between the two builds; only the lane total is used).
///
/// Without `sdot`: products of elements j and j + 8 are added in i16 before widening,
/// which cannot overflow since activations lie in −127..=127 (|sum| ≤ 2·128·127).
#[inline(always)]
unsafe fn dot16<const DOT: bool>(acc: int32x4_t, w: int8x16_t, a: int8x16_t) -> int32x4_t {
    if DOT {
        sdot(acc, w, a)
    } else {
        let p = vmull_s8(vget_low_s8(w), vget_low_s8(a));
        vpadalq_s16(acc, vmlal_high_s8(p, w, a))
    }
}

/// Σ a over 16 signed bytes, spread over four i32 lanes.
#[inline(always)]
unsafe fn sum16<const DOT: bool>(a: int8x16_t) -> int32x4_t {
    if DOT {
        sdot(vdupq_n_s32(0), a, vdupq_n_s8(1))
    } else {
        vpaddlq_s16(vpaddlq_s8(a))
    }
}

/// The f16 at `p` (any alignment) as f32, exactly (`fcvt`, baseline Armv8).
#[inline(always)]
unsafe fn f16_at(p: *const u8) -> f32 {
    f16_bits(std::ptr::read_unaligned(p as *const u16))
}

#[inline(always)]
unsafe fn f16_bits(bits: u16) -> f32 {
    let h = vdupq_n_u16(bits);
    let out: float32x4_t;
    asm!(
        "fcvtl {out:v}.4s, {h:v}.4h",
        out = lateout(vreg) out,
        h = in(vreg) h,
        options(pure, nomem, nostack, preserves_flags)
    );
    vgetq_lane_f32::<0>(out)
}

/// Eight f16 at `p` widened to f32 (two vectors of four), exactly.
#[inline(always)]
unsafe fn widen_f16(p: *const u16) -> (float32x4_t, float32x4_t) {
    let h = vld1q_u16(p);
    let (lo, hi): (float32x4_t, float32x4_t);
    asm!(
        "fcvtl {lo:v}.4s, {h:v}.4h",
        "fcvtl2 {hi:v}.4s, {h:v}.8h",
        // `lo` is written before `h` is read again, so it must not share its register.
        lo = out(vreg) lo,
        hi = lateout(vreg) hi,
        h = in(vreg) h,
        options(pure, nomem, nostack, preserves_flags)
    );
    (lo, hi)
}

/// Eight bf16 at `p` widened to f32 (bf16 is the top half of an f32).
#[inline(always)]
unsafe fn widen_bf16(p: *const u16) -> (float32x4_t, float32x4_t) {
    let h = vld1q_u16(p);
    (
        vreinterpretq_f32_u32(vshll_n_u16::<16>(vget_low_u16(h))),
        vreinterpretq_f32_u32(vshll_high_n_u16::<16>(h)),
    )
}

/// 16 bytes of packed nibbles → the codes of elements 0..15 (low nibbles) and 16..31.
#[inline(always)]
unsafe fn nibbles(p: *const u8) -> (int8x16_t, int8x16_t) {
    let raw = vld1q_u8(p);
    (
        vreinterpretq_s8_u8(vandq_u8(raw, vdupq_n_u8(0x0F))),
        vreinterpretq_s8_u8(vshrq_n_u8::<4>(raw)),
    )
}

/// Q5_x's 32 fifth bits (little-endian u32 at `p`, bit j for element j) as bytes, 0x10
/// where set: elements 0..15 and 16..31.
#[inline(always)]
unsafe fn fifth_bits(p: *const u8) -> (int8x16_t, int8x16_t) {
    let qh = vreinterpretq_u8_u32(vdupq_n_u32(std::ptr::read_unaligned(p as *const u32)));
    // Byte j of a half takes qh byte j / 8 (+ 2 for the high half), then tests bit j % 8.
    const LO: [u8; 16] = [0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1];
    const HI: [u8; 16] = [2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3];
    const BITS: [u8; 16] = [1, 2, 4, 8, 16, 32, 64, 128, 1, 2, 4, 8, 16, 32, 64, 128];
    let bits = vld1q_u8(BITS.as_ptr());
    let spread = |idx: &[u8; 16]| {
        let v = vqtbl1q_u8(qh, vld1q_u8(idx.as_ptr()));
        vreinterpretq_s8_u8(vandq_u8(vtstq_u8(v, bits), vdupq_n_u8(0x10)))
    };
    (spread(&LO), spread(&HI))
}

/// The activation codes of a block: elements 0..15 and 16..31.
#[inline(always)]
unsafe fn act_codes(a: &Q8Act) -> (int8x16_t, int8x16_t) {
    (vld1q_s8(a.qs.as_ptr()), vld1q_s8(a.qs.as_ptr().add(16)))
}

/// One legacy block's codes (elements 0..15, 16..31), d, and offset per unit of Σ a.
#[inline(always)]
unsafe fn block_codes(kind: BlockKind, b: *const u8) -> ([int8x16_t; 2], f32, f32) {
    let d = f16_at(b);
    let or = |(a, b): (int8x16_t, int8x16_t), (c, e): (int8x16_t, int8x16_t)| {
        [vorrq_s8(a, c), vorrq_s8(b, e)]
    };
    match kind {
        BlockKind::Q4_0 => {
            let (lo, hi) = nibbles(b.add(2));
            ([lo, hi], d, -8.0 * d)
        }
        BlockKind::Q4_1 => {
            let (lo, hi) = nibbles(b.add(4));
            ([lo, hi], d, f16_at(b.add(2)))
        }
        BlockKind::Q5_0 => (or(nibbles(b.add(6)), fifth_bits(b.add(2))), d, -16.0 * d),
        BlockKind::Q5_1 => (
            or(nibbles(b.add(8)), fifth_bits(b.add(4))),
            d,
            f16_at(b.add(2)),
        ),
        BlockKind::Q8_0 => (
            [
                vld1q_s8(b.add(2) as *const i8),
                vld1q_s8(b.add(18) as *const i8),
            ],
            d,
            0.0,
        ),
        _ => unreachable!("only legacy blocks"),
    }
}

/// Σ codes·activations of one 32-element block as four i32 lanes, converted to f32.
#[inline(always)]
unsafe fn block_sums<const DOT: bool>(w: [int8x16_t; 2], a: &Q8Act) -> float32x4_t {
    let (a0, a1) = act_codes(a);
    let s = dot16::<DOT>(dot16::<DOT>(vdupq_n_s32(0), w[0], a0), w[1], a1);
    vcvtq_f32_s32(s)
}

/// Legacy 32-element blocks: two accumulator chains (even and odd blocks), one FMA of
/// d_w·d_a per block, the offset terms summed in scalar.
#[inline(always)]
unsafe fn dot_legacy<const DOT: bool>(kind: BlockKind, row: &[u8], act: &[Q8Act]) -> f32 {
    let bb = kind.block_bytes();
    debug_assert!(row.len() >= act.len() * bb);
    let base = row.as_ptr();
    let mut acc = [vdupq_n_f32(0.0); 2];
    let mut off = [0f32; 2];
    for (blk, a) in act.iter().enumerate() {
        let chain = blk % 2;
        let (w, d, o) = block_codes(kind, base.add(blk * bb));
        acc[chain] = vfmaq_n_f32(acc[chain], block_sums::<DOT>(w, a), d * a.d);
        off[chain] += o * a.dsum;
    }
    vaddvq_f32(vaddq_f32(acc[0], acc[1])) + off[0] + off[1]
}

/// `dot_legacy` of one weight row with four activation rows, each block decoded once;
/// per activation row the same operations in the same order, so bit-identical results.
#[allow(clippy::needless_range_loop)] // `r` indexes four activation rows and accumulators
#[inline(always)]
unsafe fn dot4_legacy_impl<const DOT: bool>(
    kind: BlockKind,
    row: &[u8],
    acts: [&[Q8Act]; 4],
) -> [f32; 4] {
    let bb = kind.block_bytes();
    let n = acts[0].len();
    assert!(row.len() >= n * bb && acts.iter().all(|a| a.len() == n));
    let base = row.as_ptr();
    let mut acc = [[vdupq_n_f32(0.0); 2]; 4];
    let mut off = [[0f32; 2]; 4];
    for blk in 0..n {
        let chain = blk % 2;
        let (w, d, o) = block_codes(kind, base.add(blk * bb));
        for r in 0..4 {
            let a = &acts[r][blk];
            acc[r][chain] = vfmaq_n_f32(acc[r][chain], block_sums::<DOT>(w, a), d * a.d);
            off[r][chain] += o * a.dsum;
        }
    }
    let mut out = [0f32; 4];
    for r in 0..4 {
        out[r] = vaddvq_f32(vaddq_f32(acc[r][0], acc[r][1])) + off[r][0] + off[r][1];
    }
    out
}

/// Q4_K / Q5_K: per 32-element sub-block, codes from one nibble half of 32 bytes (plus
/// Q5_K's fifth bit: bit i of qh[l] for element l of sub-block i), a 6-bit scale and min.
#[inline(always)]
unsafe fn dot_k<const DOT: bool>(kind: BlockKind, row: &[u8], act: &[Q8Act]) -> f32 {
    let bb = kind.block_bytes();
    let m4 = vdupq_n_u8(0x0F);
    let mut acc = [vdupq_n_f32(0.0); 2];
    let mut offset_total = 0f32;
    for (sb, acts) in act.chunks_exact(8).enumerate() {
        assert!(row.len() >= (sb + 1) * bb);
        let b = row.as_ptr().add(sb * bb);
        let (d, dmin) = (f16_at(b), f16_at(b.add(2)));
        let scales = std::slice::from_raw_parts(b.add(4), 12);
        let (qs, qh) = match kind {
            BlockKind::Q4K => (b.add(16), None),
            _ => (b.add(48), Some([vld1q_u8(b.add(16)), vld1q_u8(b.add(32))])),
        };
        for pair in 0..4 {
            let bytes = [
                vld1q_u8(qs.add(32 * pair)),
                vld1q_u8(qs.add(32 * pair + 16)),
            ];
            for (half, acc) in acc.iter_mut().enumerate() {
                let i = 2 * pair + half;
                let mut q = if half == 0 {
                    [vandq_u8(bytes[0], m4), vandq_u8(bytes[1], m4)]
                } else {
                    [vshrq_n_u8::<4>(bytes[0]), vshrq_n_u8::<4>(bytes[1])]
                };
                if let Some(h) = qh {
                    // Bit i of each qh byte moved to bit 4.
                    let shift = vdupq_n_s8(4 - i as i8);
                    let fifth = vdupq_n_u8(0x10);
                    q[0] = vorrq_u8(q[0], vandq_u8(vshlq_u8(h[0], shift), fifth));
                    q[1] = vorrq_u8(q[1], vandq_u8(vshlq_u8(h[1], shift), fifth));
                }
                let a = &acts[i];
                let w = [vreinterpretq_s8_u8(q[0]), vreinterpretq_s8_u8(q[1])];
                let (sc, m) = super::scalar::k_scale_min(scales, i);
                *acc = vfmaq_n_f32(*acc, block_sums::<DOT>(w, a), d * sc as f32 * a.d);
                offset_total -= dmin * m as f32 * a.dsum;
            }
        }
    }
    vaddvq_f32(vaddq_f32(acc[0], acc[1])) + offset_total
}

/// Σ w·a of a signed 32-code group with two 16-element scales: lanes 0..1 of the result
/// hold elements 0..15, lanes 2..3 elements 16..31 (as f32), to be multiplied by
/// [s0, s0, s1, s1].
#[inline(always)]
unsafe fn two_scale_sums<const DOT: bool>(w: [int8x16_t; 2], a: &Q8Act) -> float32x4_t {
    let (a0, a1) = act_codes(a);
    let zero = vdupq_n_s32(0);
    let s = vpaddq_s32(dot16::<DOT>(zero, w[0], a0), dot16::<DOT>(zero, w[1], a1));
    vcvtq_f32_s32(s)
}

/// [s0, s0, s1, s1].
#[inline(always)]
unsafe fn pair_scales(s0: f32, s1: f32) -> float32x4_t {
    vcombine_f32(vdup_n_f32(s0), vdup_n_f32(s1))
}

/// Q6_K: per 32-element group, 6-bit codes from a nibble of `ql` and two bits of `qh`,
/// made signed (q − 32), one i8 scale per 16 elements.
#[inline(always)]
unsafe fn dot_q6k<const DOT: bool>(row: &[u8], act: &[Q8Act]) -> f32 {
    let m4 = vdupq_n_u8(0x0F);
    let m2 = vdupq_n_u8(3);
    let bias = vdupq_n_s8(32);
    let mut acc = [vdupq_n_f32(0.0); 2];
    for (sb, acts) in act.chunks_exact(8).enumerate() {
        assert!(row.len() >= (sb + 1) * 210);
        let b = row.as_ptr().add(sb * 210);
        let d = f16_at(b.add(208));
        for half in 0..2 {
            let ql = b.add(64 * half);
            // ql bytes 0..32 and 32..64, each as two 16-byte vectors; qh likewise.
            let ql0 = [vld1q_u8(ql), vld1q_u8(ql.add(16))];
            let ql1 = [vld1q_u8(ql.add(32)), vld1q_u8(ql.add(48))];
            let qh = [
                vld1q_u8(b.add(128 + 32 * half)),
                vld1q_u8(b.add(144 + 32 * half)),
            ];
            let sc = b.add(192 + 8 * half) as *const i8;
            for part in 0..4 {
                let mut w = [vdupq_n_s8(0); 2];
                for (k, w) in w.iter_mut().enumerate() {
                    let low = match part {
                        0 => vandq_u8(ql0[k], m4),
                        1 => vandq_u8(ql1[k], m4),
                        2 => vshrq_n_u8::<4>(ql0[k]),
                        _ => vshrq_n_u8::<4>(ql1[k]),
                    };
                    let high = vandq_u8(vshlq_u8(qh[k], vdupq_n_s8(-2 * part as i8)), m2);
                    let q = vorrq_u8(low, vshlq_n_u8::<4>(high));
                    *w = vsubq_s8(vreinterpretq_s8_u8(q), bias);
                }
                let a = &acts[4 * half + part];
                let da = d * a.d;
                let scales = pair_scales(
                    da * *sc.add(2 * part) as f32,
                    da * *sc.add(2 * part + 1) as f32,
                );
                acc[part % 2] = vfmaq_f32(acc[part % 2], two_scale_sums::<DOT>(w, a), scales);
            }
        }
    }
    vaddvq_f32(vaddq_f32(acc[0], acc[1]))
}

/// Q3_K: two bits per code from `qs`, the high bit from `hmask` (clear means −4), one
/// 6-bit scale per 16 elements.
#[inline(always)]
unsafe fn dot_q3k<const DOT: bool>(row: &[u8], act: &[Q8Act]) -> f32 {
    let m2 = vdupq_n_u8(3);
    let four = vdupq_n_u8(4);
    let mut acc = [vdupq_n_f32(0.0); 2];
    for (sb, acts) in act.chunks_exact(8).enumerate() {
        let block = &row[sb * 110..(sb + 1) * 110];
        let b = block.as_ptr();
        let scales = super::scalar::q3k_scales(&block[96..108]);
        let d = f16_at(b.add(108));
        let hmask = [vld1q_u8(b), vld1q_u8(b.add(16))];
        for (g, a) in acts.iter().enumerate() {
            let (half, j) = (g / 4, g % 4);
            let qs = b.add(32 + 32 * half);
            let shift = vdupq_n_s8(-2 * j as i8);
            let bit = vdupq_n_u8(1 << g);
            let mut w = [vdupq_n_s8(0); 2];
            for (k, w) in w.iter_mut().enumerate() {
                let low = vandq_u8(vshlq_u8(vld1q_u8(qs.add(16 * k)), shift), m2);
                let set = vtstq_u8(hmask[k], bit);
                *w = vreinterpretq_s8_u8(vsubq_u8(low, vbicq_u8(four, set)));
            }
            let da = d * a.d;
            let sc = pair_scales(da * scales[2 * g] as f32, da * scales[2 * g + 1] as f32);
            acc[g % 2] = vfmaq_f32(acc[g % 2], two_scale_sums::<DOT>(w, a), sc);
        }
    }
    vaddvq_f32(vaddq_f32(acc[0], acc[1]))
}

/// Q2_K: unsigned 2-bit codes, and per 16 elements a 4-bit scale and 4-bit min:
/// w = d·sc·q − dmin·m, so the min term needs Σ a per 16 elements.
#[inline(always)]
unsafe fn dot_q2k<const DOT: bool>(row: &[u8], act: &[Q8Act]) -> f32 {
    let m2 = vdupq_n_u8(3);
    let mut acc = [vdupq_n_f32(0.0); 2];
    for (sb, acts) in act.chunks_exact(8).enumerate() {
        assert!(row.len() >= (sb + 1) * 84);
        let b = row.as_ptr().add(sb * 84);
        let (d, dmin) = (f16_at(b.add(80)), f16_at(b.add(82)));
        for (g, a) in acts.iter().enumerate() {
            let (half, j) = (g / 4, g % 4);
            let qs = b.add(16 + 32 * half);
            let shift = vdupq_n_s8(-2 * j as i8);
            let w = [
                vreinterpretq_s8_u8(vandq_u8(vshlq_u8(vld1q_u8(qs), shift), m2)),
                vreinterpretq_s8_u8(vandq_u8(vshlq_u8(vld1q_u8(qs.add(16)), shift), m2)),
            ];
            let (a0, a1) = act_codes(a);
            let sa = vcvtq_f32_s32(vpaddq_s32(sum16::<DOT>(a0), sum16::<DOT>(a1)));
            let (sc0, sc1) = (*b.add(2 * g), *b.add(2 * g + 1));
            let (dd, dm) = (d * a.d, dmin * a.d);
            let scale = pair_scales(dd * (sc0 & 0x0F) as f32, dd * (sc1 & 0x0F) as f32);
            let min = pair_scales(dm * (sc0 >> 4) as f32, dm * (sc1 >> 4) as f32);
            let chain = g % 2;
            acc[chain] = vfmaq_f32(acc[chain], two_scale_sums::<DOT>(w, a), scale);
            acc[chain] = vfmsq_f32(acc[chain], sa, min);
        }
    }
    vaddvq_f32(vaddq_f32(acc[0], acc[1]))
}

#[inline(always)]
unsafe fn dot_impl<const DOT: bool>(kind: BlockKind, row: &[u8], act: &[Q8Act]) -> f32 {
    match kind {
        BlockKind::Q2K => dot_q2k::<DOT>(row, act),
        BlockKind::Q3K => dot_q3k::<DOT>(row, act),
        BlockKind::Q6K => dot_q6k::<DOT>(row, act),
        BlockKind::Q4K | BlockKind::Q5K => dot_k::<DOT>(kind, row, act),
        _ => {
            assert!(row.len() >= act.len() * kind.block_bytes());
            dot_legacy::<DOT>(kind, row, act)
        }
    }
}

#[target_feature(enable = "neon")]
unsafe fn dot_plain(kind: BlockKind, row: &[u8], act: &[Q8Act]) -> f32 {
    dot_impl::<false>(kind, row, act)
}

#[target_feature(enable = "neon,dotprod")]
unsafe fn dot_sdot(kind: BlockKind, row: &[u8], act: &[Q8Act]) -> f32 {
    dot_impl::<true>(kind, row, act)
}

/// Dot product of one weight row (raw ggml blocks of `kind`) with quantized activations.
///
/// # Safety
/// The CPU must support NEON, and `dotprod` where `dotprod` is true; `act` has one entry
/// per 32 elements of the row (a multiple of 8 for the K-quants).
pub(super) unsafe fn dot(dotprod: bool, kind: BlockKind, row: &[u8], act: &[Q8Act]) -> f32 {
    if dotprod {
        dot_sdot(kind, row, act)
    } else {
        dot_plain(kind, row, act)
    }
}

#[target_feature(enable = "neon")]
unsafe fn dot4_plain(kind: BlockKind, row: &[u8], acts: [&[Q8Act]; 4]) -> [f32; 4] {
    dot4_legacy_impl::<false>(kind, row, acts)
}

#[target_feature(enable = "neon,dotprod")]
unsafe fn dot4_sdot(kind: BlockKind, row: &[u8], acts: [&[Q8Act]; 4]) -> [f32; 4] {
    dot4_legacy_impl::<true>(kind, row, acts)
}

/// [`dot`] of one legacy-block weight row with four activation rows, bit-identical to four
/// `dot` calls.
///
/// # Safety
/// As for [`dot`]; `kind` is a legacy (32-element) block type.
pub(super) unsafe fn dot4_legacy(
    dotprod: bool,
    kind: BlockKind,
    row: &[u8],
    acts: [&[Q8Act]; 4],
) -> [f32; 4] {
    if dotprod {
        dot4_sdot(kind, row, acts)
    } else {
        dot4_plain(kind, row, acts)
    }
}

/// # Safety
/// The CPU must support NEON.
#[target_feature(enable = "neon")]
pub(super) unsafe fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (pa, pb) = (a.as_ptr(), b.as_ptr());
    let mut acc = [vdupq_n_f32(0.0); 4];
    let mut i = 0;
    while i + 16 <= n {
        for (j, acc) in acc.iter_mut().enumerate() {
            let x = vld1q_f32(pa.add(i + 4 * j));
            let y = vld1q_f32(pb.add(i + 4 * j));
            *acc = vfmaq_f32(*acc, x, y);
        }
        i += 16;
    }
    while i + 4 <= n {
        acc[0] = vfmaq_f32(acc[0], vld1q_f32(pa.add(i)), vld1q_f32(pb.add(i)));
        i += 4;
    }
    let mut s = vaddvq_f32(vaddq_f32(
        vaddq_f32(acc[0], acc[1]),
        vaddq_f32(acc[2], acc[3]),
    ));
    while i < n {
        s += *pa.add(i) * *pb.add(i);
        i += 1;
    }
    s
}

/// Dot product of a half-precision row (f16 or bf16, 16-bit storage) with f32 `x`,
/// widened in registers.
///
/// # Safety
/// The CPU must support NEON; `T` is a 2-byte float.
#[target_feature(enable = "neon")]
pub(super) unsafe fn dot_half<T: Copy + Into<f32>, const BF16: bool>(w: &[T], x: &[f32]) -> f32 {
    assert_eq!(std::mem::size_of::<T>(), 2);
    let widen = |p: *const u16| if BF16 { widen_bf16(p) } else { widen_f16(p) };
    let n = w.len().min(x.len());
    let (pw, px) = (w.as_ptr() as *const u16, x.as_ptr());
    let mut acc = [vdupq_n_f32(0.0); 4];
    let mut i = 0;
    while i + 16 <= n {
        let (w0, w1) = widen(pw.add(i));
        let (w2, w3) = widen(pw.add(i + 8));
        acc[0] = vfmaq_f32(acc[0], w0, vld1q_f32(px.add(i)));
        acc[1] = vfmaq_f32(acc[1], w1, vld1q_f32(px.add(i + 4)));
        acc[2] = vfmaq_f32(acc[2], w2, vld1q_f32(px.add(i + 8)));
        acc[3] = vfmaq_f32(acc[3], w3, vld1q_f32(px.add(i + 12)));
        i += 16;
    }
    let mut s = vaddvq_f32(vaddq_f32(
        vaddq_f32(acc[0], acc[1]),
        vaddq_f32(acc[2], acc[3]),
    ));
    while i < n {
        s += w[i].into() * x[i];
        i += 1;
    }
    s
}

/// 16 consecutive MLX-packed codes (`BITS` = 2, 4 or 8) starting at byte `p` (element
/// 0 in the lowest bits, little-endian), one per byte.
#[inline(always)]
unsafe fn affine_codes<const BITS: u32>(p: *const u8) -> uint8x16_t {
    match BITS {
        8 => vld1q_u8(p),
        4 => {
            // Byte k holds elements 2k (low nibble) and 2k + 1.
            let raw = vld1_u8(p);
            let lo = vand_u8(raw, vdup_n_u8(0x0F));
            let hi = vshr_n_u8::<4>(raw);
            vcombine_u8(vzip1_u8(lo, hi), vzip2_u8(lo, hi))
        }
        _ => {
            // Byte k holds elements 4k..4k + 4, two bits each from the bottom.
            const IDX: [u8; 16] = [0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3];
            const SHIFT: [i8; 16] = [0, -2, -4, -6, 0, -2, -4, -6, 0, -2, -4, -6, 0, -2, -4, -6];
            let word = vreinterpretq_u8_u32(vdupq_n_u32(std::ptr::read_unaligned(p as *const u32)));
            let spread = vqtbl1q_u8(word, vld1q_u8(IDX.as_ptr()));
            vandq_u8(vshlq_u8(spread, vld1q_s8(SHIFT.as_ptr())), vdupq_n_u8(3))
        }
    }
}

/// One row of MLX-packed affine codes (`BITS` = 2, 4 or 8; groups of `group` elements, a
/// multiple of 16) dotted with `x`: Σ_g scale_g·Σ_j q_j·x_j + bias_g·xsum_g, codes widened
/// to f32 in registers.
///
/// # Safety
/// The CPU must support NEON; `words` holds `x.len()·BITS/32` words, `scales`, `biases`
/// and `xsums` one entry per group, and `x.len()` = groups · group.
#[target_feature(enable = "neon")]
pub(super) unsafe fn affine_dot<const BITS: u32>(
    words: &[u32],
    scales: &[half::f16],
    biases: &[half::f16],
    group: usize,
    x: &[f32],
    xsums: &[f32],
) -> f32 {
    assert!(group.is_multiple_of(16) && x.len() == scales.len() * group);
    assert!(words.len() * 32 >= x.len() * BITS as usize);
    assert!(biases.len() == scales.len() && xsums.len() == scales.len());
    let (bytes, xp) = (words.as_ptr().cast::<u8>(), x.as_ptr());
    let mut total = vdupq_n_f32(0.0);
    let mut offset = 0f32;
    for (g, ((&s, &b), &xs)) in scales.iter().zip(biases).zip(xsums).enumerate() {
        let mut acc = [vdupq_n_f32(0.0); 4];
        for v in 0..group / 16 {
            // Codes of elements e..e + 16.
            let e = g * group + v * 16;
            let codes = affine_codes::<BITS>(bytes.add(e * BITS as usize / 8));
            let lo = vmovl_u8(vget_low_u8(codes));
            let hi = vmovl_high_u8(codes);
            let q = [
                vmovl_u16(vget_low_u16(lo)),
                vmovl_high_u16(lo),
                vmovl_u16(vget_low_u16(hi)),
                vmovl_high_u16(hi),
            ];
            for (k, (acc, q)) in acc.iter_mut().zip(q).enumerate() {
                *acc = vfmaq_f32(*acc, vcvtq_f32_u32(q), vld1q_f32(xp.add(e + 4 * k)));
            }
        }
        let sum = vaddq_f32(vaddq_f32(acc[0], acc[1]), vaddq_f32(acc[2], acc[3]));
        total = vfmaq_n_f32(total, sum, f16_bits(s.to_bits()));
        offset += f16_bits(b.to_bits()) * xs;
    }
    vaddvq_f32(total) + offset
}

#[cfg(test)]
#[path = "neon_tests.rs"]
mod tests;
