//! UQFF files: a model ISQ'd and saved with `--write-uqff` loads back with `--from-uqff`
//! without quantizing and gives bit-identical logits, also from a directory holding only
//! config.json and the tokenizer (embeddings and norms then come from the residual file);
//! files from another model, of a newer format version, or truncated are clear errors.

mod common;

use common::*;
use smelt::loaders::{LoadOptions, ModelSpec};
use smelt::quant::IsqType;
use std::path::{Path, PathBuf};

/// The tests here run one at a time: a load's ISQ seconds come from a process-wide
/// counter, so a test quantizing beside another would make "UQFF loads without
/// quantizing" fail spuriously.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn tmp(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("smelt-uqff-{}-{name}", std::process::id()))
}

fn logits(loaded: &smelt::loaders::LoadedModel, tokens: &[u32]) -> Vec<f32> {
    let mut cache = loaded.model.new_cache();
    loaded
        .model
        .forward(tokens, &mut cache, 0)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

fn from_uqff(spec: &ModelSpec, path: &Path) -> anyhow::Result<smelt::loaders::LoadedModel> {
    let opts = LoadOptions {
        from_uqff: Some(path.to_path_buf()),
        ..Default::default()
    };
    smelt::load(spec, &opts)
}

#[test]
fn uqff_round_trip_is_bit_identical_for_every_method() {
    let _serial = serial();
    let tokens = [504u32, 3458, 282, 4649, 314, 2272, 30, 1030];
    for (spec, ty) in [
        (plain_spec(), IsqType::Q4K),
        (gguf_spec(), IsqType::Q8_0),
        (plain_spec(), "AFQ4".parse().unwrap()),
        (plain_spec(), "FP8".parse().unwrap()),
        (plain_spec(), "HQQ4".parse().unwrap()),
    ] {
        let opts = LoadOptions {
            isq: Some(ty),
            record_residual: true,
            ..Default::default()
        };
        let isq = smelt::load(&spec, &opts).unwrap();
        let path = tmp(&format!("{ty}.uqff"));
        smelt::quant::uqff::write_loaded(&isq, &path).unwrap();
        // The header names every method used (a GGUF's quantized embedding counts too).
        let bytes = std::fs::read(&path).unwrap();
        let (_, header) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
        let methods = header.metadata().as_ref().unwrap()["methods"].clone();
        for (k, _) in isq.model.linear_storage_summary() {
            assert!(methods.contains(&format!("×{k}")), "{methods} lacks {k}");
        }
        let back = from_uqff(&spec, &path).unwrap();
        assert_eq!(back.isq_seconds, 0.0, "loading from UQFF must not quantize");
        assert_eq!(
            back.model.linear_storage_summary(),
            isq.model.linear_storage_summary()
        );
        assert!(
            logits(&back, &tokens) == logits(&isq, &tokens),
            "{ty}: logits differ"
        );
        eprintln!(
            "{ty}: ISQ load {:.2}s, UQFF load {:.2}s",
            isq.load_seconds, back.load_seconds
        );
        std::fs::remove_file(&path).ok();
        std::fs::remove_file(smelt::quant::uqff_residual::residual_path(&path)).ok();
    }
}

/// With the residual file, a directory of config.json and tokenizer files is enough;
/// a head quantized by the topology is stored among the layers.
#[test]
fn uqff_with_residual_needs_no_original_weights() {
    let _serial = serial();
    let tokens = [504u32, 3458, 282, 4649, 314, 2272, 30, 1030];
    let topology = smelt::quant::Topology::parse("'/lm_head/': {isq: Q6K}\n").unwrap();
    let opts = LoadOptions {
        isq: Some(IsqType::Q4K),
        topology: Some(topology),
        record_residual: true,
        ..Default::default()
    };
    let isq = smelt::load(&plain_spec(), &opts).unwrap();
    let path = tmp("bare.uqff");
    smelt::quant::uqff::write_loaded(&isq, &path).unwrap();
    let residual = smelt::quant::uqff_residual::residual_path(&path);
    let bare = tmp("bare-model");
    std::fs::create_dir_all(&bare).unwrap();
    for f in ["config.json", "tokenizer.json", "tokenizer_config.json"] {
        std::fs::copy(plain_snapshot().join(f), bare.join(f)).unwrap();
    }
    let spec = ModelSpec::Plain {
        model_id: bare.to_string_lossy().into_owned(),
        revision: "main".into(),
    };
    let back = from_uqff(&spec, &path).unwrap();
    assert!(
        logits(&back, &tokens) == logits(&isq, &tokens),
        "logits differ"
    );
    // Without the residual, the bare directory is an error naming what is missing.
    std::fs::remove_file(&residual).unwrap();
    let e = format!("{:#}", from_uqff(&spec, &path).err().unwrap());
    assert!(e.contains("model.safetensors"), "{e}");
    std::fs::remove_dir_all(&bare).ok();
    std::fs::remove_file(&path).ok();
}

#[test]
fn bad_uqff_files_are_clear_errors() {
    let _serial = serial();
    let tiny = |case: &str| ModelSpec::Plain {
        model_id: Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/tiny")
            .join(case)
            .to_string_lossy()
            .into_owned(),
        revision: "main".into(),
    };
    let opts = LoadOptions {
        isq: Some(IsqType::Q8_0),
        ..Default::default()
    };
    let m = smelt::load(&tiny("llama3"), &opts).unwrap();
    let path = tmp("tiny.uqff");
    smelt::quant::uqff::write(m.model.as_ref(), &m.name, &path, None).unwrap();
    assert!(from_uqff(&tiny("llama3"), &path).is_ok());

    let msg = |r: anyhow::Result<smelt::loaders::LoadedModel>| {
        format!("{:#}", r.err().expect("an error"))
    };
    // Another model.
    let e = msg(from_uqff(&tiny("qwen2"), &path));
    assert!(e.contains("written for another model"), "{e}");
    // ISQ and UQFF together.
    let both = LoadOptions {
        isq: Some(IsqType::Q4_0),
        from_uqff: Some(path.clone()),
        ..Default::default()
    };
    assert!(msg(smelt::load(&tiny("llama3"), &both)).contains("drop --isq"));
    // A newer major version: rewrite the version scalar.
    let bytes = std::fs::read(&path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let two = 2u32.to_le_bytes();
    let views: Vec<(String, safetensors::tensor::TensorView)> = st
        .tensors()
        .into_iter()
        .map(|(n, v)| {
            if n == "uqff.version.major" {
                (
                    n,
                    safetensors::tensor::TensorView::new(v.dtype(), v.shape().to_vec(), &two)
                        .unwrap(),
                )
            } else {
                (n, v)
            }
        })
        .collect();
    let newer = tmp("newer.uqff");
    safetensors::serialize_to_file(views, meta.metadata().clone(), &newer).unwrap();
    let e = msg(from_uqff(&tiny("llama3"), &newer));
    assert!(
        e.contains("format 2") && e.contains("reads format 1"),
        "{e}"
    );
    // Truncated.
    let cut = tmp("cut.uqff");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let e = msg(from_uqff(&tiny("llama3"), &cut));
    assert!(e.contains("truncated"), "{e}");
    // Not a UQFF at all (a plain checkpoint).
    let e = msg(from_uqff(
        &tiny("llama3"),
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny/llama3/model.safetensors"),
    ));
    assert!(e.contains("not a UQFF file"), "{e}");
    for p in [path, newer, cut] {
        std::fs::remove_file(p).ok();
    }
}

/// UQFF 1.0 files predate HQQ's `.weight.axis`: without it a layer is hqq's axis 0. A file
/// of `HQQ4_AXIS0` layers with the axis tensors stripped loads to the same logits; the
/// default `HQQ4` (axis 1) round-trips with its axis recorded.
#[test]
fn hqq_files_without_an_axis_read_as_axis_0() {
    let _serial = serial();
    let tokens = [504u32, 3458, 282, 4649, 314, 2272, 30, 1030];
    let opts = LoadOptions {
        isq: Some("HQQ4_AXIS0".parse().unwrap()),
        record_residual: true,
        ..Default::default()
    };
    let isq = smelt::load(&plain_spec(), &opts).unwrap();
    let path = tmp("axis0.uqff");
    smelt::quant::uqff::write_loaded(&isq, &path).unwrap();
    // Rewrite the file without any `.weight.axis` tensor, as a 1.0 writer made it.
    let bytes = std::fs::read(&path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let kept: Vec<(String, safetensors::tensor::TensorView)> = st
        .tensors()
        .into_iter()
        .filter(|(k, _)| !k.ends_with(".weight.axis"))
        .collect();
    assert!(kept.len() < st.len(), "the writer records the axis");
    let old = tmp("axis0-v1.0.uqff");
    safetensors::serialize_to_file(kept, header.metadata().clone(), &old).unwrap();
    std::fs::copy(
        smelt::quant::uqff_residual::residual_path(&path),
        smelt::quant::uqff_residual::residual_path(&old),
    )
    .unwrap();
    let back = from_uqff(&plain_spec(), &old).unwrap();
    assert!(logits(&back, &tokens) == logits(&isq, &tokens));
    assert!(back
        .model
        .linear_storage_summary()
        .iter()
        .any(|(k, _)| k == "HQQ4_AXIS0"));
    for p in [&path, &old] {
        std::fs::remove_file(p).ok();
        std::fs::remove_file(smelt::quant::uqff_residual::residual_path(p)).ok();
    }
}
