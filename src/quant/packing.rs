//! What the grouped methods (HQQ, AFQ, FP8) share: packing small integer codes into u32
//! words, turning codes back into weights with their group's affine parameters, and one
//! forward/dequantize for any layer that can decode a weight row at a time.
//!
//! Codes are packed as MLX packs them: a little-endian bit stream of u32 words, element j
//! at bits `[j·bits, j·bits + bits)`, so 3- and 6-bit codes straddle words. Every method
//! requires rows that are a whole number of 64-element groups (32 for FP8's bytes), so each
//! row starts on a word boundary and a row's words are `cols · bits / 32`.

use super::{add_bias, kernels};
use anyhow::{ensure, Result};
use candle_core::{Device, Tensor};
use half::f16;
use rayon::prelude::*;

/// u32 words that `n` codes of `bits` bits fill.
pub fn packed_words(n: usize, bits: u32) -> usize {
    (n * bits as usize).div_ceil(32)
}

/// Packs codes (each below 2^bits) into a little-endian bit stream of u32 words.
pub fn pack(codes: &[u8], bits: u32) -> Vec<u32> {
    debug_assert!((1..=8).contains(&bits));
    let mut out = vec![0u32; packed_words(codes.len(), bits)];
    for (j, &c) in codes.iter().enumerate() {
        debug_assert!(
            u32::from(c) >> bits == 0,
            "code {c} does not fit {bits} bits"
        );
        let bit = j * bits as usize;
        let (word, shift) = (bit / 32, bit % 32);
        let v = u64::from(c) << shift;
        out[word] |= v as u32;
        if shift + bits as usize > 32 {
            out[word + 1] |= (v >> 32) as u32;
        }
    }
    out
}

/// Unpacks the first `out.len()` codes of a bit stream that starts at `words[0]`.
#[inline(always)]
pub fn unpack(words: &[u32], bits: u32, out: &mut [u8]) {
    assert!(
        words.len() >= packed_words(out.len(), bits),
        "{} words hold fewer than {} codes of {bits} bits",
        words.len(),
        out.len()
    );
    match bits {
        8 => unpack_whole::<8>(words, out),
        4 => unpack_whole::<4>(words, out),
        2 => unpack_whole::<2>(words, out),
        1 => unpack_whole::<1>(words, out),
        3 => unpack_triples::<3>(words, out),
        6 => unpack_triples::<6>(words, out),
        _ => unpack_stream(words, bits, out),
    }
}

/// Widths that divide 32: every word holds whole codes.
#[inline(always)]
fn unpack_whole<const BITS: u32>(words: &[u32], out: &mut [u8]) {
    let per_word = (32 / BITS) as usize;
    let mask = (1u32 << BITS) - 1;
    let whole = out.len() / per_word;
    let mut chunks = out.chunks_exact_mut(per_word);
    for (&w, chunk) in words.iter().zip(&mut chunks) {
        // A fixed trip count with constant shifts: vectorises.
        for (i, o) in chunk.iter_mut().enumerate() {
            *o = ((w >> (i as u32 * BITS)) & mask) as u8;
        }
    }
    let rest = chunks.into_remainder();
    if !rest.is_empty() {
        let w = words[whole];
        for (i, o) in rest.iter_mut().enumerate() {
            *o = ((w >> (i as u32 * BITS)) & mask) as u8;
        }
    }
}

/// 3 and 6 bits: every 3 bytes of the stream hold whole codes (8 or 4).
#[inline(always)]
fn unpack_triples<const BITS: u32>(words: &[u32], out: &mut [u8]) {
    let per = (24 / BITS) as usize;
    if cfg!(target_endian = "big") || !out.len().is_multiple_of(per) {
        return unpack_stream(words, BITS, out);
    }
    // SAFETY: u32 → u8 reinterpretation of initialised memory; on a little-endian target
    // these bytes are the bit stream in order.
    let bytes = unsafe { std::slice::from_raw_parts(words.as_ptr().cast::<u8>(), words.len() * 4) };
    let mask = (1u32 << BITS) - 1;
    for (t, chunk) in bytes.chunks_exact(3).zip(out.chunks_exact_mut(per)) {
        let v = u32::from(t[0]) | u32::from(t[1]) << 8 | u32::from(t[2]) << 16;
        for (i, o) in chunk.iter_mut().enumerate() {
            *o = ((v >> (i as u32 * BITS)) & mask) as u8;
        }
    }
}

/// Any width (5, 7 bits): codes may straddle two words.
#[inline(always)]
fn unpack_stream(words: &[u32], bits: u32, out: &mut [u8]) {
    let mask = (1u64 << bits) - 1;
    let (mut acc, mut have, mut next) = (0u64, 0u32, 0usize);
    for o in out {
        if have < bits {
            acc |= u64::from(words[next]) << have;
            next += 1;
            have += 32;
        }
        *o = (acc & mask) as u8;
        acc >>= bits;
        have -= bits;
    }
}

/// f16 → f32 for finite values (all that the methods store), as plain integer and float
/// operations that vectorise: the 15 low bits shifted into an f32's place read as 2^-112
/// times the value (subnormals included), which one exact multiplication rescales.
#[inline(always)]
pub fn widen(h: f16) -> f32 {
    let b = u32::from(h.to_bits());
    let v = f32::from_bits((b & 0x7fff) << 13) * f32::from_bits(0x7780_0000); // 2^112
    f32::from_bits(v.to_bits() | (b & 0x8000) << 16)
}

/// How a code and its group's two parameters `(a, b)` make a weight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Affine {
    /// MLX: `w = a·q + b` (a = scale, b = bias).
    ScaleBias,
    /// HQQ: `w = (q − b)·a` (a = scale, b = zero).
    ScaleZero,
}

impl Affine {
    #[inline(always)]
    fn apply(self, q: f32, a: f32, b: f32) -> f32 {
        match self {
            Self::ScaleBias => a * q + b,
            Self::ScaleZero => (q - b) * a,
        }
    }
}

/// Weights of `codes` whose runs of `group` consecutive elements share one parameter
/// pair (`a[g]`, `b[g]`): AFQ, and HQQ along the input dimension.
#[inline(always)]
pub fn affine_groups(
    form: Affine,
    codes: &[u8],
    a: &[f16],
    b: &[f16],
    group: usize,
    out: &mut [f32],
) {
    debug_assert_eq!(codes.len(), out.len());
    debug_assert!(codes.len() <= a.len() * group && a.len() == b.len());
    for (((q, o), &a), &b) in codes.chunks(group).zip(out.chunks_mut(group)).zip(a).zip(b) {
        let (a, b) = (widen(a), widen(b));
        for (&q, o) in q.iter().zip(o) {
            *o = form.apply(f32::from(q), a, b);
        }
    }
}

/// Weights of `codes` where element i has its own parameter pair (`a[i]`, `b[i]`): HQQ
/// along axis 0, whose groups run across rows so that neighbours in a row never share one.
#[inline(always)]
pub fn affine_elements(form: Affine, codes: &[u8], a: &[f16], b: &[f16], out: &mut [f32]) {
    debug_assert!(codes.len() == out.len() && a.len() == out.len() && b.len() == out.len());
    for (((&q, o), &a), &b) in codes.iter().zip(out).zip(a).zip(b) {
        *o = form.apply(f32::from(q), widen(a), widen(b));
    }
}

/// Checks the sizes of a grouped layer's parts: `packed_len` u32 words of `bits`-bit
/// codes, one `a` and one `b` parameter per group of `group`, a bias of `rows`.
#[allow(clippy::too_many_arguments)]
pub fn check_parts(
    method: &str,
    rows: usize,
    cols: usize,
    bits: u32,
    group: usize,
    packed_len: usize,
    a_len: usize,
    b_len: usize,
    bias: Option<&candle_core::Tensor>,
) -> Result<()> {
    ensure!(
        packed_len == rows * cols * bits as usize / 32
            && a_len == rows * cols / group
            && b_len == a_len,
        "{method} parts do not match a {rows} × {cols} weight"
    );
    check_bias(bias, rows)
}

/// A layer's bias, if any, must hold one value per output row.
pub fn check_bias(bias: Option<&candle_core::Tensor>, rows: usize) -> Result<()> {
    if let Some(b) = bias {
        ensure!(
            b.dims() == [rows],
            "bias shape {:?} is not [{rows}]",
            b.dims()
        );
    }
    Ok(())
}

/// Rounds group parameters to the f16 they are stored in, refusing values f16 cannot hold.
pub fn to_f16_checked(v: &[f32], what: &str) -> Result<Vec<f16>> {
    v.iter()
        .map(|&x| {
            let h = f16::from_f32(x);
            ensure!(
                h.is_finite() || !x.is_finite(),
                "{what} {x} overflows the f16 it is stored in"
            );
            Ok(h)
        })
        .collect()
}

/// A quantized weight that can write any one of its rows as f32.
pub trait DecodeRows: Sync {
    /// (out_features, in_features).
    fn dims(&self) -> (usize, usize);
    /// Writes row `n` into `out` (`cols` long); `codes` is scratch of `cols` bytes.
    fn decode_row(&self, n: usize, codes: &mut [u8], out: &mut [f32]);
    /// Where the format has a kernel that dots a packed row with x directly: the group
    /// size over which it needs x summed (`fused_dot`'s `xsums`). None: decode rows.
    fn fused_group(&self) -> Option<usize> {
        None
    }
    /// `out[t] = W[n] · x_t` for every input row t through that kernel; `xsums` holds
    /// each input row's sums over groups of [`Self::fused_group`] elements.
    fn fused_dot(&self, _n: usize, _x: &[f32], _xsums: &[f32], _out: &mut [f32]) {
        unreachable!("fused_dot without fused_group")
    }
}

/// The whole weight as a dense f32 (rows, cols) tensor, rows decoded in parallel.
pub fn dequantize(w: &impl DecodeRows) -> Result<Tensor> {
    let (rows, cols) = w.dims();
    let mut out = vec![0f32; rows * cols];
    out.par_chunks_mut(cols.max(1)).enumerate().for_each_init(
        || vec![0u8; cols],
        |codes, (n, row)| w.decode_row(n, codes, row),
    );
    Ok(Tensor::from_vec(out, (rows, cols), &Device::Cpu)?)
}

/// `y = x Wᵀ (+ bias)` for a decodable weight on the CPU. Few input rows (decode): each
/// weight row is decoded once into a per-thread buffer and dotted with every input row,
/// rows split over the kernel pool, so no f32 copy of the matrix is ever built. Many input
/// rows (prompts): one dequantization, then the blocked f32 GEMM.
pub fn forward(w: &impl DecodeRows, x: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
    let (rows, cols) = w.dims();
    let x = x.to_dtype(candle_core::DType::F32)?;
    ensure!(
        x.dim(candle_core::D::Minus1)? == cols,
        "input has {} features, the weight {cols}",
        x.dim(candle_core::D::Minus1)?
    );
    let y = match kernels::apply_to_rows(&x, rows, |xs, m| matmul(w, xs, m))? {
        Some(y) => y,
        None => {
            let wt = dequantize(w)?.to_device(x.device())?;
            x.broadcast_matmul(&wt.t()?)?
        }
    };
    add_bias(y, bias)
}

/// `out[t · rows + n] = Σ_k x[t, k] · W[n, k]` for `m` input rows, one decoded weight row at
/// a time.
pub fn matmul(w: &impl DecodeRows, x: &[f32], m: usize) -> Vec<f32> {
    let (rows, cols) = w.dims();
    assert_eq!(x.len(), m * cols);
    if let Some(group) = w.fused_group() {
        let xsums: Vec<f32> = x.chunks(group).map(|c| c.iter().sum()).collect();
        return kernels::rows_in_parallel_with(
            rows,
            m,
            || (),
            |_, n, out| w.fused_dot(n, x, &xsums, out),
        );
    }
    kernels::rows_in_parallel_with(
        rows,
        m,
        || (vec![0u8; cols], vec![0f32; cols]),
        |(codes, row), n, out| {
            decode_row_fast(w, n, codes, row);
            for (t, o) in out.iter_mut().enumerate() {
                *o = kernels::dot_f32(row, &x[t * cols..(t + 1) * cols]);
            }
        },
    )
}

/// `w.decode_row`, compiled for AVX2/FMA/F16C where the CPU has them: the decoders are
/// plain loops written to vectorise, and inline into this copy.
#[inline(always)]
fn decode_row_fast(w: &impl DecodeRows, n: usize, codes: &mut [u8], out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if kernels::isa() == kernels::Isa::Avx2 {
        // SAFETY: `Isa::Avx2` is only returned when the CPU has AVX2, FMA and F16C.
        unsafe { decode_row_avx2(w, n, codes, out) };
        return;
    }
    w.decode_row(n, codes, out)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn decode_row_avx2(w: &impl DecodeRows, n: usize, codes: &mut [u8], out: &mut [f32]) {
    w.decode_row(n, codes, out)
}

/// Bytes a layer's bias occupies.
pub fn bias_bytes(bias: Option<&Tensor>) -> usize {
    bias.map_or(0, |b| b.elem_count() * b.dtype().size_in_bytes())
}

/// Implements [`QuantLinear`](crate::quant::QuantLinear) for a [`DecodeRows`] storage with
/// a `bias: Option<Tensor>` field, through the shared row kernels above:
/// `impl_decoded_linear!(Type, |s| weight_bytes: <expr>, name: <expr>)`.
macro_rules! impl_decoded_linear {
    ($ty:ty, |$s:ident| weight_bytes: $bytes:expr, name: $name:expr) => {
        impl $crate::quant::QuantLinear for $ty {
            fn forward(&self, x: &candle_core::Tensor) -> anyhow::Result<candle_core::Tensor> {
                $crate::quant::packing::forward(self, x, self.bias.as_ref())
            }
            fn dequantize(&self) -> anyhow::Result<candle_core::Tensor> {
                $crate::quant::packing::dequantize(self)
            }
            fn size_in_bytes(&self) -> usize {
                let $s = self;
                $bytes + $crate::quant::packing::bias_bytes(self.bias.as_ref())
            }
            #[allow(unused_variables)]
            fn storage_name(&self) -> String {
                let $s = self;
                $name
            }
            fn shape(&self) -> (usize, usize) {
                $crate::quant::packing::DecodeRows::dims(self)
            }
            fn bias(&self) -> Option<&candle_core::Tensor> {
                self.bias.as_ref()
            }
            fn as_any(&self) -> &dyn std::any::Any {
                self
            }
        }
    };
}
pub(crate) use impl_decoded_linear;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pack_unpack_round_trips_every_width() {
        for bits in 1..=8u32 {
            let n = 64 * 3;
            let codes: Vec<u8> = (0..n)
                .map(|i| ((i * 7 + i / 5) % (1 << bits)) as u8)
                .collect();
            let words = pack(&codes, bits);
            assert_eq!(words.len(), n * bits as usize / 32);
            let mut back = vec![0u8; n];
            unpack(&words, bits, &mut back);
            assert_eq!(back, codes, "{bits} bits");
        }
    }

    #[test]
    fn packs_little_endian_like_mlx() {
        // 4 bits: element 0 in the low nibble of word 0.
        assert_eq!(pack(&[1, 2, 3, 4, 5, 6, 7, 8], 4), vec![0x8765_4321]);
        // 3 bits: element 10 straddles words 0 and 1 (bits 30..33).
        let mut codes = vec![0u8; 32];
        codes[10] = 0b101;
        assert_eq!(pack(&codes, 3)[..2], [1 << 30, 1]);
        // 6 bits: element 5 at bits 30..36.
        let mut codes = vec![0u8; 16];
        codes[5] = 0b111111;
        assert_eq!(pack(&codes, 6)[..2], [0b11 << 30, 0b1111]);
    }

    #[test]
    fn widens_every_finite_f16() {
        for bits in 0..=u16::MAX {
            let h = f16::from_bits(bits);
            if h.is_finite() {
                assert_eq!(widen(h).to_bits(), h.to_f32().to_bits(), "{bits:#06x}");
            }
        }
    }

    #[test]
    fn affine_forms() {
        let codes = [0u8, 1, 2, 3];
        let a = [f16::from_f32(0.5), f16::from_f32(2.0)];
        let b = [f16::from_f32(1.0), f16::from_f32(-1.0)];
        let mut out = [0f32; 4];
        affine_groups(Affine::ScaleBias, &codes, &a, &b, 2, &mut out);
        assert_eq!(out, [1.0, 1.5, 3.0, 5.0]);
        affine_groups(Affine::ScaleZero, &codes, &a, &b, 2, &mut out);
        assert_eq!(out, [-0.5, 0.0, 6.0, 8.0]);
        let a4 = [a[0], a[0], a[1], a[1]];
        let b4 = [b[0], b[0], b[1], b[1]];
        let mut el = [0f32; 4];
        affine_elements(Affine::ScaleZero, &codes, &a4, &b4, &mut el);
        assert_eq!(el, out);
    }
}
