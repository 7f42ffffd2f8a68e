//! Qwen3-MoE: Qwen3's attention (per-head q/k norm) with a sparse MoE FFN
//! (`mlp.gate` router, experts `mlp.experts.{e}.gate_proj/up_proj/down_proj` of
//! `moe_intermediate_size`): softmax over the experts, the `num_experts_per_tok` best,
//! renormalised when `norm_topk_prob`. Layer i is sparse when it is not in
//! `mlp_only_layers` and `(i + 1) % decoder_sparse_step == 0`; the others keep a dense
//! MLP of `intermediate_size`. llama.cpp always renormalises (its `qwen3moe` graph), so a
//! GGUF follows it unless the file says `expert_weights_norm`.

use super::config::{GgufMeta, HfFields, ModelConfig, MoeConfig, QkNorm};
use super::moe::{MoeNames, Router};
use anyhow::{Context, Result};

pub fn hf(f: &HfFields, cfg: &mut ModelConfig) -> Result<()> {
    cfg.variant.qk_norm = QkNorm::PerHead;
    let fam = "qwen3_moe";
    cfg.moe = Some(MoeConfig {
        // Hub configs say num_experts; transformers 5 writes num_local_experts.
        num_experts: match f.opt_usize("num_experts")? {
            Some(n) => n,
            None => f.usize("num_local_experts", fam)?,
        },
        top_k: f.usize("num_experts_per_tok", fam)?,
        router: Router::SoftmaxTopK {
            renormalize: f.opt_bool("norm_topk_prob").unwrap_or(false),
        },
        expert_intermediate: f.usize("moe_intermediate_size", fam)?,
        shared_intermediate: None,
        routed_scale: 1.0,
        names: MoeNames::MLP,
    });
    let step = f.opt_usize("decoder_sparse_step")?.unwrap_or(1).max(1);
    let dense: Vec<usize> = match f.get("mlp_only_layers") {
        None => Vec::new(),
        Some(v) => v
            .as_array()
            .context("config.json field `mlp_only_layers` is not a list")?
            .iter()
            .map(|x| x.as_u64().map(|i| i as usize))
            .collect::<Option<_>>()
            .context("config.json `mlp_only_layers` holds a non-index")?,
    };
    for (i, l) in cfg.layers.iter_mut().enumerate() {
        l.dense_ffn = dense.contains(&i) || (i + 1) % step != 0;
    }
    Ok(())
}

pub fn gguf(g: &dyn GgufMeta, cfg: &mut ModelConfig) -> Result<()> {
    cfg.variant.qk_norm = QkNorm::PerHead;
    let n = |k: &str| g.count(k);
    cfg.moe = Some(MoeConfig {
        num_experts: n("expert_count")?,
        top_k: n("expert_used_count")?,
        router: Router::SoftmaxTopK {
            renormalize: g.num("expert_weights_norm").is_none_or(|v| v != 0.0),
        },
        expert_intermediate: n("expert_feed_forward_length")?,
        shared_intermediate: None,
        routed_scale: 1.0,
        names: MoeNames::MLP,
    });
    Ok(())
}
