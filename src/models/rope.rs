//! Rotary position embeddings (rotate-half convention, as in transformers).

use super::config::{Llama3RopeScaling, ModelConfig};
use anyhow::Result;
use candle_core::{DType, Device, Tensor};

#[derive(Debug, Clone)]
pub struct RotaryEmbedding {
    cos: Tensor,
    sin: Tensor,
    /// The same tables as flat rows of head_dim/2, for the CPU kernels.
    cos_rows: Vec<f32>,
    sin_rows: Vec<f32>,
    half: usize,
}

fn llama3_scale(inv_freq: f64, s: &Llama3RopeScaling) -> f64 {
    let old_ctx = s.original_max_position_embeddings as f64;
    let low_freq_wavelen = old_ctx / s.low_freq_factor;
    let high_freq_wavelen = old_ctx / s.high_freq_factor;
    let wavelen = 2.0 * std::f64::consts::PI / inv_freq;
    if wavelen < high_freq_wavelen {
        inv_freq
    } else if wavelen > low_freq_wavelen {
        inv_freq / s.factor
    } else {
        let smooth =
            (old_ctx / wavelen - s.low_freq_factor) / (s.high_freq_factor - s.low_freq_factor);
        (1.0 - smooth) * inv_freq / s.factor + smooth * inv_freq
    }
}

impl RotaryEmbedding {
    pub fn new(cfg: &ModelConfig, device: &Device) -> Result<Self> {
        let half = cfg.head_dim / 2;
        let inv_freq: Vec<f32> = (0..half)
            .map(|i| {
                let f = 1.0 / cfg.rope_theta.powf(2.0 * i as f64 / cfg.head_dim as f64);
                let f = match &cfg.rope_scaling {
                    Some(s) => llama3_scale(f, s),
                    None => f,
                };
                let divisor = cfg.rope_freq_factors.as_ref().map_or(1.0, |d| d[i] as f64);
                (f / divisor) as f32
            })
            .collect();
        let max = cfg.max_position_embeddings;
        let inv_freq = Tensor::from_vec(inv_freq, (1, half), device)?;
        let pos = Tensor::arange(0u32, max as u32, device)?
            .to_dtype(DType::F32)?
            .reshape((max, 1))?;
        let freqs = pos.broadcast_mul(&inv_freq)?;
        let (cos, sin) = (freqs.cos()?, freqs.sin()?);
        Ok(Self {
            cos_rows: cos.flatten_all()?.to_vec1()?,
            sin_rows: sin.flatten_all()?.to_vec1()?,
            cos,
            sin,
            half,
        })
    }

    /// cos and sin of every frequency at position `pos`.
    pub fn row(&self, pos: usize) -> (&[f32], &[f32]) {
        let r = pos * self.half..(pos + 1) * self.half;
        (&self.cos_rows[r.clone()], &self.sin_rows[r])
    }

    /// `x`: (batch, heads, seq, head_dim), positions `offset..offset+seq`.
    pub fn apply(&self, x: &Tensor, offset: usize) -> Result<Tensor> {
        let seq = x.dim(2)?;
        let cos = self.cos.narrow(0, offset, seq)?;
        let sin = self.sin.narrow(0, offset, seq)?;
        Ok(candle_nn::rotary_emb::rope(&x.contiguous()?, &cos, &sin)?)
    }
}
