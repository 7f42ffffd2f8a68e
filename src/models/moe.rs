//! The sparse mixture-of-experts FFN every MoE family uses: a router scores the experts
//! per token, the chosen ones (a [`Router`] kind decides which and with what weights) run
//! as gated MLPs on the rows routed to them — one linear call per expert within each row
//! group — and their weighted outputs are added back, plus shared experts every token
//! runs (DeepSeek). Families differ only in [`MoeConfig`]: names, router kind, sizes.

use super::block::Mlp;
use super::config::MoeConfig;
use super::linear_rows::apply;
use super::WeightSource;
use crate::quant::QuantLinear;
use anyhow::{Context, Result};
use std::ops::Range;
use std::sync::Arc;

/// How a router turns its logits into (expert, weight) pairs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Router {
    /// Softmax over all experts, the `top_k` most probable, renormalised to sum to one
    /// when `renormalize` (Mixtral always; Qwen3-MoE's `norm_topk_prob`).
    SoftmaxTopK { renormalize: bool },
}

/// Hugging Face names of an MoE block within a layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MoeNames {
    /// `block_sparse_moe` (Mixtral) or `mlp` (Qwen3-MoE, DeepSeek).
    pub prefix: &'static str,
    /// An expert's gate, up and down projections.
    pub expert: [&'static str; 3],
}

impl MoeNames {
    pub const MIXTRAL: Self = Self {
        prefix: "block_sparse_moe",
        expert: ["w1", "w3", "w2"],
    };
    pub const MLP: Self = Self {
        prefix: "mlp",
        expert: ["gate_proj", "up_proj", "down_proj"],
    };
}

pub(super) struct SparseMoe {
    router: Arc<dyn QuantLinear>,
    experts: Vec<Mlp>,
    cfg: MoeConfig,
}

impl SparseMoe {
    /// The MoE FFN of layer prefix `p` (`model.layers.3`).
    pub(super) fn load(src: &dyn WeightSource, p: &str, cfg: &MoeConfig) -> Result<Self> {
        let n = cfg.names;
        let router = src.linear(&format!("{p}.{}.gate", n.prefix), false)?;
        let experts = (0..cfg.num_experts)
            .map(|e| Mlp::load(src, &format!("{p}.{}.experts.{e}", n.prefix), n.expert))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            router,
            experts,
            cfg: cfg.clone(),
        })
    }

    pub(super) fn check_shapes(&self, hidden: usize) -> Result<()> {
        let want = (self.experts.len(), hidden);
        anyhow::ensure!(
            self.router.shape() == want,
            "router {}.gate has shape {:?}, the config implies {want:?}",
            self.cfg.names.prefix,
            self.router.shape()
        );
        for (e, m) in self.experts.iter().enumerate() {
            m.check_shapes(hidden, self.cfg.expert_intermediate, self.cfg.names.expert)
                .with_context(|| format!("expert {e}"))?;
        }
        Ok(())
    }

    /// The router, then each expert's w1, w3, w2.
    pub(super) fn linears(&self) -> Vec<&Arc<dyn QuantLinear>> {
        let mut v = vec![&self.router];
        v.extend(self.experts.iter().flat_map(|m| m.linears()));
        v
    }

    pub(super) fn linears_mut(&mut self) -> Vec<&mut Arc<dyn QuantLinear>> {
        let mut v = vec![&mut self.router];
        v.extend(self.experts.iter_mut().flat_map(|m| m.linears_mut()));
        v
    }

    /// Names within the layer, in `linears` order.
    pub(super) fn linear_names(&self) -> Vec<String> {
        let n = self.cfg.names;
        let mut v = vec![format!("{}.gate", n.prefix)];
        for e in 0..self.experts.len() {
            v.extend(
                n.expert
                    .iter()
                    .map(|w| format!("{}.experts.{e}.{w}", n.prefix)),
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
        self.router.size_in_bytes() + experts * self.cfg.top_k / self.experts.len().max(1)
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
                for (e, w) in route(&logits[r * n..(r + 1) * n], &self.cfg) {
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
        Ok(out)
    }
}

/// The routing of one token: (expert, weight) pairs, most probable first.
pub fn route(logits: &[f32], cfg: &MoeConfig) -> Vec<(usize, f32)> {
    match cfg.router {
        Router::SoftmaxTopK { renormalize } => softmax_top_k(logits, cfg.top_k, renormalize),
    }
}

/// Softmax over the router logits, the `top_k` most probable experts (ties to the lower
/// index), their probabilities renormalised to sum to one when asked.
pub fn softmax_top_k(logits: &[f32], top_k: usize, renormalize: bool) -> Vec<(usize, f32)> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exp: Vec<f32> = logits.iter().map(|&l| (l - max).exp()).collect();
    let total: f32 = exp.iter().sum();
    let mut order: Vec<usize> = (0..logits.len()).collect();
    // A stable sort keeps equal probabilities in expert order.
    order.sort_by(|&a, &b| exp[b].total_cmp(&exp[a]));
    order.truncate(top_k);
    // Dividing by the kept mass renormalises; the softmax's own denominator cancels.
    let kept: f32 = if renormalize {
        order.iter().map(|&e| exp[e] / total).sum()
    } else {
        1.0
    };
    order
        .into_iter()
        .map(|e| (e, exp[e] / total / kept))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::softmax_top_k;

    fn route(logits: &[f32], k: usize) -> Vec<(usize, f32)> {
        softmax_top_k(logits, k, true)
    }

    #[test]
    fn routes_to_top_k_renormalised() {
        let r = softmax_top_k(&[0.0, 0.0], 1, false);
        assert!((r[0].1 - 0.5).abs() < 1e-6);
        let r = route(&[0.0, 2.0, 1.0, 2.0], 2);
        assert_eq!(r.iter().map(|p| p.0).collect::<Vec<_>>(), vec![1, 3]);
        assert!((r[0].1 - 0.5).abs() < 1e-6 && (r[1].1 - 0.5).abs() < 1e-6);
        let r = route(&[1.0, 0.0, 3.0], 2);
        let (a, b) = (3f32.exp(), 1f32.exp());
        assert_eq!(r[0].0, 2);
        assert!((r[0].1 - a / (a + b)).abs() < 1e-6);
        assert!((r.iter().map(|p| p.1).sum::<f32>() - 1.0).abs() < 1e-6);
        assert_eq!(route(&[5.0, 1.0], 1), vec![(0, 1.0)]);
    }
}
