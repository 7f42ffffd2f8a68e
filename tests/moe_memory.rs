//! Memory while quantizing a mixture of experts in situ: a random Qwen3-MoE checkpoint of
//! about 210 MB (f32) written here loads with `--isq Q4_0` at a peak RSS near its
//! quantized size — experts stream from disk one tensor at a time and their pages are
//! handed back — far below the f32 size.

use std::path::PathBuf;
use std::process::Command;

const HIDDEN: usize = 512;
const LAYERS: usize = 4;
const HEADS: usize = 8;
const KV_HEADS: usize = 4;
const HEAD_DIM: usize = 64;
const EXPERTS: usize = 16;
const MOE_INTER: usize = 512;
const VOCAB: usize = 384;

/// Deterministic values in [-0.05, 0.05).
fn fill(n: usize, seed: u64) -> Vec<u8> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(n * 4);
    for _ in 0..n {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        let v = ((s >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.1;
        out.extend_from_slice(&v.to_le_bytes());
    }
    out
}

fn write_checkpoint(tag: &str) -> (PathBuf, usize) {
    let dir = std::env::temp_dir().join(format!("smelt-moe-memory-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut shapes: Vec<(String, Vec<usize>)> = vec![
        ("model.embed_tokens.weight".into(), vec![VOCAB, HIDDEN]),
        ("model.norm.weight".into(), vec![HIDDEN]),
        ("lm_head.weight".into(), vec![VOCAB, HIDDEN]),
    ];
    for l in 0..LAYERS {
        let p = format!("model.layers.{l}");
        for (n, s) in [
            ("input_layernorm", vec![HIDDEN]),
            ("post_attention_layernorm", vec![HIDDEN]),
            ("self_attn.q_norm", vec![HEAD_DIM]),
            ("self_attn.k_norm", vec![HEAD_DIM]),
            ("self_attn.q_proj", vec![HEADS * HEAD_DIM, HIDDEN]),
            ("self_attn.k_proj", vec![KV_HEADS * HEAD_DIM, HIDDEN]),
            ("self_attn.v_proj", vec![KV_HEADS * HEAD_DIM, HIDDEN]),
            ("self_attn.o_proj", vec![HIDDEN, HEADS * HEAD_DIM]),
            ("mlp.gate", vec![EXPERTS, HIDDEN]),
        ] {
            shapes.push((format!("{p}.{n}.weight"), s));
        }
        for e in 0..EXPERTS {
            for (n, s) in [
                ("gate_proj", vec![MOE_INTER, HIDDEN]),
                ("up_proj", vec![MOE_INTER, HIDDEN]),
                ("down_proj", vec![HIDDEN, MOE_INTER]),
            ] {
                shapes.push((format!("{p}.mlp.experts.{e}.{n}.weight"), s));
            }
        }
    }
    let data: Vec<Vec<u8>> = shapes
        .iter()
        .enumerate()
        .map(|(i, (name, s))| {
            let n = s.iter().product();
            if name.contains("norm") {
                (0..n).flat_map(|_| 1f32.to_le_bytes()).collect()
            } else {
                fill(n, i as u64 + 1)
            }
        })
        .collect();
    let bytes: usize = data.iter().map(Vec::len).sum();
    let views: Vec<(String, safetensors::tensor::TensorView)> = shapes
        .iter()
        .zip(&data)
        .map(|((n, s), b)| {
            let v = safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), b)
                .unwrap();
            (n.clone(), v)
        })
        .collect();
    safetensors::serialize_to_file(views, None, &dir.join("model.safetensors")).unwrap();
    let config = serde_json::json!({
        "model_type": "qwen3_moe", "hidden_size": HIDDEN, "intermediate_size": 1024,
        "moe_intermediate_size": MOE_INTER, "num_hidden_layers": LAYERS,
        "num_attention_heads": HEADS, "num_key_value_heads": KV_HEADS, "head_dim": HEAD_DIM,
        "num_experts": EXPERTS, "num_experts_per_tok": 4, "norm_topk_prob": true,
        "vocab_size": VOCAB, "max_position_embeddings": 512, "rms_norm_eps": 1e-6,
        "rope_theta": 1000000.0, "tie_word_embeddings": false, "eos_token_id": 2
    });
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    let fixtures =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/families/qwen3");
    for f in ["tokenizer.json", "tokenizer_config.json"] {
        std::fs::copy(fixtures.join(f), dir.join(f)).unwrap();
    }
    (dir, bytes)
}

/// Runs `smelt bench` with `isq` flags on the checkpoint: (peak RSS MiB, weights MiB, output).
fn bench_rss(dir: &std::path::Path, isq: &[&str]) -> (f64, f64, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_smelt"))
        .args(["-t", "1"])
        .args(isq)
        .args(["bench", "-p", "8", "-n", "2", "-r", "1", "plain", "-m"])
        .arg(dir)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    let rss_mib: f64 = text
        .lines()
        .find_map(|l| {
            l.strip_prefix("peak RSS: ")?
                .strip_suffix(" MiB")?
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("no peak RSS in:\n{text}"));
    let size_mib: f64 = text
        .lines()
        .find_map(|l| {
            let fields: Vec<&str> = l.split('|').map(str::trim).collect();
            fields.get(2)?.strip_suffix(" MiB")?.parse().ok()
        })
        .unwrap_or_else(|| panic!("no model size in:\n{text}"));
    (rss_mib, size_mib, text)
}

#[test]
fn moe_isq_peak_rss_stays_near_the_quantized_size() {
    let (dir, f32_bytes) = write_checkpoint("q4_0");
    let (rss_mib, size_mib, _) = bench_rss(&dir, &["--isq", "Q4_0"]);
    let f32_mib = f32_bytes as f64 / (1 << 20) as f64;
    eprintln!("f32 checkpoint {f32_mib:.1} MiB, Q4_0 weights {size_mib:.1} MiB, peak RSS {rss_mib:.1} MiB");
    assert!(f32_mib > 200.0);
    // The quantized weights, the runtime and one f32 tensor in flight at a time.
    assert!(
        rss_mib < size_mib + 60.0 && rss_mib < 0.45 * f32_mib,
        "peak RSS {rss_mib:.1} MiB for {size_mib:.1} MiB of Q4_0 weights ({f32_mib:.1} MiB f32)"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// `--isq auto`: the measuring pass holds one weight at a time too, so the peak stays
/// near the budget, far below the f32 size.
#[test]
fn auto_isq_peak_rss_stays_near_the_budget() {
    let (dir, f32_bytes) = write_checkpoint("auto");
    let (rss_mib, size_mib, text) = bench_rss(&dir, &["--isq", "auto", "--max-memory", "50MiB"]);
    let f32_mib = f32_bytes as f64 / (1 << 20) as f64;
    eprintln!("f32 checkpoint {f32_mib:.1} MiB, auto mix {size_mib:.1} MiB within 50 MiB, peak RSS {rss_mib:.1} MiB");
    assert!(text.contains("auto ISQ: measured"), "{text}");
    assert!(size_mib <= 50.0 && size_mib > 45.0, "{size_mib} MiB");
    assert!(
        rss_mib < 50.0 + 60.0 && rss_mib < 0.5 * f32_mib,
        "peak RSS {rss_mib:.1} MiB for a 50 MiB budget ({f32_mib:.1} MiB f32)"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
