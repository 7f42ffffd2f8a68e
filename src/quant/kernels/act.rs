//! Activations quantized to 8 bits per 32-element block, as ggml's q8 vec-dot types.

use super::BLOCK;

#[derive(Debug, Clone, Copy)]
#[repr(C, align(32))]
pub struct Q8Act {
    pub qs: [i8; BLOCK],
    /// Scale: x ≈ d · q.
    pub d: f32,
    /// Σ q over the block, for the offset terms of Q4_x/Q5_x weights.
    pub sum: i32,
    /// d · Σ q (ggml's q8_1 `s`), so an offset term is one multiply.
    pub dsum: f32,
}

pub fn quantize_activations(x: &[f32]) -> Vec<Q8Act> {
    quantize_activations_scaled_per(x, BLOCK)
}

/// One scale per `span` elements (a multiple of the 32-element block): 256 gives
/// llama.cpp's q8_K activations for K-quant weights.
pub fn quantize_activations_scaled_per(x: &[f32], span: usize) -> Vec<Q8Act> {
    x.chunks(span)
        .flat_map(|s| {
            let amax = amax(s);
            s.chunks_exact(BLOCK).map(move |b| (b, amax))
        })
        .map(|(b, amax)| {
            let mut qs = [0i8; BLOCK];
            let (d, sum) = quantize_block(b, amax, &mut qs);
            Q8Act {
                qs,
                d,
                sum,
                dsum: d * sum as f32,
            }
        })
        .collect()
}

/// The largest |x| (NaNs ignored), in eight lanes so it vectorizes.
#[inline]
pub(super) fn amax(x: &[f32]) -> f32 {
    let mut lanes = [0f32; 8];
    let chunks = x.chunks_exact(8);
    let rest = chunks.remainder();
    for c in chunks {
        for (l, v) in lanes.iter_mut().zip(c) {
            *l = l.max(v.abs());
        }
    }
    let m = rest.iter().fold(0f32, |m, v| m.max(v.abs()));
    lanes.iter().fold(m, |a, &b| a.max(b))
}

/// One 32-element block against the largest magnitude `amax` of its scale's span: the
/// codes, and returns (d, Σ q). Every activation quantizer goes through here, so the
/// per-row kernels and the prompt GEMM see the same codes.
#[inline]
pub(super) fn quantize_block(b: &[f32], amax: f32, qs: &mut [i8; BLOCK]) -> (f32, i32) {
    let d = amax / 127.0;
    let id = if d > 0.0 { 1.0 / d } else { 0.0 };
    let mut sum = 0i32;
    for (q, &v) in qs.iter_mut().zip(b) {
        *q = round_half_away(v * id) as i8;
        sum += *q as i32;
    }
    (d, sum)
}

/// `v.round() as i32` for |v| < 2²³ (and 0 for NaN, as `round` then `as`), without the
/// libm call `round` compiles to on baseline x86-64: truncate, then step away from zero
/// where the (exactly computed) fraction reaches one half. Vectorizes.
#[inline]
fn round_half_away(v: f32) -> i32 {
    let i = v as i32;
    let frac = v - i as f32;
    i + (frac >= 0.5) as i32 - (frac <= -0.5) as i32
}

#[cfg(test)]
mod tests {
    #[test]
    fn rounding_matches_std() {
        let mut vals = vec![
            0.5f32,
            -0.5,
            1.5,
            -1.5,
            2.5,
            -2.5,
            0.49999997,
            -0.49999997,
            127.0,
        ];
        vals.extend([126.5f32, -126.5, 127.00001, f32::NAN, 0.0, -0.0]);
        vals.extend(super::super::test_data(10_000, 7, 260.0));
        for v in vals {
            assert_eq!(super::round_half_away(v), v.round() as i32, "{v}");
        }
    }
}
