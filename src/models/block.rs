//! One decoder layer, shared by every family: norms where the family puts them,
//! attention (GQA, optional q/k norms, RoPE or none, sliding window, soft-cap) and the
//! gated FFN or a sparse MoE. What differs per family comes from [`Variant`] and
//! [`LayerKind`]; the arithmetic lives here once.

use super::attention::Attention;
use super::config::{Activation, LayerKind, ModelConfig, NormPlacement, Variant};
use super::linear_rows::{apply_many, check_shape as check, Projections};
use super::mla::LatentAttention;
use super::moe::SparseMoe;
use super::norm::Norm;
use super::ops::{self, AttnOptions};
use super::rope::RopeRows;
use super::{BatchItem, WeightSource};
use crate::quant::QuantLinear;
use anyhow::{Context, Result};
use std::ops::Range;
use std::sync::Arc;

/// The gate and up projections: two linears, or one fused `gate_up_proj` (Phi-3,
/// GPT-OSS's experts) whose output rows are gate, then up.
pub(super) type GateUp = Projections<2>;

/// A gated MLP: `down(act(gate x) · up x)`. Also one expert of a [`SparseMoe`].
pub(super) struct Mlp {
    gate_up: GateUp,
    down: Arc<dyn QuantLinear>,
    activation: Activation,
}

/// The block's feed-forward part.
pub(super) enum Ffn {
    Dense(Mlp),
    Moe(Box<SparseMoe>),
}

/// Names (within a layer) of the dense MLP's gate, up and down projections.
pub(super) const MLP_NAMES: [&str; 3] = ["mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"];
const GATE_UP_NAME: &str = "mlp.gate_up_proj";

/// The four places a norm can sit; each family fills the ones it has.
#[derive(Default)]
struct Norms {
    attn_in: Option<Norm>,
    attn_out: Option<Norm>,
    ffn_in: Option<Norm>,
    ffn_out: Option<Norm>,
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

/// A layer's attention: grouped-query, or latent (DeepSeek).
enum AttnKind {
    Gqa(Attention),
    Latent(LatentAttention),
}

/// The arithmetic options of a layer's attention.
pub(super) fn attn_options(cfg: &ModelConfig, kind: LayerKind) -> AttnOptions<'static> {
    AttnOptions {
        scale: cfg
            .variant
            .attn_scale
            .unwrap_or(1.0 / (cfg.head_dim as f32).sqrt()),
        softcap: cfg.variant.attn_softcap,
        window: kind.window,
        sinks: None,
    }
}

pub(super) struct Block {
    norms: Norms,
    attn: AttnKind,
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

    /// One MoE expert under `p` (`model.layers.3.mlp.experts.5`), laid out as `n` says.
    pub(super) fn load_expert(
        src: &dyn WeightSource,
        p: &str,
        n: &super::moe::MoeNames,
    ) -> Result<Self> {
        let lin = |w: &str| src.linear(&format!("{p}.{w}"), n.expert_bias);
        let gate_up = if n.fused_gate_up {
            GateUp::Fused(lin(GATE_UP_NAME.trim_start_matches("mlp."))?)
        } else {
            GateUp::Split([lin(n.expert[0])?, lin(n.expert[1])?])
        };
        Ok(Self {
            gate_up,
            down: lin(n.expert[2])?,
            activation: n.activation,
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
        let mut v = self.gate_up.linears();
        v.push(&self.down);
        v
    }

    pub(super) fn linears_mut(&mut self) -> Vec<&mut Arc<dyn QuantLinear>> {
        let mut v = self.gate_up.linears_mut();
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
            GateUp::Fused(gu) => check("gate_up_proj", gu, (2 * inter, hidden))?,
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
            Activation::ClampedSwiglu { alpha, limit } => {
                ops::clamped_swiglu(&gate, &up, alpha, limit)
            }
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

    /// (name within the layer, has bias), in `linears` order.
    fn linear_specs(&self) -> Vec<(String, bool)> {
        match self {
            Self::Dense(m) => m
                .names()
                .into_iter()
                .map(|n| (n.to_string(), false))
                .collect(),
            Self::Moe(m) => m.linear_specs(),
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
        let h = cfg.hidden_size;
        let norm = |n: Option<&str>| -> Result<Option<Norm>> {
            n.map(|n| Norm::load(src, &format!("{p}.{n}"), h, v))
                .transpose()
        };
        let [ai, ao, fi, fo] = norm_names(v.norms);
        let norms = Norms {
            attn_in: norm(ai)?,
            attn_out: norm(ao)?,
            ffn_in: norm(fi)?,
            ffn_out: norm(fo)?,
        };
        let attn = match &cfg.mla {
            Some(m) => AttnKind::Latent(LatentAttention::load(src, cfg, m, &p)?),
            None => AttnKind::Gqa(Attention::load(src, cfg, &p)?),
        };
        let ffn = match &cfg.moe {
            Some(moe) if !cfg.layers[layer].dense_ffn => {
                Ffn::Moe(Box::new(SparseMoe::load(src, &p, moe)?))
            }
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
        let h = cfg.hidden_size;
        if let AttnKind::Gqa(a) = &self.attn {
            a.check_shapes(cfg)?;
        }
        match &self.ffn {
            Ffn::Dense(m) => m.check_shapes(h, cfg.intermediate_size, MLP_NAMES),
            Ffn::Moe(m) => m.check_shapes(h),
        }
    }

    /// Bytes of the norm weights.
    pub(super) fn norm_bytes(&self) -> usize {
        let n = &self.norms;
        let own: usize = [&n.attn_in, &n.attn_out, &n.ffn_in, &n.ffn_out]
            .iter()
            .filter_map(|w| w.as_ref())
            .map(|w| w.bytes())
            .sum();
        own + match &self.attn {
            AttnKind::Gqa(a) => a.norm_bytes(),
            AttnKind::Latent(a) => a.norm_bytes(),
        }
    }

    /// Attention's linears, then the FFN's.
    pub(super) fn linears(&self) -> Vec<&Arc<dyn QuantLinear>> {
        let mut v = self.attn_linears();
        v.extend(self.ffn.linears());
        v
    }

    pub(super) fn attn_linears(&self) -> Vec<&Arc<dyn QuantLinear>> {
        match &self.attn {
            AttnKind::Gqa(a) => a.linears(),
            AttnKind::Latent(a) => a.linears(),
        }
    }

    pub(super) fn linears_mut(&mut self) -> Vec<&mut Arc<dyn QuantLinear>> {
        let mut v = match &mut self.attn {
            AttnKind::Gqa(a) => a.linears_mut(),
            AttnKind::Latent(a) => a.linears_mut(),
        };
        v.extend(self.ffn.linears_mut());
        v
    }

    /// (name within the layer, has bias) of each linear, in `linears` order.
    pub(super) fn linear_specs(&self, cfg: &ModelConfig) -> Vec<(String, bool)> {
        let mut v: Vec<(String, bool)> = match &self.attn {
            AttnKind::Gqa(a) => a.linear_specs(cfg),
            AttnKind::Latent(a) => a
                .linear_names()
                .into_iter()
                .map(|n| (n.to_string(), false))
                .collect(),
        };
        v.extend(self.ffn.linear_specs());
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
        let norm = |x: &[f32], w: &Option<Norm>| match w {
            Some(w) => w.apply(x, eps),
            None => x.to_vec(),
        };
        let h = norm(x, &self.norms.attn_in);
        let h = match &self.attn {
            AttnKind::Gqa(a) => a.forward(h, batch, cfg, self.kind, layer)?,
            AttnKind::Latent(a) => {
                let m = cfg
                    .mla
                    .as_ref()
                    .expect("latent attention has an MLA config");
                a.forward(h, batch, cfg, m, attn_options(cfg, self.kind), layer)?
            }
        };
        let h = match &self.norms.attn_out {
            Some(w) => w.apply(&h, eps),
            None => h,
        };
        ops::add_scaled_in_place(x, &h, scale);
        let h = norm(x, &self.norms.ffn_in);
        let h = self.ffn.forward(h, &batch.groups)?;
        let h = match &self.norms.ffn_out {
            Some(w) => w.apply(&h, eps),
            None => h,
        };
        ops::add_scaled_in_place(x, &h, scale);
        Ok(())
    }
}
