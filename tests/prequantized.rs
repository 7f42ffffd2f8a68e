//! Prequantized checkpoints load under `plain`, each checked against the package that
//! made it: every fixture beside its `-dequant` twin, a plain checkpoint of the weights the
//! reference package itself dequantizes to.
//! - MLX (`mx.quantize` / `mx.dequantize`, scripts/make-mlx-fixtures.py);
//! - GPTQ 2/3/4/8-bit (AutoGPTQ's packer and torch dequantization,
//!   scripts/make-gptq-fixtures.py) and AWQ (AutoAWQ's, scripts/make-awq-fixtures.py);
//! - bitsandbytes NF4 (nested), FP4 and LLM.int8, and blockwise / per-tensor FP8
//!   (bitsandbytes and torch's float8, scripts/make-bnb-fp8-fixtures.py).
//!
//! Formats smelt does not load, and malformed layers, are refused with clear errors.

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

type Tensors = std::collections::BTreeMap<String, (safetensors::Dtype, Vec<usize>, Vec<u8>)>;

/// A copy of fixture `name` in a temporary directory, its config.json and tensors changed
/// by `edit`; the error `smelt::load` gives for it.
fn load_error(name: &str, edit: impl FnOnce(&mut serde_json::Value, &mut Tensors)) -> String {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "smelt-prequant-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/tiny")
        .join(name);
    for f in ["tokenizer.json", "tokenizer_config.json"] {
        std::fs::copy(src.join(f), dir.join(f)).unwrap();
    }
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(src.join("config.json")).unwrap()).unwrap();
    let bytes = std::fs::read(src.join("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut tensors: Tensors = st
        .tensors()
        .into_iter()
        .map(|(k, v)| (k, (v.dtype(), v.shape().to_vec(), v.data().to_vec())))
        .collect();
    edit(&mut cfg, &mut tensors);
    std::fs::write(dir.join("config.json"), cfg.to_string()).unwrap();
    let views: Vec<(String, safetensors::tensor::TensorView)> = tensors
        .iter()
        .map(|(k, (dt, shape, data))| {
            (
                k.clone(),
                safetensors::tensor::TensorView::new(*dt, shape.clone(), data).unwrap(),
            )
        })
        .collect();
    safetensors::serialize_to_file(views, None, &dir.join("model.safetensors")).unwrap();
    let spec = ModelSpec::Plain {
        model_id: dir.to_string_lossy().into_owned(),
        revision: "main".into(),
    };
    let err = match smelt::load(&spec, &LoadOptions::default()) {
        Ok(_) => panic!("{name}: the edited checkpoint loaded"),
        Err(e) => format!("{e:#}"),
    };
    std::fs::remove_dir_all(&dir).ok();
    err
}

fn assert_mentions(err: &str, words: &[&str]) {
    for w in words {
        assert!(err.contains(w), "error does not mention `{w}`: {err}");
    }
}

#[test]
fn unknown_formats_and_settings_are_refused() {
    let set_q = |q: serde_json::Value| {
        move |cfg: &mut serde_json::Value, _: &mut Tensors| cfg["quantization_config"] = q
    };
    let err = load_error("llama3", set_q(serde_json::json!({"quant_method": "eetq"})));
    assert_mentions(&err, &["eetq", "does not load"]);
    let err = load_error(
        "llama3",
        set_q(serde_json::json!({"bits": 5, "group_size": 64})),
    );
    assert_mentions(&err, &["5 bits"]);
    let err = load_error(
        "llama3",
        set_q(serde_json::json!({"quant_method": "gptq", "bits": 5, "group_size": 32})),
    );
    assert_mentions(&err, &["GPTQ", "5 bits"]);
    let err = load_error(
        "llama3",
        set_q(serde_json::json!({"quant_method": "awq", "bits": 3, "group_size": 32})),
    );
    assert_mentions(&err, &["AWQ", "3 bits"]);
    let err = load_error(
        "llama3",
        set_q(
            serde_json::json!({"quant_method": "bitsandbytes", "load_in_4bit": true, "bnb_4bit_quant_type": "int3"}),
        ),
    );
    assert_mentions(&err, &["int3"]);
    let err = load_error(
        "llama3",
        set_q(serde_json::json!({"quant_method": "fp8", "fmt": "e5m2"})),
    );
    assert_mentions(&err, &["e5m2"]);
    let err = load_error(
        "llama3",
        set_q(serde_json::json!({"quant_method": "fp8", "weight_block_size": [128]})),
    );
    assert_mentions(&err, &["weight_block_size"]);
    // An MLX per-module override with bits MLX does not have.
    let err = load_error("llama3-mlx4", |cfg, _| {
        cfg["quantization"]["model.layers.0.mlp.down_proj"] =
            serde_json::json!({"bits": 7, "group_size": 32})
    });
    assert_mentions(&err, &["model.layers.0.mlp.down_proj", "7 bits"]);
}

#[test]
fn missing_or_misshapen_tensors_are_named() {
    let down = "model.layers.0.mlp.down_proj";
    // Missing scale tensors.
    for (fixture, missing) in [
        ("llama3-gptq4", format!("{down}.scales")),
        ("llama3-gptq4", format!("{down}.qzeros")),
        ("llama3-awq4", format!("{down}.scales")),
        ("llama3-mlx4", format!("{down}.biases")),
        ("llama3-bnb-nf4", format!("{down}.weight.nested_absmax")),
        ("llama3-bnb-fp4", format!("{down}.weight.absmax")),
    ] {
        let err = load_error(fixture, |_, t| {
            t.remove(&missing).unwrap();
        });
        assert_mentions(&err, &[down]);
    }
    // Scales of the wrong shape.
    let err = load_error("llama3-fp8-block", |_, t| {
        let s = t.get_mut(&format!("{down}.weight_scale_inv")).unwrap();
        s.1 = vec![s.1.iter().product()];
    });
    assert_mentions(&err, &[&format!("{down}.weight_scale_inv"), "shape"]);
    let err = load_error("llama3-bnb-int8", |_, t| {
        let s = t.get_mut(&format!("{down}.SCB")).unwrap();
        s.1 = vec![s.1[0] / 2];
        s.2.truncate(s.2.len() / 2);
    });
    assert_mentions(&err, &[down, "SCB"]);
    // A config that disagrees with the tensors: MLX group size 64 for groups of 32.
    let err = load_error("llama3-mlx4", |cfg, _| {
        cfg["quantization"]["group_size"] = serde_json::json!(64)
    });
    assert_mentions(&err, &["scales", "shape"]);
    // Layers whose shape disagrees with the config.
    for fixture in ["llama3-gptq4", "llama3-bnb-int8", "llama3-fp8-block"] {
        let err = load_error(fixture, |cfg, _| {
            cfg["intermediate_size"] = serde_json::json!(96)
        });
        assert_mentions(&err, &["mlp", "96"]);
    }
    // GPTQ qweight rows that do not hold whole 3-bit codes.
    let err = load_error("llama3-gptq4", |cfg, _| {
        cfg["quantization_config"]["bits"] = serde_json::json!(3)
    });
    assert_mentions(&err, &["qweight"]);
    // A 4-bit weight whose byte count does not match its quant state's shape.
    let err = load_error("llama3-bnb-nf4", |_, t| {
        let w = t.get_mut(&format!("{down}.weight")).unwrap();
        w.1 = vec![w.1[0] - 1, 1];
        w.2.pop();
    });
    assert_mentions(&err, &[down, "bytes"]);
}

/// An MLX checkpoint whose config gives one module other settings (mlx-lm's mixed
/// quantization): the override's bits and group size are used for that module.
#[test]
fn mlx_per_module_overrides_apply() {
    assert_eq!(
        check_against_dequantized("llama3-mlx-mixed", 2e-3),
        summary(&[("AFQ4", 12), ("AFQ8", 1), ("f32", 1)])
    );
    // A module the config marks unquantized but that has MLX scales.
    let err = load_error("llama3-mlx4", |cfg, _| {
        cfg["quantization"]["model.layers.1.self_attn.q_proj"] = serde_json::json!(false)
    });
    assert_mentions(&err, &["model.layers.1.self_attn.q_proj", "unquantized"]);
}

/// Layer weights and logits of a prequantized fixture against the plain checkpoint of
/// the reference's dequantization, within `tol` of the largest weight (GPTQ/AWQ/MLX may
/// differ by the f16 rounding of the stored −scale·zero offsets; the rest are exact up to
/// f32 rounding). Returns the storage summary of the quantized model.
fn check_against_dequantized(fixture: &str, tol: f32) -> Vec<(String, usize)> {
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
            err <= tol * scale,
            "{fixture} {name}: max error {err} (weights up to {scale})"
        );
    }
    // Each layer's forward equals its own dequantized weight times x in f32, for one row
    // (decode), a few (row kernels) and a long prompt (dequantize + GEMM).
    for (name, l) in &ql {
        let (rows, cols) = l.shape();
        for m in [1usize, 5, 40] {
            let xv: Vec<f32> = (0..m * cols)
                .map(|i| ((i * 7919 % 257) as f32 / 128.0) - 1.0)
                .collect();
            let x = candle_core::Tensor::from_vec(xv.clone(), (m, cols), &candle_core::Device::Cpu)
                .unwrap();
            let y: Vec<f32> = l
                .forward(&x)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            let w: Vec<f32> = l
                .dequantize()
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            for t in 0..m {
                for r in 0..rows {
                    let want: f32 = (0..cols).map(|c| xv[t * cols + c] * w[r * cols + c]).sum();
                    let got = y[t * rows + r];
                    assert!(
                        (got - want).abs() <= 1e-4 * (1.0 + want.abs()),
                        "{fixture} {name}: forward {got} vs dequantize·x {want} (m = {m})"
                    );
                }
            }
        }
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
    q.model.linear_storage_summary()
}

fn summary(entries: &[(&str, usize)]) -> Vec<(String, usize)> {
    entries.iter().map(|(s, n)| (s.to_string(), *n)).collect()
}

/// AutoGPTQ packs zeros 32 outputs at a time, so the tiny model's 16-wide k/v layers
/// stay f32 in the GPTQ/AWQ fixtures. Act-order: the two down_proj layers (more than one
/// group) need their input columns reordered.
#[test]
fn gptq_checkpoints_match_autogptq_dequantization() {
    // 4-bit, group 32, act-order, asymmetric.
    assert_eq!(
        check_against_dequantized("llama3-gptq4", 2e-3),
        summary(&[("AFQ4", 8), ("AFQ4 (act-order)", 2), ("f32", 4)])
    );
    // 3-bit codes straddle words; one group per row, symmetric.
    assert_eq!(
        check_against_dequantized("llama3-gptq3", 2e-3),
        summary(&[("AFQ3", 10), ("f32", 4)])
    );
    // 8-bit act-order symmetric; 2-bit asymmetric.
    assert_eq!(
        check_against_dequantized("llama3-gptq8", 2e-3),
        summary(&[("AFQ8", 8), ("AFQ8 (act-order)", 2), ("f32", 4)])
    );
    assert_eq!(
        check_against_dequantized("llama3-gptq2", 2e-3),
        summary(&[("AFQ2", 10), ("f32", 4)])
    );
}

/// AWQ GEMM (4 bits, group 32, interleaved columns), packed by AutoAWQ.
#[test]
fn awq_checkpoint_matches_autoawq_dequantization() {
    assert_eq!(
        check_against_dequantized("llama3-awq4", 2e-3),
        summary(&[("AFQ4", 10), ("f32", 4)])
    );
}

/// bitsandbytes NF4 with nested (double-quantized) absmax, FP4, and LLM.int8.
#[test]
fn bitsandbytes_checkpoints_match_bitsandbytes_dequantization() {
    assert_eq!(
        check_against_dequantized("llama3-bnb-nf4", 1e-6),
        summary(&[("NF4", 14)])
    );
    assert_eq!(
        check_against_dequantized("llama3-bnb-fp4", 1e-6),
        summary(&[("FP4", 14)])
    );
    assert_eq!(
        check_against_dequantized("llama3-bnb-int8", 1e-6),
        summary(&[("INT8", 14)])
    );
}

/// FP8 E4M3 with [24, 24] scale blocks (partial edge blocks) and with one scale per tensor.
#[test]
fn fp8_checkpoints_match_torch_float8_dequantization() {
    let s = check_against_dequantized("llama3-fp8-block", 1e-6);
    assert_eq!(s.iter().map(|(_, n)| n).sum::<usize>(), 14);
    assert!(
        s.iter()
            .all(|(name, _)| name == "FP8 (scale per 24 columns)" || name == "FP8"),
        "{s:?}"
    );
    assert_eq!(
        check_against_dequantized("llama3-fp8-tensor", 1e-6),
        summary(&[("FP8", 14)])
    );
}
