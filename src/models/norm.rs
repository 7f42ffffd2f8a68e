//! A block's or the model's norm: RMSNorm (every family but one) or LayerNorm with bias
//! (Phi-3.5-MoE), with the family's weight offset (Gemma's `1 + w`) applied at load.

use super::block::norm_weight;
use super::config::Variant;
use super::{ops, WeightSource};
use anyhow::Result;

pub(super) struct Norm {
    weight: Vec<f32>,
    /// LayerNorm's bias; None for RMSNorm.
    layer_bias: Option<Vec<f32>>,
}

impl Norm {
    /// Norm `name` (without `.weight`) of `len` elements, of the family's kind.
    pub(super) fn load(
        src: &dyn WeightSource,
        name: &str,
        len: usize,
        v: &Variant,
    ) -> Result<Self> {
        let weight = norm_weight(src, name, len, v.norm_offset)?;
        let layer_bias = if v.layer_norm {
            let b: Vec<f32> = src
                .dense_raw(&format!("{name}.bias"))?
                .flatten_all()?
                .to_vec1()?;
            anyhow::ensure!(
                b.len() == len,
                "{name}.bias has {} elements, expected {len}",
                b.len()
            );
            Some(b)
        } else {
            None
        };
        Ok(Self { weight, layer_bias })
    }

    pub(super) fn apply(&self, x: &[f32], eps: f32) -> Vec<f32> {
        match &self.layer_bias {
            None => ops::rms_norm(x, &self.weight, eps),
            Some(b) => ops::layer_norm(x, &self.weight, b, eps),
        }
    }

    pub(super) fn bytes(&self) -> usize {
        4 * (self.weight.len() + self.layer_bias.as_ref().map_or(0, Vec::len))
    }
}
