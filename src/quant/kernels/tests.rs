//! Tests of the kernel dispatch: every SIMD path against the scalar reference.
use super::*;
use candle_core::quantized::QTensor;
use candle_core::{Device, Tensor};

fn random(n: usize, seed: u64) -> Vec<f32> {
    test_data(n, seed, 4.0)
}

const KINDS: [(BlockKind, GgmlDType); 10] = [
    (BlockKind::Q4_0, GgmlDType::Q4_0),
    (BlockKind::Q4_1, GgmlDType::Q4_1),
    (BlockKind::Q5_0, GgmlDType::Q5_0),
    (BlockKind::Q5_1, GgmlDType::Q5_1),
    (BlockKind::Q8_0, GgmlDType::Q8_0),
    (BlockKind::Q4K, GgmlDType::Q4K),
    (BlockKind::Q5K, GgmlDType::Q5K),
    (BlockKind::Q6K, GgmlDType::Q6K),
    (BlockKind::Q3K, GgmlDType::Q3K),
    (BlockKind::Q2K, GgmlDType::Q2K),
];

/// Each kernel against a plain f32 product of the dequantized weight (ggml's own
/// quantizer, via candle, makes the blocks), on random data.
#[test]
fn kernels_match_f32_reference() {
    let (rows, cols, m) = (37, 256, 3);
    let w = random(rows * cols, 1);
    let x = random(m * cols, 2);
    for (kind, dt) in KINDS {
        let q = QTensor::quantize(
            &Tensor::from_vec(w.clone(), (rows, cols), &Device::Cpu).unwrap(),
            dt,
        )
        .unwrap();
        let deq: Vec<f32> = q
            .dequantize(&Device::Cpu)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let bytes = q.data().unwrap();
        let mut isas = vec![Isa::Scalar];
        if isa() != Isa::Scalar {
            isas.push(isa());
        }
        for isa in isas {
            let got = matmul_with(isa, kind, &bytes, rows, cols, &x, m);
            for t in 0..m {
                for n in 0..rows {
                    let exact: f32 = (0..cols).map(|k| x[t * cols + k] * deq[n * cols + k]).sum();
                    let scale: f32 = (0..cols)
                        .map(|k| (x[t * cols + k] * deq[n * cols + k]).abs())
                        .sum();
                    let err = (got[t * rows + n] - exact).abs();
                    // 8-bit activations: error well under 1 % of Σ|x·w|.
                    assert!(
                        err <= 0.01 * scale,
                        "{kind:?} {isa:?} t={t} n={n}: {} vs {exact}",
                        got[t * rows + n]
                    );
                }
            }
        }
    }
}

#[test]
fn dense_matmul_matches_reference() {
    let (rows, cols, m) = (33, 200, 2);
    let w = random(rows * cols, 11);
    let x = random(m * cols, 12);
    let w16: Vec<half::f16> = w.iter().map(|&v| half::f16::from_f32(v)).collect();
    let wb16: Vec<half::bf16> = w.iter().map(|&v| half::bf16::from_f32(v)).collect();
    let cases: [(DenseWeight, Vec<f32>); 3] = [
        (DenseWeight::F32(&w), w.clone()),
        (
            DenseWeight::F16(&w16),
            w16.iter().map(|v| v.to_f32()).collect(),
        ),
        (
            DenseWeight::BF16(&wb16),
            wb16.iter().map(|v| v.to_f32()).collect(),
        ),
    ];
    for (weight, exact) in cases {
        let got = matmul_dense(weight, rows, cols, &x, m);
        for t in 0..m {
            for n in 0..rows {
                let want: f32 = (0..cols)
                    .map(|k| x[t * cols + k] * exact[n * cols + k])
                    .sum();
                assert!(
                    (got[t * rows + n] - want).abs() < 1e-3,
                    "{} vs {want}",
                    got[t * rows + n]
                );
            }
        }
    }
}

/// The SIMD path computes the same integer sums as the scalar one; only the order of
/// float additions differs.
#[test]
fn simd_matches_scalar() {
    if isa() == Isa::Scalar {
        eprintln!("no SIMD path on this CPU; nothing to compare");
        return;
    }
    let (rows, cols) = (64, 1024);
    let w = random(rows * cols, 3);
    let x = random(cols, 4);
    for (kind, dt) in KINDS {
        let q = QTensor::quantize(
            &Tensor::from_vec(w.clone(), (rows, cols), &Device::Cpu).unwrap(),
            dt,
        )
        .unwrap();
        let bytes = q.data().unwrap();
        let a = matmul_with(Isa::Scalar, kind, &bytes, rows, cols, &x, 1);
        let b = matmul_with(isa(), kind, &bytes, rows, cols, &x, 1);
        for (p, q) in a.iter().zip(&b) {
            assert!(
                (p - q).abs() <= 1e-4 * p.abs().max(1.0),
                "{kind:?}: {p} vs {q}"
            );
        }
    }
}

/// The AVX-512 per-row kernels give exactly the AVX2 ones' results (which the
/// four-rows path for batched decode also gives), bit for bit, on random data with
/// even and odd block counts.
#[cfg(target_arch = "x86_64")]
#[test]
fn avx512_dot_equals_avx2_bit_for_bit() {
    if !(avx512_dot() && isa() == Isa::Avx2) {
        eprintln!("no AVX-512 VNNI on this CPU; nothing to compare");
        return;
    }
    for ((kind, dt), cols) in KINDS.iter().map(|&k| (k, 512)).chain(
        KINDS
            .iter()
            .filter(|(k, _)| k.is_legacy())
            .map(|&k| (k, 96)),
    ) {
        let rows = 23;
        let w = random(rows * cols, 21);
        let q = QTensor::quantize(
            &Tensor::from_vec(w, (rows, cols), &Device::Cpu).unwrap(),
            dt,
        )
        .unwrap();
        let bytes = q.data().unwrap();
        let rb = bytes.len() / rows;
        for seed in 0..4 {
            let x = random(cols, 30 + seed);
            let acts = quantize_activations(&x);
            for r in 0..rows {
                let row = &bytes[r * rb..(r + 1) * rb];
                // SAFETY: AVX2/FMA/F16C and AVX-512 F/BW/VNNI were detected.
                let (a, b) =
                    unsafe { (avx2::dot(kind, row, &acts), avx512::dot(kind, row, &acts)) };
                assert_eq!(a.to_bits(), b.to_bits(), "{kind:?} cols {cols} row {r}");
                if r + 4 <= rows {
                    let four: [&[u8]; 4] =
                        std::array::from_fn(|i| &bytes[(r + i) * rb..(r + i + 1) * rb]);
                    // SAFETY: as above.
                    let c = unsafe { avx512::dot_rows::<4>(kind, four, &acts) };
                    assert_eq!(a.to_bits(), c[0].to_bits(), "{kind:?} four rows at {r}");
                }
                let s = scalar::dot(kind, row, &acts);
                assert!(
                    (a - s).abs() <= 1e-4 * s.abs().max(1.0),
                    "{kind:?}: {a} vs {s}"
                );
            }
        }
    }
}

/// Timing of the decode kernels (`cargo test --release -- --ignored decode_kernel_timing
/// --nocapture`): one activation row against weights of SmolLM2-135M's shapes, one thread.
#[cfg(target_arch = "x86_64")]
#[test]
#[ignore]
fn decode_kernel_timing() {
    for (kind, dt, rows, cols) in [
        (BlockKind::Q5_0, GgmlDType::Q5_0, 1536, 576),
        (BlockKind::Q8_0, GgmlDType::Q8_0, 1536, 576),
        (BlockKind::Q4K, GgmlDType::Q4K, 576, 1536),
    ] {
        let w = random(rows * cols, 41);
        let x = random(cols, 42);
        let q = QTensor::quantize(
            &Tensor::from_vec(w.clone(), (rows, cols), &Device::Cpu).unwrap(),
            dt,
        )
        .unwrap();
        let bytes = q.data().unwrap();
        let reps = 2000;
        for no in ["1", "0"] {
            std::env::set_var("SMELT_NO_AVX512", no);
            let t = std::time::Instant::now();
            let mut s = 0f32;
            for _ in 0..reps {
                if no == "1" {
                    let acts = quantize_activations(&x);
                    let rb = bytes.len() / rows;
                    for r in 0..rows {
                        s += unsafe { avx2::dot(kind, &bytes[r * rb..(r + 1) * rb], &acts) };
                    }
                } else {
                    let acts = quantize_activations(&x);
                    let rb = bytes.len() / rows;
                    let row = |r: usize| &bytes[r * rb..(r + 1) * rb];
                    for r in (0..rows).step_by(4) {
                        let o = unsafe {
                            avx512::dot_rows::<4>(
                                kind,
                                [row(r), row(r + 1), row(r + 2), row(r + 3)],
                                &acts,
                            )
                        };
                        s += o[0] + o[1] + o[2] + o[3];
                    }
                }
            }
            let per = t.elapsed().as_secs_f64() / reps as f64;
            eprintln!(
                "{kind:?} avx512={} {:.1} µs/product, {:.1} GB/s ({s})",
                no == "0",
                per * 1e6,
                bytes.len() as f64 / per / 1e9
            );
        }
    }
}

/// A product over many activation rows (the four-rows-at-once path for legacy
/// blocks) gives bit-identical rows to one row at a time.
#[test]
fn many_rows_equal_single_rows_bit_for_bit() {
    // 256 columns (8 blocks) for every kind; 96 (3: an odd count) for 32-blocks.
    let cases = KINDS.iter().map(|&k| (k, 256)).chain(
        KINDS
            .iter()
            .filter(|(k, _)| k.is_legacy())
            .map(|&k| (k, 96)),
    );
    for ((kind, dt), cols) in cases {
        let (rows, m) = (19, 7);
        let w = random(rows * cols, 5);
        let x = random(m * cols, 6);
        let q = QTensor::quantize(
            &Tensor::from_vec(w.clone(), (rows, cols), &Device::Cpu).unwrap(),
            dt,
        )
        .unwrap();
        let bytes = q.data().unwrap();
        let all = matmul(kind, &bytes, rows, cols, &x, m);
        for t in 0..m {
            let one = matmul(kind, &bytes, rows, cols, &x[t * cols..(t + 1) * cols], 1);
            assert!(all[t * rows..(t + 1) * rows] == one[..], "{kind:?} row {t}");
        }
    }
}
