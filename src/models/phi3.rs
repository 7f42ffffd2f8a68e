//! Phi-3 / Phi-3.5-mini / Phi-4-mini: the Llama decoder with q, k and v in one
//! `qkv_proj` and gate and up in one `gate_up_proj` (gate first), LongRoPE (`longrope`,
//! formerly `su`: short factors while a sequence fits
//! `original_max_position_embeddings`, long ones beyond, cos/sin scaled by the attention
//! factor), `partial_rotary_factor` (Phi-4-mini rotates ¾ of each head) and a sliding
//! window on every layer. The rope and window are read by the shared config code; GGUF
//! files carry the factors as `rope_factors_long/short` tensors. llama.cpp disables
//! Phi-3's sliding window; smelt applies it as transformers does.

use super::config::{GgufMeta, HfFields, LayerKind, ModelConfig};
use super::rope::RopeScaling;
use anyhow::{Context, Result};

pub fn hf(_f: &HfFields, cfg: &mut ModelConfig) -> Result<()> {
    fused(cfg);
    Ok(())
}

pub fn gguf(g: &dyn GgufMeta, cfg: &mut ModelConfig) -> Result<()> {
    fused(cfg);
    if let Some(w) = g.num("attention.sliding_window").filter(|&w| w > 0.0) {
        cfg.layers = vec![
            LayerKind {
                window: Some(w as usize),
                ..LayerKind::GLOBAL
            };
            cfg.num_hidden_layers
        ];
    }
    longrope_from_gguf(g, cfg)
}

/// LongRoPE from llama.cpp's `rope_factors_long/short` tensors and scaling keys.
pub(super) fn longrope_from_gguf(g: &dyn GgufMeta, cfg: &mut ModelConfig) -> Result<()> {
    if let Some(long) = g.tensor("rope_factors_long.weight")? {
        let short = g
            .tensor("rope_factors_short.weight")?
            .context("GGUF has rope_factors_long.weight but no rope_factors_short.weight")?;
        let original = g
            .num("rope.scaling.original_context_length")
            .context("GGUF phi3 with rope factors has no rope.scaling.original_context_length")?
            as usize;
        cfg.rope.scaling = RopeScaling::LongRope {
            short_factor: short,
            long_factor: long,
            original_max_position_embeddings: original,
            factor: cfg.max_position_embeddings as f64 / original as f64,
            attention_factor: g.num("rope.scaling.attn_factor"),
            mscales: None,
        };
    }
    Ok(())
}

fn fused(cfg: &mut ModelConfig) {
    cfg.variant.fused_qkv = true;
    cfg.variant.fused_gate_up = true;
}
