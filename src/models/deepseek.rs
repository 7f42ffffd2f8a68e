//! DeepSeek V2 and V3 / R1: the Llama block with multi-head latent attention
//! ([`MlaConfig`]; `q_lora_rank` null means one `q_proj`) and a sparse MoE with shared
//! experts after the first `first_k_dense_replace` dense layers. V2 routes with softmax
//! scores (`topk_method` greedy or group_limited_greedy over `n_group` / `topk_group`),
//! V3 with sigmoid scores, `e_score_correction_bias` and groups ranked by their two best
//! scores (`noaux_tc`); both scale the routed weights by `routed_scaling_factor`. With
//! YaRN, the softmax scale grows by mscale(factor, mscale_all_dim)² as transformers does.

use super::config::{GgufMeta, HfFields, MlaConfig, ModelConfig, MoeConfig};
use super::moe::{MoeNames, Router};
use super::rope::RopeScaling;
use anyhow::{bail, Result};

/// The softmax scale: 1/√(q/k head), times mscale(factor, mscale_all_dim)² under YaRN.
fn mla_scale(cfg: &ModelConfig) -> f32 {
    let mut scale = 1.0 / (cfg.head_dim as f64).sqrt();
    if let RopeScaling::Yarn {
        factor,
        mscale_all_dim: Some(all),
        ..
    } = cfg.rope.scaling
    {
        if all != 0.0 && factor > 1.0 {
            let ms = 0.1 * all * factor.ln() + 1.0;
            scale *= ms * ms;
        }
    }
    scale as f32
}

pub fn hf(f: &HfFields, cfg: &mut ModelConfig, v3: bool) -> Result<()> {
    let fam = if v3 { "deepseek_v3" } else { "deepseek_v2" };
    let m = MlaConfig {
        q_lora_rank: f.opt_usize("q_lora_rank")?,
        kv_lora_rank: f.usize("kv_lora_rank", fam)?,
        qk_nope_head_dim: f.usize("qk_nope_head_dim", fam)?,
        qk_rope_head_dim: f.usize("qk_rope_head_dim", fam)?,
        v_head_dim: f.usize("v_head_dim", fam)?,
        // V2's checkpoints always pair their rope dimensions; V3 says so.
        rope_interleave: !v3 || f.opt_bool("rope_interleave").unwrap_or(true),
    };
    cfg.head_dim = m.qk_nope_head_dim + m.qk_rope_head_dim;
    cfg.num_key_value_heads = cfg.num_attention_heads;
    cfg.rope.rotary_dim = m.qk_rope_head_dim;
    cfg.variant.attn_scale = Some(mla_scale(cfg));
    cfg.mla = Some(m);

    let experts = match f.opt_usize("n_routed_experts")? {
        Some(n) => n,
        None => match f.opt_usize("num_local_experts")? {
            Some(n) => n,
            None => f.usize("num_experts", fam)?,
        },
    };
    let groups = f.opt_usize("n_group")?.unwrap_or(1).max(1);
    let topk_groups = f.opt_usize("topk_group")?.unwrap_or(groups);
    if experts % groups != 0 {
        bail!("{fam}: {experts} experts do not split into n_group {groups} groups");
    }
    let router = if v3 {
        Router::DeepSeekV3 {
            groups,
            topk_groups,
            renormalize: f.opt_bool("norm_topk_prob").unwrap_or(true),
        }
    } else {
        let method = f
            .get("topk_method")
            .and_then(|v| v.as_str())
            .unwrap_or("greedy");
        let group_limited = match method {
            "greedy" => false,
            "group_limited_greedy" => true,
            other => bail!(
                "deepseek_v2 topk_method `{other}` is not supported (greedy, group_limited_greedy)"
            ),
        };
        Router::DeepSeekV2 {
            groups,
            topk_groups,
            group_limited,
        }
    };
    let moe_inter = f.usize("moe_intermediate_size", fam)?;
    let shared = f.opt_usize("n_shared_experts")?.unwrap_or(0);
    cfg.moe = Some(MoeConfig {
        num_experts: experts,
        top_k: f.usize("num_experts_per_tok", fam)?,
        router,
        expert_intermediate: moe_inter,
        shared_intermediate: (shared > 0).then_some(moe_inter * shared),
        routed_scale: f.opt_f64("routed_scaling_factor")?.unwrap_or(1.0) as f32,
        names: MoeNames::MLP,
    });
    let dense = f.opt_usize("first_k_dense_replace")?.unwrap_or(0);
    let every = f.opt_usize("moe_layer_freq")?.unwrap_or(1).max(1);
    for (i, l) in cfg.layers.iter_mut().enumerate() {
        l.dense_ffn = i < dense || i % every != 0;
    }
    Ok(())
}

/// From llama.cpp's `deepseek2` metadata (both versions): sigmoid gating
/// (`expert_gating_func` 2) is V3's routing with `exp_probs_b`, softmax V2's. V2 with
/// expert groups ranks groups by their best score, as transformers does (llama.cpp
/// ranks by the sum of the two best; docs/FAMILIES.md).
pub fn gguf(g: &dyn GgufMeta, cfg: &mut ModelConfig) -> Result<()> {
    let n = |k: &str| g.count(k);
    let rope = n("rope.dimension_count")?;
    let qk = n("attention.key_length_mla")?;
    let m = MlaConfig {
        q_lora_rank: g.num("attention.q_lora_rank").map(|v| v as usize),
        kv_lora_rank: n("attention.kv_lora_rank")?,
        qk_nope_head_dim: qk - rope,
        qk_rope_head_dim: rope,
        v_head_dim: n("attention.value_length_mla")?,
        rope_interleave: true,
    };
    cfg.head_dim = qk;
    cfg.num_key_value_heads = cfg.num_attention_heads;
    cfg.rope.rotary_dim = rope;
    // The converter stores 0.1 · mscale_all_dim; real configs set mscale to the same.
    if let RopeScaling::Yarn {
        mscale,
        mscale_all_dim,
        ..
    } = &mut cfg.rope.scaling
    {
        let all = g.num("rope.scaling.yarn_log_multiplier").map(|v| v / 0.1);
        *mscale = all;
        *mscale_all_dim = all;
    }
    cfg.variant.attn_scale = Some(mla_scale(cfg));
    cfg.mla = Some(m);
    let groups = g.num("expert_group_count").map_or(1, |v| v as usize).max(1);
    let topk_groups = g
        .num("expert_group_used_count")
        .map_or(groups, |v| v as usize);
    let renormalize = g.num("expert_weights_norm").is_some_and(|v| v != 0.0);
    let router = match g.num("expert_gating_func").map(|v| v as u32) {
        Some(2) => Router::DeepSeekV3 {
            groups,
            topk_groups,
            renormalize,
        },
        None | Some(1) => Router::DeepSeekV2 {
            groups,
            topk_groups,
            group_limited: groups > 1,
        },
        Some(other) => bail!(
            "GGUF deepseek2 expert_gating_func {other} is not supported (1 softmax, 2 sigmoid)"
        ),
    };
    let inter = n("expert_feed_forward_length")?;
    let shared = g.num("expert_shared_count").map_or(0, |v| v as usize);
    cfg.moe = Some(MoeConfig {
        num_experts: n("expert_count")?,
        top_k: n("expert_used_count")?,
        router,
        expert_intermediate: inter,
        shared_intermediate: (shared > 0).then_some(inter * shared),
        routed_scale: g.num("expert_weights_scale").unwrap_or(1.0) as f32,
        names: MoeNames::MLP,
    });
    let dense = g.num("leading_dense_block_count").map_or(0, |v| v as usize);
    for (i, l) in cfg.layers.iter_mut().enumerate() {
        l.dense_ffn = i < dense;
    }
    Ok(())
}
