//! Hugging Face weight names → GGUF tensor names, and undoing llama.cpp's Q/K row
//! permutation: what the GGUF loader (and the imatrix, which keys by GGUF names) need to
//! find a weight in a GGUF file.

use crate::models::config::NormPlacement;
use anyhow::{bail, Context, Result};

/// Maps a Hugging Face weight name (without `.weight`) to the GGUF one, for a model
/// whose block norms sit as `norms` says.
pub(crate) fn gguf_name(hf: &str, norms: NormPlacement) -> Result<String> {
    Ok(match hf {
        "model.embed_tokens" => "token_embd".into(),
        "model.norm" => "output_norm".into(),
        "lm_head" => "output".into(),
        _ => {
            let rest = hf
                .strip_prefix("model.layers.")
                .with_context(|| format!("no GGUF name for {hf}"))?;
            let (layer, module) = rest
                .split_once('.')
                .with_context(|| format!("no GGUF name for {hf}"))?;
            let m = match module {
                "self_attn.q_proj" => "attn_q",
                "self_attn.k_proj" => "attn_k",
                "self_attn.v_proj" => "attn_v",
                "self_attn.qkv_proj" => "attn_qkv",
                "self_attn.o_proj" => "attn_output",
                "self_attn.q_norm" => "attn_q_norm",
                "self_attn.q_a_proj" => "attn_q_a",
                "self_attn.q_a_layernorm" => "attn_q_a_norm",
                "self_attn.q_b_proj" => "attn_q_b",
                "self_attn.kv_a_proj_with_mqa" => "attn_kv_a_mqa",
                "self_attn.kv_a_layernorm" => "attn_kv_a_norm",
                "self_attn.kv_b_proj" => "attn_kv_b",
                "self_attn.k_norm" => "attn_k_norm",
                "mlp.gate_proj" => "ffn_gate",
                "mlp.shared_experts.gate_proj" => "ffn_gate_shexp",
                "mlp.shared_experts.up_proj" => "ffn_up_shexp",
                "mlp.shared_experts.down_proj" => "ffn_down_shexp",
                "mlp.up_proj" => "ffn_up",
                // llama.cpp keeps Phi-3's fused gate and up in ffn_up (gate rows first).
                "mlp.gate_up_proj" => "ffn_up",
                "mlp.down_proj" => "ffn_down",
                "block_sparse_moe.gate" | "mlp.gate" | "mlp.router" => "ffn_gate_inp",
                "input_layernorm" => "attn_norm",
                // Before the FFN in Llama; after attention where norms sandwich or follow.
                "post_attention_layernorm" if norms == NormPlacement::Pre => "ffn_norm",
                "post_attention_layernorm" => "post_attention_norm",
                "pre_feedforward_layernorm" => "ffn_norm",
                "post_feedforward_layernorm" => "post_ffw_norm",
                _ => bail!("no GGUF name for {hf}"),
            };
            format!("blk.{layer}.{m}")
        }
    })
}

/// (layer, llama.cpp FFN kind, expert) of an expert weight,
/// `model.layers.3.block_sparse_moe.experts.5.w1` → ("3", "gate", 5), also
/// `model.layers.3.mlp.experts.5.gate_proj`.
pub(super) fn expert_parts(hf: &str) -> Option<(&str, &'static str, usize)> {
    let rest = hf.strip_prefix("model.layers.")?;
    let (layer, rest) = rest
        .split_once(".block_sparse_moe.experts.")
        .or_else(|| rest.split_once(".mlp.experts."))?;
    let (e, w) = rest.split_once('.')?;
    let kind = match w {
        "w1" | "gate_proj" => "gate",
        "w3" | "up_proj" => "up",
        "w2" | "down_proj" => "down",
        _ => return None,
    };
    Some((layer, kind, e.parse().ok()?))
}

/// Inverse of llama.cpp's (2, hd/2) → (hd/2, 2) row permutation within each head.
pub(super) fn unpermute_rows(bytes: &[u8], rows: usize, row_bytes: usize, heads: usize) -> Vec<u8> {
    let hd = rows / heads;
    let half = hd / 2;
    let mut out = vec![0u8; bytes.len()];
    for h in 0..heads {
        for s in 0..2 {
            for j in 0..half {
                let dst = h * hd + s * half + j;
                let src = h * hd + 2 * j + s;
                out[dst * row_bytes..(dst + 1) * row_bytes]
                    .copy_from_slice(&bytes[src * row_bytes..(src + 1) * row_bytes]);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unpermute_inverts_llama_cpp_permutation() {
        // Two heads of head_dim 4, one byte per row: llama.cpp stores HF rows
        // [0,1,2,3 | 4,5,6,7] as [0,2,1,3 | 4,6,5,7].
        let gguf_rows = [0u8, 2, 1, 3, 4, 6, 5, 7];
        assert_eq!(
            unpermute_rows(&gguf_rows, 8, 1, 2),
            vec![0, 1, 2, 3, 4, 5, 6, 7]
        );
    }

    #[test]
    fn maps_names() {
        assert_eq!(
            gguf_name("model.layers.12.self_attn.q_proj", NormPlacement::Pre).unwrap(),
            "blk.12.attn_q"
        );
        assert_eq!(
            gguf_name("model.layers.0.mlp.down_proj", NormPlacement::Pre).unwrap(),
            "blk.0.ffn_down"
        );
        assert_eq!(gguf_name("lm_head", NormPlacement::Pre).unwrap(), "output");
        assert!(gguf_name("model.layers.0.foo", NormPlacement::Pre).is_err());
        assert_eq!(
            gguf_name("model.layers.2.block_sparse_moe.gate", NormPlacement::Pre).unwrap(),
            "blk.2.ffn_gate_inp"
        );
        assert_eq!(
            expert_parts("model.layers.2.block_sparse_moe.experts.7.w3"),
            Some(("2", "up", 7))
        );
        assert_eq!(expert_parts("model.layers.2.mlp.up_proj"), None);
    }
}
