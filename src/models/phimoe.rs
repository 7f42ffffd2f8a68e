//! Phi-3.5-MoE: Phi-3's LongRoPE and window with split q/k/v (biases on q, k, v and o
//! when `attention_bias`), LayerNorm with bias in place of RMSNorm, a biased head
//! (`lm_head_bias`) and Mixtral's expert layout (`block_sparse_moe.experts.{e}.w1/w3/w2`)
//! routed by sparsemixer (top-2 only). transformers is the reference for checkpoints.
//! A GGUF is llama.cpp's artifact and runs as llama.cpp runs it — RMSNorm plus bias,
//! softmax top-2 renormalised, no window — because it carries neither the LayerNorm
//! centring nor sparsemixer's margin, and users of a GGUF expect llama.cpp's outputs.

use super::config::{GgufMeta, HfFields, ModelConfig, MoeConfig};
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

pub fn gguf(g: &dyn GgufMeta, cfg: &mut ModelConfig) -> Result<()> {
    super::phi3::longrope_from_gguf(g, cfg)?;
    let v = &mut cfg.variant;
    v.norm_bias = true;
    v.o_bias = g.has_tensor("blk.0.attn_output.bias");
    v.head_bias = g.has_tensor("output.bias");
    cfg.moe = Some(MoeConfig {
        num_experts: g.count("expert_count")?,
        top_k: g.count("expert_used_count")?,
        router: Router::SoftmaxTopK { renormalize: true },
        expert_intermediate: cfg.intermediate_size,
        shared_intermediate: None,
        routed_scale: 1.0,
        names: MoeNames::MIXTRAL,
    });
    Ok(())
}
