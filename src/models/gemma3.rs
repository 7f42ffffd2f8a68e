//! Gemma 3 text: Gemma 2's block (√hidden embeddings, `(1 + w)` norms before and after
//! attention and the MLP, GeGLU) without attention soft-capping, plus a per-head
//! RMSNorm of q and k, and local/global layers: sliding layers (every layer but each
//! sixth by default, or as `layer_types` / `sliding_window_pattern` say) rotate with a
//! local base (`rope_local_base_freq`, 10 000), global ones with `rope_theta` and its
//! scaling.

use super::config::{sliding_layers_from_hf, GgufMeta, HfFields, LayerRope, ModelConfig, QkNorm};
use super::gemma2::{check_activation, defaulted, gemma_block, gguf_attn_scale};
use super::rope::RopeConfig;
use anyhow::Result;

pub fn hf(f: &HfFields, cfg: &mut ModelConfig) -> Result<()> {
    check_activation(f)?;
    gemma_block(cfg);
    let v = &mut cfg.variant;
    v.norm_offset = 1.0;
    v.qk_norm = QkNorm::PerHead;
    v.attn_scale = Some(
        defaulted(f, "query_pre_attn_scalar", Some(256.0))?
            .unwrap_or(256.0)
            .powf(-0.5) as f32,
    );
    v.attn_softcap = defaulted(f, "attn_logit_softcapping", None)?.map(|c| c as f32);
    v.final_softcap = defaulted(f, "final_logit_softcapping", None)?.map(|c| c as f32);
    let period = f.opt_usize("sliding_window_pattern")?.unwrap_or(6).max(1);
    let mut fields = f.0.clone();
    if f.get("sliding_window").is_none() {
        fields["sliding_window"] = 4096.into();
    }
    cfg.layers = sliding_layers_from_hf(
        &HfFields(&fields),
        cfg.num_hidden_layers,
        Some(&|i| (i + 1) % period != 0),
    )?;
    let (hd, max_pos) = (cfg.head_dim, cfg.max_position_embeddings);
    let nested = f
        .get("rope_parameters")
        .is_some_and(|p| p.get("sliding_attention").is_some());
    if nested {
        cfg.rope = RopeConfig::from_hf(f, Some("full_attention"), hd, max_pos)?;
        cfg.local_rope = Some(RopeConfig::from_hf(
            f,
            Some("sliding_attention"),
            hd,
            max_pos,
        )?);
    } else {
        if f.get("rope_theta").is_none() && f.get("rope_parameters").is_none() {
            cfg.rope.theta = 1_000_000.0;
        }
        let local = f.opt_f64("rope_local_base_freq")?.unwrap_or(10_000.0);
        cfg.local_rope = Some(RopeConfig::plain(local, hd));
    }
    mark_local(cfg);
    Ok(())
}

pub fn gguf(g: &dyn GgufMeta, cfg: &mut ModelConfig) -> Result<()> {
    gemma_block(cfg);
    cfg.variant.qk_norm = QkNorm::PerHead;
    cfg.variant.final_softcap = g.num("final_logit_softcapping").map(|c| c as f32);
    // llama.cpp: no sliding window key, no local layers.
    if let Some(w) = g.num("attention.sliding_window").filter(|&w| w > 0.0) {
        cfg.layers = super::config::gguf_swa_layers(g, cfg.num_hidden_layers, w as usize, 6)?;
        let local = g.num("rope.freq_base_swa").unwrap_or(10_000.0);
        cfg.local_rope = Some(RopeConfig::plain(local, cfg.head_dim));
        mark_local(cfg);
    }
    cfg.variant.attn_scale = Some(gguf_attn_scale(cfg, 62));
    Ok(())
}

/// Sliding layers use the local rotary embedding.
fn mark_local(cfg: &mut ModelConfig) {
    for l in cfg.layers.iter_mut().filter(|l| l.window.is_some()) {
        l.rope = LayerRope::Local;
    }
}
