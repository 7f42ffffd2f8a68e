//! One decoder layer, shared by every family: norms where the family puts them,
//! attention (GQA, optional q/k norms, RoPE or none, sliding window, soft-cap) and the
//! gated FFN or a sparse MoE. What differs per family comes from [`Variant`] and
//! [`LayerKind`]; the arithmetic lives here once.

use super::config::{
    Activation, LayerKind, LayerRope, ModelConfig, NormPlacement, QkNorm, Variant,
};
use super::linear_rows::{apply_many, split_rows};
use super::moe::SparseMoe;
use super::ops::{self, AttnOptions};
use super::rope::RopeRows;
use super::{BatchItem, WeightSource};
use crate::quant::QuantLinear;
use anyhow::{Context, Result};
use rayon::prelude::*;
use std::ops::Range;
use std::sync::Arc;

/// The q/k/v projections: three linears, or one fused `qkv_proj` (Phi-3) whose output
/// rows are q, then k, then v.
pub(super) enum Qkv {
    Split([Arc<dyn QuantLinear>; 3]),
    Fused(Arc<dyn QuantLinear>),
}

pub(super) struct Attention {
    qkv: Qkv,
    o: Arc<dyn QuantLinear>,
    q_norm: Option<Vec<f32>>,
    k_norm: Option<Vec<f32>>,
}

/// The gate and up projections: two linears, or one fused `gate_up_proj` (Phi-3) whose
/// output rows are gate, then up.
pub(super) enum GateUp {
    Split([Arc<dyn QuantLinear>; 2]),
    Fused(Arc<dyn QuantLinear>),
}

/// A gated MLP: `down(act(gate x) · up x)`. Also one expert of a [`SparseMoe`].
pub(super) struct Mlp {
    gate_up: GateUp,
    down: Arc<dyn QuantLinear>,
    activation: Activation,
}

/// The block's feed-forward part.
pub(super) enum Ffn {
    Dense(Mlp),
    Moe(SparseMoe),
}

/// Names (within a layer) of the dense MLP's gate, up and down projections.
pub(super) const MLP_NAMES: [&str; 3] = ["mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"];
const GATE_UP_NAME: &str = "mlp.gate_up_proj";
const QKV_NAMES: [&str; 3] = ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"];
const QKV_FUSED_NAME: &str = "self_attn.qkv_proj";

/// The four places a norm can sit; each family fills the ones it has.
#[derive(Default)]
struct Norms {
    attn_in: Option<Vec<f32>>,
    attn_out: Option<Vec<f32>>,
    ffn_in: Option<Vec<f32>>,
    ffn_out: Option<Vec<f32>>,
}

/// Hugging Face names (within a layer) of the norms before attention, after attention,
/// before the FFN and after the FFN for a placement.
pub fn norm_names(p: NormPlacement) -> [Option<&'static str>; 4] {
    match p {
        NormPlacement::Pre => [
            Some("input_layernorm"),
            None,
            Some("post_attention_layernorm"),
            None,
        ],
        NormPlacement::Sandwich => [
            Some("input_layernorm"),
            Some("post_attention_layernorm"),
            Some("pre_feedforward_layernorm"),
            Some("post_feedforward_layernorm"),
        ],
        NormPlacement::Post => [
            None,
            Some("post_attention_layernorm"),
            None,
            Some("post_feedforward_layernorm"),
        ],
    }
}

pub(super) struct Block {
    norms: Norms,
    attn: Attention,
    pub(super) ffn: Ffn,
    kind: LayerKind,
}

/// A norm weight of `len` elements, with the family's offset added (Gemma's `1 + w`).
pub(super) fn norm_weight(
    src: &dyn WeightSource,
    name: &str,
    len: usize,
    offset: f32,
) -> Result<Vec<f32>> {
    let mut w: Vec<f32> = src.dense(name)?.flatten_all()?.to_vec1()?;
    anyhow::ensure!(
        w.len() == len,
        "{name} has {} elements, expected {len}",
        w.len()
    );
    if offset != 0.0 {
        w.iter_mut().for_each(|x| *x += offset);
    }
    Ok(w)
}

fn check(name: &str, lin: &Arc<dyn QuantLinear>, shape: (usize, usize)) -> Result<()> {
    anyhow::ensure!(
        lin.shape() == shape,
        "{name} has shape {:?}, the config implies {shape:?}",
        lin.shape()
    );
    Ok(())
}

impl Mlp {
    /// `names`: the gate, up and down projections under layer prefix `p`.
    pub(super) fn load(src: &dyn WeightSource, p: &str, names: [&str; 3]) -> Result<Self> {
        let lin = |n: &str| src.linear(&format!("{p}.{n}"), false);
        Ok(Self {
            gate_up: GateUp::Split([lin(names[0])?, lin(names[1])?]),
            down: lin(names[2])?,
            activation: Activation::Silu,
        })
    }

    fn load_dense(src: &dyn WeightSource, p: &str, v: &Variant) -> Result<Self> {
        let lin = |n: &str| src.linear(&format!("{p}.{n}"), false);
        let gate_up = if v.fused_gate_up {
            GateUp::Fused(lin(GATE_UP_NAME)?)
        } else {
            GateUp::Split([lin(MLP_NAMES[0])?, lin(MLP_NAMES[1])?])
        };
        Ok(Self {
            gate_up,
            down: lin(MLP_NAMES[2])?,
            activation: v.activation,
        })
    }

    pub(super) fn linears(&self) -> Vec<&Arc<dyn QuantLinear>> {
        let mut v: Vec<&Arc<dyn QuantLinear>> = match &self.gate_up {
            GateUp::Split(l) => l.iter().collect(),
            GateUp::Fused(l) => vec![l],
        };
        v.push(&self.down);
        v
    }

    pub(super) fn linears_mut(&mut self) -> Vec<&mut Arc<dyn QuantLinear>> {
        let mut v: Vec<&mut Arc<dyn QuantLinear>> = match &mut self.gate_up {
            GateUp::Split(l) => l.iter_mut().collect(),
            GateUp::Fused(l) => vec![l],
        };
        v.push(&mut self.down);
        v
    }

    /// Names of `linears`, for the dense MLP.
    fn names(&self) -> Vec<&'static str> {
        match &self.gate_up {
            GateUp::Split(_) => MLP_NAMES.to_vec(),
            GateUp::Fused(_) => vec![GATE_UP_NAME, MLP_NAMES[2]],
        }
    }

    /// `names` as for [`Mlp::load`].
    pub(super) fn check_shapes(&self, hidden: usize, inter: usize, names: [&str; 3]) -> Result<()> {
        match &self.gate_up {
            GateUp::Split([g, u]) => {
                check(names[0], g, (inter, hidden))?;
                check(names[1], u, (inter, hidden))?;
            }
            GateUp::Fused(gu) => check(GATE_UP_NAME, gu, (2 * inter, hidden))?,
        }
        check(names[2], &self.down, (hidden, inter))
    }

    pub(super) fn forward(&self, x: Vec<f32>, groups: &[Range<usize>]) -> Result<Vec<f32>> {
        let (gate, up) = match &self.gate_up {
            GateUp::Split([g, u]) => {
                let [up, gate]: [Vec<f32>; 2] = apply_many(&[u.as_ref(), g.as_ref()], x, groups)?
                    .try_into()
                    .expect("two linears in, two out");
                (gate, up)
            }
            GateUp::Fused(gu) => {
                let y = apply_many(&[gu.as_ref()], x, groups)?
                    .pop()
                    .expect("one out");
                let inter = gu.shape().0 / 2;
                let mut gate = Vec::with_capacity(y.len() / 2);
                let mut up = Vec::with_capacity(y.len() / 2);
                for row in y.chunks_exact(2 * inter) {
                    gate.extend_from_slice(&row[..inter]);
                    up.extend_from_slice(&row[inter..]);
                }
                (gate, up)
            }
        };
        let h = match self.activation {
            Activation::Silu => ops::swiglu(&gate, &up),
            Activation::GeluTanh => ops::geglu_tanh(&gate, &up),
        };
        apply_many(&[self.down.as_ref()], h, groups).map(|mut v| v.pop().expect("one out"))
    }
}

impl Ffn {
    fn linears(&self) -> Vec<&Arc<dyn QuantLinear>> {
        match self {
            Self::Dense(m) => m.linears(),
            Self::Moe(m) => m.linears(),
        }
    }

    fn linears_mut(&mut self) -> Vec<&mut Arc<dyn QuantLinear>> {
        match self {
            Self::Dense(m) => m.linears_mut(),
            Self::Moe(m) => m.linears_mut(),
        }
    }

    /// Names within the layer, in `linears` order.
    fn linear_names(&self) -> Vec<String> {
        match self {
            Self::Dense(m) => m.names().into_iter().map(str::to_string).collect(),
            Self::Moe(m) => m.linear_names(),
        }
    }

    /// Bytes of FFN weights one token reads (a MoE reads its router and top-k experts).
    pub(super) fn decode_bytes(&self) -> usize {
        match self {
            Self::Dense(m) => m.linears().iter().map(|l| l.size_in_bytes()).sum(),
            Self::Moe(m) => m.decode_bytes(),
        }
    }

    fn forward(&self, x: Vec<f32>, groups: &[Range<usize>]) -> Result<Vec<f32>> {
        match self {
            Self::Dense(m) => m.forward(x, groups),
            Self::Moe(m) => m.forward(x, groups),
        }
    }
}

/// The sequences of one forward pass and how their rows go through the linears.
pub(super) struct Batch<'i, 'a> {
    /// The sequences, prompts long enough for the GEMM path first (see `row_groups`).
    pub items: Vec<&'i mut BatchItem<'a>>,
    /// Rows (tokens) of each item, in order.
    pub lens: Vec<usize>,
    pub groups: Vec<Range<usize>>,
    /// Per item, cos/sin rows of its positions for the global and the local rope.
    pub ropes: Vec<[Option<RopeRows>; 2]>,
}

impl Block {
    pub(super) fn load(src: &dyn WeightSource, cfg: &ModelConfig, layer: usize) -> Result<Self> {
        let p = format!("model.layers.{layer}");
        let v = &cfg.variant;
        let (h, hd) = (cfg.hidden_size, cfg.head_dim);
        let norm = |n: Option<&str>| -> Result<Option<Vec<f32>>> {
            n.map(|n| norm_weight(src, &format!("{p}.{n}"), h, v.norm_offset))
                .transpose()
        };
        let [ai, ao, fi, fo] = norm_names(v.norms);
        let norms = Norms {
            attn_in: norm(ai)?,
            attn_out: norm(ao)?,
            ffn_in: norm(fi)?,
            ffn_out: norm(fo)?,
        };
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
        let attn = Attention {
            qkv,
            o: lin("self_attn.o_proj", false)?,
            q_norm: qk("q_norm", q_len)?,
            k_norm: qk("k_norm", k_len)?,
        };
        let ffn = match &cfg.moe {
            Some(moe) if !cfg.layers[layer].dense_ffn => Ffn::Moe(SparseMoe::load(src, &p, moe)?),
            _ => Ffn::Dense(Mlp::load_dense(src, &p, v)?),
        };
        let block = Self {
            norms,
            attn,
            ffn,
            kind: cfg.layers[layer],
        };
        block
            .check_shapes(cfg)
            .with_context(|| format!("layer {layer}"))?;
        Ok(block)
    }

    fn check_shapes(&self, cfg: &ModelConfig) -> Result<()> {
        let (h, hd) = (cfg.hidden_size, cfg.head_dim);
        let (nq, nkv) = (cfg.num_attention_heads * hd, cfg.num_key_value_heads * hd);
        match &self.attn.qkv {
            Qkv::Split([q, k, v]) => {
                check("q_proj", q, (nq, h))?;
                check("k_proj", k, (nkv, h))?;
                check("v_proj", v, (nkv, h))?;
            }
            Qkv::Fused(l) => check("qkv_proj", l, (nq + 2 * nkv, h))?,
        }
        check("o_proj", &self.attn.o, (h, nq))?;
        match &self.ffn {
            Ffn::Dense(m) => m.check_shapes(h, cfg.intermediate_size, MLP_NAMES),
            Ffn::Moe(m) => m.check_shapes(h),
        }
    }

    /// Bytes of the norm weights.
    pub(super) fn norm_bytes(&self) -> usize {
        let n = &self.norms;
        [
            &n.attn_in,
            &n.attn_out,
            &n.ffn_in,
            &n.ffn_out,
            &self.attn.q_norm,
            &self.attn.k_norm,
        ]
        .iter()
        .filter_map(|w| w.as_ref())
        .map(|w| 4 * w.len())
        .sum()
    }

    /// Attention's linears, then the FFN's.
    pub(super) fn linears(&self) -> Vec<&Arc<dyn QuantLinear>> {
        let mut v = self.attn_linears();
        v.extend(self.ffn.linears());
        v
    }

    pub(super) fn attn_linears(&self) -> Vec<&Arc<dyn QuantLinear>> {
        let a = &self.attn;
        let mut v: Vec<&Arc<dyn QuantLinear>> = match &a.qkv {
            Qkv::Split(l) => l.iter().collect(),
            Qkv::Fused(l) => vec![l],
        };
        v.push(&a.o);
        v
    }

    pub(super) fn linears_mut(&mut self) -> Vec<&mut Arc<dyn QuantLinear>> {
        let a = &mut self.attn;
        let mut v: Vec<&mut Arc<dyn QuantLinear>> = match &mut a.qkv {
            Qkv::Split(l) => l.iter_mut().collect(),
            Qkv::Fused(l) => vec![l],
        };
        v.push(&mut a.o);
        v.extend(self.ffn.linears_mut());
        v
    }

    /// (name within the layer, has bias) of each linear, in `linears` order.
    pub(super) fn linear_specs(&self, cfg: &ModelConfig) -> Vec<(String, bool)> {
        let qkv: Vec<&str> = match &self.attn.qkv {
            Qkv::Split(_) => QKV_NAMES.to_vec(),
            Qkv::Fused(_) => vec![QKV_FUSED_NAME],
        };
        let mut v: Vec<(String, bool)> = qkv
            .into_iter()
            .map(|n| (n.to_string(), cfg.qkv_bias))
            .collect();
        v.push(("self_attn.o_proj".to_string(), false));
        v.extend(self.ffn.linear_names().into_iter().map(|n| (n, false)));
        v
    }

    /// One layer over the residual stream `x` (token-major rows of every item, hidden
    /// wide), in place.
    pub(super) fn forward(
        &self,
        x: &mut [f32],
        batch: &mut Batch,
        cfg: &ModelConfig,
        layer: usize,
    ) -> Result<()> {
        let eps = cfg.rms_norm_eps as f32;
        let scale = cfg.variant.residual_scale;
        let norm = |x: &[f32], w: &Option<Vec<f32>>| match w {
            Some(w) => ops::rms_norm(x, w, eps),
            None => x.to_vec(),
        };
        let h = norm(x, &self.norms.attn_in);
        let h = self.attn.forward(h, batch, cfg, self.kind, layer)?;
        let h = match &self.norms.attn_out {
            Some(w) => ops::rms_norm(&h, w, eps),
            None => h,
        };
        ops::add_scaled_in_place(x, &h, scale);
        let h = norm(x, &self.norms.ffn_in);
        let h = self.ffn.forward(h, &batch.groups)?;
        let h = match &self.norms.ffn_out {
            Some(w) => ops::rms_norm(&h, w, eps),
            None => h,
        };
        ops::add_scaled_in_place(x, &h, scale);
        Ok(())
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

    fn forward(
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
        let opts = AttnOptions {
            scale: cfg.variant.attn_scale.unwrap_or(1.0 / (hd as f32).sqrt()),
            softcap: cfg.variant.attn_softcap,
            window: kind.window,
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
