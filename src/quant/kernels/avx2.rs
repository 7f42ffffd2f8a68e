//! AVX2 + FMA + F16C kernels. Same arithmetic as `scalar.rs`: unsigned codes times
//! signed activations with `maddubs`, pairs summed with `madd`, one FMA per block.

use super::{BlockKind, Q8Act};
use std::arch::x86_64::*;

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn f16_at(p: *const u8) -> f32 {
    let bits = std::ptr::read_unaligned(p as *const u16);
    _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(bits as i32)))
}

/// 16 bytes of packed nibbles → 32 codes: low nibbles are elements 0..15, high 16..31.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn nibbles(p: *const u8) -> __m256i {
    let raw = _mm_loadu_si128(p as *const __m128i);
    let m4 = _mm_set1_epi8(0x0F);
    let lo = _mm_and_si128(raw, m4);
    let hi = _mm_and_si128(_mm_srli_epi16(raw, 4), m4);
    _mm256_set_m128i(hi, lo)
}

/// 32 bits → 32 bytes, 0x10 where the bit (the fifth bit of element j) is set.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn fifth_bits(p: *const u8) -> __m256i {
    let qh = std::ptr::read_unaligned(p as *const u32);
    let v = _mm256_set1_epi32(qh as i32);
    let spread = _mm256_shuffle_epi8(
        v,
        _mm256_set_epi64x(
            0x0303030303030303,
            0x0202020202020202,
            0x0101010101010101,
            0,
        ),
    );
    let mask = _mm256_set1_epi64x(0x8040201008040201u64 as i64);
    let set = _mm256_cmpeq_epi8(_mm256_and_si256(spread, mask), mask);
    _mm256_and_si256(set, _mm256_set1_epi8(0x10))
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn hsum(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_movehdup_ps(s));
    _mm_cvtss_f32(s)
}

/// Codes·activations pair sums of one block (8 × i32 as f32), with the block's weight
/// scale and offset.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn block(kind: BlockKind, b: *const u8, a: &Q8Act) -> (__m256, f32, f32) {
    let av = _mm256_load_si256(a.qs.as_ptr() as *const __m256i);
    let d = f16_at(b);
    let (codes_dot, offset) = match kind {
        BlockKind::Q4_0 => (_mm256_maddubs_epi16(nibbles(b.add(2)), av), -8.0 * d),
        BlockKind::Q4_1 => (
            _mm256_maddubs_epi16(nibbles(b.add(4)), av),
            f16_at(b.add(2)),
        ),
        BlockKind::Q5_0 => {
            let q = _mm256_or_si256(nibbles(b.add(6)), fifth_bits(b.add(2)));
            (_mm256_maddubs_epi16(q, av), -16.0 * d)
        }
        BlockKind::Q5_1 => {
            let q = _mm256_or_si256(nibbles(b.add(8)), fifth_bits(b.add(4)));
            (_mm256_maddubs_epi16(q, av), f16_at(b.add(2)))
        }
        BlockKind::Q8_0 => {
            // Signed × signed: move the weight's sign onto the activation.
            let w = _mm256_loadu_si256(b.add(2) as *const __m256i);
            (
                _mm256_maddubs_epi16(_mm256_sign_epi8(w, w), _mm256_sign_epi8(av, w)),
                0.0,
            )
        }
        BlockKind::Q2K | BlockKind::Q3K | BlockKind::Q4K | BlockKind::Q5K | BlockKind::Q6K => {
            unreachable!("K-quants go through their own loops")
        }
    };
    let sums = _mm256_cvtepi32_ps(_mm256_madd_epi16(codes_dot, _mm256_set1_epi16(1)));
    (sums, d, offset)
}

/// Σ w·a of a signed 32-code group against its activations, as 8 float lanes: lanes
/// 0..3 cover elements 0..15, lanes 4..7 elements 16..31 (for per-16 scales).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn signed_group(w: __m256i, a: &Q8Act) -> __m256 {
    let av = _mm256_load_si256(a.qs.as_ptr() as *const __m256i);
    let p = _mm256_maddubs_epi16(_mm256_sign_epi8(w, w), _mm256_sign_epi8(av, w));
    _mm256_cvtepi32_ps(_mm256_madd_epi16(p, _mm256_set1_epi16(1)))
}

/// Q3_K: two bits per code from `qs`, the high bit from `hmask` (clear means −4), one
/// scale per 16 elements.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_q3k(row: &[u8], act: &[Q8Act]) -> f32 {
    let m2 = _mm256_set1_epi8(3);
    let four = _mm256_set1_epi8(4);
    let mut acc = _mm256_setzero_ps();
    for (sb, acts) in act.chunks_exact(8).enumerate() {
        let b = row.as_ptr().add(sb * 110);
        super::prefetch_ahead(b);
        super::prefetch_ahead(b.wrapping_add(64));
        let block = std::slice::from_raw_parts(b, 110);
        let scales = super::scalar::q3k_scales(&block[96..108]);
        let d = f16_at(b.add(108));
        let hmask = _mm256_loadu_si256(b as *const __m256i);
        for g in 0..8 {
            let (half, j) = (g / 4, g % 4);
            let qs = _mm256_loadu_si256(b.add(32 + 32 * half) as *const __m256i);
            let low = _mm256_and_si256(_mm256_srl_epi16(qs, _mm_cvtsi32_si128(2 * j as i32)), m2);
            let bit = _mm256_set1_epi8(1 << g);
            let set = _mm256_cmpeq_epi8(_mm256_and_si256(hmask, bit), bit);
            let w = _mm256_sub_epi8(low, _mm256_andnot_si256(set, four));
            let a = &acts[g];
            let da = d * a.d;
            let sc = _mm256_setr_m128(
                _mm_set1_ps(da * scales[2 * g] as f32),
                _mm_set1_ps(da * scales[2 * g + 1] as f32),
            );
            acc = _mm256_fmadd_ps(sc, signed_group(w, a), acc);
        }
    }
    hsum(acc)
}

/// Q2_K: unsigned 2-bit codes straight into `maddubs`; the min term needs Σa per 16
/// elements, which a second `maddubs` against ones provides in the same lane layout.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_q2k(row: &[u8], act: &[Q8Act]) -> f32 {
    let m2 = _mm256_set1_epi8(3);
    let ones8 = _mm256_set1_epi8(1);
    let ones16 = _mm256_set1_epi16(1);
    let mut acc = _mm256_setzero_ps();
    for (sb, acts) in act.chunks_exact(8).enumerate() {
        let b = row.as_ptr().add(sb * 84);
        super::prefetch_ahead(b);
        super::prefetch_ahead(b.wrapping_add(64));
        let (d, dmin) = (f16_at(b.add(80)), f16_at(b.add(82)));
        for (g, a) in acts.iter().enumerate() {
            let (half, j) = (g / 4, g % 4);
            let qs = _mm256_loadu_si256(b.add(16 + 32 * half) as *const __m256i);
            let q = _mm256_and_si256(_mm256_srl_epi16(qs, _mm_cvtsi32_si128(2 * j as i32)), m2);
            let av = _mm256_load_si256(a.qs.as_ptr() as *const __m256i);
            let qa = _mm256_cvtepi32_ps(_mm256_madd_epi16(_mm256_maddubs_epi16(q, av), ones16));
            let sa = _mm256_cvtepi32_ps(_mm256_madd_epi16(_mm256_maddubs_epi16(ones8, av), ones16));
            let (sc0, sc1) = (*b.add(2 * g), *b.add(2 * g + 1));
            let scale = _mm256_setr_m128(
                _mm_set1_ps(d * a.d * (sc0 & 0x0F) as f32),
                _mm_set1_ps(d * a.d * (sc1 & 0x0F) as f32),
            );
            let min = _mm256_setr_m128(
                _mm_set1_ps(dmin * a.d * (sc0 >> 4) as f32),
                _mm_set1_ps(dmin * a.d * (sc1 >> 4) as f32),
            );
            acc = _mm256_fmadd_ps(scale, qa, acc);
            acc = _mm256_fnmadd_ps(min, sa, acc);
        }
    }
    hsum(acc)
}

/// One legacy block's codes, decoded once for several activation rows: (codes, whether
/// they are Q8_0's signed bytes, d, offset per unit of Σ activation).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn block_codes(kind: BlockKind, b: *const u8) -> (__m256i, bool, f32, f32) {
    let d = f16_at(b);
    match kind {
        BlockKind::Q4_0 => (nibbles(b.add(2)), false, d, -8.0 * d),
        BlockKind::Q4_1 => (nibbles(b.add(4)), false, d, f16_at(b.add(2))),
        BlockKind::Q5_0 => (
            _mm256_or_si256(nibbles(b.add(6)), fifth_bits(b.add(2))),
            false,
            d,
            -16.0 * d,
        ),
        BlockKind::Q5_1 => (
            _mm256_or_si256(nibbles(b.add(8)), fifth_bits(b.add(4))),
            false,
            d,
            f16_at(b.add(2)),
        ),
        BlockKind::Q8_0 => (_mm256_loadu_si256(b.add(2) as *const __m256i), true, d, 0.0),
        _ => unreachable!("only legacy blocks"),
    }
}

/// `dot` of one weight row with four activation rows, each block decoded once. Per
/// activation row the arithmetic — two accumulator chains over even and odd blocks, the
/// same FMAs in the same order — is exactly `dot`'s, so results are bit-identical to four
/// `dot` calls (batched decode must not change a sequence's output).
#[allow(clippy::needless_range_loop)] // `blk` indexes four activation rows and the blocks
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn dot4_legacy(kind: BlockKind, row: &[u8], acts: [&[Q8Act]; 4]) -> [f32; 4] {
    let bb = kind.block_bytes();
    let n = acts[0].len();
    debug_assert!(row.len() >= n * bb && acts.iter().all(|a| a.len() == n));
    let base = row.as_ptr();
    let ones = _mm256_set1_epi16(1);
    let mut acc = [[_mm256_setzero_ps(); 2]; 4];
    let mut off = [[0f32; 2]; 4];
    for blk in 0..n {
        // Blocks alternate between the two chains, as in `dot`.
        let chain = blk % 2;
        let (codes, signed, d, o) = block_codes(kind, base.add(blk * bb));
        let w_abs = if signed {
            _mm256_sign_epi8(codes, codes)
        } else {
            codes
        };
        for r in 0..4 {
            let a = &acts[r][blk];
            let av = _mm256_load_si256(a.qs.as_ptr() as *const __m256i);
            let av = if signed {
                _mm256_sign_epi8(av, codes)
            } else {
                av
            };
            let s = _mm256_cvtepi32_ps(_mm256_madd_epi16(_mm256_maddubs_epi16(w_abs, av), ones));
            acc[r][chain] = _mm256_fmadd_ps(_mm256_set1_ps(d * a.d), s, acc[r][chain]);
            off[r][chain] += o * a.dsum;
        }
    }
    let mut out = [0f32; 4];
    for r in 0..4 {
        out[r] = hsum(_mm256_add_ps(acc[r][0], acc[r][1])) + off[r][0] + off[r][1];
    }
    out
}

/// # Safety
/// The CPU must support AVX2, FMA and F16C; `row` holds the blocks of `kind` that
/// `act` (one entry per 32 elements) covers.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn dot(kind: BlockKind, row: &[u8], act: &[Q8Act]) -> f32 {
    if kind == BlockKind::Q2K {
        return dot_q2k(row, act);
    }
    if kind == BlockKind::Q3K {
        return dot_q3k(row, act);
    }
    if matches!(kind, BlockKind::Q4K | BlockKind::Q5K | BlockKind::Q6K) {
        return super::kdot::dot_avx2(kind, row, act);
    }
    let bb = kind.block_bytes();
    debug_assert!(row.len() >= act.len() * bb);
    let base = row.as_ptr();
    // Two independent accumulator chains hide the FMA latency.
    let (mut acc0, mut acc1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
    let (mut off0, mut off1) = (0f32, 0f32);
    let pairs = act.len() / 2;
    for p in 0..pairs {
        let (a0, a1) = (&act[2 * p], &act[2 * p + 1]);
        if p % 2 == 0 {
            super::prefetch_ahead(base.add(2 * p * bb));
            super::prefetch_ahead(base.add(2 * p * bb).wrapping_add(64));
        }
        let (s0, d0, o0) = block(kind, base.add(2 * p * bb), a0);
        let (s1, d1, o1) = block(kind, base.add((2 * p + 1) * bb), a1);
        acc0 = _mm256_fmadd_ps(_mm256_set1_ps(d0 * a0.d), s0, acc0);
        acc1 = _mm256_fmadd_ps(_mm256_set1_ps(d1 * a1.d), s1, acc1);
        off0 += o0 * a0.dsum;
        off1 += o1 * a1.dsum;
    }
    if act.len() % 2 == 1 {
        let a = &act[act.len() - 1];
        let (s, d, o) = block(kind, base.add((act.len() - 1) * bb), a);
        acc0 = _mm256_fmadd_ps(_mm256_set1_ps(d * a.d), s, acc0);
        off0 += o * a.dsum;
    }
    hsum(_mm256_add_ps(acc0, acc1)) + off0 + off1
}

/// Eight f16 at `p` widened to f32.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn widen_f16(p: *const u16) -> __m256 {
    _mm256_cvtph_ps(_mm_loadu_si128(p as *const __m128i))
}

/// Eight bf16 at `p` widened to f32 (bf16 is the top half of an f32).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn widen_bf16(p: *const u16) -> __m256 {
    let v = _mm256_cvtepu16_epi32(_mm_loadu_si128(p as *const __m128i));
    _mm256_castsi256_ps(_mm256_slli_epi32(v, 16))
}

/// Dot product of a half-precision row (f16 or bf16, 16-bit storage) with f32 `x`.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C; `T` is a 2-byte float; `w` and `x` have the
/// same length.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn dot_half<T: Copy + Into<f32>, const BF16: bool>(w: &[T], x: &[f32]) -> f32 {
    // A const parameter, not a function pointer, so the widening inlines.
    let widen = |p: *const u16| if BF16 { widen_bf16(p) } else { widen_f16(p) };
    debug_assert_eq!(std::mem::size_of::<T>(), 2);
    let n = w.len().min(x.len());
    let (pw, px) = (w.as_ptr() as *const u16, x.as_ptr());
    let (mut a0, mut a1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
    let mut i = 0;
    while i + 16 <= n {
        a0 = _mm256_fmadd_ps(widen(pw.add(i)), _mm256_loadu_ps(px.add(i)), a0);
        a1 = _mm256_fmadd_ps(widen(pw.add(i + 8)), _mm256_loadu_ps(px.add(i + 8)), a1);
        i += 16;
    }
    let mut s = hsum(_mm256_add_ps(a0, a1));
    while i < n {
        s += w[i].into() * x[i];
        i += 1;
    }
    s
}

/// # Safety
/// The CPU must support AVX2 and FMA; `a` and `b` have the same length.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (pa, pb) = (a.as_ptr(), b.as_ptr());
    let mut acc = [_mm256_setzero_ps(); 4];
    let mut i = 0;
    while i + 32 <= n {
        for (j, acc) in acc.iter_mut().enumerate() {
            let x = _mm256_loadu_ps(pa.add(i + 8 * j));
            let y = _mm256_loadu_ps(pb.add(i + 8 * j));
            *acc = _mm256_fmadd_ps(x, y, *acc);
        }
        i += 32;
    }
    while i + 8 <= n {
        acc[0] = _mm256_fmadd_ps(
            _mm256_loadu_ps(pa.add(i)),
            _mm256_loadu_ps(pb.add(i)),
            acc[0],
        );
        i += 8;
    }
    let mut s = hsum(_mm256_add_ps(
        _mm256_add_ps(acc[0], acc[1]),
        _mm256_add_ps(acc[2], acc[3]),
    ));
    while i < n {
        s += *pa.add(i) * *pb.add(i);
        i += 1;
    }
    s
}

/// One row of MLX-packed affine codes (`BITS` = 2, 4 or 8; groups of `group` elements, a
/// multiple of 8) dotted with `x`: Σ_g scale_g·Σ_j q_j·x_j + bias_g·xsum_g, codes widened
/// to f32 in registers, never in memory.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C; `words` holds `x.len()·BITS/32` words,
/// `scales`, `biases` and `xsums` one entry per group, and `x.len()` = groups · group.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn affine_dot<const BITS: u32>(
    words: &[u32],
    scales: &[half::f16],
    biases: &[half::f16],
    group: usize,
    x: &[f32],
    xsums: &[f32],
) -> f32 {
    debug_assert!(group.is_multiple_of(8) && x.len() == scales.len() * group);
    debug_assert!(words.len() * 32 >= x.len() * BITS as usize);
    let mask = _mm256_set1_epi32((1 << BITS) - 1);
    let step = BITS as i32;
    // Lane l takes code l of 8 consecutive codes; for 2 bits a word holds two such runs.
    let shifts = _mm256_setr_epi32(
        0,
        step,
        2 * step,
        3 * step,
        4 * step,
        5 * step,
        6 * step,
        7 * step,
    );
    let shifts_hi = _mm256_add_epi32(shifts, _mm256_set1_epi32(16));
    let (wp, xp) = (words.as_ptr(), x.as_ptr());
    let bytes = wp.cast::<u8>();
    let mut total = _mm256_setzero_ps();
    let mut offset = 0f32;
    for (g, ((&s, &b), &xs)) in scales.iter().zip(biases).zip(xsums).enumerate() {
        let mut acc = [_mm256_setzero_ps(); 2];
        for v in 0..group / 8 {
            // Codes of elements e..e + 8.
            let e = g * group + v * 8;
            let codes = match BITS {
                8 => _mm256_cvtepu8_epi32(_mm_loadl_epi64(bytes.add(e).cast())),
                4 => _mm256_and_si256(
                    _mm256_srlv_epi32(_mm256_set1_epi32(*wp.add(e / 8) as i32), shifts),
                    mask,
                ),
                _ => {
                    let word = _mm256_set1_epi32(*wp.add(e / 16) as i32);
                    let sh = if (e / 8).is_multiple_of(2) {
                        shifts
                    } else {
                        shifts_hi
                    };
                    _mm256_and_si256(_mm256_srlv_epi32(word, sh), mask)
                }
            };
            acc[v % 2] = _mm256_fmadd_ps(
                _mm256_cvtepi32_ps(codes),
                _mm256_loadu_ps(xp.add(e)),
                acc[v % 2],
            );
        }
        let scale = _mm256_set1_ps(f16_value(s));
        total = _mm256_fmadd_ps(scale, _mm256_add_ps(acc[0], acc[1]), total);
        offset += f16_value(b) * xs;
    }
    hsum(total) + offset
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn f16_value(h: half::f16) -> f32 {
    _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(i32::from(h.to_bits()))))
}
