//! AVX-512 VNNI tile of the prompt GEMM (`gemm.rs`): `vpdpbusd` multiplies four
//! unsigned weight codes by four signed activation codes and adds them to an i32 lane,
//! 64 products per instruction; a 16-row panel block is eight such vectors, each used for
//! every token of the tile. Same arithmetic as `gemm::tile_scalar`, bit for bit.

use super::gemm::{Acts, PanelBlock, PANEL, TILE};
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
    signed: bool,
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
            match (tn, signed) {
                $(($n, false) => tile_n::<$n, false>(panel, acts, t0, out, rows, n0, valid),
                  ($n, true) => tile_n::<$n, true>(panel, acts, t0, out, rows, n0, valid),)*
                _ => unreachable!("tile of {tn} tokens"),
            }
        };
    }
    go!(1 2 3 4 5 6 7 8)
}

#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn tile_n<const T: usize, const SIGNED: bool>(
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
            let mut isum = _mm512_add_epi32(lo, hi);
            if SIGNED {
                isum = _mm512_sub_epi32(isum, _mm512_set1_epi32(*acts.csum.get_unchecked(e)));
            }
            let scale = _mm512_mul_ps(sc, _mm512_set1_ps(*acts.d.get_unchecked(e)));
            *acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum), scale, *acc);
            if !SIGNED {
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
            for h in 0..2 {
                let v = _mm512_mul_ps(_mm512_loadu_ps(b.as_ptr().add(16 * h)), id);
                let i = _mm512_cvttps_epi32(v);
                let frac = _mm512_sub_ps(v, _mm512_cvtepi32_ps(i));
                let up = _mm512_cmp_ps_mask::<_CMP_GE_OQ>(frac, half);
                let down = _mm512_cmp_ps_mask::<_CMP_LE_OQ>(frac, _mm512_set1_ps(-0.5));
                let r = _mm512_mask_add_epi32(i, up, i, one);
                let r = _mm512_mask_sub_epi32(r, down, r, one);
                sum = _mm512_add_epi32(sum, r);
                _mm_storeu_si128(
                    qs.as_mut_ptr().add(blk * 32 + 16 * h) as *mut __m128i,
                    _mm512_cvtepi32_epi8(r),
                );
            }
            let sum = _mm512_reduce_add_epi32(sum);
            d[blk] = dd;
            dsum[blk] = dd * sum as f32;
            csum[blk] = 128 * sum;
        }
    }
}
