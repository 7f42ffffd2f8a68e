//! The integer prompt GEMM against the scalar reference and candle's ggml matmul.
use super::super::{matmul_with, test_data, Isa};
use super::*;
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};

const KINDS: [(BlockKind, GgmlDType); 10] = [
    (BlockKind::Q4_0, GgmlDType::Q4_0),
    (BlockKind::Q4_1, GgmlDType::Q4_1),
    (BlockKind::Q5_0, GgmlDType::Q5_0),
    (BlockKind::Q5_1, GgmlDType::Q5_1),
    (BlockKind::Q8_0, GgmlDType::Q8_0),
    (BlockKind::Q2K, GgmlDType::Q2K),
    (BlockKind::Q3K, GgmlDType::Q3K),
    (BlockKind::Q4K, GgmlDType::Q4K),
    (BlockKind::Q5K, GgmlDType::Q5K),
    (BlockKind::Q6K, GgmlDType::Q6K),
];

fn quantized(w: &[f32], rows: usize, cols: usize, dt: GgmlDType) -> (Vec<u8>, Vec<f32>) {
    let q = QTensor::quantize(
        &Tensor::from_vec(w.to_vec(), (rows, cols), &Device::Cpu).unwrap(),
        dt,
    )
    .unwrap();
    let deq = q
        .dequantize(&Device::Cpu)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    (q.data().unwrap().to_vec(), deq)
}

fn tiles() -> Vec<Tile> {
    all_tiles()
}

/// Against a plain f32 product of the dequantized weight, on random data, with rows
/// and tokens that leave partial panels and tiles.
#[test]
fn matches_f32_reference() {
    let (rows, cols, m) = (37, 512, 13);
    let w = test_data(rows * cols, 21, 4.0);
    let x = test_data(m * cols, 22, 4.0);
    for (kind, dt) in KINDS {
        let (bytes, deq) = quantized(&w, rows, cols, dt);
        for tile in tiles() {
            for span in [32, 256] {
                let got = matmul(tile, kind, &bytes, rows, cols, &x, m, span);
                for t in 0..m {
                    for n in 0..rows {
                        let xs = &x[t * cols..(t + 1) * cols];
                        let ws = &deq[n * cols..(n + 1) * cols];
                        let exact: f32 = xs.iter().zip(ws).map(|(a, b)| a * b).sum();
                        let scale: f32 = xs.iter().zip(ws).map(|(a, b)| (a * b).abs()).sum();
                        let err = (got[t * rows + n] - exact).abs();
                        assert!(
                            err <= 0.01 * scale,
                            "{kind:?} {tile:?} span {span} t={t} n={n}: {} vs {exact}",
                            got[t * rows + n]
                        );
                    }
                }
            }
        }
    }
}

/// The SIMD tile gives the scalar tile's results bit for bit, and so do the per-row
/// decode kernels' integer sums (only the order of float additions may differ there).
#[test]
fn simd_tile_is_bit_identical_to_scalar() {
    let (rows, cols, m) = (50, 768, 21);
    let w = test_data(rows * cols, 23, 2.0);
    let x = test_data(m * cols, 24, 3.0);
    // Codes and activations at their extremes, products all of one sign: what would
    // overflow an i16 pair sum (`maddubs`) if a tile let it.
    let sign = |i: usize| {
        if (i * 7 + i / 5).is_multiple_of(3) {
            -1.0
        } else {
            1.0
        }
    };
    let w_max: Vec<f32> = (0..rows * cols).map(|i| sign(i % cols)).collect();
    let x_max: Vec<f32> = (0..m * cols).map(|i| sign(i % cols) * 5.0).collect();
    for (kind, dt) in KINDS {
        for (w, x) in [(&w, &x), (&w_max, &x_max)] {
            let (bytes, _) = quantized(w, rows, cols, dt);
            let a = matmul(Tile::Scalar, kind, &bytes, rows, cols, x, m, 32);
            for tile in all_tiles().into_iter().skip(1) {
                let b = matmul(tile, kind, &bytes, rows, cols, x, m, 32);
                assert!(a == b, "{kind:?}: {tile:?} differs from the scalar tile");
            }
            let rowwise = matmul_with(Isa::Scalar, kind, &bytes, rows, cols, x, m);
            for (p, q) in a.iter().zip(&rowwise) {
                assert!(
                    (p - q).abs() <= 1e-4 * p.abs().max(1.0),
                    "{kind:?}: {p} vs {q}"
                );
            }
        }
    }
}

/// A token's outputs do not depend on the other tokens of the call (tile position,
/// partial tiles) nor on how many there are.
#[test]
fn tokens_are_independent_of_their_batch() {
    let (rows, cols, m) = (40, 256, 19);
    let w = test_data(rows * cols, 25, 2.0);
    let x = test_data(m * cols, 26, 3.0);
    for (kind, dt) in KINDS {
        let (bytes, _) = quantized(&w, rows, cols, dt);
        for tile in tiles() {
            let all = matmul(tile, kind, &bytes, rows, cols, &x, m, 32);
            for t in [0, 5, 8, 17, 18] {
                let one = matmul(
                    tile,
                    kind,
                    &bytes,
                    rows,
                    cols,
                    &x[t * cols..(t + 1) * cols],
                    1,
                    32,
                );
                assert!(all[t * rows..(t + 1) * rows] == one[..], "{kind:?} {t}");
                let tail = matmul(tile, kind, &bytes, rows, cols, &x[t * cols..], m - t, 32);
                assert!(all[t * rows..] == tail[..], "{kind:?} from {t}");
            }
        }
    }
}

/// Several weights in one run (q/k/v) give each weight's own product bit for bit,
/// whatever panels each thread gets.
#[test]
fn many_weights_equal_one_at_a_time() {
    let (cols, m) = (256, 35);
    let x = test_data(m * cols, 27, 3.0);
    let shapes = [
        (BlockKind::Q4K, GgmlDType::Q4K, 48),
        (BlockKind::Q5_0, GgmlDType::Q5_0, 16),
        (BlockKind::Q8_0, GgmlDType::Q8_0, 21),
        (BlockKind::Q4_1, GgmlDType::Q4_1, 5),
    ];
    let data: Vec<Vec<u8>> = shapes
        .iter()
        .enumerate()
        .map(|(i, &(_, dt, rows))| {
            quantized(&test_data(rows * cols, 30 + i as u64, 2.0), rows, cols, dt).0
        })
        .collect();
    let weights: Vec<PromptWeight> = shapes
        .iter()
        .zip(&data)
        .map(|(&(kind, _, rows), d)| PromptWeight {
            kind,
            data: d,
            rows,
        })
        .collect();
    for tile in tiles() {
        for span in [32, 256] {
            let all = matmul_many(tile, &weights, cols, &x, m, |_| span);
            for (w, got) in weights.iter().zip(&all) {
                let one = matmul(tile, w.kind, w.data, w.rows, cols, &x, m, span);
                assert!(*got == one, "{:?} {tile:?}", w.kind);
            }
            // Subsets shift which thread gets which panel.
            for skip in 1..weights.len() {
                let part = matmul_many(tile, &weights[skip..], cols, &x, m, |_| span);
                assert!(part[..] == all[skip..], "from weight {skip}");
            }
        }
    }
}

/// The SIMD activation quantizer gives the scalar one's codes and scales.
#[test]
fn simd_quantize_is_identical() {
    if fast_tile().is_none() {
        return;
    }
    let (m, cols) = (5, 512);
    let mut x = test_data(m * cols, 28, 6.0);
    x[7] = 0.0;
    x[cols..2 * cols].fill(0.0); // an all-zero row: d = 0
    for span in [32, 256] {
        let a = quantize(&x, m, cols, span, false);
        let b = quantize(&x, m, cols, span, true);
        assert!(a.qs == b.qs && a.d == b.d && a.dsum == b.dsum && a.csum == b.csum);
        assert!(a.dsum_half == b.dsum_half);
    }
}

/// The super-block repack of the K kinds makes the reference's panels bit for bit, on
/// quantized weights and on arbitrary bytes (every code and scale bit pattern), full and
/// partial panels.
#[test]
fn k_repack_equals_the_reference() {
    let (rows, cols) = (21, 512);
    let w = test_data(rows * cols, 31, 4.0);
    let mut s = 7u64;
    for (kind, dt) in KINDS {
        if !matches!(kind, BlockKind::Q4K | BlockKind::Q5K | BlockKind::Q6K) {
            continue;
        }
        let (quant, _) = quantized(&w, rows, cols, dt);
        let noise: Vec<u8> = (0..quant.len())
            .map(|_| {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1);
                (s >> 56) as u8
            })
            .collect();
        let row_bytes = quant.len() / rows;
        for bytes in [&quant, &noise] {
            for n0 in (0..rows).step_by(PANEL) {
                let valid = PANEL.min(rows - n0);
                let mut fast = vec![PanelBlock::ZERO; cols / BLOCK];
                let mut slow = fast.clone();
                repack(kind, bytes, row_bytes, n0, valid, &mut fast);
                repack_ref(kind, bytes, row_bytes, n0, valid, &mut slow);
                for (f, r) in fast.iter().zip(&slow) {
                    assert_eq!(f.w, r.w, "{kind:?} codes");
                    let bits = |v: &[f32; PANEL]| v.map(f32::to_bits);
                    for (a, b) in [
                        (&f.scale, &r.scale),
                        (&f.off, &r.off),
                        (&f.scale_hi, &r.scale_hi),
                        (&f.off_hi, &r.off_hi),
                    ] {
                        assert_eq!(bits(a), bits(b), "{kind:?} scales");
                    }
                }
            }
        }
    }
}
