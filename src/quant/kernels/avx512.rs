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
