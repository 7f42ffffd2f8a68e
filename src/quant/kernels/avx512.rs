//! AVX-512 VNNI tile of the prompt GEMM (`gemm.rs`): `vpdpbusd` multiplies four
//! unsigned weight codes by four signed activation codes and adds them to an i32 lane,
//! 64 products per instruction; a 16-row panel block is eight such vectors, each used for
//! every token of the tile. Same arithmetic as `gemm::tile_scalar`, bit for bit.

use super::gemm::{Acts, Form, PanelBlock, PANEL, TILE};
use super::{BlockKind, Q8Act};
use std::arch::x86_64::*;

/// Tokens t0..t0+tn (tn ≤ 8) against one panel; writes rows n0..n0+valid of `out`
/// (token-major, `rows` wide).
///
/// # Safety
/// The CPU must have AVX-512 F/BW/VNNI; `out` must hold (t0 + tn) · rows floats, and
/// `panel` one block per 32 columns of `acts`.
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn tile(
    panel: &[PanelBlock],
    acts: &Acts,
    form: Form,
    t0: usize,
    tn: usize,
    out: *mut f32,
    rows: usize,
    n0: usize,
    valid: usize,
) {
    debug_assert!(tn <= TILE && valid <= PANEL && panel.len() == acts.nb);
    macro_rules! go {
        ($($n:literal)*) => {
            match (tn, form) {
                $(($n, Form::Unsigned) => tile_n::<$n, UNSIGNED>(panel, acts, t0, out, rows, n0, valid),
                  ($n, Form::Signed) => tile_n::<$n, SIGNED>(panel, acts, t0, out, rows, n0, valid),
                  ($n, Form::Halves) => tile_n::<$n, HALVES>(panel, acts, t0, out, rows, n0, valid),)*
                _ => unreachable!("tile of {tn} tokens"),
            }
        };
    }
    go!(1 2 3 4 5 6 7 8)
}

/// [`Form`] as a const parameter of [`tile_n`].
const UNSIGNED: u8 = 0;
const SIGNED: u8 = 1;
const HALVES: u8 = 2;

#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn tile_n<const T: usize, const FORM: u8>(
    panel: &[PanelBlock],
    acts: &Acts,
    t0: usize,
    out: *mut f32,
    rows: usize,
    n0: usize,
    valid: usize,
) {
    let (nb, cols) = (acts.nb, acts.cols);
    let mut acc = [_mm512_setzero_ps(); T];
    let qs = acts.qs.as_ptr();
    for b in 0..nb {
        let pb = panel.get_unchecked(b);
        let wp = pb.w.as_ptr() as *const __m512i;
        let w0 = _mm512_load_si512(wp);
        let w1 = _mm512_load_si512(wp.add(1));
        let w2 = _mm512_load_si512(wp.add(2));
        let w3 = _mm512_load_si512(wp.add(3));
        let w4 = _mm512_load_si512(wp.add(4));
        let w5 = _mm512_load_si512(wp.add(5));
        let w6 = _mm512_load_si512(wp.add(6));
        let w7 = _mm512_load_si512(wp.add(7));
        let sc = _mm512_load_ps(pb.scale.as_ptr());
        let off = _mm512_load_ps(pb.off.as_ptr());
        let (sc_hi, off_hi) = if FORM == HALVES {
            (
                _mm512_load_ps(pb.scale_hi.as_ptr()),
                _mm512_load_ps(pb.off_hi.as_ptr()),
            )
        } else {
            (sc, off)
        };
        for (t, acc) in acc.iter_mut().enumerate() {
            let tok = t0 + t;
            let a = qs.add(tok * cols + b * 32) as *const i32;
            // (A macro, not a closure: a closure would not inherit the target features.)
            macro_rules! word {
                ($s:expr) => {
                    _mm512_set1_epi32(std::ptr::read_unaligned(a.add($s)))
                };
            }
            let mut lo = _mm512_dpbusd_epi32(_mm512_setzero_si512(), w0, word!(0));
            let mut hi = _mm512_dpbusd_epi32(_mm512_setzero_si512(), w4, word!(4));
            lo = _mm512_dpbusd_epi32(lo, w1, word!(1));
            hi = _mm512_dpbusd_epi32(hi, w5, word!(5));
            lo = _mm512_dpbusd_epi32(lo, w2, word!(2));
            hi = _mm512_dpbusd_epi32(hi, w6, word!(6));
            lo = _mm512_dpbusd_epi32(lo, w3, word!(3));
            hi = _mm512_dpbusd_epi32(hi, w7, word!(7));
            let e = tok * nb + b;
            let da = _mm512_set1_ps(*acts.d.get_unchecked(e));
            if FORM == HALVES {
                let dh = acts.dsum_half.as_ptr().add(2 * e);
                *acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(lo), _mm512_mul_ps(sc, da), *acc);
                *acc = _mm512_fmadd_ps(off, _mm512_set1_ps(*dh), *acc);
                *acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(hi), _mm512_mul_ps(sc_hi, da), *acc);
                *acc = _mm512_fmadd_ps(off_hi, _mm512_set1_ps(*dh.add(1)), *acc);
                continue;
            }
            let mut isum = _mm512_add_epi32(lo, hi);
            if FORM == SIGNED {
                isum = _mm512_sub_epi32(isum, _mm512_set1_epi32(*acts.csum.get_unchecked(e)));
            }
            let scale = _mm512_mul_ps(sc, da);
            *acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum), scale, *acc);
            if FORM == UNSIGNED {
                *acc = _mm512_fmadd_ps(off, _mm512_set1_ps(*acts.dsum.get_unchecked(e)), *acc);
            }
        }
    }
    let mask: __mmask16 = if valid >= PANEL {
        0xFFFF
    } else {
        (1u16 << valid) - 1
    };
    for (t, acc) in acc.iter().enumerate() {
        _mm512_mask_storeu_ps(out.add((t0 + t) * rows + n0), mask, *acc);
    }
}

/// One token's row for the GEMM (`gemm::quantize`): per 32-block the codes, d, d·Σq and
/// 128·Σq, one scale per `span`; the same results as `act::quantize_block` for finite
/// input (the same multiply, and rounding half away from zero from the exact fraction).
///
/// # Safety
/// The CPU must have AVX-512 F/BW; `x.len()` is a multiple of `span`, `span` of 32, and
/// the outputs hold `x.len()` codes and `x.len() / 32` entries.
#[target_feature(enable = "avx512f,avx512bw")]
pub(super) unsafe fn quantize_row(
    x: &[f32],
    span: usize,
    qs: &mut [i8],
    d: &mut [f32],
    dsum: &mut [f32],
    csum: &mut [i32],
    dsum_half: &mut [f32],
) {
    debug_assert!(qs.len() == x.len() && d.len() * 32 == x.len());
    let (half, one) = (_mm512_set1_ps(0.5), _mm512_set1_epi32(1));
    for (s, chunk) in x.chunks_exact(span).enumerate() {
        let mut m = _mm512_setzero_ps();
        for c in chunk.chunks_exact(16) {
            m = _mm512_max_ps(m, _mm512_abs_ps(_mm512_loadu_ps(c.as_ptr())));
        }
        let amax = _mm512_reduce_max_ps(m);
        let dd = amax / 127.0;
        let id = _mm512_set1_ps(if dd > 0.0 { 1.0 / dd } else { 0.0 });
        for (j, b) in chunk.chunks_exact(32).enumerate() {
            let blk = s * (span / 32) + j;
            let mut sum = _mm512_setzero_si512();
            let mut half_sums = [0i32; 2];
            for (h, half_sum) in half_sums.iter_mut().enumerate() {
                let v = _mm512_mul_ps(_mm512_loadu_ps(b.as_ptr().add(16 * h)), id);
                let i = _mm512_cvttps_epi32(v);
                let frac = _mm512_sub_ps(v, _mm512_cvtepi32_ps(i));
                let up = _mm512_cmp_ps_mask::<_CMP_GE_OQ>(frac, half);
                let down = _mm512_cmp_ps_mask::<_CMP_LE_OQ>(frac, _mm512_set1_ps(-0.5));
                let r = _mm512_mask_add_epi32(i, up, i, one);
                let r = _mm512_mask_sub_epi32(r, down, r, one);
                sum = _mm512_add_epi32(sum, r);
                *half_sum = _mm512_reduce_add_epi32(r);
                _mm_storeu_si128(
                    qs.as_mut_ptr().add(blk * 32 + 16 * h) as *mut __m128i,
                    _mm512_cvtepi32_epi8(r),
                );
            }
            let sum = _mm512_reduce_add_epi32(sum);
            d[blk] = dd;
            dsum[blk] = dd * sum as f32;
            csum[blk] = 128 * sum;
            dsum_half[2 * blk] = dd * half_sums[0] as f32;
            dsum_half[2 * blk + 1] = dd * half_sums[1] as f32;
        }
    }
}

/// 32 bytes at `p0` and 32 at `p1` as one vector (block `p0` in the low half).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn two_halves(p0: *const u8, p1: *const u8) -> __m512i {
    let lo = _mm512_castsi256_si512(_mm256_loadu_si256(p0 as *const __m256i));
    _mm512_inserti64x4::<1>(lo, _mm256_loadu_si256(p1 as *const __m256i))
}

/// The packed nibbles of two legacy blocks (16 bytes each) → 64 codes, in the layout of
/// `avx2::nibbles` per 256-bit half: low nibbles are elements 0..15, high 16..31.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn nibbles2(p0: *const u8, p1: *const u8) -> __m512i {
    let r = _mm256_set_m128i(
        _mm_loadu_si128(p1 as *const __m128i),
        _mm_loadu_si128(p0 as *const __m128i),
    );
    // 128-bit lanes: raw0, raw0, raw1, raw1.
    let v = _mm512_permutexvar_epi64(
        _mm512_set_epi64(3, 2, 3, 2, 1, 0, 1, 0),
        _mm512_castsi256_si512(r),
    );
    let m4 = _mm512_set1_epi8(0x0F);
    let lo = _mm512_and_si512(v, m4);
    let hi = _mm512_and_si512(_mm512_srli_epi16::<4>(v), m4);
    _mm512_mask_blend_epi64(0b1100_1100, lo, hi)
}

#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn f16_at(p: *const u8) -> f32 {
    let bits = std::ptr::read_unaligned(p as *const u16);
    _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(bits as i32)))
}

/// Two legacy blocks: their codes·activations sums (8 i32 lanes per block, lane i the
/// sum over elements 4i..4i+3, the same integers as `maddubs` + `madd` give) as f32, and
/// per block (d, offset) as in `avx2::block`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn two_blocks(
    kind: BlockKind,
    b0: *const u8,
    b1: *const u8,
    a0: &Q8Act,
    a1: &Q8Act,
) -> (__m512, [f32; 2], [f32; 2]) {
    let av = two_halves(a0.qs.as_ptr() as *const u8, a1.qs.as_ptr() as *const u8);
    let (d0, d1) = (f16_at(b0), f16_at(b1));
    let fifth = |h0: *const u8, h1: *const u8| -> __mmask64 {
        let q0 = std::ptr::read_unaligned(h0 as *const u32) as u64;
        let q1 = std::ptr::read_unaligned(h1 as *const u32) as u64;
        q0 | (q1 << 32)
    };
    let sixteen = _mm512_set1_epi8(0x10);
    let (isum, o0, o1) = match kind {
        BlockKind::Q4_0 => (
            _mm512_dpbusd_epi32(_mm512_setzero_si512(), nibbles2(b0.add(2), b1.add(2)), av),
            -8.0 * d0,
            -8.0 * d1,
        ),
        BlockKind::Q4_1 => (
            _mm512_dpbusd_epi32(_mm512_setzero_si512(), nibbles2(b0.add(4), b1.add(4)), av),
            f16_at(b0.add(2)),
            f16_at(b1.add(2)),
        ),
        BlockKind::Q5_0 => {
            let n = nibbles2(b0.add(6), b1.add(6));
            let q = _mm512_mask_add_epi8(n, fifth(b0.add(2), b1.add(2)), n, sixteen);
            (
                _mm512_dpbusd_epi32(_mm512_setzero_si512(), q, av),
                -16.0 * d0,
                -16.0 * d1,
            )
        }
        BlockKind::Q5_1 => {
            let n = nibbles2(b0.add(8), b1.add(8));
            let q = _mm512_mask_add_epi8(n, fifth(b0.add(4), b1.add(4)), n, sixteen);
            (
                _mm512_dpbusd_epi32(_mm512_setzero_si512(), q, av),
                f16_at(b0.add(2)),
                f16_at(b1.add(2)),
            )
        }
        BlockKind::Q8_0 => {
            // Signed × signed: the weight's magnitude, its sign moved onto the activation
            // (where the weight is 0 the product is 0 either way).
            let w = two_halves(b0.add(2), b1.add(2));
            let neg = _mm512_movepi8_mask(w);
            let a = _mm512_mask_sub_epi8(av, neg, _mm512_setzero_si512(), av);
            (
                _mm512_dpbusd_epi32(_mm512_setzero_si512(), _mm512_abs_epi8(w), a),
                0.0,
                0.0,
            )
        }
        _ => unreachable!("only legacy blocks"),
    };
    (_mm512_cvtepi32_ps(isum), [d0, d1], [o0, o1])
}

/// `lo` in the eight low lanes, `hi` in the eight high ones.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn halves_ps(lo: f32, hi: f32) -> __m512 {
    let lo = _mm512_castps_pd(_mm512_set1_ps(lo));
    let hi = _mm256_castps_pd(_mm256_set1_ps(hi));
    _mm512_castpd_ps(_mm512_insertf64x4::<1>(lo, hi))
}

/// Sum of the eight lanes of `v`, in `avx2::hsum`'s order.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn hsum256(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_movehdup_ps(s));
    _mm_cvtss_f32(s)
}

/// `avx2::dot` for the legacy 32-blocks and Q4_K/Q5_K, two blocks (sub-blocks) per
/// 512-bit vector and `vpdpbusd` for the integer sums: the low half of the accumulator is
/// `avx2::dot`'s first chain and the high half its second, fed the same FMAs in the same
/// order, so the result is bit-identical to `avx2::dot` (and so to `avx2::dot4_legacy`).
/// Other kinds go to `avx2::dot`.
///
/// # Safety
/// The CPU must have AVX2/FMA/F16C and AVX-512 F/BW/VNNI; `row` holds the blocks of
/// `kind` that `act` covers.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vnni")]
pub(super) unsafe fn dot(kind: BlockKind, row: &[u8], act: &[Q8Act]) -> f32 {
    dot_rows::<1>(kind, [row], act)[0]
}

/// [`dot`] of `R` weight rows with the same activations, their accumulator chains
/// interleaved (independent chains hide the FMA latency; decode calls it with four rows);
/// each row's result is exactly what [`dot`] gives for it alone.
///
/// # Safety
/// As [`dot`], for every row.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vnni")]
pub(super) unsafe fn dot_rows<const R: usize>(
    kind: BlockKind,
    rows: [&[u8]; R],
    act: &[Q8Act],
) -> [f32; R] {
    if matches!(kind, BlockKind::Q4K | BlockKind::Q5K | BlockKind::Q6K) {
        return rows.map(|row| super::kdot::dot_vnni(kind, row, act));
    }
    // One copy per block type, so the block decoding has no branches on the type.
    match kind {
        BlockKind::Q4_0 => dot_legacy::<R, 0>(rows, act),
        BlockKind::Q4_1 => dot_legacy::<R, 1>(rows, act),
        BlockKind::Q5_0 => dot_legacy::<R, 2>(rows, act),
        BlockKind::Q5_1 => dot_legacy::<R, 3>(rows, act),
        BlockKind::Q8_0 => dot_legacy::<R, 4>(rows, act),
        _ => rows.map(|row| super::avx2::dot(kind, row, act)),
    }
}

/// The legacy block type of [`dot_legacy`]'s `K`.
const LEGACY: [BlockKind; 5] = [
    BlockKind::Q4_0,
    BlockKind::Q4_1,
    BlockKind::Q5_0,
    BlockKind::Q5_1,
    BlockKind::Q8_0,
];

/// [`dot_rows`] for the legacy block type `LEGACY[K]`.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vnni")]
unsafe fn dot_legacy<const R: usize, const K: usize>(rows: [&[u8]; R], act: &[Q8Act]) -> [f32; R] {
    let kind = LEGACY[K];
    let bb = kind.block_bytes();
    debug_assert!(rows.iter().all(|row| row.len() >= act.len() * bb));
    let base = rows.map(|row| row.as_ptr());
    let mut acc = [_mm512_setzero_ps(); R];
    let mut off = [[0f32; 2]; R];
    let pairs = act.len() / 2;
    for p in 0..pairs {
        let (a0, a1) = (&act[2 * p], &act[2 * p + 1]);
        for r in 0..R {
            let b0 = base[r].add(2 * p * bb);
            if p % 2 == 0 {
                super::prefetch_ahead(b0);
                super::prefetch_ahead(b0.wrapping_add(64));
            }
            let (s, d, o) = two_blocks(kind, b0, b0.add(bb), a0, a1);
            let scale = halves_ps(d[0] * a0.d, d[1] * a1.d);
            acc[r] = _mm512_fmadd_ps(scale, s, acc[r]);
            off[r][0] += o[0] * a0.dsum;
            off[r][1] += o[1] * a1.dsum;
        }
    }
    let mut out = [0f32; R];
    for r in 0..R {
        let mut acc0 = _mm512_castps512_ps256(acc[r]);
        let acc1 = _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(acc[r])));
        let (mut off0, off1) = (off[r][0], off[r][1]);
        if act.len() % 2 == 1 {
            let a = &act[act.len() - 1];
            let (s, d, o) = super::avx2::block(kind, base[r].add((act.len() - 1) * bb), a);
            acc0 = _mm256_fmadd_ps(_mm256_set1_ps(d * a.d), s, acc0);
            off0 += o * a.dsum;
        }
        out[r] = hsum256(_mm256_add_ps(acc0, acc1)) + off0 + off1;
    }
    out
}
