//! Multi-head latent attention (DeepSeek V2/V3), the decoder's second attention kind.
//! Per token the cache keeps one row: the normalised `kv_lora_rank` latent and the roped
//! `qk_rope_head_dim` key part shared by every head. A pass expands the cached latents
//! into per-head keys and values with `kv_b_proj`, as transformers does, and attends with
//! the shared GEMM attention.

use super::block::{norm_weight, Batch};
use super::config::{MlaConfig, ModelConfig};
use super::linear_rows::{apply, apply_many, check_shape};
use super::ops::{self, AttnOptions};
use super::rope::RopeRows;
use super::WeightSource;
use crate::quant::QuantLinear;
use anyhow::Result;
use std::sync::Arc;

/// Queries straight from the hidden state, or through a low-rank bottleneck.
enum QueryProj {
    Direct(Arc<dyn QuantLinear>),
    LowRank {
        a: Arc<dyn QuantLinear>,
        norm: Vec<f32>,
        b: Arc<dyn QuantLinear>,
    },
}

pub(super) struct LatentAttention {
    q: QueryProj,
    kv_a: Arc<dyn QuantLinear>,
    kv_norm: Vec<f32>,
    kv_b: Arc<dyn QuantLinear>,
    o: Arc<dyn QuantLinear>,
}

/// Rope on the `rope`-wide part that ends each `width`-wide head of `x` (token-major,
/// `heads` heads a token), de-interleaving DeepSeek's paired layout first (doing the same
/// to queries and keys leaves every dot product as the paired rotation gives it).
fn rope_tail(
    x: &mut [f32],
    (width, rope, heads): (usize, usize, usize),
    interleaved: bool,
    offset: usize,
    rows: &RopeRows,
) {
    let mut part = vec![0f32; x.len() / width * rope];
    for (chunk, dst) in x.chunks_exact(width).zip(part.chunks_exact_mut(rope)) {
        let src = &chunk[width - rope..];
        if interleaved {
            for i in 0..rope / 2 {
                dst[i] = src[2 * i];
                dst[rope / 2 + i] = src[2 * i + 1];
            }
        } else {
            dst.copy_from_slice(src);
        }
    }
    ops::rope_in_place(&mut part, heads, rope, offset, rows);
    for (chunk, src) in x.chunks_exact_mut(width).zip(part.chunks_exact(rope)) {
        chunk[width - rope..].copy_from_slice(src);
    }
}

impl LatentAttention {
    pub(super) fn load(
        src: &dyn WeightSource,
        cfg: &ModelConfig,
        m: &MlaConfig,
        p: &str,
    ) -> Result<Self> {
        let lin = |n: &str| src.linear(&format!("{p}.self_attn.{n}"), false);
        let eps_norm =
            |n: &str, len: usize| norm_weight(src, &format!("{p}.self_attn.{n}"), len, 0.0);
        let q = match m.q_lora_rank {
            None => QueryProj::Direct(lin("q_proj")?),
            Some(r) => QueryProj::LowRank {
                a: lin("q_a_proj")?,
                norm: eps_norm("q_a_layernorm", r)?,
                b: lin("q_b_proj")?,
            },
        };
        let me = Self {
            q,
            kv_a: lin("kv_a_proj_with_mqa")?,
            kv_norm: eps_norm("kv_a_layernorm", m.kv_lora_rank)?,
            kv_b: lin("kv_b_proj")?,
            o: lin("o_proj")?,
        };
        let (h, heads) = (cfg.hidden_size, cfg.num_attention_heads);
        let qk = m.qk_nope_head_dim + m.qk_rope_head_dim;
        match &me.q {
            QueryProj::Direct(q) => check_shape("self_attn.q_proj", q, (heads * qk, h))?,
            QueryProj::LowRank { a, b, .. } => {
                let r = m.q_lora_rank.unwrap_or(0);
                check_shape("self_attn.q_a_proj", a, (r, h))?;
                check_shape("self_attn.q_b_proj", b, (heads * qk, r))?;
            }
        }
        check_shape(
            "self_attn.kv_a_proj_with_mqa",
            &me.kv_a,
            (m.kv_lora_rank + m.qk_rope_head_dim, h),
        )?;
        check_shape(
            "self_attn.kv_b_proj",
            &me.kv_b,
            (heads * (m.qk_nope_head_dim + m.v_head_dim), m.kv_lora_rank),
        )?;
        check_shape("self_attn.o_proj", &me.o, (h, heads * m.v_head_dim))?;
        Ok(me)
    }

    /// (name within the layer, has bias) of each linear, in `linears` order.
    pub(super) fn linear_names(&self) -> Vec<&'static str> {
        let mut v = match &self.q {
            QueryProj::Direct(_) => vec!["self_attn.q_proj"],
            QueryProj::LowRank { .. } => vec!["self_attn.q_a_proj", "self_attn.q_b_proj"],
        };
        v.extend([
            "self_attn.kv_a_proj_with_mqa",
            "self_attn.kv_b_proj",
            "self_attn.o_proj",
        ]);
        v
    }

    pub(super) fn linears(&self) -> Vec<&Arc<dyn QuantLinear>> {
        let mut v = match &self.q {
            QueryProj::Direct(q) => vec![q],
            QueryProj::LowRank { a, b, .. } => vec![a, b],
        };
        v.extend([&self.kv_a, &self.kv_b, &self.o]);
        v
    }

    pub(super) fn linears_mut(&mut self) -> Vec<&mut Arc<dyn QuantLinear>> {
        let mut v = match &mut self.q {
            QueryProj::Direct(q) => vec![q],
            QueryProj::LowRank { a, b, .. } => vec![a, b],
        };
        v.extend([&mut self.kv_a, &mut self.kv_b, &mut self.o]);
        v
    }

    pub(super) fn norm_bytes(&self) -> usize {
        let q = match &self.q {
            QueryProj::LowRank { norm, .. } => norm.len(),
            QueryProj::Direct(_) => 0,
        };
        4 * (q + self.kv_norm.len())
    }

    pub(super) fn forward(
        &self,
        x: Vec<f32>,
        batch: &mut Batch,
        cfg: &ModelConfig,
        m: &MlaConfig,
        opts: AttnOptions,
        layer: usize,
    ) -> Result<Vec<f32>> {
        let groups = &batch.groups;
        let eps = cfg.rms_norm_eps as f32;
        let heads = cfg.num_attention_heads;
        let (nope, rope, vd, lora) = (
            m.qk_nope_head_dim,
            m.qk_rope_head_dim,
            m.v_head_dim,
            m.kv_lora_rank,
        );
        let qk = nope + rope;
        let (mut q, mut ckv) = match &self.q {
            QueryProj::Direct(qp) => {
                let [q, c]: [Vec<f32>; 2] =
                    apply_many(&[qp.as_ref(), self.kv_a.as_ref()], x, groups)?
                        .try_into()
                        .expect("two linears in, two out");
                (q, c)
            }
            QueryProj::LowRank { a, norm, b } => {
                let [qa, c]: [Vec<f32>; 2] =
                    apply_many(&[a.as_ref(), self.kv_a.as_ref()], x, groups)?
                        .try_into()
                        .expect("two linears in, two out");
                let qa = ops::rms_norm(&qa, norm, eps);
                (apply(b.as_ref(), qa, groups)?, c)
            }
        };
        // The latent part of each cache row is normalised; its rope part is roped below.
        for row in ckv.chunks_exact_mut(lora + rope) {
            let normed = ops::rms_norm(&row[..lora], &self.kv_norm, eps);
            row[..lora].copy_from_slice(&normed);
        }
        // Widest of the q/k and v heads: narrower ones are zero-padded so one GEMM
        // attention serves (zeros change no dot product).
        let d = qk.max(vd);
        let mut outs = Vec::with_capacity(batch.items.len());
        let (mut q_at, mut c_at) = (0, 0);
        for ((item, ropes), &t) in batch.items.iter_mut().zip(&batch.ropes).zip(&batch.lens) {
            let offset = item.cache.len();
            let qi = &mut q[q_at..q_at + t * heads * qk];
            let ci = &mut ckv[c_at..c_at + t * (lora + rope)];
            q_at += t * heads * qk;
            c_at += t * (lora + rope);
            if let Some(rows) = ropes[0].as_ref() {
                rope_tail(qi, (qk, rope, heads), m.rope_interleave, offset, rows);
                rope_tail(ci, (lora + rope, rope, 1), m.rope_interleave, offset, rows);
            }
            item.cache.write(layer, ci, &[]);
            let n_all = offset + t;
            let lo = opts.first_key(offset);
            let lat = item.cache.view(layer, n_all).gather(false, lo);
            let n = n_all - lo;
            let mut lat_nope = Vec::with_capacity(n * lora);
            for r in lat.chunks_exact(lora + rope) {
                lat_nope.extend_from_slice(&r[..lora]);
            }
            let kv = apply(self.kv_b.as_ref(), lat_nope, std::slice::from_ref(&(0..n)))?;
            let (mut k, mut v) = (vec![0f32; n * heads * d], vec![0f32; n * heads * d]);
            for j in 0..n {
                let k_rot = &lat[j * (lora + rope) + lora..(j + 1) * (lora + rope)];
                for h in 0..heads {
                    let src = &kv[(j * heads + h) * (nope + vd)..][..nope + vd];
                    let kd = &mut k[(j * heads + h) * d..][..d];
                    kd[..nope].copy_from_slice(&src[..nope]);
                    kd[nope..qk].copy_from_slice(k_rot);
                    v[(j * heads + h) * d..][..vd].copy_from_slice(&src[nope..]);
                }
            }
            let mut qd = vec![0f32; t * heads * d];
            for (dst, src) in qd.chunks_exact_mut(d).zip(qi.chunks_exact(qk)) {
                dst[..qk].copy_from_slice(src);
            }
            let shape = ops::Heads {
                heads,
                kv_heads: heads,
                head_dim: d,
            };
            let o = ops::attention_gemm(&qd, &k, &v, t, offset, lo, shape, opts)?;
            for head in o.chunks_exact(d) {
                outs.extend_from_slice(&head[..vd]);
            }
        }
        apply_many(&[self.o.as_ref()], outs, groups).map(|mut v| v.pop().expect("one out"))
    }
}
