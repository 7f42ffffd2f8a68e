//! Every NEON kernel, in both builds (plain and `sdot`, where the CPU has it), against
//! `scalar.rs` on random data. Run on x86-64 under qemu:
//! `cargo test --release --target aarch64-unknown-linux-gnu --lib kernels`.
use super::super::{act, scalar, test_data, BlockKind};
use super::*;
use candle_core::quantized::{GgmlDType, QStorage, QTensor};
use candle_core::{Device, Tensor};

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

/// The builds this CPU can run: plain NEON always, `sdot` where detected.
fn builds() -> Vec<bool> {
    let mut b = vec![false];
    if std::arch::is_aarch64_feature_detected!("dotprod") {
        b.push(true);
    } else {
        eprintln!("no dotprod on this CPU: only the plain NEON build is tested");
    }
    b
}

/// Byte offsets of a block's f16 fields (scales, mins).
fn f16_fields(kind: BlockKind) -> &'static [usize] {
    match kind {
        BlockKind::Q4_0 | BlockKind::Q5_0 | BlockKind::Q8_0 => &[0],
        BlockKind::Q4_1 | BlockKind::Q5_1 | BlockKind::Q4K | BlockKind::Q5K => &[0, 2],
        BlockKind::Q6K => &[208],
        BlockKind::Q3K => &[108],
        BlockKind::Q2K => &[80, 82],
    }
}

/// Rows of `kind` blocks: either ggml's quantizer on random weights, or random bytes
/// (every code pattern, Q8_0's −128 included) with sane f16 scales. Returns the raw
/// rows and their dequantized weights.
fn rows(
    kind: BlockKind,
    dt: GgmlDType,
    n: usize,
    cols: usize,
    seed: u64,
    raw: bool,
) -> (Vec<u8>, Vec<f32>) {
    let bytes = if raw {
        let blocks = n * cols / kind.block_elems();
        let mut bytes: Vec<u8> = test_data(blocks * kind.block_bytes(), seed, 2.0)
            .iter()
            .map(|v| ((v + 1.0) * 128.0) as u8)
            .collect();
        let scales = test_data(blocks * 2, seed + 1, 0.2);
        for (b, s) in bytes
            .chunks_exact_mut(kind.block_bytes())
            .zip(scales.chunks(2))
        {
            for (&at, &s) in f16_fields(kind).iter().zip(s) {
                b[at..at + 2].copy_from_slice(&half::f16::from_f32(s).to_le_bytes());
            }
        }
        bytes
    } else {
        let w = test_data(n * cols, seed, 2.0);
        let t = Tensor::from_vec(w, (n, cols), &Device::Cpu).unwrap();
        QTensor::quantize(&t, dt).unwrap().data().unwrap().to_vec()
    };
    let storage =
        QStorage::from_data(std::borrow::Cow::Borrowed(&bytes), &Device::Cpu, dt).unwrap();
    let deq = QTensor::new(storage, (n, cols))
        .unwrap()
        .dequantize(&Device::Cpu)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    (bytes, deq)
}

/// Σ |w·a| of a row against the activations as the kernels see them: the scale for
/// comparing float results summed in different orders.
fn magnitude(w: &[f32], acts: &[act::Q8Act]) -> f32 {
    let a = acts
        .iter()
        .flat_map(|a| a.qs.iter().map(move |&q| q as f32 * a.d));
    w.iter().zip(a).map(|(w, a)| (w * a).abs()).sum()
}

/// The dispatcher picks NEON on aarch64, with `sdot` exactly where the CPU has it.
#[test]
fn neon_is_detected() {
    let want = if std::env::var_os("SMELT_FORCE_SCALAR").is_some() {
        super::super::Isa::Scalar
    } else {
        super::super::Isa::Neon {
            dotprod: std::arch::is_aarch64_feature_detected!("dotprod"),
        }
    };
    eprintln!("kernels: {:?}", super::super::isa());
    assert_eq!(super::super::isa(), want);
}

#[test]
fn neon_block_dots_match_scalar() {
    for (kind, dt) in KINDS {
        let lens: &[usize] = if kind.is_legacy() {
            &[32, 64, 96, 288, 1024]
        } else {
            &[256, 512, 1280]
        };
        for &cols in lens {
            for raw in [false, true] {
                let n = 5;
                let (bytes, deq) = rows(kind, dt, n, cols, cols as u64, raw);
                let x = test_data(cols, 7 + cols as u64, 6.0);
                let acts = act::quantize_activations(&x);
                let rb = bytes.len() / n;
                for r in 0..n {
                    let row = &bytes[r * rb..(r + 1) * rb];
                    let want = scalar::dot(kind, row, &acts);
                    let mag = magnitude(&deq[r * cols..(r + 1) * cols], &acts);
                    for dotprod in builds() {
                        // SAFETY: NEON is baseline on aarch64; `builds` checked dotprod.
                        let got = unsafe { dot(dotprod, kind, row, &acts) };
                        assert!(
                            (got - want).abs() <= 1e-5 * mag,
                            "{kind:?} cols={cols} raw={raw} row={r} sdot={dotprod}: \
                             {got} vs {want} (Σ|w·a| {mag})"
                        );
                    }
                }
            }
        }
    }
}

/// Where the plain and `sdot` builds both run, they are checked against each other
/// too, and the four-row legacy kernel against four single-row calls, bit for bit.
#[test]
fn neon_four_rows_equal_single_rows_bit_for_bit() {
    for (kind, dt) in KINDS.into_iter().filter(|(k, _)| k.is_legacy()) {
        for cols in [32, 96, 512] {
            let (bytes, _) = rows(kind, dt, 3, cols, 40 + cols as u64, true);
            let rb = bytes.len() / 3;
            let acts: Vec<Vec<act::Q8Act>> = (0..4)
                .map(|t| act::quantize_activations(&test_data(cols, 90 + t, 3.0)))
                .collect();
            for r in 0..3 {
                let row = &bytes[r * rb..(r + 1) * rb];
                for dotprod in builds() {
                    let four = [&acts[0][..], &acts[1], &acts[2], &acts[3]];
                    // SAFETY: as above.
                    let got = unsafe { dot4_legacy(dotprod, kind, row, four) };
                    for t in 0..4 {
                        let one = unsafe { dot(dotprod, kind, row, &acts[t]) };
                        assert_eq!(
                            got[t].to_bits(),
                            one.to_bits(),
                            "{kind:?} cols={cols} row={r} act={t} sdot={dotprod}"
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn neon_dense_dots_match_scalar() {
    for n in [0, 1, 3, 4, 7, 8, 15, 16, 17, 31, 33, 100, 1000, 4099] {
        let a = test_data(n, n as u64 + 1, 4.0);
        let b = test_data(n, n as u64 + 2, 4.0);
        let mag: f32 = a.iter().zip(&b).map(|(x, y)| (x * y).abs()).sum();
        // SAFETY: NEON is baseline on aarch64.
        let got = unsafe { dot_f32(&a, &b) };
        let want = scalar::dot_f32(&a, &b);
        assert!(
            (got - want).abs() <= 1e-5 * mag.max(1.0),
            "f32 n={n}: {got} vs {want}"
        );

        let w16: Vec<half::f16> = a.iter().map(|&v| half::f16::from_f32(v)).collect();
        let wb: Vec<half::bf16> = a.iter().map(|&v| half::bf16::from_f32(v)).collect();
        let want16: f32 = w16.iter().zip(&b).map(|(w, x)| w.to_f32() * x).sum();
        let wantb: f32 = wb.iter().zip(&b).map(|(w, x)| w.to_f32() * x).sum();
        let (got16, gotb) =
            unsafe { (dot_half::<_, false>(&w16, &b), dot_half::<_, true>(&wb, &b)) };
        assert!((got16 - want16).abs() <= 1e-5 * mag.max(1.0), "f16 n={n}");
        assert!((gotb - wantb).abs() <= 1e-5 * mag.max(1.0), "bf16 n={n}");
    }
}

/// The f16/bf16 widening is exact for every bit pattern (infinities, NaNs and
/// subnormals included).
#[test]
fn neon_widening_is_exact() {
    let all: Vec<u16> = (0..=u16::MAX).collect();
    for chunk in all.chunks_exact(8) {
        // SAFETY: NEON is baseline; 8 elements at the pointer.
        let (f0, f1) = unsafe { widen_f16(chunk.as_ptr()) };
        let (b0, b1) = unsafe { widen_bf16(chunk.as_ptr()) };
        let mut f = [0f32; 8];
        let mut b = [0f32; 8];
        unsafe {
            vst1q_f32(f.as_mut_ptr(), f0);
            vst1q_f32(f.as_mut_ptr().add(4), f1);
            vst1q_f32(b.as_mut_ptr(), b0);
            vst1q_f32(b.as_mut_ptr().add(4), b1);
        }
        for (k, &bits) in chunk.iter().enumerate() {
            let (h, bh) = (half::f16::from_bits(bits), half::bf16::from_bits(bits));
            let same = |x: f32, y: f32| x.to_bits() == y.to_bits() || x.is_nan() && y.is_nan();
            assert!(same(f[k], h.to_f32()), "f16 {bits:#06x}");
            assert!(same(b[k], bh.to_f32()), "bf16 {bits:#06x}");
            // SAFETY: as above.
            let one = unsafe { f16_at(bits.to_le_bytes().as_ptr()) };
            assert!(same(one, h.to_f32()), "f16 scalar {bits:#06x}");
        }
    }
}

#[test]
fn neon_affine_dot_matches_reference() {
    for bits in [2u32, 4, 8] {
        for group in [16, 32, 64, 128] {
            let groups = 6;
            let cols = groups * group;
            let codes: Vec<u8> = test_data(cols, bits as u64 + group as u64, 2.0)
                .iter()
                .map(|v| (((v + 1.0) * 128.0) as u32 % (1 << bits)) as u8)
                .collect();
            let words = crate::quant::packing::pack(&codes, bits);
            let sb = test_data(2 * groups, 5, 0.5);
            let scales: Vec<half::f16> = sb[..groups]
                .iter()
                .map(|&v| half::f16::from_f32(v))
                .collect();
            let biases: Vec<half::f16> = sb[groups..]
                .iter()
                .map(|&v| half::f16::from_f32(v))
                .collect();
            let x = test_data(cols, 6, 4.0);
            let xsums: Vec<f32> = x.chunks(group).map(|c| c.iter().sum()).collect();
            let (mut want, mut mag) = (0f32, 0f32);
            for (k, (&q, &xv)) in codes.iter().zip(&x).enumerate() {
                let w = scales[k / group].to_f32() * q as f32 + biases[k / group].to_f32();
                want += w * xv;
                mag += (w * xv).abs();
            }
            // SAFETY: NEON is baseline; the sizes match.
            let got = unsafe {
                match bits {
                    2 => affine_dot::<2>(&words, &scales, &biases, group, &x, &xsums),
                    4 => affine_dot::<4>(&words, &scales, &biases, group, &x, &xsums),
                    _ => affine_dot::<8>(&words, &scales, &biases, group, &x, &xsums),
                }
            };
            assert!(
                (got - want).abs() <= 1e-5 * mag,
                "{bits} bits, group {group}: {got} vs {want}"
            );
        }
    }
}
