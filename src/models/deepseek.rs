//! DeepSeek V2 and V3 / R1: the Llama block with multi-head latent attention
//! ([`MlaConfig`]; `q_lora_rank` null means one `q_proj`) and a sparse MoE with shared
//! experts after the first `first_k_dense_replace` dense layers. V2 routes with softmax
//! scores (`topk_method` greedy or group_limited_greedy over `n_group` / `topk_group`),
//! V3 with sigmoid scores, `e_score_correction_bias` and groups ranked by their two best
//! scores (`noaux_tc`); both scale the routed weights by `routed_scaling_factor`. With
//! YaRN, the softmax scale grows by mscale(factor, mscale_all_dim)² as transformers does.

use super::config::{HfFields, MlaConfig, ModelConfig, MoeConfig};
use super::moe::{MoeNames, Router};
use super::rope::RopeScaling;
use anyhow::{bail, Result};

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
    cfg.variant.attn_scale = Some(scale as f32);
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
