//! Granite 3: the Llama decoder with four multipliers — embeddings, each residual
//! branch, the attention scale (in place of 1/√head_dim) and the logits (divided by
//! `logits_scaling`).

use super::config::{GgufMeta, HfFields, ModelConfig};
use anyhow::Result;

pub fn hf(f: &HfFields, cfg: &mut ModelConfig) -> Result<()> {
    let v = &mut cfg.variant;
    v.embed_scale = f.opt_f64("embedding_multiplier")?.unwrap_or(1.0) as f32;
    v.residual_scale = f.opt_f64("residual_multiplier")?.unwrap_or(1.0) as f32;
    v.attn_scale = f.opt_f64("attention_multiplier")?.map(|m| m as f32);
    v.logit_scale = 1.0 / f.opt_f64("logits_scaling")?.unwrap_or(1.0) as f32;
    Ok(())
}

pub fn gguf(g: &dyn GgufMeta, cfg: &mut ModelConfig) {
    let v = &mut cfg.variant;
    v.embed_scale = g.num("embedding_scale").unwrap_or(1.0) as f32;
    v.residual_scale = g.num("residual_scale").unwrap_or(1.0) as f32;
    v.attn_scale = g.num("attention.scale").map(|m| m as f32);
    v.logit_scale = 1.0 / g.num("logit_scale").unwrap_or(1.0) as f32;
}
