//! The HQQ, FP8 and AFQ ISQ methods against their reference packages
//! (scripts/make-quant-method-fixtures.py): MLX's `mx.quantize` for AFQ (packed words and
//! scales exact), `ml_dtypes` float8_e4m3fn for FP8 (codes exact), the `hqq` package on
//! torch for HQQ (codes, scales, zeros and dequantized weights within float noise). Then
//! each method's forward (decode-sized and prompt-sized inputs) against its own
//! dequantized weight, and bad inputs.

use candle_core::{Device, Tensor};
use half::f16;
use smelt::quant::hqq::HqqAxis;
use smelt::quant::{fp8, isq, AfqLinear, Fp8Linear, HqqLinear, IsqType, QuantLinear};

fn fixture(name: &str) -> Vec<u8> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/quant_methods")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn f32s(name: &str) -> Vec<f32> {
    fixture(name)
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect()
}

fn u32s(name: &str) -> Vec<u32> {
    fixture(name)
        .chunks_exact(4)
        .map(|b| u32::from_le_bytes(b.try_into().unwrap()))
        .collect()
}

const ROWS: usize = 16;
const COLS: usize = 128;

fn values(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1().unwrap()
}

#[test]
fn afq_words_and_scales_equal_mlx() {
    let w = f32s("input.f32");
    for bits in [2u32, 3, 4, 6, 8] {
        let lin = AfqLinear::quantize(&w, ROWS, COLS, bits, 64, None).unwrap();
        assert!(
            lin.packed() == u32s(&format!("afq{bits}.u32")).as_slice(),
            "AFQ{bits}: packed words differ from mx.quantize"
        );
        let scales = f32s(&format!("afq{bits}.scales.f32"));
        let biases = f32s(&format!("afq{bits}.biases.f32"));
        for (g, ((s, b), (rs, rb))) in lin
            .scales()
            .iter()
            .zip(lin.biases())
            .zip(scales.iter().zip(&biases))
            .enumerate()
        {
            // Stored as f16; MLX's are f32 for an f32 input.
            assert_eq!(
                s.to_bits(),
                f16::from_f32(*rs).to_bits(),
                "AFQ{bits} scale {g}"
            );
            assert_eq!(
                b.to_bits(),
                f16::from_f32(*rb).to_bits(),
                "AFQ{bits} bias {g}"
            );
        }
        // Dequantized: exactly scale·q + bias from the stored parts.
        let codes = lin.codes();
        let deq = values(&lin.dequantize().unwrap());
        for (i, (&d, &q)) in deq.iter().zip(&codes).enumerate() {
            let g = i / 64;
            let want = lin.scales()[g].to_f32() * q as f32 + lin.biases()[g].to_f32();
            assert_eq!(d, want, "AFQ{bits} element {i}");
        }
    }
    // Against mx.dequantize (f32 parameters): the f16 rounding of scale and bias only.
    let lin = AfqLinear::quantize(&w, ROWS, COLS, 4, 64, None).unwrap();
    let (ours, theirs) = (values(&lin.dequantize().unwrap()), f32s("afq4.deq.f32"));
    let (scales, biases) = (f32s("afq4.scales.f32"), f32s("afq4.biases.f32"));
    for (i, (a, b)) in ours.iter().zip(&theirs).enumerate() {
        let (s, z) = (scales[i / 64].abs(), biases[i / 64].abs());
        let tol = 1e-3 * (15.0 * s + z) + 1e-6;
        assert!((a - b).abs() <= tol, "AFQ4 element {i}: {a} vs mlx {b}");
    }
}

#[test]
fn fp8_codes_equal_ml_dtypes() {
    let probe = f32s("fp8_probe.f32");
    let want = fixture("fp8_probe.codes.u8");
    for (v, c) in probe.iter().zip(&want) {
        assert_eq!(fp8::f32_to_e4m3(*v), *c, "{v:e}: ours vs ml_dtypes");
    }
    // Representable probes decode to themselves.
    for (v, c) in probe.iter().zip(&want) {
        let d = fp8::e4m3_to_f32(*c);
        assert!(
            (d - v).abs() <= v.abs() / 16.0 + 2f32.powi(-10),
            "{v} decodes to {d}"
        );
    }
    let w = f32s("input.f32");
    let lin = Fp8Linear::quantize(&w, ROWS, COLS, None).unwrap();
    assert!(lin.codes() == fixture("fp8.codes.u8").as_slice());
    assert_eq!(lin.scales(), f32s("fp8.scales.f32").as_slice());
}

/// Both of hqq's groupings: axis 0 (strided groups) and axis 1 (64 consecutive inputs).
#[test]
fn hqq_matches_the_hqq_package() {
    for (suffix, rows, cols) in [("", ROWS, COLS), ("_tall", 40, 64)] {
        let w = f32s(&format!("input{suffix}.f32"));
        for (axis, tag) in [(HqqAxis::Strided, ""), (HqqAxis::Contiguous, "_axis1")] {
            for bits in [4u32, 8] {
                let name = format!("hqq{bits}{tag}{suffix}");
                let lin = HqqLinear::quantize_axis(&w, rows, cols, bits, 64, axis, None).unwrap();
                let (scale, zero) = (
                    f32s(&format!("{name}.scale.f32")),
                    f32s(&format!("{name}.zero.f32")),
                );
                let codes = lin.codes();
                let ref_codes = fixture(&format!("{name}.codes.u8"));
                let differ = codes.iter().zip(&ref_codes).filter(|(a, b)| a != b).count();
                assert_eq!(differ, 0, "{name}: {differ} codes differ from hqq's");
                for g in 0..scale.len() {
                    assert_eq!(lin.scales()[g], f16::from_f32(scale[g]), "{name} scale {g}");
                    // The zero is a mean; summation order may move it by float noise.
                    let z = lin.zeros()[g].to_f32();
                    assert!(
                        (z - zero[g]).abs() <= 1e-3 * zero[g].abs().max(1.0),
                        "{name} zero {g}: {z} vs {}",
                        zero[g]
                    );
                }
                let ours = values(&lin.dequantize().unwrap());
                let theirs = f32s(&format!("{name}.deq.f32"));
                let l = scale.len();
                let mut worst = 0f32;
                for (i, (a, b)) in ours.iter().zip(&theirs).enumerate() {
                    // f16 storage of scale and zero: ≤ 2^-11 relative on each.
                    let g = match axis {
                        HqqAxis::Strided => i % l,
                        HqqAxis::Contiguous => i / 64,
                    };
                    let (s, z) = (scale[g].abs(), zero[g].abs());
                    let tol = s * (1e-3 * (f32::from(ref_codes[i]) + z) + 1e-4);
                    worst = worst.max((a - b).abs() / tol);
                    assert!((a - b).abs() <= tol, "{name} element {i}: {a} vs hqq {b}");
                }
                eprintln!("{name}: dequantized within {worst:.3} of the tolerance");
            }
        }
    }
}

fn all_types() -> Vec<IsqType> {
    [
        "HQQ4",
        "HQQ8",
        "HQQ4_AXIS0",
        "HQQ8_AXIS0",
        "FP8",
        "AFQ2",
        "AFQ3",
        "AFQ4",
        "AFQ6",
        "AFQ8",
    ]
    .iter()
    .map(|s| s.parse().unwrap())
    .collect()
}

/// Deterministic pseudo-random values in (−0.5, 0.5) · scale.
fn random(n: usize, seed: u64, scale: f32) -> Vec<f32> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * scale
        })
        .collect()
}

#[test]
fn forward_equals_dequantized_matmul() {
    let dev = Device::Cpu;
    let (rows, cols) = (72, 192);
    let w = Tensor::from_vec(random(rows * cols, 1, 0.2), (rows, cols), &dev).unwrap();
    let bias = Tensor::from_vec(random(rows, 2, 1.0), rows, &dev).unwrap();
    for ty in all_types() {
        let lin = isq::quantize_linear(&w, Some(bias.clone()), ty).unwrap();
        assert_eq!(lin.storage_name(), ty.to_string());
        let deq = lin.dequantize().unwrap();
        // Decode-sized (row kernel) and prompt-sized (dequantize + GEMM) inputs, 2-D and 3-D.
        for shape in [vec![1, cols], vec![1, 3, cols], vec![2, 20, cols]] {
            let n: usize = shape.iter().product();
            let x = Tensor::from_vec(random(n, 3, 2.0), shape.clone(), &dev).unwrap();
            let y = lin.forward(&x).unwrap();
            let want = x
                .broadcast_matmul(&deq.t().unwrap())
                .unwrap()
                .broadcast_add(&bias)
                .unwrap();
            assert_eq!(y.dims(), want.dims());
            let (y, want) = (values(&y), values(&want));
            let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
            for (a, b) in y.iter().zip(&want) {
                assert!(
                    (a - b).abs() <= 1e-4 * scale,
                    "{ty} {shape:?}: {a} vs {b} (of {scale})"
                );
            }
        }
    }
}

#[test]
fn dequantize_stays_within_a_quantization_step() {
    let w = f32s("input.f32");
    let n = w.len();
    let t = Tensor::from_vec(w.clone(), (ROWS, COLS), &Device::Cpu).unwrap();
    for ty in all_types() {
        let lin = isq::quantize_linear(&t, None, ty).unwrap();
        let d = values(&lin.dequantize().unwrap());
        // Requantizing the dequantized weight (`apply_isq` on a quantized layer).
        let d2 = values(&lin.apply_isq(ty).unwrap().dequantize().unwrap());
        // The elements sharing element i's parameters, and how many steps they span.
        let (members, levels): (Box<dyn Fn(usize) -> Vec<usize>>, f32) = match ty {
            // hqq's axis-0 groups: every (numel/64)-th flat element.
            IsqType::Hqq {
                bits,
                axis: HqqAxis::Strided,
            } => (
                Box::new(move |i| (i % (n / 64)..n).step_by(n / 64).collect()),
                ((1u32 << bits) - 1) as f32,
            ),
            // axis 1: 64 consecutive inputs.
            IsqType::Hqq {
                bits,
                axis: HqqAxis::Contiguous,
            } => (
                Box::new(|i| (i / 64 * 64..i / 64 * 64 + 64).collect()),
                ((1u32 << bits) - 1) as f32,
            ),
            IsqType::Afq { bits } => (
                Box::new(|i| (i / 64 * 64..i / 64 * 64 + 64).collect()),
                ((1u32 << bits) - 1) as f32,
            ),
            // A row per scale; a 3-bit mantissa is a step of 1/8 of a value at most.
            _ => (
                Box::new(|i| (i / COLS * COLS..i / COLS * COLS + COLS).collect()),
                8.0,
            ),
        };
        for i in 0..n {
            let (lo, hi) = members(i).iter().fold((f32::MAX, f32::MIN), |(a, b), &j| {
                (a.min(w[j]), b.max(w[j]))
            });
            let step = match ty {
                IsqType::Fp8 => hi.abs().max(lo.abs()) / levels,
                _ => (hi - lo) / levels,
            } + 1e-6
                // f16 parameters: a constant group's bias or zero is rounded, and the scale
                // of a group of tiny weights (row 3, ~1e-6) is an f16 subnormal, off by up
                // to 2^-25 per level.
                + 1e-3 * w[i].abs()
                + levels * 2f32.powi(-25);
            // FP8 rounds to nearest: half a step. MLX's scale is stretched to hit its
            // anchor edge exactly and HQQ's zero is optimised, so the far edge may clamp:
            // one step.
            let bound = if ty == IsqType::Fp8 {
                0.5 * step * 1.01
            } else if matches!(ty, IsqType::Hqq { .. }) && hi - lo <= 1e-4 {
                // hqq gives a group spanning ≤ 1e-4 the scale 1: one level for all of it
                // (an axis-1 group inside row 3's tiny weights).
                (hi - lo) + step
            } else {
                step
            };
            assert!(
                (w[i] - d[i]).abs() <= bound,
                "{ty} element {i}: {} → {}",
                w[i],
                d[i]
            );
            assert!(
                (d[i] - d2[i]).abs() <= bound,
                "{ty} requantized {i}: {} → {}",
                d[i],
                d2[i]
            );
        }
        // AFQ and FP8 give zero and constant rows back (to the f16 of AFQ's bias).
        if !matches!(ty, IsqType::Hqq { .. }) {
            for i in 0..2 * COLS {
                assert!(
                    (w[i] - d[i]).abs() <= 1e-3 * w[i].abs(),
                    "{ty} {i}: {} → {}",
                    w[i],
                    d[i]
                );
            }
        }
    }
}

#[test]
fn sizes_reflect_packed_storage() {
    let w = Tensor::zeros((ROWS, COLS), candle_core::DType::F32, &Device::Cpu).unwrap();
    let n = ROWS * COLS;
    let groups = n / 64;
    for (name, bytes) in [
        ("HQQ4", n / 2 + groups * 4),
        ("HQQ8", n + groups * 4),
        ("FP8", n + ROWS * 4),
        ("AFQ2", n / 4 + groups * 4),
        ("AFQ3", n * 3 / 8 + groups * 4),
        ("AFQ4", n / 2 + groups * 4),
        ("AFQ6", n * 6 / 8 + groups * 4),
        ("AFQ8", n + groups * 4),
    ] {
        let lin = isq::quantize_linear(&w, None, name.parse().unwrap()).unwrap();
        assert_eq!(lin.size_in_bytes(), bytes, "{name}");
    }
}

#[test]
fn bad_inputs_are_errors() {
    let w = random(4 * 96, 9, 1.0);
    // Rows that are not whole 64-element groups.
    let err = AfqLinear::quantize(&w, 4, 96, 4, 64, None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("not a multiple of the group size"), "{err}");
    let err = HqqLinear::quantize(&w, 4, 96, 4, 64, None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("not a multiple of the group size"), "{err}");
    // Bit widths the methods do not have.
    assert!(AfqLinear::quantize(&w, 4, 96, 5, 32, None).is_err());
    assert!(AfqLinear::quantize(&w, 4, 96, 4, 48, None).is_err());
    assert!(HqqLinear::quantize(&w, 4, 96, 2, 32, None).is_err());
    for bad in ["AFQ5", "HQQ2", "FP4", "HQQ"] {
        let err = bad.parse::<IsqType>().unwrap_err().to_string();
        assert!(err.contains("valid") && err.contains("AFQ4"), "{err}");
    }
    // Non-finite weights, mismatched sizes.
    let mut nan = random(2 * 64, 1, 1.0);
    nan[5] = f32::NAN;
    assert!(AfqLinear::quantize(&nan, 2, 64, 4, 64, None).is_err());
    assert!(HqqLinear::quantize(&nan, 2, 64, 4, 64, None).is_err());
    assert!(Fp8Linear::quantize(&nan, 2, 64, None).is_err());
    assert!(Fp8Linear::quantize(&w, 5, 96, None).is_err());
    assert!(Fp8Linear::from_parts(1, 2, vec![0x10, 0xff], vec![1.0], None).is_err());
    assert!(HqqLinear::quantize(&[], 0, 64, 4, 64, None).is_err());
    // Through ISQ, a layer whose rows do not fit the group stays dense (with a warning).
    let t = Tensor::from_vec(w, (4, 96), &Device::Cpu).unwrap();
    for ty in ["AFQ4", "HQQ4"] {
        let lin = isq::quantize_linear(&t, None, ty.parse().unwrap()).unwrap();
        assert_eq!(lin.storage_name(), "f32", "{ty}");
    }
    assert_eq!(
        isq::quantize_linear(&t, None, IsqType::Fp8)
            .unwrap()
            .storage_name(),
        "FP8"
    );
}
