//! Architectures and features the real test model lacks (Qwen2 biases, llama3 rope
//! scaling, untied heads, GQA ratios, llama.cpp's Q/K permutation in GGUF), checked on tiny
//! checkpoints against an independent numpy forward pass (scripts/make-tiny-fixtures.py).

use smelt::engine::Engine;
use smelt::loaders::{LoadOptions, ModelSpec};

fn fixtures() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny")
}

fn reference(case: &str) -> (Vec<u32>, Vec<Vec<f32>>) {
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixtures().join("logits.json")).unwrap())
            .unwrap();
    let c = &doc["cases"][case];
    (
        serde_json::from_value(c["tokens"].clone()).unwrap(),
        serde_json::from_value(c["logits"].clone()).unwrap(),
    )
}

/// Largest |logit − reference| over all positions of `case`, prompt run in one batch.
fn max_error(engine: &Engine, case: &str) -> f32 {
    let (tokens, expected) = reference(case);
    let mut s = engine.new_session();
    let got: Vec<f32> = engine
        .model
        .forward(&tokens, &mut s.cache, 0)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    got.iter()
        .zip(expected.iter().flatten())
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max)
}

fn load(spec: ModelSpec) -> Engine {
    Engine::new(smelt::load(&spec, &LoadOptions::default()).unwrap()).unwrap()
}

fn check(engine: &Engine, case: &str, what: &str) {
    let (tokens, expected) = reference(case);
    // All positions in one batch…
    let mut s = engine.new_session();
    let got: Vec<Vec<f32>> = engine
        .model
        .forward(&tokens, &mut s.cache, 0)
        .unwrap()
        .to_vec2()
        .unwrap();
    // …and one token at a time through the KV cache.
    let mut s2 = engine.new_session();
    for (i, &t) in tokens.iter().enumerate() {
        let row =
            smelt::models::last_logits_vec(&engine.model.forward(&[t], &mut s2.cache, 0).unwrap())
                .unwrap();
        for (mode, r) in [("batch", &got[i]), ("decode", &row)] {
            let err = r
                .iter()
                .zip(&expected[i])
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            assert!(
                err < 2e-3,
                "{case} {what} {mode}: position {i} max |Δ| = {err}"
            );
        }
    }
}

fn plain(case: &str) -> ModelSpec {
    ModelSpec::Plain {
        model_id: fixtures().join(case).to_string_lossy().into_owned(),
        revision: "main".into(),
    }
}

fn gguf(case: &str) -> ModelSpec {
    ModelSpec::Gguf {
        model_id: None,
        file: fixtures()
            .join(case)
            .join("model.gguf")
            .to_string_lossy()
            .into_owned(),
        tokenizer_json: None,
    }
}

#[test]
fn qwen2_plain_and_gguf_match_reference() {
    check(&load(plain("qwen2")), "qwen2", "plain");
    check(&load(gguf("qwen2")), "qwen2", "gguf");
}

#[test]
fn llama3_rope_scaling_untied_head_match_reference() {
    check(&load(plain("llama3")), "llama3", "plain");
    check(&load(gguf("llama3")), "llama3", "gguf");
}

#[test]
fn tied_llama_with_permuted_gguf_matches_reference() {
    check(&load(plain("llama_tied")), "llama_tied", "plain");
    check(&load(gguf("llama_tied")), "llama_tied", "gguf");
}

#[test]
fn plain_loads_in_half_precision() {
    for dtype in [candle_core::DType::F16, candle_core::DType::BF16] {
        let opts = LoadOptions {
            dtype,
            ..Default::default()
        };
        let engine = Engine::new(smelt::load(&plain("qwen2"), &opts).unwrap()).unwrap();
        let err = max_error(&engine, "qwen2");
        assert!(err < 0.25, "{dtype:?}: max |Δ| = {err}");
    }
}

#[test]
fn sharded_checkpoint_loads_through_its_index() {
    let src = fixtures().join("qwen2");
    let dir = std::env::temp_dir().join(format!("smelt-sharded-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for f in ["config.json", "tokenizer.json", "tokenizer_config.json"] {
        std::fs::copy(src.join(f), dir.join(f)).unwrap();
    }
    let all =
        candle_core::safetensors::load(src.join("model.safetensors"), &candle_core::Device::Cpu)
            .unwrap();
    let mut names: Vec<&String> = all.keys().collect();
    names.sort();
    let mut weight_map = serde_json::Map::new();
    for (i, part) in names.chunks(names.len().div_ceil(2)).enumerate() {
        let file = format!("model-{:05}-of-00002.safetensors", i + 1);
        let shard: std::collections::HashMap<String, candle_core::Tensor> = part
            .iter()
            .map(|n| ((*n).clone(), all[*n].clone()))
            .collect();
        candle_core::safetensors::save(&shard, dir.join(&file)).unwrap();
        for n in part {
            weight_map.insert((*n).clone(), file.clone().into());
        }
    }
    let index = serde_json::json!({"metadata": {}, "weight_map": weight_map});
    std::fs::write(dir.join("model.safetensors.index.json"), index.to_string()).unwrap();
    let spec = ModelSpec::Plain {
        model_id: dir.to_string_lossy().into_owned(),
        revision: "main".into(),
    };
    check(&load(spec), "qwen2", "sharded");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn gguf_found_inside_a_model_directory() {
    let spec = ModelSpec::Gguf {
        model_id: Some(fixtures().join("llama_tied").to_string_lossy().into_owned()),
        file: "model.gguf".into(),
        tokenizer_json: None,
    };
    // The directory also holds a tokenizer.json, which then wins over the metadata.
    check(&load(spec), "llama_tied", "gguf -m dir");
}

#[test]
fn model_builder_with_isq_stays_close_to_reference() {
    let engine = smelt::ModelBuilder::new(fixtures().join("qwen2").to_str().unwrap())
        .with_isq(smelt::IsqType::Q8_0)
        .build()
        .unwrap();
    assert!(engine
        .model
        .linear_storage_summary()
        .iter()
        .any(|(k, _)| k == "Q8_0"));
    let err = max_error(&engine, "qwen2");
    // 8-bit weights and activations: small but non-zero error.
    assert!(err > 0.0 && err < 0.25, "max |Δ| = {err}");
}

#[test]
fn topology_overrides_isq_per_layer_and_weight() {
    let topology =
        smelt::quant::Topology::parse("0:\n  isq: none\n'/mlp\\.down_proj$/':\n  isq: Q4_1\n")
            .unwrap();
    let opts = LoadOptions {
        isq: Some(smelt::IsqType::Q8_0),
        topology: Some(topology),
        ..Default::default()
    };
    let engine = Engine::new(smelt::load(&plain("qwen2"), &opts).unwrap()).unwrap();
    let summary: std::collections::BTreeMap<String, usize> =
        engine.model.linear_storage_summary().into_iter().collect();
    // Layer 0: six linears stay f32, its down_proj takes the regex rule; layer 1: six
    // Q8_0 from --isq, down_proj Q4_1.
    assert_eq!(summary.get("f32"), Some(&6), "{summary:?}");
    assert_eq!(summary.get("Q8_0"), Some(&6), "{summary:?}");
    assert_eq!(summary.get("Q4_1"), Some(&2), "{summary:?}");
    let past = smelt::quant::Topology::parse("0-5:\n  isq: Q8_0\n").unwrap();
    let opts = LoadOptions {
        topology: Some(past),
        ..Default::default()
    };
    let err = smelt::load(&plain("qwen2"), &opts)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("past the model"), "{err}");
}

#[test]
fn re_isq_requantizes_from_the_source_weights() {
    for spec in [plain("qwen2"), gguf("qwen2")] {
        let mut engine = load(spec);
        engine.re_isq(Some(smelt::IsqType::Q4_0)).unwrap();
        assert_eq!(
            engine.model.linear_storage_summary(),
            vec![("Q4_0".to_string(), 14)]
        );
        let q4 = max_error(&engine, "qwen2");
        assert!(q4 > 1e-3, "Q4_0 must change the logits");
        engine.re_isq(Some(smelt::IsqType::Q8_0)).unwrap();
        let q8 = max_error(&engine, "qwen2");
        // From the source weights, not from the Q4_0 ones: Q8_0 is far closer.
        assert!(q8 < q4 / 2.0, "Q8_0 error {q8} vs Q4_0 {q4}");
        // Back to the load precision: the reference logits again.
        engine.re_isq(None).unwrap();
        assert!(max_error(&engine, "qwen2") < 2e-3);
    }
}
