//! GPT-OSS: the Llama block with biases on q, k, v and o, a learned sink logit per head
//! in every attention softmax, sliding and full attention alternating (`layer_types`,
//! windows of `sliding_window`), YaRN, and an MoE whose router has a bias (`mlp.router`;
//! the `num_experts_per_tok` largest logits, softmaxed among themselves) and whose
//! experts are stored stacked (`mlp.experts.gate_up_proj`, (experts, in, out), gate and
//! up columns alternating; `down_proj`; biases) with a clamped SwiGLU.

use super::config::{Activation, GgufMeta, HfFields, ModelConfig, MoeConfig};
use super::moe::{MoeNames, Router};
use super::rope::RopeScaling;
use anyhow::Result;

pub fn hf(f: &HfFields, cfg: &mut ModelConfig) -> Result<()> {
    let fam = "gpt_oss";
    let bias = f.opt_bool("attention_bias").unwrap_or(true);
    cfg.qkv_bias = bias;
    let v = &mut cfg.variant;
    v.o_bias = bias;
    v.attn_sinks = true;
    cfg.moe = Some(MoeConfig {
        num_experts: f.usize("num_local_experts", fam)?,
        top_k: f.opt_usize("num_experts_per_tok")?.unwrap_or(4),
        // Softmax over the chosen logits is the softmax over all, renormalised.
        router: Router::SoftmaxTopK { renormalize: true },
        expert_intermediate: cfg.intermediate_size,
        shared_intermediate: None,
        routed_scale: 1.0,
        names: MoeNames {
            router: "router",
            router_bias: true,
            fused_gate_up: true,
            expert_bias: true,
            activation: Activation::ClampedSwiglu {
                alpha: f.opt_f64("swiglu_alpha")?.unwrap_or(1.702) as f32,
                limit: f.opt_f64("swiglu_limit")?.unwrap_or(7.0) as f32,
            },
            ..MoeNames::MLP
        },
    });
    Ok(())
}

/// From llama.cpp's `gpt-oss` GGUF: experts split into gate and up (`ffn_gate_exps`,
/// `ffn_up_exps`, MXFP4 as released) with biases, `attn_sinks`, sliding on even layers.
/// YaRN, when the file has it, keeps the model's untruncated correction range (real
/// configs say `truncate: false`; ggml truncates, docs/FAMILIES.md).
pub fn gguf(g: &dyn GgufMeta, cfg: &mut ModelConfig) -> Result<()> {
    let n = |k: &str| g.count(k);
    cfg.qkv_bias = true;
    let v = &mut cfg.variant;
    v.o_bias = true;
    v.attn_sinks = true;
    if let RopeScaling::Yarn { truncate, .. } = &mut cfg.rope.scaling {
        *truncate = false;
    }
    let window = n("attention.sliding_window")?;
    cfg.layers = super::config::gguf_swa_layers(g, cfg.num_hidden_layers, window, 2)?;
    cfg.moe = Some(MoeConfig {
        num_experts: n("expert_count")?,
        top_k: n("expert_used_count")?,
        router: Router::SoftmaxTopK { renormalize: true },
        expert_intermediate: n("expert_feed_forward_length")?,
        shared_intermediate: None,
        routed_scale: 1.0,
        names: MoeNames {
            router: "router",
            router_bias: true,
            fused_gate_up: false,
            expert_bias: true,
            activation: Activation::ClampedSwiglu {
                alpha: 1.702,
                limit: g.num("swiglu_limit").unwrap_or(7.0) as f32,
            },
            ..MoeNames::MLP
        },
    });
    Ok(())
}
