//! Prequantized checkpoints. MLX checkpoints (config.json `quantization: {group_size, bits}`, u32 codes with f16
//! scales/biases) load under `plain`, checked against MLX itself: the tiny llama3 fixture
//! quantized by `mx.quantize` must give the logits of the same model with the weights
//! `mx.dequantize` returns (scripts/make-mlx-fixtures.py). Other prequantized formats
//! are refused with a clear error.

use smelt::loaders::{LoadOptions, ModelSpec};
use std::path::Path;

fn spec(dir: &str) -> ModelSpec {
    ModelSpec::Plain {
        model_id: Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/tiny")
            .join(dir)
            .to_string_lossy()
            .into_owned(),
        revision: "main".into(),
    }
}

fn logits(spec: &ModelSpec) -> Vec<f32> {
    let m = smelt::load(spec, &LoadOptions::default()).unwrap();
    let mut cache = m.model.new_cache();
    let tokens: Vec<u32> = (0..24).map(|i| (i * 37 + 5) % 256).collect();
    m.model
        .forward(&tokens, &mut cache, 0)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

#[test]
fn mlx_checkpoint_matches_mlx_dequantized_weights() {
    let q = smelt::load(&spec("llama3-mlx4"), &LoadOptions::default()).unwrap();
    let summary = q.model.linear_storage_summary();
    assert_eq!(summary, vec![("AFQ4".to_string(), 14)], "{summary:?}");
    let (a, b) = (
        logits(&spec("llama3-mlx4")),
        logits(&spec("llama3-mlx4-dequant")),
    );
    let max = a
        .iter()
        .zip(&b)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max);
    assert!(max < 1e-4, "max logit difference {max}");
}

#[test]
fn other_prequantized_formats_are_refused() {
    let dir = std::env::temp_dir().join(format!("smelt-gptq-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny/llama3");
    for f in [
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
    ] {
        std::fs::copy(src.join(f), dir.join(f)).unwrap();
    }
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(src.join("config.json")).unwrap()).unwrap();
    cfg["quantization_config"] =
        serde_json::json!({"quant_method": "bitsandbytes", "load_in_4bit": true});
    std::fs::write(dir.join("config.json"), cfg.to_string()).unwrap();
    let spec = ModelSpec::Plain {
        model_id: dir.to_string_lossy().into_owned(),
        revision: "main".into(),
    };
    let err = format!(
        "{:#}",
        smelt::load(&spec, &LoadOptions::default()).err().unwrap()
    );
    assert!(
        err.contains("bitsandbytes") && err.contains("does not load"),
        "{err}"
    );
    cfg["quantization_config"] = serde_json::json!({"bits": 5, "group_size": 64});
    std::fs::write(dir.join("config.json"), cfg.to_string()).unwrap();
    let err = format!(
        "{:#}",
        smelt::load(&spec, &LoadOptions::default()).err().unwrap()
    );
    assert!(err.contains("5 bits"), "{err}");
    std::fs::remove_dir_all(&dir).ok();
}

/// Layer weights and logits of a prequantized fixture against the plain checkpoint of
/// its documented dequantization; the weights may differ by the f16 rounding of the
/// stored −scale·zero offsets. Returns how many layers needed a column reordering.
fn check_against_dequantized(fixture: &str) -> usize {
    let q = smelt::load(&spec(fixture), &LoadOptions::default()).unwrap();
    let r = smelt::load(
        &spec(&format!("{fixture}-dequant")),
        &LoadOptions::default(),
    )
    .unwrap();
    let (ql, rl) = (q.model.named_linears(), r.model.named_linears());
    assert_eq!(ql.len(), 14);
    for ((name, a), (_, b)) in ql.iter().zip(&rl) {
        let a: Vec<f32> = a
            .dequantize()
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let b: Vec<f32> = b
            .dequantize()
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let scale = b.iter().fold(0f32, |m, v| m.max(v.abs()));
        let err = a
            .iter()
            .zip(&b)
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max);
        assert!(
            err <= 2e-3 * scale,
            "{fixture} {name}: max error {err} (weights up to {scale})"
        );
    }
    let (a, b) = (
        logits(&spec(fixture)),
        logits(&spec(&format!("{fixture}-dequant"))),
    );
    let max = a
        .iter()
        .zip(&b)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max);
    assert!(max < 0.05, "{fixture}: max logit difference {max}");
    ql.iter()
        .filter(|(_, l)| l.storage_name().contains("act-order"))
        .count()
}

/// GPTQ (v1 layout, 4 bits, group 32, act-order g_idx, asymmetric), packed by
/// scripts/make-gptq-fixtures.py: the two down_proj layers (more than one group) need
/// their input columns reordered.
#[test]
fn gptq_checkpoint_matches_its_documented_dequantization() {
    assert_eq!(check_against_dequantized("llama3-gptq4"), 2);
}

/// AWQ GEMM (4 bits, group 32, interleaved columns), packed by
/// scripts/make-awq-fixtures.py.
#[test]
fn awq_checkpoint_matches_its_documented_dequantization() {
    assert_eq!(check_against_dequantized("llama3-awq4"), 0);
}
