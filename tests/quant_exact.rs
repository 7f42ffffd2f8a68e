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

/// MXFP4 against ggml's reference quantizer (gguf-py's `quants.MXFP4` from the llama.cpp
/// sources, scripts/make-mxfp4-fixture.py), and its forward against its own dequantized
/// weight.
#[test]
fn mxfp4_blocks_are_byte_identical_to_ggml() {
    let weight = input();
    let lin = smelt::quant::isq::quantize_linear(&weight, None, IsqType::Mxfp4).unwrap();
    let m = lin
        .as_any()
        .downcast_ref::<smelt::quant::Mxfp4Linear>()
        .expect("an MXFP4 layer");
    assert!(
        m.bytes() == fixture("MXFP4.bin").as_slice(),
        "MXFP4 differs from ggml's bytes"
    );
    assert_eq!(lin.storage_name(), "MXFP4");
    assert_eq!(lin.size_in_bytes(), 64 * 512 / 32 * 17);
    let x = Tensor::from_vec(
        (0..3 * 512)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 50.0)
            .collect(),
        (3, 512),
        &Device::Cpu,
    )
    .unwrap();
    let got: Vec<f32> = lin
        .forward(&x)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    let want: Vec<f32> = x
        .matmul(&lin.dequantize().unwrap().t().unwrap())
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    for (a, b) in got.iter().zip(&want) {
        assert!((a - b).abs() <= 1e-4 * (1.0 + b.abs()), "{a} vs {b}");
    }
}
