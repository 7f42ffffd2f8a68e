//! Qwen2: the Llama decoder with biases on the q/k/v projections and neox-style rotary
//! embeddings, which is the decoder's convention already. GGUF files of Qwen2 keep Q/K
//! rows unpermuted, so the loader passes them through as they are.

use super::config::ModelConfig;

pub fn hf(cfg: &mut ModelConfig) {
    cfg.qkv_bias = true;
}

pub fn gguf(cfg: &mut ModelConfig) {
    cfg.qkv_bias = true;
}
