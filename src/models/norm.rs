//! A block's or the model's norm: RMSNorm (most families), LayerNorm with bias
//! (Phi-3.5-MoE) or RMSNorm plus bias (llama.cpp's reading of a Phi-3.5-MoE GGUF), with
//! the family's weight offset (Gemma's `1 + w`) applied at load.

use super::block::norm_weight;
use super::config::Variant;
use super::{ops, WeightSource};
use anyhow::Result;

pub(super) struct Norm {
    weight: Vec<f32>,
    bias: Option<Vec<f32>>,
    /// LayerNorm (centred) rather than RMSNorm.
    layer: bool,
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
        let bias = if v.layer_norm || v.norm_bias {
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
        Ok(Self {
            weight,
            bias,
            layer: v.layer_norm,
        })
    }

    pub(super) fn apply(&self, x: &[f32], eps: f32) -> Vec<f32> {
        match (&self.bias, self.layer) {
            (Some(b), true) => ops::layer_norm(x, &self.weight, b, eps),
            (None, _) => ops::rms_norm(x, &self.weight, eps),
            (Some(b), false) => {
                let mut y = ops::rms_norm(x, &self.weight, eps);
                for row in y.chunks_exact_mut(b.len()) {
                    ops::add_in_place(row, b);
                }
                y
            }
        }
    }

    pub(super) fn bytes(&self) -> usize {
        4 * (self.weight.len() + self.bias.as_ref().map_or(0, Vec::len))
    }
}
