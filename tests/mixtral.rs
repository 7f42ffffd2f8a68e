//! Mixtral (sparse MoE) and `--isq-organization moqe` on a tiny random Mixtral checkpoint
//! the test writes itself, checked against an independent reference forward written
//! here: dense per-token loops in f64 that run every expert and mask all but the top-k.
//! The same weights are also written as llama.cpp-style GGUF files.

use candle_core::quantized::GgmlDType;
use smelt::engine::Engine;
use smelt::loaders::{LoadOptions, ModelSpec};
use smelt::models::BatchItem;
use smelt::quant::{IsqOrganization, IsqType, Topology};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

const HIDDEN: usize = 64;
const INTER: usize = 128;
const LAYERS: usize = 2;
const HEADS: usize = 4;
const KV_HEADS: usize = 2;
const HEAD_DIM: usize = HIDDEN / HEADS;
const EXPERTS: usize = 4;
const TOP_K: usize = 2;
const VOCAB: usize = 256;
const EPS: f64 = 1e-5;
const THETA: f64 = 10_000.0;

/// Row-major f32 weights by Hugging Face name (with `.weight`), and their shapes.
struct Weights {
    data: HashMap<String, (Vec<usize>, Vec<f32>)>,
}

impl Weights {
    fn get(&self, name: &str) -> &[f32] {
        &self.data[&format!("{name}.weight")].1
    }
}

/// Deterministic uniform numbers in [-1, 1) (xorshift64*).
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> f32 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let v = self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 40;
        (v as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
    fn fill(&mut self, n: usize, scale: f32, offset: f32) -> Vec<f32> {
        (0..n).map(|_| offset + scale * self.next()).collect()
    }
}

fn random_weights(seed: u64) -> Weights {
    let mut rng = Rng(seed);
    let mut data = HashMap::new();
    let mut put = |name: String, shape: Vec<usize>, scale: f32, offset: f32, rng: &mut Rng| {
        let n = shape.iter().product();
        data.insert(
            format!("{name}.weight"),
            (shape, rng.fill(n, scale, offset)),
        );
    };
    let lin = |fan_in: usize| 1.0 / (fan_in as f32).sqrt();
    put(
        "model.embed_tokens".into(),
        vec![VOCAB, HIDDEN],
        1.0,
        0.0,
        &mut rng,
    );
    for l in 0..LAYERS {
        let p = format!("model.layers.{l}");
        put(
            format!("{p}.input_layernorm"),
            vec![HIDDEN],
            0.2,
            1.0,
            &mut rng,
        );
        put(
            format!("{p}.post_attention_layernorm"),
            vec![HIDDEN],
            0.2,
            1.0,
            &mut rng,
        );
        for (n, rows) in [
            ("q_proj", HEADS * HEAD_DIM),
            ("k_proj", KV_HEADS * HEAD_DIM),
            ("v_proj", KV_HEADS * HEAD_DIM),
        ] {
            put(
                format!("{p}.self_attn.{n}"),
                vec![rows, HIDDEN],
                lin(HIDDEN),
                0.0,
                &mut rng,
            );
        }
        put(
            format!("{p}.self_attn.o_proj"),
            vec![HIDDEN, HIDDEN],
            lin(HIDDEN),
            0.0,
            &mut rng,
        );
        // A sharp router: the top-k choice is far from ties.
        put(
            format!("{p}.block_sparse_moe.gate"),
            vec![EXPERTS, HIDDEN],
            0.5,
            0.0,
            &mut rng,
        );
        for e in 0..EXPERTS {
            let q = format!("{p}.block_sparse_moe.experts.{e}");
            put(
                format!("{q}.w1"),
                vec![INTER, HIDDEN],
                lin(HIDDEN),
                0.0,
                &mut rng,
            );
            put(
                format!("{q}.w3"),
                vec![INTER, HIDDEN],
                lin(HIDDEN),
                0.0,
                &mut rng,
            );
            put(
                format!("{q}.w2"),
                vec![HIDDEN, INTER],
                lin(INTER),
                0.0,
                &mut rng,
            );
        }
    }
    put("model.norm".into(), vec![HIDDEN], 0.2, 1.0, &mut rng);
    put(
        "lm_head".into(),
        vec![VOCAB, HIDDEN],
        lin(HIDDEN) * 3.0,
        0.0,
        &mut rng,
    );
    Weights { data }
}

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny")
}

/// Writes config.json, model.safetensors and a byte-level tokenizer into a fresh dir.
fn write_checkpoint(name: &str, w: &Weights) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("smelt-mixtral-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = serde_json::json!({
        "model_type": "mixtral",
        "architectures": ["MixtralForCausalLM"],
        "hidden_size": HIDDEN,
        "intermediate_size": INTER,
        "num_hidden_layers": LAYERS,
        "num_attention_heads": HEADS,
        "num_key_value_heads": KV_HEADS,
        "num_local_experts": EXPERTS,
        "num_experts_per_tok": TOP_K,
        "vocab_size": VOCAB,
        "rms_norm_eps": EPS,
        "rope_theta": THETA,
        "max_position_embeddings": 128,
        "tie_word_embeddings": false,
        "sliding_window": null,
        "router_aux_loss_coef": 0.02,
        "hidden_act": "silu",
        "eos_token_id": 0
    });
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    let bytes: Vec<(String, Vec<usize>, Vec<u8>)> = w
        .data
        .iter()
        .map(|(n, (shape, v))| {
            let b = v.iter().flat_map(|x| x.to_le_bytes()).collect();
            (n.clone(), shape.clone(), b)
        })
        .collect();
    let views: Vec<(String, safetensors::tensor::TensorView)> = bytes
        .iter()
        .map(|(n, shape, b)| {
            let view =
                safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), b)
                    .unwrap();
            (n.clone(), view)
        })
        .collect();
    safetensors::serialize_to_file(views, None, &dir.join("model.safetensors")).unwrap();
    // The tiny fixtures' byte-level BPE tokenizer has exactly 256 tokens.
    for f in ["tokenizer.json", "tokenizer_config.json"] {
        std::fs::copy(fixtures().join("llama_tied").join(f), dir.join(f)).unwrap();
    }
    dir
}

fn spec(dir: &Path) -> ModelSpec {
    ModelSpec::Plain {
        model_id: dir.to_string_lossy().into_owned(),
        revision: "main".into(),
    }
}

fn load(dir: &Path, opts: LoadOptions) -> Engine {
    Engine::new(smelt::load(&spec(dir), &opts).unwrap()).unwrap()
}

#[path = "mixtral_support/reference.rs"]
mod reference;
use reference::reference_forward;

fn logits(engine: &Engine, tokens: &[u32]) -> Vec<Vec<f32>> {
    let mut cache = engine.model.new_cache();
    engine
        .model
        .forward(tokens, &mut cache, 0)
        .unwrap()
        .to_vec2()
        .unwrap()
}

fn max_diff<A: Copy + Into<f64>, B: Copy + Into<f64>>(a: &[Vec<A>], b: &[Vec<B>]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .flatten()
        .zip(b.iter().flatten())
        .map(|(&x, &y)| (x.into() - y.into()).abs())
        .fold(0.0, f64::max)
}

fn tokens(n: usize, seed: u32) -> Vec<u32> {
    (0..n as u32)
        .map(|i| (i.wrapping_mul(2_654_435_761).wrapping_add(seed * 97) >> 7) % VOCAB as u32)
        .collect()
}

#[test]
fn forward_matches_independent_reference() {
    let w = random_weights(7);
    let dir = write_checkpoint("ref", &w);
    let engine = load(&dir, LoadOptions::default());
    assert_eq!(
        engine.model.config().moe.as_ref().map(|m| m.num_experts),
        Some(EXPERTS)
    );
    // 40 tokens: prompt rows past the kernel limit go through the GEMM path, and the
    // experts see row counts on both sides of it.
    let toks = tokens(40, 1);
    let want = reference_forward(&w, &toks);
    let got = logits(&engine, &toks);
    let err = max_diff(&got, &want);
    assert!(err < 1e-4, "prompt: max |Δ| = {err}");
    // One token at a time through the KV cache.
    let mut cache = engine.model.new_cache();
    let mut rows = Vec::new();
    for &t in &toks[..12] {
        rows.extend(
            engine
                .model
                .forward(&[t], &mut cache, 0)
                .unwrap()
                .to_vec2::<f32>()
                .unwrap(),
        );
    }
    let err = max_diff(&rows, &want[..12]);
    assert!(err < 1e-4, "decode: max |Δ| = {err}");
    // The bandwidth bound counts the router and top-k of the experts per token.
    let all = engine.model.weights_size_in_bytes();
    let per_token = engine.model.decode_bytes_per_token();
    assert!(per_token < all, "{per_token} vs {all}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn batched_sequences_equal_their_solo_runs() {
    let w = random_weights(11);
    let dir = write_checkpoint("batch", &w);
    for opts in [
        LoadOptions::default(),
        LoadOptions {
            isq: Some(IsqType::Q4_0),
            organization: IsqOrganization::Moqe,
            ..Default::default()
        },
    ] {
        let engine = load(&dir, opts);
        let (a, b, c) = (tokens(37, 2), tokens(5, 3), tokens(3, 4));
        let solo: Vec<Vec<Vec<f32>>> = [&a, &b, &c].iter().map(|t| logits(&engine, t)).collect();
        let mut caches: Vec<_> = (0..3).map(|_| engine.model.new_cache()).collect();
        let mut it = caches.iter_mut();
        let mut items: Vec<BatchItem> = [&a, &b, &c]
            .iter()
            .map(|t| BatchItem {
                tokens: t,
                cache: it.next().unwrap(),
                logits_from: 0,
            })
            .collect();
        let out = engine.model.forward_batch(&mut items).unwrap();
        for (i, (o, s)) in out.iter().zip(&solo).enumerate() {
            let o: Vec<Vec<f32>> = o.to_vec2().unwrap();
            assert_eq!(&o, s, "sequence {i} differs when batched");
        }
        // Decode steps of all three together, against each continuing alone.
        let next = [7u32, 9, 11];
        let mut items: Vec<BatchItem> = caches
            .iter_mut()
            .zip(&next)
            .map(|(cache, t)| BatchItem {
                tokens: std::slice::from_ref(t),
                cache,
                logits_from: 0,
            })
            .collect();
        let out = engine.model.forward_batch(&mut items).unwrap();
        for (i, (seq, t)) in [&a, &b, &c].iter().zip(next).enumerate() {
            let mut cache = engine.model.new_cache();
            engine.model.forward(seq, &mut cache, 0).unwrap();
            let want: Vec<f32> = engine
                .model
                .forward(&[t], &mut cache, 0)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            let got: Vec<Vec<f32>> = out[i].to_vec2().unwrap();
            assert_eq!(got[0], want, "decode step of sequence {i}");
        }
    }
    std::fs::remove_dir_all(&dir).ok();
}

fn storage(engine: &Engine) -> Vec<(String, String)> {
    engine.model.linear_storage_by_name()
}

#[test]
fn moqe_quantizes_every_expert_and_nothing_else() {
    let w = random_weights(13);
    let dir = write_checkpoint("moqe", &w);
    let toks = tokens(24, 5);
    let dense = logits(&load(&dir, LoadOptions::default()), &toks);

    // Default organization: every linear of every layer (router included); the head
    // keeps the load dtype as always.
    let all = load(
        &dir,
        LoadOptions {
            isq: Some(IsqType::Q8_0),
            ..Default::default()
        },
    );
    let s = storage(&all);
    assert_eq!(s.len(), LAYERS * (4 + 1 + 3 * EXPERTS) + 1);
    for (name, st) in &s {
        let want = if name == "lm_head" { "f32" } else { "Q8_0" };
        assert_eq!(st, want, "{name}");
    }

    // moqe: exactly the expert weights.
    let mut moqe = load(
        &dir,
        LoadOptions {
            isq: Some(IsqType::Q8_0),
            organization: IsqOrganization::Moqe,
            ..Default::default()
        },
    );
    let check = |engine: &Engine, ty: &str| {
        let mut experts = 0;
        for (name, st) in storage(engine) {
            if name.contains(".block_sparse_moe.experts.") {
                experts += 1;
                assert_eq!(st, ty, "{name}");
            } else {
                assert_eq!(st, "f32", "{name} must stay unquantized");
            }
        }
        assert_eq!(experts, LAYERS * EXPERTS * 3);
    };
    check(&moqe, "Q8_0");
    let got = logits(&moqe, &toks);
    let err = max_diff(&got, &dense);
    let scale = dense.iter().flatten().map(|v| v.abs()).fold(0f32, f32::max);
    assert!(
        err > 0.0 && err < 0.02 * scale as f64,
        "moqe Q8_0: max |Δ| = {err} (logits up to {scale})"
    );
    // moqe keeps more precision than quantizing everything.
    let err_all = max_diff(&logits(&all, &toks), &dense);
    assert!(err < err_all, "moqe {err} vs all {err_all}");

    // Re-ISQ keeps the organization; None goes back to the dense weights.
    moqe.re_isq(Some(IsqType::Q4_0)).unwrap();
    check(&moqe, "Q4_0");
    moqe.re_isq(None).unwrap();
    check(&moqe, "f32");
    assert!(max_diff(&logits(&moqe, &toks), &dense) < 1e-6);

    // A topology rule still overrides the organization.
    let topo = Topology::parse("'/self_attn\\.o_proj$/':\n  isq: Q4_0\n").unwrap();
    let t = load(
        &dir,
        LoadOptions {
            isq: Some(IsqType::Q8_0),
            organization: IsqOrganization::Moqe,
            topology: Some(topo),
            ..Default::default()
        },
    );
    for (name, st) in storage(&t) {
        let want = if name.ends_with("o_proj") {
            "Q4_0"
        } else if name.contains(".experts.") {
            "Q8_0"
        } else {
            "f32"
        };
        assert_eq!(st, want, "{name}");
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn moqe_on_a_dense_model_is_a_clear_error() {
    let opts = LoadOptions {
        isq: Some(IsqType::Q8_0),
        organization: IsqOrganization::Moqe,
        ..Default::default()
    };
    let err = smelt::load(&spec(&fixtures().join("llama_tied")), &opts)
        .err()
        .expect("moqe on llama must fail");
    let msg = format!("{err:#}");
    assert!(
        msg.contains("moqe") && msg.contains("mixture-of-experts"),
        "{msg}"
    );
}

fn smelt_cli(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_smelt"))
        .args(args)
        .env("HF_HUB_OFFLINE", "1")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap()
}

#[test]
fn cli_flag_runs_and_rejects_bad_input() {
    let w = random_weights(17);
    let dir = write_checkpoint("cli", &w);
    let d = dir.to_string_lossy().into_owned();
    let run = |org: &str, model: &str| {
        smelt_cli(&[
            "--log",
            "info",
            "--isq-organization",
            org,
            "--isq",
            "Q8_0",
            "--temperature",
            "0",
            "--max-tokens",
            "4",
            "--prompt",
            "hi",
            "plain",
            "-m",
            model,
        ])
    };
    let out = run("moqe", &d);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("ISQ organization moqe"), "{stderr}");
    // 24 expert linears quantized, 10 (attention, router) kept.
    assert!(
        stderr.contains("24×Q8_0") && stderr.contains("10×f32"),
        "{stderr}"
    );

    let out = run("dense", &d);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("default, moqe"), "{stderr}");

    let llama = fixtures().join("llama_tied").to_string_lossy().into_owned();
    let out = run("moqe", &llama);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(!stderr.contains("panicked"), "{stderr}");
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error")).collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    assert!(errors[0].contains("moqe"), "{stderr}");
    std::fs::remove_dir_all(&dir).ok();
}

#[path = "mixtral_support/gguf.rs"]
mod gguf;
use gguf::write_gguf;

fn gguf_in(dir: &Path) -> ModelSpec {
    ModelSpec::Gguf {
        model_id: Some(dir.to_string_lossy().into_owned()),
        file: "model.gguf".into(),
        tokenizer_json: None,
    }
}

#[test]
fn gguf_with_merged_or_per_expert_tensors_matches_plain() {
    let w = random_weights(19);
    let dir = write_checkpoint("gguf", &w);
    let toks = tokens(20, 6);
    let want = reference_forward(&w, &toks);

    // One f32 tensor per expert (older llama.cpp files).
    write_gguf(&dir, &w, false, GgmlDType::F32);
    let engine =
        Engine::new(smelt::load(&gguf_in(&dir), &LoadOptions::default()).unwrap()).unwrap();
    assert_eq!(
        engine.model.config().architecture,
        smelt::models::Architecture::Mixtral
    );
    let err = max_diff(&logits(&engine, &toks), &want);
    assert!(err < 1e-4, "per-expert f32 GGUF: max |Δ| = {err}");

    // Merged 3-D expert tensors stored as Q8_0: the same as the plain checkpoint with
    // its experts quantized to Q8_0 by moqe ISQ.
    write_gguf(&dir, &w, true, GgmlDType::Q8_0);
    let engine =
        Engine::new(smelt::load(&gguf_in(&dir), &LoadOptions::default()).unwrap()).unwrap();
    for (name, st) in storage(&engine) {
        let want = if name.contains(".experts.") {
            "Q8_0"
        } else {
            "F32"
        };
        assert_eq!(st, want, "{name}");
    }
    let moqe = load(
        &dir,
        LoadOptions {
            isq: Some(IsqType::Q8_0),
            organization: IsqOrganization::Moqe,
            ..Default::default()
        },
    );
    let err = max_diff(&logits(&engine, &toks), &logits(&moqe, &toks));
    assert!(
        err < 1e-4,
        "merged Q8_0 GGUF vs plain + moqe Q8_0: max |Δ| = {err}"
    );

    // moqe ISQ on the GGUF: only the experts change type.
    let opts = LoadOptions {
        isq: Some(IsqType::Q4_0),
        organization: IsqOrganization::Moqe,
        ..Default::default()
    };
    let engine = Engine::new(smelt::load(&gguf_in(&dir), &opts).unwrap()).unwrap();
    for (name, st) in storage(&engine) {
        let want = if name.contains(".experts.") {
            "Q4_0"
        } else {
            "F32"
        };
        assert_eq!(st, want, "{name}");
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn inconsistent_moe_configs_are_clear_errors() {
    let w = random_weights(23);
    let dir = write_checkpoint("bad", &w);
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    for (key, value, needle) in [
        (
            "num_experts_per_tok",
            serde_json::json!(5),
            "not a valid MoE",
        ),
        ("num_local_experts", serde_json::json!(3), "router"),
        (
            "num_local_experts",
            serde_json::Value::Null,
            "num_local_experts",
        ),
    ] {
        let mut c = config.clone();
        c[key] = value;
        std::fs::write(dir.join("config.json"), c.to_string()).unwrap();
        let err = smelt::load(&spec(&dir), &LoadOptions::default())
            .err()
            .map(|e| format!("{e:#}"))
            .unwrap_or_default();
        assert!(err.contains(needle), "{key}: {err}");
    }
    std::fs::remove_dir_all(&dir).ok();
}
