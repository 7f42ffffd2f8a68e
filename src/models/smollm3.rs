//! SmolLM3: the Llama decoder with NoPE layers — `no_rope_layers[i]` is 1 where layer
//! i applies RoPE and 0 where it uses no positional embedding (by default every
//! `no_rope_layer_interval`-th layer, 4). llama.cpp hard-codes that period of 4, so a
//! GGUF file gets it.

use super::config::{HfFields, LayerRope, ModelConfig};
use anyhow::Result;

pub fn hf(f: &HfFields, cfg: &mut ModelConfig) -> Result<()> {
    let n = cfg.num_hidden_layers;
    let uses_rope: Vec<bool> = match f.per_layer("no_rope_layers", n)? {
        Some(list) => list.iter().map(|x| x.as_u64().unwrap_or(1) != 0).collect(),
        None => {
            let every = f.opt_usize("no_rope_layer_interval")?.unwrap_or(4).max(1);
            (0..n).map(|i| (i + 1) % every != 0).collect()
        }
    };
    set(cfg, &uses_rope);
    Ok(())
}

pub fn gguf(cfg: &mut ModelConfig) {
    let uses_rope: Vec<bool> = (0..cfg.num_hidden_layers)
        .map(|i| (i + 1) % 4 != 0)
        .collect();
    set(cfg, &uses_rope);
}

fn set(cfg: &mut ModelConfig, uses_rope: &[bool]) {
    for (layer, &rope) in cfg.layers.iter_mut().zip(uses_rope) {
        if !rope {
            layer.rope = LayerRope::None;
        }
    }
}
