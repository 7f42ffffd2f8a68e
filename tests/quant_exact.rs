//! ISQ output against ggml's reference quantizers: the `gguf` package's numpy ones
//! (Q4_0…Q8_0) and llama.cpp's llama-quantize --pure (Q2_K…Q6_K), on one 64 × 512 weight
//! with zero, constant, outlier and tiny rows (scripts/make-quant-fixtures.py).
//! Q2_K/Q4_K/Q5_K/Q6_K come from smelt's own quantizers (`quant/kquants.rs`), the rest
//! from candle's, which match ggml there.

use candle_core::{Device, Tensor};
use smelt::quant::IsqType;

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/quant")
            .join(name),
    )
    .unwrap()
}

fn input() -> Tensor {
    let raw = fixture("input.f32");
    let w: Vec<f32> = raw
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect();
    Tensor::from_vec(w, (64, 512), &Device::Cpu).unwrap()
}

fn ours(weight: &Tensor, name: &str) -> Vec<u8> {
    let ty: IsqType = name.parse().unwrap();
    let lin = smelt::quant::isq::quantize_linear(weight, None, ty).unwrap();
    smelt::quant::isq::quantized_bytes(lin.as_ref()).expect("a ggml layer")
}

#[test]
fn isq_blocks_are_byte_identical_to_ggml() {
    let weight = input();
    for name in [
        "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K",
    ] {
        assert!(
            ours(&weight, name) == fixture(&format!("{name}.bin")),
            "{name} differs from ggml's bytes"
        );
    }
}

fn importances() -> Vec<f32> {
    fixture("imatrix.f32")
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect()
}

/// With an imatrix, the types llama.cpp weights (its `_impl` quantizers) give the bytes
/// of `llama-quantize --pure --imatrix` on the same weight and importances.
#[test]
fn imatrix_weighted_blocks_are_byte_identical_to_llama_quantize() {
    let weight = input();
    let im = importances();
    let mut differ = Vec::new();
    for name in [
        "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K",
    ] {
        let ty: IsqType = name.parse().unwrap();
        let lin =
            smelt::quant::isq::quantize_linear_weighted(&weight, None, ty, Some(&im)).unwrap();
        let got = smelt::quant::isq::quantized_bytes(lin.as_ref()).unwrap();
        let unweighted = fixture(&format!("{name}.bin"));
        assert_ne!(got, unweighted, "{name}: the imatrix changed nothing");
        if got != fixture(&format!("{name}.imatrix.bin")) {
            differ.push(name);
        }
    }
    assert!(
        differ.is_empty(),
        "differ from llama-quantize --imatrix: {differ:?}"
    );
}
