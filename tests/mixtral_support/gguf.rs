//! The GGUF side of tests/mixtral.rs: the same random weights written as llama.cpp lays
//! out a Mixtral (merged expert tensors or the older per-expert ones).

use super::*;

/// Writes `w` as a llama.cpp-style GGUF (`general.architecture = llama` with experts,
/// Q/K rows permuted as llama.cpp does) into `dir/model.gguf`: experts either in merged
/// 3-D `ffn_*_exps` tensors stored as `expert_dtype`, or one 2-D f32 tensor per expert
/// (older files).
pub fn write_gguf(dir: &Path, w: &Weights, merged: bool, expert_dtype: GgmlDType) {
    use candle_core::quantized::gguf_file::{self, Value};
    use candle_core::quantized::QTensor;
    use candle_core::{Device, Tensor};
    let q = |data: Vec<f32>, shape: &[usize], dtype: GgmlDType| {
        let t = Tensor::from_vec(data, shape, &Device::Cpu).unwrap();
        QTensor::quantize(&t, dtype).unwrap()
    };
    let f32_of = |name: &str| {
        let (shape, data) = &w.data[&format!("{name}.weight")];
        q(data.clone(), shape, GgmlDType::F32)
    };
    // HF row h·hd + s·hd/2 + j sits at llama.cpp row h·hd + 2j + s.
    let permuted = |name: &str, heads: usize| {
        let (shape, data) = &w.data[&format!("{name}.weight")];
        let (rows, cols) = (shape[0], shape[1]);
        let (hd, half) = (rows / heads, rows / heads / 2);
        let mut out = vec![0f32; data.len()];
        for h in 0..heads {
            for s in 0..2 {
                for j in 0..half {
                    let (dst, src) = (h * hd + 2 * j + s, h * hd + s * half + j);
                    out[dst * cols..(dst + 1) * cols]
                        .copy_from_slice(&data[src * cols..(src + 1) * cols]);
                }
            }
        }
        q(out, shape, GgmlDType::F32)
    };
    let mut tensors: Vec<(String, QTensor)> = vec![
        ("token_embd.weight".into(), f32_of("model.embed_tokens")),
        ("output_norm.weight".into(), f32_of("model.norm")),
        ("output.weight".into(), f32_of("lm_head")),
    ];
    for l in 0..LAYERS {
        let p = format!("model.layers.{l}");
        let b = format!("blk.{l}");
        for (hf, g) in [
            ("input_layernorm", "attn_norm"),
            ("post_attention_layernorm", "ffn_norm"),
            ("self_attn.v_proj", "attn_v"),
            ("self_attn.o_proj", "attn_output"),
            ("block_sparse_moe.gate", "ffn_gate_inp"),
        ] {
            tensors.push((format!("{b}.{g}.weight"), f32_of(&format!("{p}.{hf}"))));
        }
        tensors.push((
            format!("{b}.attn_q.weight"),
            permuted(&format!("{p}.self_attn.q_proj"), HEADS),
        ));
        tensors.push((
            format!("{b}.attn_k.weight"),
            permuted(&format!("{p}.self_attn.k_proj"), KV_HEADS),
        ));
        for (hf, kind) in [("w1", "gate"), ("w3", "up"), ("w2", "down")] {
            let name = |e: usize| format!("{p}.block_sparse_moe.experts.{e}.{hf}");
            if merged {
                let shape = w.data[&format!("{}.weight", name(0))].0.clone();
                let data: Vec<f32> = (0..EXPERTS)
                    .flat_map(|e| w.get(&name(e)).to_vec())
                    .collect();
                let t = q(data, &[EXPERTS, shape[0], shape[1]], expert_dtype);
                tensors.push((format!("{b}.ffn_{kind}_exps.weight"), t));
            } else {
                for e in 0..EXPERTS {
                    tensors.push((format!("{b}.ffn_{kind}.{e}.weight"), f32_of(&name(e))));
                }
            }
        }
    }
    let u = |v: usize| Value::U32(v as u32);
    let meta: Vec<(&str, Value)> = vec![
        ("general.architecture", Value::String("llama".into())),
        ("llama.embedding_length", u(HIDDEN)),
        ("llama.feed_forward_length", u(INTER)),
        ("llama.block_count", u(LAYERS)),
        ("llama.attention.head_count", u(HEADS)),
        ("llama.attention.head_count_kv", u(KV_HEADS)),
        ("llama.context_length", u(128)),
        ("llama.expert_count", u(EXPERTS)),
        ("llama.expert_used_count", u(TOP_K)),
        (
            "llama.attention.layer_norm_rms_epsilon",
            Value::F32(EPS as f32),
        ),
        ("llama.rope.freq_base", Value::F32(THETA as f32)),
    ];
    let meta_refs: Vec<(&str, &Value)> = meta.iter().map(|(k, v)| (*k, v)).collect();
    let tensor_refs: Vec<(&str, &QTensor)> = tensors.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let mut f = std::fs::File::create(dir.join("model.gguf")).unwrap();
    gguf_file::write(&mut f, &meta_refs, &tensor_refs).unwrap();
}
