//! Phi-3.5-MoE: Phi-3's LongRoPE and window with split q/k/v (biases on q, k, v and o
//! when `attention_bias`), LayerNorm with bias in place of RMSNorm, a biased head
//! (`lm_head_bias`) and Mixtral's expert layout (`block_sparse_moe.experts.{e}.w1/w3/w2`)
//! routed by sparsemixer (top-2 only). transformers is the reference; llama.cpp runs the
//! family through its Phi-3 graph (RMSNorm, softmax top-2), so its GGUF is not read.

use super::config::{HfFields, ModelConfig, MoeConfig};
use super::moe::{MoeNames, Router};
use anyhow::{bail, Result};

pub fn hf(f: &HfFields, cfg: &mut ModelConfig) -> Result<()> {
    let fam = "phimoe";
    let top_k = f.opt_usize("num_experts_per_tok")?.unwrap_or(2);
    if top_k != 2 {
        bail!("phimoe: sparsemixer routes to exactly 2 experts, the config asks num_experts_per_tok {top_k}");
    }
    let bias = f.opt_bool("attention_bias").unwrap_or(false);
    cfg.qkv_bias = bias;
    let v = &mut cfg.variant;
    v.o_bias = bias;
    v.layer_norm = true;
    v.head_bias = f.opt_bool("lm_head_bias").unwrap_or(false);
    cfg.moe = Some(MoeConfig {
        num_experts: f.usize("num_local_experts", fam)?,
        top_k,
        router: Router::SparseMixer {
            jitter_eps: f.opt_f64("router_jitter_noise")?.unwrap_or(0.01) as f32,
        },
        expert_intermediate: cfg.intermediate_size,
        shared_intermediate: None,
        routed_scale: 1.0,
        names: MoeNames::MIXTRAL,
    });
    Ok(())
}
