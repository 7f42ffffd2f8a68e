//! Decode dot products of K-quant rows (Q4_K, Q5_K, Q6_K) with 8-bit activations, one
//! scale per 32 activations. Each 32-element sub-block's integer sums come in eight i32
//! lanes (lane j: elements 4j..4j+3); the per-sub-block float scales of a super-block
//! are built as one vector, and the sub-blocks feed four accumulators in turn, so no
//! long FMA chain or scalar offset chain bounds the kernel (the earlier kernels did at
//! about 11 GB/s per core, below memory bandwidth).
//!
//! Three builds compute the same lanes: [`dot_ref`] (scalar; the reference and the
//! fallback), AVX2 (`maddubs` + `madd`) and AVX-512 VL/VNNI (256-bit `vpdpbusd`), which
//! give the same i32 lanes. The float operations are the same lane for lane, so all
//! three agree bit for bit (tested).

use super::{BlockKind, Q8Act, BLOCK};

/// The eight 6-bit scales and mins of a Q4_K/Q5_K super-block (12 packed bytes).
#[inline]
fn k_scales(p: &[u8]) -> ([u8; 8], [u8; 8]) {
    let word = |i: usize| u32::from_le_bytes([p[4 * i], p[4 * i + 1], p[4 * i + 2], p[4 * i + 3]]);
    let (w0, w1, w2) = (word(0), word(1), word(2));
    let (low6, low4, top2) = (0x3f3f_3f3fu32, 0x0f0f_0f0fu32, 0x0303_0303u32);
    let sc_hi = (w2 & low4) | (((w0 >> 6) & top2) << 4);
    let m_hi = ((w2 >> 4) & low4) | (((w1 >> 6) & top2) << 4);
    let join = |lo: u32, hi: u32| (lo as u64 | (hi as u64) << 32).to_le_bytes();
    (join(w0 & low6, sc_hi), join(w1 & low6, m_hi))
}

#[inline]
fn f16_at(b: &[u8], i: usize) -> f32 {
    half::f16::from_bits(u16::from_le_bytes([b[i], b[i + 1]])).to_f32()
}

/// `avx2::hsum`'s order: (l0 + l4) + (l2 + l6) + ((l1 + l5) + (l3 + l7)).
fn hsum(v: [f32; 8]) -> f32 {
    let s: [f32; 4] = std::array::from_fn(|l| v[l] + v[l + 4]);
    (s[0] + s[2]) + (s[1] + s[3])
}

fn lanes_add(a: [f32; 8], b: [f32; 8]) -> [f32; 8] {
    std::array::from_fn(|l| a[l] + b[l])
}

/// Σ over lane j of `q[4j..4j+4] · a[4j..4j+4]`.
fn lane_sums(q: &[i32; BLOCK], a: &[i8; BLOCK]) -> [i32; 8] {
    std::array::from_fn(|j| (4 * j..4 * j + 4).map(|k| q[k] * a[k] as i32).sum())
}

/// The reference: what the SIMD builds compute, in scalar code.
pub(super) fn dot_ref(kind: BlockKind, row: &[u8], act: &[Q8Act]) -> f32 {
    let mut acc = [[0f32; 8]; 4];
    let mut off = [0f32; 8];
    let mut q = [0i32; BLOCK];
    for (b, acts) in row
        .chunks_exact(kind.block_bytes())
        .zip(act.chunks_exact(8))
    {
        match kind {
            BlockKind::Q6K => {
                let d = f16_at(b, 208);
                for (g, a) in acts.iter().enumerate() {
                    let _ = super::scalar::decode_q6k_group(b, g, &mut q);
                    let sc = &b[192..208];
                    let s = lane_sums(&q, &a.qs);
                    for (j, acc) in acc[g % 4].iter_mut().enumerate() {
                        let scale = (d * sc[2 * g + j / 4] as i8 as f32) * a.d;
                        *acc = scale.mul_add(s[j] as f32, *acc);
                    }
                }
            }
            _ => {
                let (d, dmin) = (f16_at(b, 0), f16_at(b, 2));
                let (sc, mn) = k_scales(&b[4..16]);
                let (qs, qh) = match kind {
                    BlockKind::Q4K => (&b[16..144], None),
                    _ => (&b[48..176], Some(&b[16..48])),
                };
                for (i, a) in acts.iter().enumerate() {
                    off[i] = (dmin * mn[i] as f32).mul_add(a.dsum, off[i]);
                    let chunk = &qs[32 * (i / 2)..32 * (i / 2) + 32];
                    for (l, v) in q.iter_mut().enumerate() {
                        let nib = (chunk[l] >> (4 * (i % 2))) & 0x0F;
                        *v = (nib | qh.map_or(0, |h| ((h[l] >> i) & 1) << 4)) as i32;
                    }
                    let scale = (d * sc[i] as f32) * a.d;
                    let s = lane_sums(&q, &a.qs);
                    for (acc, &s) in acc[i % 4].iter_mut().zip(&s) {
                        *acc = scale.mul_add(s as f32, *acc);
                    }
                }
            }
        }
    }
    let all = lanes_add(lanes_add(acc[0], acc[1]), lanes_add(acc[2], acc[3]));
    hsum(all) - hsum(off)
}

#[cfg(target_arch = "x86_64")]
pub(super) use simd::{dot_avx2, dot_vnni};

#[cfg(target_arch = "x86_64")]
mod simd {
    use super::super::{BlockKind, Q8Act};
    use std::arch::x86_64::*;

    #[inline(always)]
    unsafe fn f16_at(p: *const u8) -> f32 {
        half::f16::from_bits(std::ptr::read_unaligned(p as *const u16)).to_f32()
    }

    #[inline(always)]
    unsafe fn hsum(v: __m256) -> f32 {
        let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_movehdup_ps(s));
        _mm_cvtss_f32(s)
    }

    /// One body, two ISAs: `$dot(w, a)` gives the i32 lanes Σ_{4} w·a of unsigned codes
    /// `w` and signed activations `a`.
    macro_rules! kernel {
        ($name:ident, $features:literal, $dot:ident) => {
            /// # Safety
            /// The CPU has the named features; `row` holds whole super-blocks of `kind`
            /// and `act` eight blocks per super-block.
            #[target_feature(enable = $features)]
            pub(in super::super) unsafe fn $name(
                kind: BlockKind,
                row: &[u8],
                act: &[Q8Act],
            ) -> f32 {
                let bb = kind.block_bytes();
                let mut acc = [_mm256_setzero_ps(); 4];
                let mut off = _mm256_setzero_ps();
                let m4 = _mm256_set1_epi8(0x0F);
                for (sb, acts) in act.chunks_exact(8).enumerate() {
                    let b = row.as_ptr().add(sb * bb);
                    // Rows are read once, in order: fetch ahead of use (past the row's
                    // end is the next row, which decode reads next).
                    for line in 0..3 {
                        super::super::prefetch_ahead(b.wrapping_add(64 * line));
                    }
                    let ad = _mm256_setr_ps(
                        acts[0].d, acts[1].d, acts[2].d, acts[3].d, acts[4].d, acts[5].d,
                        acts[6].d, acts[7].d,
                    );
                    if kind == BlockKind::Q6K {
                        let d = _mm256_set1_ps(f16_at(b.add(208)));
                        let sc = _mm_loadu_si128(b.add(192) as *const __m128i);
                        // d·scale of the 16 sixteen-element parts, 8 per vector.
                        let dsc = [
                            _mm256_mul_ps(d, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(sc))),
                            _mm256_mul_ps(
                                d,
                                _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(sc, 8))),
                            ),
                        ];
                        let (m2, bias) = (_mm256_set1_epi8(3), _mm256_set1_epi8(32));
                        for half in 0..2 {
                            let ql0 = _mm256_loadu_si256(b.add(64 * half) as *const __m256i);
                            let ql1 = _mm256_loadu_si256(b.add(64 * half + 32) as *const __m256i);
                            let qh = _mm256_loadu_si256(b.add(128 + 32 * half) as *const __m256i);
                            for part in 0..4 {
                                let g = 4 * half + part;
                                let low = match part {
                                    0 => _mm256_and_si256(ql0, m4),
                                    1 => _mm256_and_si256(ql1, m4),
                                    2 => _mm256_and_si256(_mm256_srli_epi16::<4>(ql0), m4),
                                    _ => _mm256_and_si256(_mm256_srli_epi16::<4>(ql1), m4),
                                };
                                let shift = _mm_cvtsi32_si128(2 * part as i32);
                                let high = _mm256_and_si256(_mm256_srl_epi16(qh, shift), m2);
                                let w = _mm256_sub_epi8(
                                    _mm256_or_si256(low, _mm256_slli_epi16::<4>(high)),
                                    bias,
                                );
                                let av = _mm256_load_si256(acts[g].qs.as_ptr() as *const __m256i);
                                // Signed × signed: |w| times a with w's sign (exact).
                                let s = $dot(_mm256_sign_epi8(w, w), _mm256_sign_epi8(av, w));
                                // Lanes 0..3 take part 2g's scale, 4..7 part 2g + 1's.
                                let pick = _mm256_setr_epi32(
                                    (2 * part) as i32,
                                    (2 * part) as i32,
                                    (2 * part) as i32,
                                    (2 * part) as i32,
                                    (2 * part + 1) as i32,
                                    (2 * part + 1) as i32,
                                    (2 * part + 1) as i32,
                                    (2 * part + 1) as i32,
                                );
                                let scale = _mm256_mul_ps(
                                    _mm256_permutevar8x32_ps(dsc[half], pick),
                                    _mm256_set1_ps(acts[g].d),
                                );
                                acc[g % 4] =
                                    _mm256_fmadd_ps(scale, _mm256_cvtepi32_ps(s), acc[g % 4]);
                            }
                        }
                        continue;
                    }
                    let (d, dmin) = (f16_at(b), f16_at(b.add(2)));
                    let (sc, mn) = super::k_scales(std::slice::from_raw_parts(b.add(4), 12));
                    let lanes = |v: [u8; 8]| {
                        _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_cvtsi64_si128(
                            i64::from_le_bytes(v),
                        )))
                    };
                    let adsum = _mm256_setr_ps(
                        acts[0].dsum,
                        acts[1].dsum,
                        acts[2].dsum,
                        acts[3].dsum,
                        acts[4].dsum,
                        acts[5].dsum,
                        acts[6].dsum,
                        acts[7].dsum,
                    );
                    off =
                        _mm256_fmadd_ps(_mm256_mul_ps(_mm256_set1_ps(dmin), lanes(mn)), adsum, off);
                    let mut scales = [0f32; 8];
                    _mm256_storeu_ps(
                        scales.as_mut_ptr(),
                        _mm256_mul_ps(_mm256_mul_ps(_mm256_set1_ps(d), lanes(sc)), ad),
                    );
                    let (qs, qh) = match kind {
                        BlockKind::Q4K => (b.add(16), None),
                        _ => (
                            b.add(48),
                            Some(_mm256_loadu_si256(b.add(16) as *const __m256i)),
                        ),
                    };
                    for pair in 0..4 {
                        let bytes = _mm256_loadu_si256(qs.add(32 * pair) as *const __m256i);
                        for half in 0..2 {
                            let i = 2 * pair + half;
                            let mut q = if half == 0 {
                                _mm256_and_si256(bytes, m4)
                            } else {
                                _mm256_and_si256(_mm256_srli_epi16::<4>(bytes), m4)
                            };
                            if let Some(h) = qh {
                                let bit = _mm256_set1_epi8(1 << i);
                                let set = _mm256_cmpeq_epi8(_mm256_and_si256(h, bit), bit);
                                q = _mm256_or_si256(
                                    q,
                                    _mm256_and_si256(set, _mm256_set1_epi8(0x10)),
                                );
                            }
                            let av = _mm256_load_si256(acts[i].qs.as_ptr() as *const __m256i);
                            let s = _mm256_cvtepi32_ps($dot(q, av));
                            acc[i % 4] = _mm256_fmadd_ps(_mm256_set1_ps(scales[i]), s, acc[i % 4]);
                        }
                    }
                }
                let all =
                    _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
                hsum(all) - hsum(off)
            }
        };
    }

    #[inline(always)]
    unsafe fn dot4_avx2(w: __m256i, a: __m256i) -> __m256i {
        _mm256_madd_epi16(_mm256_maddubs_epi16(w, a), _mm256_set1_epi16(1))
    }

    #[inline(always)]
    unsafe fn dot4_vnni(w: __m256i, a: __m256i) -> __m256i {
        _mm256_dpbusd_epi32(_mm256_setzero_si256(), w, a)
    }

    kernel!(dot_avx2, "avx2,fma,f16c", dot4_avx2);
    kernel!(
        dot_vnni,
        "avx2,fma,f16c,avx512f,avx512vl,avx512vnni",
        dot4_vnni
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::kernels::{quantize_activations, test_data};
    use candle_core::quantized::{GgmlDType, QTensor};
    use candle_core::{Device, Tensor};

    #[test]
    fn scales_unpack_like_k_scale_min() {
        let p: Vec<u8> = (0..12u32).map(|i| (i * 37 + 11) as u8).collect();
        let (sc, mn) = k_scales(&p);
        for j in 0..8 {
            assert_eq!((sc[j], mn[j]), super::super::scalar::k_scale_min(&p, j));
        }
    }

    /// The SIMD builds equal the reference bit for bit, and the reference is the exact
    /// product within float rounding.
    #[test]
    fn simd_builds_equal_the_reference() {
        let (rows, cols) = (9, 1024);
        for (kind, dt) in [
            (BlockKind::Q4K, GgmlDType::Q4K),
            (BlockKind::Q5K, GgmlDType::Q5K),
            (BlockKind::Q6K, GgmlDType::Q6K),
        ] {
            let w = test_data(rows * cols, 51, 3.0);
            let x = test_data(cols, 52, 2.0);
            let q = QTensor::quantize(
                &Tensor::from_vec(w, (rows, cols), &Device::Cpu).unwrap(),
                dt,
            )
            .unwrap();
            let bytes = q.data().unwrap().to_vec();
            let deq: Vec<f32> = q
                .dequantize(&Device::Cpu)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            let acts = quantize_activations(&x);
            let rb = bytes.len() / rows;
            for r in 0..rows {
                let row = &bytes[r * rb..(r + 1) * rb];
                let want = dot_ref(kind, row, &acts);
                let ws = &deq[r * cols..(r + 1) * cols];
                let exact: f32 = ws.iter().zip(&x).map(|(a, b)| a * b).sum();
                let mag: f32 = ws.iter().zip(&x).map(|(a, b)| (a * b).abs()).sum();
                assert!(
                    (want - exact).abs() <= 0.01 * mag,
                    "{kind:?}: {want} vs {exact}"
                );
                #[cfg(target_arch = "x86_64")]
                {
                    let f = crate::quant::kernels::cpu::x86();
                    if f.avx2 {
                        // SAFETY: AVX2/FMA/F16C are there.
                        let got = unsafe { dot_avx2(kind, row, &acts) };
                        assert_eq!(got.to_bits(), want.to_bits(), "{kind:?} AVX2 row {r}");
                    }
                    if f.avx512 {
                        // SAFETY: AVX-512 VL/VNNI are there.
                        let got = unsafe { dot_vnni(kind, row, &acts) };
                        assert_eq!(got.to_bits(), want.to_bits(), "{kind:?} VNNI row {r}");
                    }
                }
            }
        }
    }
}
