//! Grouped-query attention, the decoder's usual attention kind: q/k/v projections
//! (split or fused), optional q/k RMSNorms, RoPE on the layer's rotary embedding (or
//! none), then causal attention over each sequence's own cache with the layer's window,
//! scale and soft-cap.

use super::block::{attn_options, norm_weight, Batch};
use super::config::{LayerKind, LayerRope, ModelConfig, QkNorm};
use super::linear_rows::{apply_many, check_shape as check, split_rows, Projections};
use super::ops;
use super::rope::RopeRows;
use super::{BatchItem, WeightSource};
use crate::quant::QuantLinear;
use anyhow::Result;
use rayon::prelude::*;
use std::ops::Range;
use std::sync::Arc;

const QKV_NAMES: [&str; 3] = ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"];
const QKV_FUSED_NAME: &str = "self_attn.qkv_proj";

/// The q/k/v projections: three linears, or one fused `qkv_proj` (Phi-3) whose output
/// rows are q, then k, then v.
pub(super) type Qkv = Projections<3>;

pub(super) struct Attention {
    qkv: Qkv,
    o: Arc<dyn QuantLinear>,
    q_norm: Option<Vec<f32>>,
    k_norm: Option<Vec<f32>>,
    /// GPT-OSS's per-head sink logits.
    sinks: Option<Vec<f32>>,
}

impl Attention {
    pub(super) fn load(src: &dyn WeightSource, cfg: &ModelConfig, p: &str) -> Result<Self> {
        let v = &cfg.variant;
        let hd = cfg.head_dim;
        let lin = |n: &str, bias: bool| src.linear(&format!("{p}.{n}"), bias);
        let qkv = if v.fused_qkv {
            Qkv::Fused(lin(QKV_FUSED_NAME, cfg.qkv_bias)?)
        } else {
            Qkv::Split([
                lin(QKV_NAMES[0], cfg.qkv_bias)?,
                lin(QKV_NAMES[1], cfg.qkv_bias)?,
                lin(QKV_NAMES[2], cfg.qkv_bias)?,
            ])
        };
        let (q_len, k_len) = match v.qk_norm {
            QkNorm::None => (0, 0),
            QkNorm::PerHead => (hd, hd),
            QkNorm::Whole => (cfg.num_attention_heads * hd, cfg.num_key_value_heads * hd),
        };
        let qk = |n: &str, len: usize| -> Result<Option<Vec<f32>>> {
            (v.qk_norm != QkNorm::None)
                .then(|| norm_weight(src, &format!("{p}.self_attn.{n}"), len, v.norm_offset))
                .transpose()
        };
        let sinks = match v.attn_sinks {
            true => {
                let name = format!("{p}.self_attn.sinks");
                let s: Vec<f32> = src.dense_raw(&name)?.flatten_all()?.to_vec1()?;
                anyhow::ensure!(
                    s.len() == cfg.num_attention_heads,
                    "{name} has {} entries for {} heads",
                    s.len(),
                    cfg.num_attention_heads
                );
                Some(s)
            }
            false => None,
        };
        Ok(Self {
            qkv,
            o: lin("self_attn.o_proj", v.o_bias)?,
            q_norm: qk("q_norm", q_len)?,
            k_norm: qk("k_norm", k_len)?,
            sinks,
        })
    }

    pub(super) fn check_shapes(&self, cfg: &ModelConfig) -> Result<()> {
        let (h, hd) = (cfg.hidden_size, cfg.head_dim);
        let (nq, nkv) = (cfg.num_attention_heads * hd, cfg.num_key_value_heads * hd);
        match &self.qkv {
            Qkv::Split([q, k, v]) => {
                check("q_proj", q, (nq, h))?;
                check("k_proj", k, (nkv, h))?;
                check("v_proj", v, (nkv, h))?;
            }
            Qkv::Fused(l) => check("qkv_proj", l, (nq + 2 * nkv, h))?,
        }
        check("o_proj", &self.o, (h, nq))
    }

    pub(super) fn norm_bytes(&self) -> usize {
        [&self.q_norm, &self.k_norm, &self.sinks]
            .iter()
            .filter_map(|w| w.as_ref())
            .map(|w| 4 * w.len())
            .sum()
    }

    pub(super) fn linears(&self) -> Vec<&Arc<dyn QuantLinear>> {
        let mut v = self.qkv.linears();
        v.push(&self.o);
        v
    }

    pub(super) fn linears_mut(&mut self) -> Vec<&mut Arc<dyn QuantLinear>> {
        let mut v = self.qkv.linears_mut();
        v.push(&mut self.o);
        v
    }

    /// (name within the layer, has bias) of each linear, in `linears` order.
    pub(super) fn linear_specs(&self, cfg: &ModelConfig) -> Vec<(String, bool)> {
        let qkv: Vec<&str> = match &self.qkv {
            Qkv::Split(_) => QKV_NAMES.to_vec(),
            Qkv::Fused(_) => vec![QKV_FUSED_NAME],
        };
        let mut v: Vec<(String, bool)> = qkv
            .into_iter()
            .map(|n| (n.to_string(), cfg.qkv_bias))
            .collect();
        v.push(("self_attn.o_proj".to_string(), cfg.variant.o_bias));
        v
    }
}

/// One sequence's query, key and value rows.
type QkvRows<'b> = ((&'b mut [f32], &'b mut [f32]), &'b mut [f32]);

impl Attention {
    fn project(
        &self,
        x: Vec<f32>,
        groups: &[Range<usize>],
        cfg: &ModelConfig,
    ) -> Result<[Vec<f32>; 3]> {
        match &self.qkv {
            Qkv::Split([q, k, v]) => {
                Ok(
                    apply_many(&[q.as_ref(), k.as_ref(), v.as_ref()], x, groups)?
                        .try_into()
                        .expect("three linears in, three out"),
                )
            }
            Qkv::Fused(l) => {
                let y = apply_many(&[l.as_ref()], x, groups)?
                    .pop()
                    .expect("one out");
                let nq = cfg.num_attention_heads * cfg.head_dim;
                let nkv = cfg.num_key_value_heads * cfg.head_dim;
                let rows = y.len() / (nq + 2 * nkv);
                let (mut q, mut k, mut v) = (
                    Vec::with_capacity(rows * nq),
                    Vec::with_capacity(rows * nkv),
                    Vec::with_capacity(rows * nkv),
                );
                for r in y.chunks_exact(nq + 2 * nkv) {
                    q.extend_from_slice(&r[..nq]);
                    k.extend_from_slice(&r[nq..nq + nkv]);
                    v.extend_from_slice(&r[nq + nkv..]);
                }
                Ok([q, k, v])
            }
        }
    }

    pub(super) fn forward(
        &self,
        x: Vec<f32>,
        batch: &mut Batch,
        cfg: &ModelConfig,
        kind: LayerKind,
        layer: usize,
    ) -> Result<Vec<f32>> {
        let (nh, nkv, hd) = (
            cfg.num_attention_heads,
            cfg.num_key_value_heads,
            cfg.head_dim,
        );
        let groups = &batch.groups;
        let [mut q, mut k, mut v] = self.project(x, groups, cfg)?;
        let eps = cfg.rms_norm_eps as f32;
        if let Some(w) = &self.q_norm {
            q = ops::rms_norm(&q, w, eps);
        }
        if let Some(w) = &self.k_norm {
            k = ops::rms_norm(&k, w, eps);
        }
        let shape = ops::Heads {
            heads: nh,
            kv_heads: nkv,
            head_dim: hd,
        };
        let opts = ops::AttnOptions {
            sinks: self.sinks.as_deref(),
            ..attn_options(cfg, kind)
        };
        let rope_slot = match kind.rope {
            LayerRope::Global => Some(0),
            LayerRope::Local => Some(1),
            LayerRope::None => None,
        };
        // Each sequence attends to its own cache; sequences run in parallel.
        let per_item = |((item, ropes), ((q, k), v)): (
            (&mut &mut BatchItem, &[Option<RopeRows>; 2]),
            QkvRows,
        )| {
            let t = q.len() / (nh * hd);
            let offset = item.cache.len();
            if let Some(rows) = rope_slot.and_then(|s| ropes[s].as_ref()) {
                ops::rope_in_place(q, nh, hd, offset, rows);
                ops::rope_in_place(k, nkv, hd, offset, rows);
            }
            item.cache.write(layer, k, v);
            ops::attention(
                q,
                item.cache.view(layer, offset + t),
                t,
                offset,
                shape,
                opts,
            )
        };
        // Spread sequences over threads only when there is real attention work: for
        // decode steps (one query over a short cache each) waking the pool costs more.
        let work: usize = batch
            .items
            .iter()
            .zip(&batch.lens)
            .map(|(it, &t)| t * (it.cache.len() + t))
            .sum();
        let many = batch.items.len() > 1 && work * nh > 1 << 16;
        let parts = batch.items.iter_mut().zip(batch.ropes.iter()).zip(
            split_rows(&mut q, &batch.lens, nh * hd)
                .into_iter()
                .zip(split_rows(&mut k, &batch.lens, nkv * hd))
                .zip(split_rows(&mut v, &batch.lens, nkv * hd)),
        );
        let outs: Vec<Vec<f32>> = if many {
            parts
                .collect::<Vec<_>>()
                .into_par_iter()
                .map(per_item)
                .collect()
        } else {
            parts.map(per_item).collect()
        };
        apply_many(&[self.o.as_ref()], outs.concat(), groups)
            .map(|mut v| v.pop().expect("one linear in, one out"))
    }
}
