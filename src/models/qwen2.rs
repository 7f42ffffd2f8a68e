//! Qwen2: the Llama decoder with biases on the q/k/v projections (set by the config) and
//! neox-style rotary embeddings, which is the decoder's convention already. GGUF files of
//! Qwen2 keep Q/K rows unpermuted, so the loader passes them through as they are.

use super::config::{Architecture, ModelConfig};
use super::llama::Llama;
use super::WeightSource;
use anyhow::Result;

pub fn load(
    cfg: ModelConfig,
    src: std::sync::Arc<dyn WeightSource>,
    progress: &dyn Fn(usize, usize),
) -> Result<Llama> {
    debug_assert_eq!(cfg.architecture, Architecture::Qwen2);
    let cfg = ModelConfig {
        qkv_bias: true,
        ..cfg
    };
    Llama::load(cfg, src, progress)
}
