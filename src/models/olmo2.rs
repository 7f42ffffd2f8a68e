//! OLMo 2: norms after attention and after the MLP only (none before), and RMSNorm of
//! q and k over the whole projection (all heads together) before RoPE.

use super::config::{ModelConfig, NormPlacement, QkNorm};

pub fn hf(cfg: &mut ModelConfig) {
    set(cfg)
}

pub fn gguf(cfg: &mut ModelConfig) {
    set(cfg)
}

fn set(cfg: &mut ModelConfig) {
    cfg.variant.norms = NormPlacement::Post;
    cfg.variant.qk_norm = QkNorm::Whole;
}
