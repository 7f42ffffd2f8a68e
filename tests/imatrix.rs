//! Importance matrices on the real test model, against llama.cpp: both of its imatrix
//! formats read alike; the imatrix smelt collects over GPL-3 matches llama-imatrix's
//! (fixtures cut from llama.cpp 3aa0ce9's files by scripts/make-imatrix-fixtures.py);
//! written `.dat` files read back; and quantizing with it lowers perplexity on another
//! text (Apache-2.0) for Q4_0 and Q3K, landing near llama.cpp's figures
//! (Q4_0 19.1790 → 16.6010 with llama-quantize --imatrix).

mod common;

use common::*;
use smelt::engine::Engine;
use smelt::loaders::LoadOptions;
use smelt::quant::imatrix::Imatrix;
use smelt::quant::IsqType;
use std::path::{Path, PathBuf};
use std::sync::Arc;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/imatrix")
        .join(name)
}

const LINEARS: [&str; 7] = [
    "self_attn.q_proj",
    "self_attn.k_proj",
    "self_attn.v_proj",
    "self_attn.o_proj",
    "mlp.gate_proj",
    "mlp.up_proj",
    "mlp.down_proj",
];

fn max_rel_err(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs() / y.abs().max(1e-6))
        .fold(0.0, f32::max)
}

#[test]
fn llama_cpp_dat_and_gguf_imatrix_read_alike() {
    let dat = Imatrix::load(&fixture("llama-cpp-gpl3-l0-2.dat")).unwrap();
    let gguf = Imatrix::load(&fixture("llama-cpp-gpl3-l0-2.gguf")).unwrap();
    assert_eq!(dat.len(), 21);
    assert_eq!(gguf.len(), 21);
    assert_eq!(gguf.chunks, 14);
    assert!(gguf.dataset.ends_with("GPL-3"), "{}", gguf.dataset);
    for layer in 0..3 {
        for l in LINEARS {
            let name = format!("model.layers.{layer}.{l}");
            let (a, b) = (
                dat.for_weight(&name).unwrap(),
                gguf.for_weight(&name).unwrap(),
            );
            assert!(max_rel_err(a, b) < 1e-5, "{name}");
        }
    }
    assert!(Imatrix::load(&fixture("missing.dat")).is_err());
}

fn ppl(isq: IsqType, imatrix: Option<Arc<Imatrix>>) -> f64 {
    let opts = LoadOptions {
        isq: Some(isq),
        imatrix,
        ..Default::default()
    };
    let engine = Engine::new(smelt::load(&plain_spec(), &opts).unwrap()).unwrap();
    let text = std::fs::read_to_string("/usr/share/common-licenses/Apache-2.0").unwrap();
    smelt::perplexity::perplexity(&engine, &text, 512, None)
        .unwrap()
        .ppl
}

#[test]
fn calibration_matches_llama_imatrix_and_lowers_perplexity() {
    let mut engine = engine(&plain_spec());
    let gpl3 = Path::new("/usr/share/common-licenses/GPL-3");
    let ours = smelt::calibrate::collect(&mut engine, gpl3, 512).unwrap();
    drop(engine);
    assert_eq!(ours.chunks, 14);
    // Every attention and MLP linear, and the head.
    assert_eq!(ours.len(), 30 * 7 + 1);
    assert_eq!(ours.for_weight("lm_head").map(<[f32]>::len), Some(576));
    let reference = Imatrix::load(&fixture("llama-cpp-gpl3-l0-2.gguf")).unwrap();
    for layer in 0..3 {
        for l in LINEARS {
            let name = format!("model.layers.{layer}.{l}");
            let err = max_rel_err(
                ours.for_weight(&name).unwrap(),
                reference.for_weight(&name).unwrap(),
            );
            assert!(err < 0.01, "{name}: {err}");
        }
    }
    // The .dat file we write reads back (as llama.cpp's reader would: values / ncall).
    let path = std::env::temp_dir().join(format!("smelt-calib-{}.dat", std::process::id()));
    ours.save_dat(&path).unwrap();
    let back = Imatrix::load(&path).unwrap();
    std::fs::remove_file(&path).ok();
    let name = "model.layers.7.mlp.down_proj";
    assert!(
        max_rel_err(
            back.for_weight(name).unwrap(),
            ours.for_weight(name).unwrap()
        ) < 1e-6
    );

    let ours = Arc::new(ours);
    let q4_0 = (
        ppl(IsqType::Q4_0, None),
        ppl(IsqType::Q4_0, Some(ours.clone())),
    );
    let q3k = (ppl(IsqType::Q3K, None), ppl(IsqType::Q3K, Some(ours)));
    eprintln!(
        "Q4_0 {:.4} -> {:.4}; Q3K {:.4} -> {:.4}",
        q4_0.0, q4_0.1, q3k.0, q3k.1
    );
    assert!(
        q4_0.1 < q4_0.0 * 0.95,
        "imatrix should improve Q4_0: {q4_0:?}"
    );
    assert!(q3k.1 < q3k.0 * 0.95, "imatrix should improve Q3K: {q3k:?}");
    // llama.cpp: Q4_0 19.1790 → 16.6010 (its own imatrix from the same text).
    assert!((q4_0.1 / 16.6010 - 1.0).abs() < 0.02, "{q4_0:?}");
}
