//! The integer prompt GEMM's register tile (`gemm.rs`) for x86-64 CPUs without AVX-512
//! VNNI: 256-bit vectors, a panel's 16 rows as two halves of 8, up to 4 tokens per pass
//! (16 ymm registers). AVX2 multiplies each 4-byte word with `maddubs` (u8 × i8 → pair
//! sums in i16) and `madd` (→ i32); AVX-VNNI does both in one `vpdpbusd`. The integer
//! sums are exact either way (pair sums stay below 2¹⁵: codes ≤ 63, |activations| ≤ 127;
//! Q8_0 multiplies |q| by the activation carrying q's sign instead of its offset codes),
//! and the float operations are `gemm::tile_scalar`'s lane for lane: bit for bit the same.

use super::gemm::{Acts, Form, PanelBlock, PANEL, TILE};
use std::arch::x86_64::*;

/// Tokens per pass: two f32 accumulators each, with room for the weights and sums.
const PASS: usize = 4;

/// Tokens t0..t0+tn (≤ [`TILE`]) against one unpacked panel into `out` (row-major, `rows`
/// per token), rows n0..n0+valid.
///
/// # Safety
/// The CPU has AVX2 and FMA (and AVX-VNNI when `vnni`); `out` holds the tokens' rows.
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn tile(
    vnni: bool,
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
    let mut t = 0;
    while t < tn {
        let k = PASS.min(tn - t);
        let at = t0 + t;
        macro_rules! go {
            ($f:ident, $($n:literal)*) => {
                match (k, form) {
                    $(($n, Form::Unsigned) => $f::<$n, UNSIGNED>(panel, acts, at, out, rows, n0, valid),
                      ($n, Form::Signed) => $f::<$n, SIGNED>(panel, acts, at, out, rows, n0, valid),
                      ($n, Form::Halves) => $f::<$n, HALVES>(panel, acts, at, out, rows, n0, valid),)*
                    _ => unreachable!("pass of {k} tokens"),
                }
            };
        }
        if vnni {
            go!(pass_vnni, 1 2 3 4)
        } else {
            go!(pass_avx2, 1 2 3 4)
        }
        t += k;
    }
}

/// [`Form`] as a const parameter.
const UNSIGNED: u8 = 0;
const SIGNED: u8 = 1;
const HALVES: u8 = 2;

/// One pass's body; `$dot(acc, w, a)` adds word-wise u8·i8 dot products of 4 to `acc`,
/// `$signed_dot` the same for Q8_0's offset codes, exactly Σ q·a (no `csum` correction
/// needed after it when `$corrects` is false).
macro_rules! pass_body {
    ($panel:ident, $acts:ident, $t0:ident, $out:ident, $rows:ident, $n0:ident, $valid:ident,
     $T:ident, $FORM:ident, $dot:ident, $signed_dot:ident, $corrects:expr) => {{
        let (nb, cols) = ($acts.nb, $acts.cols);
        let mut acc = [[_mm256_setzero_ps(); 2]; $T];
        let qs = $acts.qs.as_ptr();
        for b in 0..nb {
            let pb = $panel.get_unchecked(b);
            let wp = pb.w.as_ptr() as *const __m256i;
            for (t, acc) in acc.iter_mut().enumerate() {
                let tok = $t0 + t;
                let a = qs.add(tok * cols + b * 32) as *const i32;
                let e = tok * nb + b;
                let da = _mm256_set1_ps(*$acts.d.get_unchecked(e));
                for (h, acc) in acc.iter_mut().enumerate() {
                    // Word s of rows 8h..8h+8 lies at 32-byte vector 2s + h.
                    let (mut lo, mut hi) = (_mm256_setzero_si256(), _mm256_setzero_si256());
                    for s in 0..4 {
                        let (w_lo, w_hi) = (
                            _mm256_load_si256(wp.add(2 * s + h)),
                            _mm256_load_si256(wp.add(2 * (s + 4) + h)),
                        );
                        let a_lo = _mm256_set1_epi32(std::ptr::read_unaligned(a.add(s)));
                        let a_hi = _mm256_set1_epi32(std::ptr::read_unaligned(a.add(s + 4)));
                        if $FORM == SIGNED {
                            lo = $signed_dot(lo, w_lo, a_lo);
                            hi = $signed_dot(hi, w_hi, a_hi);
                        } else {
                            lo = $dot(lo, w_lo, a_lo);
                            hi = $dot(hi, w_hi, a_hi);
                        }
                    }
                    let sc = _mm256_load_ps(pb.scale.as_ptr().add(8 * h));
                    let off = _mm256_load_ps(pb.off.as_ptr().add(8 * h));
                    if $FORM == HALVES {
                        let dh = $acts.dsum_half.as_ptr().add(2 * e);
                        let sc_hi = _mm256_load_ps(pb.scale_hi.as_ptr().add(8 * h));
                        let off_hi = _mm256_load_ps(pb.off_hi.as_ptr().add(8 * h));
                        *acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(lo), _mm256_mul_ps(sc, da), *acc);
                        *acc = _mm256_fmadd_ps(off, _mm256_set1_ps(*dh), *acc);
                        *acc =
                            _mm256_fmadd_ps(_mm256_cvtepi32_ps(hi), _mm256_mul_ps(sc_hi, da), *acc);
                        *acc = _mm256_fmadd_ps(off_hi, _mm256_set1_ps(*dh.add(1)), *acc);
                        continue;
                    }
                    let mut isum = _mm256_add_epi32(lo, hi);
                    if $FORM == SIGNED && $corrects {
                        isum =
                            _mm256_sub_epi32(isum, _mm256_set1_epi32(*$acts.csum.get_unchecked(e)));
                    }
                    *acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum), _mm256_mul_ps(sc, da), *acc);
                    if $FORM == UNSIGNED {
                        *acc = _mm256_fmadd_ps(
                            off,
                            _mm256_set1_ps(*$acts.dsum.get_unchecked(e)),
                            *acc,
                        );
                    }
                }
            }
        }
        store(&acc, $t0, $out, $rows, $n0, $valid);
    }};
}

/// u8 × i8 words of 4 → i32 lanes, added to `acc`: `maddubs` then `madd` with ones.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn dot_avx2(acc: __m256i, w: __m256i, a: __m256i) -> __m256i {
    let pairs = _mm256_maddubs_epi16(w, a);
    _mm256_add_epi32(acc, _mm256_madd_epi16(pairs, _mm256_set1_epi16(1)))
}

/// Q8_0's offset codes u = q + 128: Σ q·a as |q| · (a with q's sign), which `maddubs`
/// cannot overflow (|q| ≤ 128, |a| ≤ 127), so no `csum` correction follows.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn signed_dot_avx2(acc: __m256i, w: __m256i, a: __m256i) -> __m256i {
    let q = _mm256_xor_si256(w, _mm256_set1_epi8(-128));
    dot_avx2(acc, _mm256_abs_epi8(q), _mm256_sign_epi8(a, q))
}

#[inline]
#[target_feature(enable = "avx2,avxvnni")]
unsafe fn dot_vnni(acc: __m256i, w: __m256i, a: __m256i) -> __m256i {
    _mm256_dpbusd_avx_epi32(acc, w, a)
}

#[target_feature(enable = "avx2,fma")]
unsafe fn pass_avx2<const T: usize, const FORM: u8>(
    panel: &[PanelBlock],
    acts: &Acts,
    t0: usize,
    out: *mut f32,
    rows: usize,
    n0: usize,
    valid: usize,
) {
    pass_body!(
        panel,
        acts,
        t0,
        out,
        rows,
        n0,
        valid,
        T,
        FORM,
        dot_avx2,
        signed_dot_avx2,
        false
    )
}

#[target_feature(enable = "avx2,fma,avxvnni")]
unsafe fn pass_vnni<const T: usize, const FORM: u8>(
    panel: &[PanelBlock],
    acts: &Acts,
    t0: usize,
    out: *mut f32,
    rows: usize,
    n0: usize,
    valid: usize,
) {
    pass_body!(panel, acts, t0, out, rows, n0, valid, T, FORM, dot_vnni, dot_vnni, true)
}

/// Writes each token's 16 (or `valid`) results.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn store<const T: usize>(
    acc: &[[__m256; 2]; T],
    t0: usize,
    out: *mut f32,
    rows: usize,
    n0: usize,
    valid: usize,
) {
    for (t, acc) in acc.iter().enumerate() {
        let dst = out.add((t0 + t) * rows + n0);
        if valid >= PANEL {
            _mm256_storeu_ps(dst, acc[0]);
            _mm256_storeu_ps(dst.add(8), acc[1]);
        } else {
            let mut tmp = [0f32; PANEL];
            _mm256_storeu_ps(tmp.as_mut_ptr(), acc[0]);
            _mm256_storeu_ps(tmp.as_mut_ptr().add(8), acc[1]);
            std::ptr::copy_nonoverlapping(tmp.as_ptr(), dst, valid);
        }
    }
}
