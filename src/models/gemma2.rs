//! Gemma 2: the Llama decoder with embeddings scaled by √hidden, RMSNorm as `(1 + w)`,
//! norms before and after both attention and the MLP, GeGLU (tanh GELU), soft-capped
//! attention scores and logits, `query_pre_attn_scalar⁻½` as the attention scale and a
//! sliding window on every other layer (layer 0 slides), or as `layer_types` says.

use super::config::{
    sliding_layers_from_hf, Activation, GgufMeta, HfFields, ModelConfig, NormPlacement,
};
use anyhow::{bail, Result};

/// Gemma's shared differences from Llama; `hf` adds the (1 + w) offset the files store.
pub(super) fn gemma_block(cfg: &mut ModelConfig) {
    let v = &mut cfg.variant;
    v.norms = NormPlacement::Sandwich;
    v.activation = Activation::GeluTanh;
    v.embed_scale = (cfg.hidden_size as f32).sqrt();
}

/// `hidden_activation` must be a tanh GELU (what every Gemma checkpoint uses).
pub(super) fn check_activation(f: &HfFields) -> Result<()> {
    let act = f
        .get("hidden_activation")
        .or_else(|| f.get("hidden_act"))
        .and_then(|v| v.as_str())
        .unwrap_or("gelu_pytorch_tanh");
    if !matches!(act, "gelu_pytorch_tanh" | "gelu_tanh" | "gelu_new") {
        bail!(
            "config.json hidden_activation `{act}` is not supported for Gemma (gelu_pytorch_tanh)"
        );
    }
    Ok(())
}

/// A config value that transformers defaults to `default` when absent and turns off
/// when null.
pub(super) fn defaulted(f: &HfFields, key: &str, default: Option<f64>) -> Result<Option<f64>> {
    match f.0.get(key) {
        None => Ok(default),
        Some(_) => f.opt_f64(key),
    }
}

/// llama.cpp's attention scale for Gemma GGUFs, which carry no query_pre_attn_scalar:
/// 1/√head_dim, except the 27B models (`layers_27b`), which use hidden / heads.
pub(super) fn gguf_attn_scale(cfg: &ModelConfig, layers_27b: usize) -> f32 {
    let d = if cfg.num_hidden_layers == layers_27b {
        cfg.hidden_size / cfg.num_attention_heads
    } else {
        cfg.head_dim
    };
    1.0 / (d as f32).sqrt()
}

pub fn hf(f: &HfFields, cfg: &mut ModelConfig) -> Result<()> {
    check_activation(f)?;
    gemma_block(cfg);
    let v = &mut cfg.variant;
    v.norm_offset = 1.0;
    v.attn_scale = Some(
        defaulted(f, "query_pre_attn_scalar", Some(256.0))?
            .unwrap_or(256.0)
            .powf(-0.5) as f32,
    );
    v.attn_softcap = defaulted(f, "attn_logit_softcapping", Some(50.0))?.map(|c| c as f32);
    v.final_softcap = defaulted(f, "final_logit_softcapping", Some(30.0))?.map(|c| c as f32);
    let fields = f.0.clone();
    let mut with_window = fields.clone();
    if f.get("sliding_window").is_none() {
        with_window["sliding_window"] = 4096.into();
    }
    cfg.layers = sliding_layers_from_hf(
        &HfFields(&with_window),
        cfg.num_hidden_layers,
        Some(&|i| (i + 1) % 2 != 0),
    )?;
    Ok(())
}

pub fn gguf(g: &dyn GgufMeta, cfg: &mut ModelConfig) -> Result<()> {
    gemma_block(cfg);
    let window = g.num("attention.sliding_window").unwrap_or(4096.0) as usize;
    cfg.layers = super::config::gguf_swa_layers(g, cfg.num_hidden_layers, window, 2)?;
    let v = &mut cfg.variant;
    v.attn_softcap = g.num("attn_logit_softcapping").map(|c| c as f32);
    v.final_softcap = g.num("final_logit_softcapping").map(|c| c as f32);
    cfg.variant.attn_scale = Some(gguf_attn_scale(cfg, 46));
    Ok(())
}
