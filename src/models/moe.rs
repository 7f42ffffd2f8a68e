//! The sparse mixture-of-experts FFN every MoE family uses: a router scores the experts
//! per token, the chosen ones (a [`Router`] kind decides which and with what weights) run
//! as gated MLPs on the rows routed to them — one linear call per expert within each row
//! group — and their weighted outputs are added back, plus shared experts every token
//! runs (DeepSeek). Families differ only in [`MoeConfig`]: names, router kind, sizes.

use super::block::Mlp;
use super::config::MoeConfig;
use super::linear_rows::apply;
use super::ops;
use super::routing::route;
use super::WeightSource;
use crate::quant::QuantLinear;
use anyhow::{Context, Result};
use std::ops::Range;
use std::sync::Arc;

pub use super::routing::Router;

/// Hugging Face names and layout of an MoE block within a layer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MoeNames {
    /// `block_sparse_moe` (Mixtral) or `mlp` (Qwen3-MoE, DeepSeek, GPT-OSS).
    pub prefix: &'static str,
    /// The router linear: `gate`, or GPT-OSS's `router` (with a bias).
    pub router: &'static str,
    pub router_bias: bool,
    /// An expert's gate, up and down projections.
    pub expert: [&'static str; 3],
    /// Experts keep gate and up in one `gate_up_proj` (GPT-OSS), with biases.
    pub fused_gate_up: bool,
    pub expert_bias: bool,
    /// The experts' activation.
    pub activation: super::config::Activation,
}

impl MoeNames {
    pub const MIXTRAL: Self = Self {
        prefix: "block_sparse_moe",
        router: "gate",
        router_bias: false,
        expert: ["w1", "w3", "w2"],
        fused_gate_up: false,
        expert_bias: false,
        activation: super::config::Activation::Silu,
    };
    pub const MLP: Self = Self {
        prefix: "mlp",
        expert: ["gate_proj", "up_proj", "down_proj"],
        ..Self::MIXTRAL
    };

    /// Names of one expert's linears within its prefix.
    fn expert_linears(&self) -> Vec<&'static str> {
        if self.fused_gate_up {
            vec!["gate_up_proj", self.expert[2]]
        } else {
            self.expert.to_vec()
        }
    }
}

pub(super) struct SparseMoe {
    router: Arc<dyn QuantLinear>,
    experts: Vec<Mlp>,
    /// Experts every token runs, added unweighted (DeepSeek's `shared_experts`).
    shared: Option<Mlp>,
    /// DeepSeek V3's `e_score_correction_bias`.
    bias: Option<Vec<f32>>,
    cfg: MoeConfig,
}

impl SparseMoe {
    /// The MoE FFN of layer prefix `p` (`model.layers.3`).
    pub(super) fn load(src: &dyn WeightSource, p: &str, cfg: &MoeConfig) -> Result<Self> {
        let n = cfg.names;
        let router = src.linear(&format!("{p}.{}.{}", n.prefix, n.router), n.router_bias)?;
        let experts = (0..cfg.num_experts)
            .map(|e| Mlp::load_expert(src, &format!("{p}.{}.experts.{e}", n.prefix), &n))
            .collect::<Result<Vec<_>>>()?;
        let shared = cfg
            .shared_intermediate
            .map(|_| Mlp::load(src, &format!("{p}.{}.shared_experts", n.prefix), n.expert))
            .transpose()?;
        let bias = match cfg.router {
            Router::DeepSeekV3 { .. } => {
                let name = format!("{p}.{}.gate.e_score_correction_bias", n.prefix);
                let b: Vec<f32> = src.dense_raw(&name)?.flatten_all()?.to_vec1()?;
                anyhow::ensure!(
                    b.len() == cfg.num_experts,
                    "{name} has {} entries for {} experts",
                    b.len(),
                    cfg.num_experts
                );
                Some(b)
            }
            _ => None,
        };
        Ok(Self {
            router,
            experts,
            shared,
            bias,
            cfg: cfg.clone(),
        })
    }

    pub(super) fn check_shapes(&self, hidden: usize) -> Result<()> {
        let want = (self.experts.len(), hidden);
        anyhow::ensure!(
            self.router.shape() == want,
            "router {}.{} has shape {:?}, the config implies {want:?}",
            self.cfg.names.prefix,
            self.cfg.names.router,
            self.router.shape()
        );
        for (e, m) in self.experts.iter().enumerate() {
            m.check_shapes(hidden, self.cfg.expert_intermediate, self.cfg.names.expert)
                .with_context(|| format!("expert {e}"))?;
        }
        if let (Some(m), Some(inter)) = (&self.shared, self.cfg.shared_intermediate) {
            m.check_shapes(hidden, inter, self.cfg.names.expert)
                .context("shared experts")?;
        }
        Ok(())
    }

    /// The router, each expert's gate, up, down, then the shared experts'.
    pub(super) fn linears(&self) -> Vec<&Arc<dyn QuantLinear>> {
        let mut v = vec![&self.router];
        v.extend(
            self.experts
                .iter()
                .chain(&self.shared)
                .flat_map(|m| m.linears()),
        );
        v
    }

    pub(super) fn linears_mut(&mut self) -> Vec<&mut Arc<dyn QuantLinear>> {
        let mut v = vec![&mut self.router];
        v.extend(
            self.experts
                .iter_mut()
                .chain(self.shared.as_mut())
                .flat_map(|m| m.linears_mut()),
        );
        v
    }

    /// (name within the layer, has bias), in `linears` order.
    pub(super) fn linear_specs(&self) -> Vec<(String, bool)> {
        let n = self.cfg.names;
        let mut v = vec![(format!("{}.{}", n.prefix, n.router), n.router_bias)];
        for e in 0..self.experts.len() {
            v.extend(
                n.expert_linears()
                    .into_iter()
                    .map(|w| (format!("{}.experts.{e}.{w}", n.prefix), n.expert_bias)),
            );
        }
        if self.shared.is_some() {
            v.extend(
                n.expert
                    .iter()
                    .map(|w| (format!("{}.shared_experts.{w}", n.prefix), false)),
            );
        }
        v
    }

    /// Weight bytes one token reads: the router and `top_k` experts (all experts are
    /// the same size).
    pub(super) fn decode_bytes(&self) -> usize {
        let experts: usize = self
            .experts
            .iter()
            .flat_map(|m| m.linears())
            .map(|l| l.size_in_bytes())
            .sum();
        let shared: usize = self
            .shared
            .iter()
            .flat_map(|m| m.linears())
            .map(|l| l.size_in_bytes())
            .sum();
        self.router.size_in_bytes() + experts * self.cfg.top_k / self.experts.len().max(1) + shared
    }

    /// Token-major rows `x` (hidden wide) → the MoE output, same shape. Within each row
    /// group the rows routed to an expert are gathered into one linear call per expert
    /// and its weighted output is added back to their rows, so a sequence's arithmetic
    /// depends only on its row group, as for the dense MLP.
    pub(super) fn forward(&self, x: Vec<f32>, groups: &[Range<usize>]) -> Result<Vec<f32>> {
        let rows: usize = groups.iter().map(|g| g.len()).sum();
        let h = x.len() / rows.max(1);
        let n = self.experts.len();
        let logits = apply(self.router.as_ref(), x.clone(), groups)?;
        let mut out = vec![0f32; x.len()];
        let mut routed: Vec<Vec<(usize, f32)>> = vec![Vec::new(); n];
        for g in groups {
            routed.iter_mut().for_each(Vec::clear);
            for r in g.clone() {
                let c = &self.cfg;
                let l = &logits[r * n..(r + 1) * n];
                for (e, w) in route(l, c.router, c.top_k, self.bias.as_deref(), c.routed_scale) {
                    routed[e].push((r, w));
                }
            }
            for (expert, picked) in self.experts.iter().zip(&routed) {
                if picked.is_empty() {
                    continue;
                }
                let mut xe = Vec::with_capacity(picked.len() * h);
                for &(r, _) in picked {
                    xe.extend_from_slice(&x[r * h..(r + 1) * h]);
                }
                let ye = expert.forward(xe, std::slice::from_ref(&(0..picked.len())))?;
                for (&(r, w), y) in picked.iter().zip(ye.chunks_exact(h)) {
                    for (o, v) in out[r * h..(r + 1) * h].iter_mut().zip(y) {
                        *o += w * v;
                    }
                }
            }
        }
        if let Some(shared) = &self.shared {
            ops::add_in_place(&mut out, &shared.forward(x, groups)?);
        }
        Ok(out)
    }
}
