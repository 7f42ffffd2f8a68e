//! Qwen3: Qwen2 without the q/k/v biases (unless `attention_bias`), with RMSNorm over
//! each head of q and k before RoPE; `head_dim` is its own config field.

use super::config::{ModelConfig, QkNorm};

pub fn hf(cfg: &mut ModelConfig) {
    cfg.variant.qk_norm = QkNorm::PerHead;
}

pub fn gguf(cfg: &mut ModelConfig) {
    cfg.variant.qk_norm = QkNorm::PerHead;
}
