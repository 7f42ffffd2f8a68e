//! The non-linear parts of a decoder layer as plain loops over contiguous f32 data:
//! RMSNorm, rotary embeddings, attention over the KV cache, SwiGLU. candle's versions are
//! generic tensor ops that each allocate, dispatch and (for several) hop to rayon's pool;
//! at decode sizes that overhead was half of every token.

use super::rope::RopeRows;
use crate::engine::kv_cache::KvView;
use rayon::prelude::*;

/// `x / rms(x) · w` over rows of `w.len()` elements.
pub fn rms_norm(x: &[f32], w: &[f32], eps: f32) -> Vec<f32> {
    let d = w.len();
    let mut out = vec![0f32; x.len()];
    for (o, r) in out.chunks_exact_mut(d).zip(x.chunks_exact(d)) {
        let ms = r.iter().map(|v| v * v).sum::<f32>() / d as f32;
        let scale = 1.0 / (ms + eps).sqrt();
        for ((o, v), g) in o.iter_mut().zip(r).zip(w) {
            *o = v * scale * g;
        }
    }
    out
}

/// `(x - mean) / √(var + eps) · w + b` over rows of `w.len()` elements (LayerNorm).
pub fn layer_norm(x: &[f32], w: &[f32], b: &[f32], eps: f32) -> Vec<f32> {
    let d = w.len();
    let mut out = vec![0f32; x.len()];
    for (o, r) in out.chunks_exact_mut(d).zip(x.chunks_exact(d)) {
        let mean = r.iter().sum::<f32>() / d as f32;
        let var = r.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / d as f32;
        let scale = 1.0 / (var + eps).sqrt();
        for (((o, v), g), c) in o.iter_mut().zip(r).zip(w).zip(b) {
            *o = (v - mean) * scale * g + c;
        }
    }
    out
}

/// Rotary embedding in place on token-major rows of `heads × head_dim`, positions from
/// `offset` (rotate-half pairing within the first `2 · rows.half()` dimensions of each
/// head: element i with i + half; the rest of a head passes unchanged).
pub fn rope_in_place(x: &mut [f32], heads: usize, head_dim: usize, offset: usize, rows: &RopeRows) {
    let half = rows.half();
    for (t, row) in x.chunks_exact_mut(heads * head_dim).enumerate() {
        let (cos, sin) = rows.row(offset + t);
        for h in row.chunks_exact_mut(head_dim) {
            let (a, b) = h[..2 * half].split_at_mut(half);
            for i in 0..half {
                let (x1, x2) = (a[i], b[i]);
                a[i] = x1 * cos[i] - x2 * sin[i];
                b[i] = x2 * cos[i] + x1 * sin[i];
            }
        }
    }
}

/// Head layout of an attention layer.
#[derive(Debug, Clone, Copy)]
pub struct Heads {
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
}

/// What a family changes in attention's arithmetic.
#[derive(Debug, Clone, Copy)]
pub struct AttnOptions<'a> {
    /// Multiplies q·k (1/√head_dim unless the family says else).
    pub scale: f32,
    /// `cap · tanh(score / cap)` before the mask (Gemma 2).
    pub softcap: Option<f32>,
    /// A query at position p sees keys p - window + 1 ..= p.
    pub window: Option<usize>,
    /// One learned logit per query head that joins each softmax's denominator (GPT-OSS's
    /// attention sinks).
    pub sinks: Option<&'a [f32]>,
}

impl AttnOptions<'_> {
    pub fn standard(head_dim: usize) -> Self {
        Self {
            scale: 1.0 / (head_dim as f32).sqrt(),
            softcap: None,
            window: None,
            sinks: None,
        }
    }

    #[inline]
    fn sink(&self, head: usize) -> Option<f32> {
        self.sinks.map(|s| s[head])
    }

    /// First key position a query at `pos` sees.
    #[inline]
    pub fn first_key(&self, pos: usize) -> usize {
        self.window.map_or(0, |w| (pos + 1).saturating_sub(w))
    }

    #[inline]
    fn score(&self, qk: f32) -> f32 {
        let s = qk * self.scale;
        match self.softcap {
            Some(cap) => cap * (s / cap).tanh(),
            None => s,
        }
    }
}

/// Causal attention of `t` new queries (token-major `heads × head_dim`, already roped)
/// against the cache holding `offset + t` tokens (token-major `kv_heads × head_dim`).
/// Query i sees keys `opts.first_key(offset + i)..=offset + i`. Output is token-major
/// `heads × head_dim`.
pub fn attention(
    q: &[f32],
    kv: KvView,
    t: usize,
    offset: usize,
    shape: Heads,
    opts: AttnOptions,
) -> Vec<f32> {
    let Heads {
        heads,
        kv_heads,
        head_dim,
    } = shape;
    let rep = heads / kv_heads;
    let one = |i: usize, h: usize, out: &mut [f32], scores: &mut Vec<f32>| {
        let g = h / rep;
        let qh = &q[(i * heads + h) * head_dim..][..head_dim];
        let pos = offset + i;
        let lo = opts.first_key(pos);
        scores.clear();
        scores.extend(
            (lo..=pos).map(|j| opts.score(dot(qh, &kv.key(j)[g * head_dim..][..head_dim]))),
        );
        let n = scores.len();
        softmax_causal(scores, n, opts.sink(h));
        out.fill(0.0);
        for (j, &p) in (lo..).zip(scores.iter()) {
            let vj = &kv.value(j)[g * head_dim..][..head_dim];
            for (o, &x) in out.iter_mut().zip(vj) {
                *o += p * x;
            }
        }
    };
    if t >= GEMM_MIN_QUERIES {
        let lo = opts.first_key(offset);
        if let Ok(out) = attention_gemm(
            q,
            &kv.gather(false, lo),
            &kv.gather(true, lo),
            t,
            offset,
            lo,
            shape,
            opts,
        ) {
            return out;
        }
    }
    let mut out = vec![0f32; t * heads * head_dim];
    let pool = crate::quant::kernels::pool::global();
    if t == 1
        && pool.threads() > 1
        && rayon::current_thread_index().is_none()
        && (offset + 1 - opts.first_key(offset)) * heads * head_dim >= 1 << 13
    {
        // A decode step over a longer cache: heads split over the kernel pool, whose
        // workers are waiting for the next product anyway.
        struct Out(*mut f32);
        // SAFETY: each thread writes the rows of its own heads only.
        unsafe impl Sync for Out {}
        let ptr = Out(out.as_mut_ptr());
        let ptr = &ptr;
        pool.run(&|index, threads| {
            let per = heads.div_ceil(threads);
            let mut scores = Vec::with_capacity(offset + 1);
            for h in index * per..((index + 1) * per).min(heads) {
                // SAFETY: head h's row lies in bounds and belongs to this thread.
                let o =
                    unsafe { std::slice::from_raw_parts_mut(ptr.0.add(h * head_dim), head_dim) };
                one(0, h, o, &mut scores);
            }
        });
    } else if t == 1 {
        let mut scores = Vec::with_capacity(offset + 1);
        for (h, o) in out.chunks_exact_mut(head_dim).enumerate() {
            one(0, h, o, &mut scores);
        }
    } else {
        // (query, head) pairs are independent; spread them over the pool.
        out.par_chunks_exact_mut(head_dim)
            .enumerate()
            .for_each_init(Vec::new, |scores, (idx, o)| {
                one(idx / heads, idx % heads, o, scores)
            });
    }
    out
}

/// From this many queries on (prompts), attention goes through blocked GEMMs.
const GEMM_MIN_QUERIES: usize = 16;

/// Prompt attention as two GEMMs per KV head (candle's, SIMD picked at run time), with
/// the `rep` query heads sharing a KV head stacked so K and V are never copied per head.
/// `k` and `v` hold positions `lo..offset + t` as token-major slices (latent attention
/// calls it directly on the keys and values it expands per pass).
#[allow(clippy::too_many_arguments)]
pub(super) fn attention_gemm(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    t: usize,
    offset: usize,
    lo: usize,
    shape: Heads,
    opts: AttnOptions,
) -> candle_core::Result<Vec<f32>> {
    use candle_core::{Device, Tensor};
    let Heads {
        heads,
        kv_heads,
        head_dim,
    } = shape;
    let (rep, n, dev) = (heads / kv_heads, offset + t - lo, &Device::Cpu);
    // This runs on rayon's threads: keep the kernel pool's idle workers off the cores.
    crate::quant::kernels::pool::global().rest();
    // (t, kv, rep, hd) → (kv, rep, t, hd).
    let qs = Tensor::from_slice(q, (t, kv_heads, rep, head_dim), dev)?
        .permute((1, 2, 0, 3))?
        .contiguous()?;
    let ks = Tensor::from_slice(k, (n, kv_heads, head_dim), dev)?
        .transpose(0, 1)?
        .contiguous()?;
    let vs = Tensor::from_slice(v, (n, kv_heads, head_dim), dev)?
        .transpose(0, 1)?
        .contiguous()?;
    // Queries in chunks, each against the keys it can see: causal masking then skips
    // most of the future half of the score matrix instead of computing and zeroing it,
    // and a window skips the keys before the chunk's first visible one.
    let mut out = vec![0f32; t * heads * head_dim];
    let mut i0 = 0;
    while i0 < t {
        let tc = QUERY_CHUNK.min(t - i0);
        // Keys k0..k1 (absolute positions) cover every query of the chunk.
        let (k0, k1) = (opts.first_key(offset + i0), offset + i0 + tc);
        let nk = k1 - k0;
        // Row r·tc + i is query i0 + i of head g·rep + r.
        let qc = qs
            .narrow(2, i0, tc)?
            .contiguous()?
            .reshape((kv_heads, rep * tc, head_dim))?;
        let (kc, vc) = if k0 == lo && k1 == offset + t {
            (ks.clone(), vs.clone())
        } else {
            (
                ks.narrow(1, k0 - lo, nk)?.contiguous()?,
                vs.narrow(1, k0 - lo, nk)?.contiguous()?,
            )
        };
        let scores = qc.matmul(&kc.t()?)?;
        let mut probs: Vec<f32> = scores.flatten_all()?.to_vec1()?;
        probs
            .par_chunks_exact_mut(nk)
            .enumerate()
            .for_each(|(row_idx, row)| {
                let pos = offset + i0 + row_idx % tc;
                let first = opts.first_key(pos) - k0;
                row[..first].fill(0.0);
                let seen = &mut row[first..];
                for s in seen.iter_mut() {
                    *s = opts.score(*s);
                }
                softmax_causal(seen, pos + 1 - k0 - first, opts.sink(row_idx / tc));
            });
        let probs = Tensor::from_vec(probs, (kv_heads, rep * tc, nk), dev)?;
        let o: Vec<f32> = probs
            .matmul(&vc)?
            .reshape((kv_heads, rep, tc, head_dim))?
            .permute((2, 0, 1, 3))?
            .contiguous()?
            .flatten_all()?
            .to_vec1()?;
        out[i0 * heads * head_dim..(i0 + tc) * heads * head_dim].copy_from_slice(&o);
        i0 += tc;
    }
    Ok(out)
}

/// Queries per chunk of prompt attention.
const QUERY_CHUNK: usize = 128;

/// Softmax over the first `visible` entries of `row`; the rest (future tokens) become 0.
/// A `sink` logit (GPT-OSS) joins the denominator without a value of its own.
fn softmax_causal(row: &mut [f32], visible: usize, sink: Option<f32>) {
    let (seen, future) = row.split_at_mut(visible);
    let max = seen
        .iter()
        .copied()
        .chain(sink)
        .fold(f32::NEG_INFINITY, f32::max);
    let mut sum = sink.map_or(0.0, |s| (s - max).exp());
    for s in seen.iter_mut() {
        *s = (*s - max).exp();
        sum += *s;
    }
    let inv = 1.0 / sum;
    seen.iter_mut().for_each(|s| *s *= inv);
    future.fill(0.0);
}

#[inline]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    // The kernels' SIMD dot (FMA where the CPU has it): the same for a query whether it
    // runs alone or in a batch.
    crate::quant::kernels::dot_f32(a, b)
}

/// `silu(gate) · up`, elementwise.
pub fn swiglu(gate: &[f32], up: &[f32]) -> Vec<f32> {
    assert_eq!(gate.len(), up.len());
    let f = |g: f32, u: f32| g / (1.0 + (-g).exp()) * u;
    let pool = crate::quant::kernels::pool::global();
    if gate.len() < 1 << 15 || pool.threads() == 1 || rayon::current_thread_index().is_some() {
        return gate.iter().zip(up).map(|(&g, &u)| f(g, u)).collect();
    }
    // Prompts: elementwise, so split over the kernel pool (same values either way).
    let mut out = vec![0f32; gate.len()];
    struct Out(*mut f32);
    // SAFETY: each thread writes its own range only.
    unsafe impl Sync for Out {}
    let ptr = Out(out.as_mut_ptr());
    let ptr = &ptr;
    let n = gate.len();
    pool.run(&|index, threads| {
        let per = n.div_ceil(threads);
        let range = (index * per).min(n)..((index + 1) * per).min(n);
        // SAFETY: `range` lies in bounds and belongs to this thread.
        let o = unsafe { std::slice::from_raw_parts_mut(ptr.0.add(range.start), range.len()) };
        for ((o, &g), &u) in o.iter_mut().zip(&gate[range.clone()]).zip(&up[range]) {
            *o = f(g, u);
        }
    });
    out
}

/// `gelu_tanh(gate) · up`, elementwise (GeGLU with the tanh approximation).
pub fn geglu_tanh(gate: &[f32], up: &[f32]) -> Vec<f32> {
    assert_eq!(gate.len(), up.len());
    const C: f32 = 0.797_884_6; // √(2/π)
    gate.iter()
        .zip(up)
        .map(|(&g, &u)| 0.5 * g * (1.0 + (C * (g + 0.044715 * g * g * g)).tanh()) * u)
        .collect()
}

/// GPT-OSS's clamped SwiGLU, elementwise (see `Activation::ClampedSwiglu`).
pub fn clamped_swiglu(gate: &[f32], up: &[f32], alpha: f32, limit: f32) -> Vec<f32> {
    gate.iter()
        .zip(up)
        .map(|(&g, &u)| {
            let g = g.min(limit);
            let u = u.clamp(-limit, limit);
            (u + 1.0) * g / (1.0 + (-alpha * g).exp())
        })
        .collect()
}

/// `cap · tanh(x / cap)` in place.
pub fn softcap_in_place(x: &mut [f32], cap: f32) {
    for v in x.iter_mut() {
        *v = cap * (*v / cap).tanh();
    }
}

/// `x += scale · y`.
pub fn add_scaled_in_place(x: &mut [f32], y: &[f32], scale: f32) {
    if scale == 1.0 {
        return add_in_place(x, y);
    }
    for (a, b) in x.iter_mut().zip(y) {
        *a += scale * b;
    }
}

pub fn add_in_place(x: &mut [f32], y: &[f32]) {
    for (a, b) in x.iter_mut().zip(y) {
        *a += b;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::kv_cache::{BlockPool, KvCache};
    use crate::models::rope::{RopeConfig, RotaryEmbedding};
    use candle_core::{DType, Device, Tensor};

    /// candle's rope on (1, heads, seq, head_dim) at positions `offset..`, base 10 000.
    fn candle_rope(x: &Tensor, offset: usize, hd: usize) -> Tensor {
        let seq = x.dim(2).unwrap();
        let inv: Vec<f32> = (0..hd / 2)
            .map(|i| 1.0 / 10000f64.powf(2.0 * i as f64 / hd as f64) as f32)
            .collect();
        let inv = Tensor::from_vec(inv, (1, hd / 2), &Device::Cpu).unwrap();
        let pos = Tensor::arange(offset as u32, (offset + seq) as u32, &Device::Cpu)
            .unwrap()
            .to_dtype(DType::F32)
            .unwrap()
            .reshape((seq, 1))
            .unwrap();
        let freqs = pos.broadcast_mul(&inv).unwrap();
        candle_nn::rotary_emb::rope(
            &x.contiguous().unwrap(),
            &freqs.cos().unwrap(),
            &freqs.sin().unwrap(),
        )
        .unwrap()
    }

    fn random(n: usize, seed: u64) -> Vec<f32> {
        crate::quant::kernels::test_data(n, seed, 2.0)
    }

    fn close(a: &[f32], b: &[f32], tol: f32) {
        assert_eq!(a.len(), b.len());
        for (i, (x, y)) in a.iter().zip(b).enumerate() {
            assert!(
                (x - y).abs() <= tol * (1.0 + y.abs()),
                "element {i}: {x} vs {y}"
            );
        }
    }

    #[test]
    fn rms_norm_matches_candle() {
        let (x, w) = (random(3 * 48, 1), random(48, 2));
        let xt = Tensor::from_vec(x.clone(), (3, 48), &Device::Cpu).unwrap();
        let wt = Tensor::from_vec(w.clone(), 48, &Device::Cpu).unwrap();
        let want: Vec<f32> = candle_nn::ops::rms_norm(&xt, &wt, 1e-5)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        close(&rms_norm(&x, &w, 1e-5), &want, 1e-5);
    }

    /// Attention and RoPE against the same computation written with candle's tensor ops
    /// (f32 reference): 2 new queries after 3 cached tokens, GQA 4:2.
    #[test]
    fn attention_and_rope_match_tensor_reference() {
        let (heads, kv_heads, hd, offset, t) = (4, 2, 8, 3, 2);
        let n = offset + t;
        let rope = RotaryEmbedding::new(&RopeConfig::plain(10000.0, hd), hd).unwrap();
        let rows_q = rope.rows(offset, t);
        let rows_k = rope.rows(0, n);
        let mut q = random(t * heads * hd, 3);
        let mut k = random(n * kv_heads * hd, 4);
        let v = random(n * kv_heads * hd, 5);
        // Reference: candle's rope on (1, h, seq, d) and a masked softmax attention.
        let dev = Device::Cpu;
        let to_heads = |x: &[f32], s: usize, h: usize| {
            Tensor::from_vec(x.to_vec(), (1, s, h, hd), &dev)
                .unwrap()
                .transpose(1, 2)
                .unwrap()
                .contiguous()
                .unwrap()
        };
        let qr = candle_rope(&to_heads(&q, t, heads), offset, hd);
        let kr = candle_rope(&to_heads(&k, n, kv_heads), 0, hd);
        rope_in_place(&mut q, heads, hd, offset, &rows_q);
        rope_in_place(&mut k, kv_heads, hd, 0, &rows_k);
        let q_back: Vec<f32> = qr
            .transpose(1, 2)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        close(&q, &q_back, 1e-5);
        let kr = kr.repeat_interleave_heads(heads / kv_heads);
        let vr = to_heads(&v, n, kv_heads).repeat_interleave_heads(heads / kv_heads);
        let scores = (qr.matmul(&kr.t().unwrap()).unwrap() / (hd as f64).sqrt()).unwrap();
        let mask: Vec<f32> = (0..t)
            .flat_map(|i| {
                (0..n).map(move |j| {
                    if j > offset + i {
                        f32::NEG_INFINITY
                    } else {
                        0.0
                    }
                })
            })
            .collect();
        let scores = scores
            .broadcast_add(&Tensor::from_vec(mask, (t, n), &dev).unwrap())
            .unwrap();
        let probs = candle_nn::ops::softmax_last_dim(&scores).unwrap();
        let want: Vec<f32> = probs
            .matmul(&vr)
            .unwrap()
            .transpose(1, 2)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let cache = cache_of(&k, &v, kv_heads * hd);
        close(
            &attention(
                &q,
                cache.view(0, n),
                t,
                offset,
                Heads {
                    heads,
                    kv_heads,
                    head_dim: hd,
                },
                AttnOptions::standard(hd),
            ),
            &want,
            1e-4,
        );
    }

    /// A one-layer paged cache holding token-major keys and values.
    fn cache_of(k: &[f32], v: &[f32], kv_row: usize) -> KvCache {
        let n = k.len() / kv_row;
        let mut c = KvCache::new(BlockPool::unbounded(vec![None], kv_row), n);
        c.reserve(n).unwrap();
        c.write(0, k, v);
        c.advance(n);
        c
    }

    trait RepeatHeads {
        fn repeat_interleave_heads(&self, rep: usize) -> Tensor;
    }
    impl RepeatHeads for Tensor {
        fn repeat_interleave_heads(&self, rep: usize) -> Tensor {
            let (b, h, s, d) = self.dims4().unwrap();
            self.unsqueeze(2)
                .unwrap()
                .expand((b, h, rep, s, d))
                .unwrap()
                .reshape((b, h * rep, s, d))
                .unwrap()
        }
    }

    /// The GEMM path for prompts and the per-query loop agree.
    #[test]
    fn prompt_attention_paths_agree() {
        // t > QUERY_CHUNK: several query chunks, the last one partial.
        let (heads, kv_heads, hd, offset, t) = (6, 2, 16, 5, 2 * QUERY_CHUNK + 40);
        let n = offset + t;
        let q = random(t * heads * hd, 8);
        let k = random(n * kv_heads * hd, 9);
        let v = random(n * kv_heads * hd, 10);
        let shape = Heads {
            heads,
            kv_heads,
            head_dim: hd,
        };
        let cache = cache_of(&k, &v, kv_heads * hd);
        // Plain, then windowed and soft-capped (window shorter than a query chunk, and
        // longer): one query at a time takes the loop path.
        for (window, softcap) in [(None, None), (Some(37), Some(3.0)), (Some(200), None)] {
            let opts = AttnOptions {
                window,
                softcap,
                ..AttnOptions::standard(hd)
            };
            let lo = opts.first_key(offset);
            let (kg, vg) = (&k[lo * kv_heads * hd..], &v[lo * kv_heads * hd..]);
            let gemm = attention_gemm(&q, kg, vg, t, offset, lo, shape, opts).unwrap();
            for i in 0..t {
                let qi = &q[i * heads * hd..(i + 1) * heads * hd];
                let row = attention(
                    qi,
                    cache.view(0, offset + i + 1),
                    1,
                    offset + i,
                    shape,
                    opts,
                );
                close(&row, &gemm[i * heads * hd..(i + 1) * heads * hd], 1e-4);
            }
        }
    }

    #[test]
    fn swiglu_matches_definition() {
        // Long enough for the pool's split.
        let (g, u) = (random(1 << 16, 6), random(1 << 16, 7));
        let got = swiglu(&g, &u);
        for i in 0..1 << 16 {
            let want = g[i] * (1.0 / (1.0 + (-g[i]).exp())) * u[i];
            assert!((got[i] - want).abs() < 1e-6);
        }
    }
}
