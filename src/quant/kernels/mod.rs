//! Our own CPU kernels for ggml block types: matrix × few-vectors products in the way
//! ggml computes them (activations quantized to 8 bits per 32-block, integer dot products,
//! one float multiply per block), with AVX2/FMA/F16C (x86-64) or NEON (aarch64, with
//! `sdot` where the CPU has dotprod) chosen at run time and a scalar fallback that is also
//! the reference the SIMD paths are tested against.
//!
//! candle's kernels for these types are scalar in a default build (its AVX code is
//! compiled only under `target_feature = "avx2"`, and Q4_1/Q5_x have none), which made
//! decode 4–8× slower than llama.cpp.

mod act;
#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;
pub mod cpu;
mod gemm;
mod kdot;
#[cfg(target_arch = "aarch64")]
mod neon;
pub mod pool;
mod scalar;
#[cfg(target_arch = "x86_64")]
mod tile_avx2;

pub use act::{quantize_activations, Q8Act};
pub use gemm::PromptWeight;

use candle_core::quantized::GgmlDType;
use std::sync::OnceLock;

/// The output buffer shared by the pool's threads, each writing its own rows.
struct SharedOut(*mut f32);
// SAFETY: threads write disjoint elements and the buffer outlives the parallel run.
unsafe impl Sync for SharedOut {}

impl SharedOut {
    /// # Safety
    /// `i` must be in bounds and written by one thread only.
    unsafe fn at(&self, i: usize) -> *mut f32 {
        self.0.add(i)
    }
}

pub const BLOCK: usize = 32;

/// How far ahead of the block in use the decode kernels prefetch weight bytes. Decode
/// streams each weight once, row after row; the hardware prefetcher alone left a core
/// waiting on memory (1.5B Q4_K_M, one thread: 7.4 t/s without, 9.0 at 512 bytes, 10.7
/// at 2048, 10.4 at 4096).
pub(crate) const PREFETCH_AHEAD: usize = 2048;

/// Prefetches the cache line `PREFETCH_AHEAD` bytes past `p` (a hint: any address is
/// harmless, past the row's end it is the next row's).
#[inline(always)]
pub(crate) fn prefetch_ahead(p: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch never faults, whatever the address.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(
            p.wrapping_add(PREFETCH_AHEAD) as *const i8,
        )
    };
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// The ggml block types these kernels handle: 32-element blocks, and the 256-element
/// K-quant super-blocks whose 32-element sub-blocks each have a scale and a min.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockKind {
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
    Q4K,
    Q5K,
    Q6K,
    Q3K,
    Q2K,
}

impl BlockKind {
    pub fn from_ggml(t: GgmlDType) -> Option<Self> {
        Some(match t {
            GgmlDType::Q4_0 => Self::Q4_0,
            GgmlDType::Q4_1 => Self::Q4_1,
            GgmlDType::Q5_0 => Self::Q5_0,
            GgmlDType::Q5_1 => Self::Q5_1,
            GgmlDType::Q8_0 => Self::Q8_0,
            GgmlDType::Q4K => Self::Q4K,
            GgmlDType::Q5K => Self::Q5K,
            GgmlDType::Q6K => Self::Q6K,
            GgmlDType::Q3K => Self::Q3K,
            GgmlDType::Q2K => Self::Q2K,
            _ => return None,
        })
    }

    /// The 32-element block types (not the K super-blocks).
    pub fn is_legacy(self) -> bool {
        matches!(
            self,
            Self::Q4_0 | Self::Q4_1 | Self::Q5_0 | Self::Q5_1 | Self::Q8_0
        )
    }

    pub fn block_bytes(self) -> usize {
        match self {
            Self::Q4_0 => 18,
            Self::Q4_1 => 20,
            Self::Q5_0 => 22,
            Self::Q5_1 => 24,
            Self::Q8_0 => 34,
            Self::Q4K => 144,
            Self::Q5K => 176,
            Self::Q6K => 210,
            Self::Q3K => 110,
            Self::Q2K => 84,
        }
    }

    /// Elements per block.
    pub fn block_elems(self) -> usize {
        match self {
            Self::Q2K | Self::Q3K | Self::Q4K | Self::Q5K | Self::Q6K => 256,
            _ => BLOCK,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isa {
    Scalar,
    #[cfg(target_arch = "x86_64")]
    Avx2,
    /// NEON; `dotprod`: the Armv8.2 `sdot` instruction is there too.
    #[cfg(target_arch = "aarch64")]
    Neon {
        dotprod: bool,
    },
}

/// The best instruction set this CPU supports, detected once.
pub fn isa() -> Isa {
    static ISA: OnceLock<Isa> = OnceLock::new();
    *ISA.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            if cpu::x86().avx2 {
                return Isa::Avx2;
            }
        }
        #[cfg(target_arch = "aarch64")]
        {
            if cpu::cap() > cpu::Level::Scalar && std::arch::is_aarch64_feature_detected!("neon") {
                let dotprod = std::arch::is_aarch64_feature_detected!("dotprod");
                return Isa::Neon { dotprod };
            }
        }
        Isa::Scalar
    })
}

/// Dot product of one weight row (raw ggml blocks) with quantized activations.
pub fn dot_row(isa: Isa, kind: BlockKind, row: &[u8], act: &[Q8Act]) -> f32 {
    match isa {
        Isa::Scalar => scalar::dot(kind, row, act),
        // SAFETY: `Isa::Avx2` is only returned when the CPU has AVX2, FMA and F16C, and
        // `avx512_dot` only where it also has AVX-512 F/BW/VNNI.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 if avx512_dot() => unsafe { avx512::dot(kind, row, act) },
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { avx2::dot(kind, row, act) },
        // SAFETY: `Isa::Neon` is only returned with NEON, and `dotprod` where detected.
        #[cfg(target_arch = "aarch64")]
        Isa::Neon { dotprod } => unsafe { neon::dot(dotprod, kind, row, act) },
    }
}

/// Whether the per-row kernels of [`dot_row`] use their AVX-512 VNNI versions (legacy
/// blocks and Q4_K/Q5_K; bit-identical to the AVX2 ones, only faster). Off below
/// `SMELT_ISA=avx512` ([`cpu`]).
#[cfg(target_arch = "x86_64")]
fn avx512_dot() -> bool {
    cpu::x86().avx512
}

/// Below this many input rows (decode, short chat turns) a product goes through these
/// bandwidth-bound kernels; from it on (prompts) through a blocked f32 GEMM.
pub const MAX_KERNEL_ROWS: usize = 32;

static Q8_ACTIVATIONS: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Makes block-quantized layers multiply every batch, prompts included, through the
/// 8-bit-activation kernels, as llama.cpp's CPU backend does, instead of dequantizing for
/// an f32 GEMM from [`MAX_KERNEL_ROWS`] rows on. Prompts get slower; the arithmetic (and
/// so the perplexity) becomes llama.cpp's, for like-for-like comparisons.
pub fn set_q8_activations(on: bool) {
    Q8_ACTIVATIONS.store(on, std::sync::atomic::Ordering::Relaxed);
}

pub fn q8_activations() -> bool {
    Q8_ACTIVATIONS.load(std::sync::atomic::Ordering::Relaxed)
}

/// Runs `kernel(x_rows, m)` on a CPU f32 input of any rank when it has fewer than
/// [`MAX_KERNEL_ROWS`] rows, and shapes the `m × out_features` result like `x`.
/// None when the input is not kernel-sized or not on the CPU.
pub fn apply_to_rows(
    x: &candle_core::Tensor,
    out_features: usize,
    kernel: impl FnOnce(&[f32], usize) -> Vec<f32>,
) -> candle_core::Result<Option<candle_core::Tensor>> {
    apply_to_rows_below(x, out_features, MAX_KERNEL_ROWS, kernel)
}

/// [`apply_to_rows`] for inputs of fewer than `limit` rows.
pub fn apply_to_rows_below(
    x: &candle_core::Tensor,
    out_features: usize,
    limit: usize,
    kernel: impl FnOnce(&[f32], usize) -> Vec<f32>,
) -> candle_core::Result<Option<candle_core::Tensor>> {
    let cols = x.dim(candle_core::D::Minus1)?;
    let m = x.elem_count() / cols.max(1);
    if m == 0 || m >= limit || !x.device().is_cpu() {
        return Ok(None);
    }
    let xs: Vec<f32> = x
        .to_dtype(candle_core::DType::F32)?
        .flatten_all()?
        .to_vec1()?;
    let mut dims = x.dims().to_vec();
    *dims.last_mut().expect("rank ≥ 1") = out_features;
    Ok(Some(candle_core::Tensor::from_vec(
        kernel(&xs, m),
        dims,
        x.device(),
    )?))
}

/// Whether prompt-sized products (from [`MAX_KERNEL_ROWS`] rows on) of this block type
/// run through the integer GEMM ([`matmul_prompt`]) on this CPU. Where not, they take the
/// dequantize-and-f32-GEMM path. `SMELT_F32_PROMPTS=1` forces the latter (comparisons).
pub fn has_prompt_gemm(kind: BlockKind) -> bool {
    static F32_PROMPTS: OnceLock<bool> = OnceLock::new();
    let forced_off = *F32_PROMPTS.get_or_init(|| {
        std::env::var("SMELT_F32_PROMPTS").is_ok_and(|v| !v.is_empty() && v != "0")
    });
    !forced_off && gemm::supported(kind) && gemm::fast_tile().is_some()
}

/// `out[t, n] = Σ_k x[t, k] · W[n, k]` for many activation rows (prompts): activations
/// quantized to 8 bits per 32-block as in [`matmul`] (per 256 for K-quants under
/// `--q8-activations`), integer products in register tiles of 16 weight rows × 8 tokens.
/// Each row's result is independent of the other rows of the call. Call only where
/// [`has_prompt_gemm`] says so.
pub fn matmul_prompt(
    kind: BlockKind,
    weight: &[u8],
    rows: usize,
    cols: usize,
    x: &[f32],
    m: usize,
) -> Vec<f32> {
    let tile = gemm::fast_tile().expect("has_prompt_gemm checked for a tile");
    let span = if q8_activations() && !kind.is_legacy() {
        256
    } else {
        BLOCK
    };
    gemm::matmul(tile, kind, weight, rows, cols, x, m, span)
}

/// [`matmul_prompt`] for several weights over the same input (q/k/v, gate/up): the input
/// is quantized once and the weights' panels share one parallel run. Each output is what
/// [`matmul_prompt`] gives for that weight alone, bit for bit.
pub fn matmul_prompt_many(
    weights: &[PromptWeight],
    cols: usize,
    x: &[f32],
    m: usize,
) -> Vec<Vec<f32>> {
    let tile = gemm::fast_tile().expect("has_prompt_gemm checked for a tile");
    let q8 = q8_activations();
    gemm::matmul_many(tile, weights, cols, x, m, |kind| {
        if q8 && !kind.is_legacy() {
            256
        } else {
            BLOCK
        }
    })
}

/// `out[t, n] = Σ_k x[t, k] · W[n, k]` for `m` activation rows `x` (m × cols, f32) and a
/// weight of `rows` × `cols` stored as ggml blocks, split across the kernel pool by rows.
pub fn matmul(
    kind: BlockKind,
    weight: &[u8],
    rows: usize,
    cols: usize,
    x: &[f32],
    m: usize,
) -> Vec<f32> {
    matmul_with(isa(), kind, weight, rows, cols, x, m)
}

pub fn matmul_with(
    isa: Isa,
    kind: BlockKind,
    weight: &[u8],
    rows: usize,
    cols: usize,
    x: &[f32],
    m: usize,
) -> Vec<f32> {
    let w = PromptWeight {
        kind,
        data: weight,
        rows,
    };
    matmul_many_with(isa, &[w], cols, x, m)
        .pop()
        .expect("one weight in, one out")
}

/// [`matmul`] for several weights over the same input (q/k/v, gate/up in decode): the
/// input is quantized once and all weights' rows share one parallel run. Each output is
/// what [`matmul`] gives for that weight alone, bit for bit.
pub fn matmul_many(weights: &[PromptWeight], cols: usize, x: &[f32], m: usize) -> Vec<Vec<f32>> {
    matmul_many_with(isa(), weights, cols, x, m)
}

fn matmul_many_with(
    isa: Isa,
    weights: &[PromptWeight],
    cols: usize,
    x: &[f32],
    m: usize,
) -> Vec<Vec<f32>> {
    assert_eq!(x.len(), m * cols);
    // In llama.cpp-arithmetic mode K-quants see its q8_K activations (one scale per 256).
    let span = |kind: BlockKind| {
        if q8_activations() && !kind.is_legacy() {
            256
        } else {
            BLOCK
        }
    };
    let quantize = |sp: usize| -> Vec<Vec<Q8Act>> {
        x.chunks(cols)
            .map(|r| act::quantize_activations_scaled_per(r, sp))
            .collect()
    };
    let mut acts: Vec<(usize, Vec<Vec<Q8Act>>)> = Vec::new();
    // Per weight: (first row in the run, row bytes, acts index).
    let mut parts = Vec::with_capacity(weights.len());
    let mut total = 0;
    for w in weights {
        assert_eq!(
            cols % w.kind.block_elems(),
            0,
            "row length must be a multiple of the block"
        );
        let row_bytes = cols / w.kind.block_elems() * w.kind.block_bytes();
        assert_eq!(w.data.len(), w.rows * row_bytes);
        let sp = span(w.kind);
        let a = match acts.iter().position(|(s, _)| *s == sp) {
            Some(a) => a,
            None => {
                acts.push((sp, quantize(sp)));
                acts.len() - 1
            }
        };
        parts.push((total, row_bytes, a));
        total += w.rows;
    }
    let per_row = |_: &mut (), n: usize, outs: &mut [f32]| {
        let j = parts.partition_point(|p| p.0 <= n) - 1;
        let (first, row_bytes, a) = parts[j];
        let (kind, acts) = (weights[j].kind, &acts[a].1);
        let r = n - first;
        let w = &weights[j].data[r * row_bytes..(r + 1) * row_bytes];
        let mut t = 0;
        // Several activation rows (batched decode, short prompts): legacy blocks are
        // decoded once per four rows.
        #[cfg(target_arch = "x86_64")]
        let four = m >= 4 && matches!(isa, Isa::Avx2) && kind.is_legacy();
        #[cfg(target_arch = "aarch64")]
        let four = m >= 4 && matches!(isa, Isa::Neon { .. }) && kind.is_legacy();
        #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
        if four {
            while t + 4 <= m {
                let rows4 = [&acts[t][..], &acts[t + 1], &acts[t + 2], &acts[t + 3]];
                // SAFETY: `Isa::Avx2` means AVX2, FMA and F16C are present.
                #[cfg(target_arch = "x86_64")]
                let r = unsafe { avx2::dot4_legacy(kind, w, rows4) };
                // SAFETY: `four` is only set for `Isa::Neon` (NEON, and `sdot` where
                // `dotprod`).
                #[cfg(target_arch = "aarch64")]
                let r = match isa {
                    Isa::Neon { dotprod } => unsafe { neon::dot4_legacy(dotprod, kind, w, rows4) },
                    Isa::Scalar => unreachable!("`four` needs NEON"),
                };
                outs[t..t + 4].copy_from_slice(&r);
                t += 4;
            }
        }
        for (tt, o) in outs.iter_mut().enumerate().skip(t) {
            *o = dot_row(isa, kind, w, &acts[tt]);
        }
    };
    // Decode on AVX-512: four weight rows per kernel call, their chains interleaved
    // (each row's result is what `dot_row` gives for it alone), for Q5_0.
    #[cfg(target_arch = "x86_64")]
    let all = if m == 1 && isa == Isa::Avx2 && avx512_dot() {
        let mut out = vec![0f32; total];
        let shared = SharedOut(out.as_mut_ptr());
        pool::global().run(&|index, threads| {
            let per = total.div_ceil(threads);
            let end = ((index + 1) * per).min(total);
            let mut n = index * per;
            while n < end {
                let j = parts.partition_point(|p| p.0 <= n) - 1;
                let (first, row_bytes, a) = parts[j];
                let (kind, acts) = (weights[j].kind, &acts[a].1[0]);
                let stop = end.min(first + weights[j].rows);
                let row = |n: usize| {
                    let r = n - first;
                    &weights[j].data[r * row_bytes..(r + 1) * row_bytes]
                };
                // Only Q5_0 measured faster this way (ISQ Q4_K decode +4–9 %); Q8_0 was
                // 1.5× slower at 2 threads and the test GGUF's Q4_1 slower too.
                while n + 4 <= stop && kind == BlockKind::Q5_0 {
                    // SAFETY: `avx512_dot` checked the CPU; rows of this range belong to
                    // this thread alone and lie below `total`.
                    unsafe {
                        let r = avx512::dot_rows::<4>(
                            kind,
                            [row(n), row(n + 1), row(n + 2), row(n + 3)],
                            acts,
                        );
                        std::ptr::copy_nonoverlapping(r.as_ptr(), shared.at(n), 4);
                    }
                    n += 4;
                }
                while n < stop {
                    // SAFETY: as above.
                    unsafe { *shared.at(n) = avx512::dot(kind, row(n), acts) };
                    n += 1;
                }
            }
        });
        out
    } else {
        rows_in_parallel_with(total, m, || (), per_row)
    };
    #[cfg(not(target_arch = "x86_64"))]
    let all = rows_in_parallel_with(total, m, || (), per_row);
    if weights.len() == 1 {
        return vec![all];
    }
    weights
        .iter()
        .zip(&parts)
        .map(|(w, p)| {
            (0..m)
                .flat_map(|t| &all[t * total + p.0..t * total + p.0 + w.rows])
                .copied()
                .collect()
        })
        .collect()
}

/// `out[t · rows + n] = f(n, t)` for every weight row n and input row t, each thread of
/// the kernel pool taking one contiguous range of weight rows.
fn rows_in_parallel(rows: usize, m: usize, f: impl Fn(usize, usize) -> f32 + Sync) -> Vec<f32> {
    rows_in_parallel_with(
        rows,
        m,
        || (),
        |_, n, out| {
            for (t, o) in out.iter_mut().enumerate() {
                *o = f(n, t);
            }
        },
    )
}

/// `out[t · rows + n]` for every weight row n and input row t, where `f(scratch, n, outs)`
/// writes the `m` outputs of weight row n (`outs[t]`). Each thread of the kernel pool takes
/// one contiguous range of weight rows and one `scratch` from `init` for all of them (the
/// decoded row of a packed format, say).
pub(crate) fn rows_in_parallel_with<S>(
    rows: usize,
    m: usize,
    init: impl Fn() -> S + Sync,
    f: impl Fn(&mut S, usize, &mut [f32]) + Sync,
) -> Vec<f32> {
    // Computed n-major (rows × m) so each thread owns a contiguous slice.
    let mut by_row = vec![0f32; rows * m];
    let out = SharedOut(by_row.as_mut_ptr());
    pool::global().run(&|index, threads| {
        let per = rows.div_ceil(threads);
        let range = index * per..((index + 1) * per).min(rows);
        if range.is_empty() {
            return;
        }
        let mut scratch = init();
        for n in range {
            // SAFETY: rows of this range belong to this thread alone, and n · m + m ≤
            // rows · m, the buffer's length.
            let outs = unsafe { std::slice::from_raw_parts_mut(out.at(n * m), m) };
            f(&mut scratch, n, outs);
        }
    });
    if m == 1 {
        return by_row;
    }
    let mut out = vec![0f32; m * rows];
    for n in 0..rows {
        for t in 0..m {
            out[t * rows + n] = by_row[n * m + t];
        }
    }
    out
}

/// `Σ a[i] · b[i]` in f32 through the best kernel for this CPU.
pub(crate) fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    debug_assert_eq!(a.len(), b.len());
    match isa() {
        Isa::Scalar => scalar::dot_f32(a, b),
        // SAFETY: `Isa::Avx2` is only returned when the CPU has AVX2 and FMA.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { avx2::dot_f32(a, b) },
        // SAFETY: `Isa::Neon` is only returned when the CPU has NEON.
        #[cfg(target_arch = "aarch64")]
        Isa::Neon { .. } => unsafe { neon::dot_f32(a, b) },
    }
}

/// One weight row of MLX-packed affine codes dotted with `x`:
/// `Σ_g scales[g]·Σ_j q_j·x_j + biases[g]·xsums[g]` (`xsums[g]` = Σ of x over group g).
/// None where this CPU or bit width has no kernel (then decode the row instead).
pub(crate) fn affine_row_dot(
    bits: u32,
    words: &[u32],
    scales: &[half::f16],
    biases: &[half::f16],
    group: usize,
    x: &[f32],
    xsums: &[f32],
) -> Option<f32> {
    if !affine_kernel(bits, group) {
        return None;
    }
    assert!(
        x.len() == scales.len() * group
            && biases.len() == scales.len()
            && xsums.len() == scales.len()
            && words.len() * 32 >= x.len() * bits as usize
    );
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: `affine_kernel` checked for AVX2/FMA/F16C; the sizes were checked above.
        unsafe {
            return Some(match bits {
                2 => avx2::affine_dot::<2>(words, scales, biases, group, x, xsums),
                4 => avx2::affine_dot::<4>(words, scales, biases, group, x, xsums),
                _ => avx2::affine_dot::<8>(words, scales, biases, group, x, xsums),
            });
        }
    }
    #[cfg(target_arch = "aarch64")]
    {
        // SAFETY: `affine_kernel` checked for NEON; the sizes were checked above.
        unsafe {
            return Some(match bits {
                2 => neon::affine_dot::<2>(words, scales, biases, group, x, xsums),
                4 => neon::affine_dot::<4>(words, scales, biases, group, x, xsums),
                _ => neon::affine_dot::<8>(words, scales, biases, group, x, xsums),
            });
        }
    }
    #[allow(unreachable_code)]
    None
}

/// Whether [`affine_row_dot`] has a kernel for this width and group on this CPU.
pub(crate) fn affine_kernel(bits: u32, group: usize) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        matches!(bits, 2 | 4 | 8) && group.is_multiple_of(16) && isa() == Isa::Avx2
    }
    #[cfg(target_arch = "aarch64")]
    {
        matches!(bits, 2 | 4 | 8) && group.is_multiple_of(16) && isa() != Isa::Scalar
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        let _ = (bits, group);
        false
    }
}

/// A dense weight in one of the float formats checkpoints ship.
#[derive(Clone, Copy)]
pub enum DenseWeight<'a> {
    F32(&'a [f32]),
    F16(&'a [half::f16]),
    BF16(&'a [half::bf16]),
}

impl DenseWeight<'_> {
    fn len(&self) -> usize {
        match self {
            Self::F32(w) => w.len(),
            Self::F16(w) => w.len(),
            Self::BF16(w) => w.len(),
        }
    }
}

/// `out[t, n] = Σ_k x[t, k] · W[n, k]` for a dense weight (rows × cols), split by rows over
/// the kernel pool: the decode path of unquantized layers and heads, which are
/// bandwidth-bound and gain nothing from a blocked GEMM. Half-precision weights are
/// widened to f32 in registers, never in memory.
pub fn matmul_dense(
    weight: DenseWeight,
    rows: usize,
    cols: usize,
    x: &[f32],
    m: usize,
) -> Vec<f32> {
    assert_eq!(weight.len(), rows * cols);
    assert_eq!(x.len(), m * cols);
    let isa = isa();
    rows_in_parallel(rows, m, |n, t| {
        let (r, xt) = (n * cols..(n + 1) * cols, &x[t * cols..(t + 1) * cols]);
        match (isa, weight) {
            (Isa::Scalar, DenseWeight::F32(w)) => scalar::dot_f32(&w[r], xt),
            (Isa::Scalar, DenseWeight::F16(w)) => {
                w[r].iter().zip(xt).map(|(a, b)| a.to_f32() * b).sum()
            }
            (Isa::Scalar, DenseWeight::BF16(w)) => {
                w[r].iter().zip(xt).map(|(a, b)| a.to_f32() * b).sum()
            }
            // SAFETY (all three): AVX2/FMA/F16C were detected.
            #[cfg(target_arch = "x86_64")]
            (Isa::Avx2, DenseWeight::F32(w)) => unsafe { avx2::dot_f32(&w[r], xt) },
            #[cfg(target_arch = "x86_64")]
            (Isa::Avx2, DenseWeight::F16(w)) => unsafe { avx2::dot_half::<_, false>(&w[r], xt) },
            #[cfg(target_arch = "x86_64")]
            (Isa::Avx2, DenseWeight::BF16(w)) => unsafe { avx2::dot_half::<_, true>(&w[r], xt) },
            // SAFETY (all three): NEON was detected.
            #[cfg(target_arch = "aarch64")]
            (Isa::Neon { .. }, DenseWeight::F32(w)) => unsafe { neon::dot_f32(&w[r], xt) },
            #[cfg(target_arch = "aarch64")]
            (Isa::Neon { .. }, DenseWeight::F16(w)) => unsafe {
                neon::dot_half::<_, false>(&w[r], xt)
            },
            #[cfg(target_arch = "aarch64")]
            (Isa::Neon { .. }, DenseWeight::BF16(w)) => unsafe {
                neon::dot_half::<_, true>(&w[r], xt)
            },
        }
    })
}

/// Deterministic pseudo-random values in (−scale/2, scale/2) for kernel tests.
#[cfg(test)]
pub(crate) fn test_data(n: usize, seed: u64, scale: f32) -> Vec<f32> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * scale
        })
        .collect()
}

#[cfg(test)]
mod tests;
