//! Prompt-sized products (many activation rows) of block-quantized weights, in integers:
//! activations quantized to 8 bits per 32-block as for decode (`act.rs`), each panel of
//! 16 weight rows unpacked once per call into 8-bit codes interleaved for the integer
//! dot-product instruction, and a register tile of 16 weight rows × up to 8 tokens, so
//! every loaded weight vector serves 8 tokens and every activation word 16 rows.
//!
//! Per weight row n, token t and 32-block b, with the weight block w = scale·q + off:
//!
//! ```text
//! isum = Σ_k q[n,k]·a[t,k]                       exact, in i32
//! acc  = fma(isum as f32, scale[n,b]·d[t,b], acc)
//! acc  = fma(off[n,b], dsum[t,b], acc)          (Q8_0's off is 0: skipped)
//! ```
//!
//! in block order, the same for every tile shape and thread split, so a token's result
//! never depends on the other tokens of the call. Q2_K, Q3_K and Q6_K carry a scale per
//! 16 elements: their blocks do the two lines for each half (k < 16, k ≥ 16) in turn, with
//! that half's scale, offset and activation sum ([`Form::Halves`]) (the scheduler relies on a sequence
//! computing the same whether batched or alone). [`tile_scalar`] is the reference the
//! SIMD tile is tested against bit for bit.

use super::{act, pool, BlockKind, SharedOut, BLOCK};

/// Weight rows per panel: one 16-lane i32/f32 vector.
pub(super) const PANEL: usize = 16;
/// Tokens per register tile.
pub(super) const TILE: usize = 8;

/// How a block type's codes turn into weights, which picks the tile's arithmetic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Form {
    /// w = scale·q + off per 32-block, q unsigned.
    Unsigned,
    /// Q8_0: w = scale·(q − 128), corrected in integers with the activations' `csum`.
    Signed,
    /// w = scale·q + off per 16 elements (`scale`/`off` the low half, `scale_hi`/`off_hi`
    /// the high one), q unsigned: Q2_K, Q3_K, Q6_K.
    Halves,
}

impl Form {
    pub(super) fn of(kind: BlockKind) -> Self {
        match kind {
            BlockKind::Q8_0 => Self::Signed,
            BlockKind::Q2K | BlockKind::Q3K | BlockKind::Q6K => Self::Halves,
            _ => Self::Unsigned,
        }
    }
}

/// One 32-element block of a panel's 16 rows.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
pub(super) struct PanelBlock {
    /// Codes k = 4s..4s+4 of row r at bytes 64·s + 4·r, as unsigned bytes (Q8_0's signed
    /// codes offset by 128; its sums are corrected with the activations' `csum`).
    pub w: [u8; BLOCK * PANEL],
    pub scale: [f32; PANEL],
    pub off: [f32; PANEL],
    /// The high half's (k ≥ 16) scale and offset, for [`Form::Halves`] only.
    pub scale_hi: [f32; PANEL],
    pub off_hi: [f32; PANEL],
}

impl PanelBlock {
    const ZERO: Self = Self {
        w: [0; BLOCK * PANEL],
        scale: [0.0; PANEL],
        off: [0.0; PANEL],
        scale_hi: [0.0; PANEL],
        off_hi: [0.0; PANEL],
    };
}

/// Quantized activation rows: codes token-major, and per (token, block) entries.
pub(super) struct Acts {
    pub cols: usize,
    /// Blocks per row.
    pub nb: usize,
    pub qs: Vec<i8>,
    pub d: Vec<f32>,
    /// d · Σ q.
    pub dsum: Vec<f32>,
    /// 128 · Σ q: what Q8_0's offset codes add to a block's integer sum.
    pub csum: Vec<i32>,
    /// d · Σ q over each 16-element half: entries 2·e and 2·e + 1 for (token, block) e.
    pub dsum_half: Vec<f32>,
}

/// The block types this GEMM handles: every ggml block type smelt multiplies.
pub(super) fn supported(kind: BlockKind) -> bool {
    matches!(
        kind,
        BlockKind::Q4_0
            | BlockKind::Q4_1
            | BlockKind::Q5_0
            | BlockKind::Q5_1
            | BlockKind::Q8_0
            | BlockKind::Q2K
            | BlockKind::Q3K
            | BlockKind::Q4K
            | BlockKind::Q5K
            | BlockKind::Q6K
    )
}

/// A raw pointer the pool's threads write disjoint parts of.
struct Shared<T>(*mut T);
// SAFETY: threads write disjoint elements and the buffer outlives the parallel run.
unsafe impl<T> Sync for Shared<T> {}

/// Whether [`quantize`] may use its AVX-512 version for this tile (same results).
fn avx512_quantize(tile: Tile) -> bool {
    #[cfg(target_arch = "x86_64")]
    if tile == Tile::Vnni {
        return true;
    }
    let _ = tile;
    false
}

/// Quantizes `m` rows of `cols` with one scale per `span` elements (as
/// `act::quantize_activations_scaled_per`), the rows split over the kernel pool.
/// `simd` (only where [`fast_tile`] is `Vnni`) quantizes with AVX-512, same results.
pub(super) fn quantize(x: &[f32], m: usize, cols: usize, span: usize, simd: bool) -> Acts {
    assert!(cols.is_multiple_of(span) && span.is_multiple_of(BLOCK));
    #[cfg(not(target_arch = "x86_64"))]
    let _ = simd; // only x86-64 has a SIMD quantizer here
    let nb = cols / BLOCK;
    let mut acts = Acts {
        cols,
        nb,
        qs: vec![0; m * cols],
        d: vec![0.0; m * nb],
        dsum: vec![0.0; m * nb],
        csum: vec![0; m * nb],
        dsum_half: vec![0.0; 2 * m * nb],
    };
    let ptrs = (
        Shared(acts.qs.as_mut_ptr()),
        Shared(acts.d.as_mut_ptr()),
        Shared(acts.dsum.as_mut_ptr()),
        Shared(acts.csum.as_mut_ptr()),
        Shared(acts.dsum_half.as_mut_ptr()),
    );
    let ptrs = &ptrs;
    let job = move |index: usize, threads: usize| {
        let per = m.div_ceil(threads);
        for t in index * per..((index + 1) * per).min(m) {
            // SAFETY: token t's parts belong to this thread alone and lie in bounds.
            let (qs, d, dsum, csum, dsum_half) = unsafe {
                (
                    std::slice::from_raw_parts_mut(ptrs.0 .0.add(t * cols), cols),
                    std::slice::from_raw_parts_mut(ptrs.1 .0.add(t * nb), nb),
                    std::slice::from_raw_parts_mut(ptrs.2 .0.add(t * nb), nb),
                    std::slice::from_raw_parts_mut(ptrs.3 .0.add(t * nb), nb),
                    std::slice::from_raw_parts_mut(ptrs.4 .0.add(2 * t * nb), 2 * nb),
                )
            };
            let row = &x[t * cols..(t + 1) * cols];
            #[cfg(target_arch = "x86_64")]
            if simd {
                // SAFETY: `simd` means AVX-512 F/BW (see `fast_tile`); the sizes hold.
                unsafe { super::avx512::quantize_row(row, span, qs, d, dsum, csum, dsum_half) };
                continue;
            }
            for (s, chunk) in row.chunks_exact(span).enumerate() {
                let amax = act::amax(chunk);
                for (j, b) in chunk.chunks_exact(BLOCK).enumerate() {
                    let blk = s * (span / BLOCK) + j;
                    let mut q = [0i8; BLOCK];
                    let (dd, sum) = act::quantize_block(b, amax, &mut q);
                    qs[blk * BLOCK..(blk + 1) * BLOCK].copy_from_slice(&q);
                    d[blk] = dd;
                    dsum[blk] = dd * sum as f32;
                    csum[blk] = 128 * sum;
                    let lo: i32 = q[..16].iter().map(|&v| v as i32).sum();
                    dsum_half[2 * blk] = dd * lo as f32;
                    dsum_half[2 * blk + 1] = dd * (sum - lo) as f32;
                }
            }
        }
    };
    if m * cols < 1 << 14 {
        job(0, 1);
    } else {
        pool::global().run(&job);
    }
    acts
}

#[inline]
fn f16_at(b: &[u8], i: usize) -> f32 {
    half::f16::from_bits(u16::from_le_bytes([b[i], b[i + 1]])).to_f32()
}

/// The codes of 32-block `blk` of a weight row as unsigned bytes, and the (scale, off)
/// of each 16-element half with w = scale·q + off (for Q8_0: q + 128 and off 0, corrected
/// in integers). Both halves are the same but for [`Form::Halves`].
fn block_codes(
    kind: BlockKind,
    row: &[u8],
    blk: usize,
    q: &mut [u8; BLOCK],
) -> ([f32; 2], [f32; 2]) {
    let same = |(scale, off): (f32, f32)| ([scale; 2], [off; 2]);
    // Signed codes from the decode kernels' reference, lifted by `bias` to unsigned.
    let biased = |q: &mut [u8; BLOCK], signed: &[i32; BLOCK], bias: i32, s: (f32, f32)| {
        for (v, &c) in q.iter_mut().zip(signed) {
            *v = (c + bias) as u8;
        }
        ([s.0, s.1], [-(bias as f32) * s.0, -(bias as f32) * s.1])
    };
    let mut signed = [0i32; BLOCK];
    if matches!(kind, BlockKind::Q2K | BlockKind::Q3K | BlockKind::Q6K) {
        let b = &row[(blk / 8) * kind.block_bytes()..][..kind.block_bytes()];
        let g = blk % 8;
        return match kind {
            BlockKind::Q6K => {
                let s = super::scalar::decode_q6k_group(b, g, &mut signed);
                biased(q, &signed, 32, s)
            }
            BlockKind::Q3K => {
                let s = super::scalar::decode_q3k_group(b, g, &mut signed);
                biased(q, &signed, 4, s)
            }
            _ => {
                // Q2_K: w = d·(sc & 15)·q − dmin·(sc >> 4) per 16 elements.
                let (d, dmin) = (f16_at(b, 80), f16_at(b, 82));
                let (half, j) = (g / 4, g % 4);
                for (v, &c) in q.iter_mut().zip(&b[16 + 32 * half..48 + 32 * half]) {
                    *v = (c >> (2 * j)) & 3;
                }
                let (s0, s1) = (b[2 * g], b[2 * g + 1]);
                (
                    [d * (s0 & 15) as f32, d * (s1 & 15) as f32],
                    [-dmin * (s0 >> 4) as f32, -dmin * (s1 >> 4) as f32],
                )
            }
        };
    }
    let nibbles = |q: &mut [u8; BLOCK], qs: &[u8]| {
        for j in 0..16 {
            q[j] = qs[j] & 0x0F;
            q[j + 16] = qs[j] >> 4;
        }
    };
    let fifth = |q: &mut [u8; BLOCK], qh: &[u8]| {
        let qh = u32::from_le_bytes([qh[0], qh[1], qh[2], qh[3]]);
        for (j, v) in q.iter_mut().enumerate() {
            *v |= (((qh >> j) & 1) << 4) as u8;
        }
    };
    match kind {
        BlockKind::Q4K | BlockKind::Q5K => {
            let b = &row[(blk / 8) * kind.block_bytes()..][..kind.block_bytes()];
            let i = blk % 8;
            let (d, dmin) = (f16_at(b, 0), f16_at(b, 2));
            let (qs, qh) = match kind {
                BlockKind::Q4K => (&b[16..144], None),
                _ => (&b[48..176], Some(&b[16..48])),
            };
            let chunk = &qs[32 * (i / 2)..32 * (i / 2) + 32];
            let shift = 4 * (i % 2);
            for (v, &c) in q.iter_mut().zip(chunk) {
                *v = (c >> shift) & 0x0F;
            }
            if let Some(h) = qh {
                for (v, &hb) in q.iter_mut().zip(h) {
                    *v |= ((hb >> i) & 1) << 4;
                }
            }
            let (sc, m) = super::scalar::k_scale_min(&b[4..16], i);
            same((d * sc as f32, -dmin * m as f32))
        }
        _ => {
            let bb = kind.block_bytes();
            let b = &row[blk * bb..(blk + 1) * bb];
            let d = f16_at(b, 0);
            same(match kind {
                BlockKind::Q4_0 => {
                    nibbles(q, &b[2..18]);
                    (d, -8.0 * d)
                }
                BlockKind::Q4_1 => {
                    nibbles(q, &b[4..20]);
                    (d, f16_at(b, 2))
                }
                BlockKind::Q5_0 => {
                    nibbles(q, &b[6..22]);
                    fifth(q, &b[2..6]);
                    (d, -16.0 * d)
                }
                BlockKind::Q5_1 => {
                    nibbles(q, &b[8..24]);
                    fifth(q, &b[4..8]);
                    (d, f16_at(b, 2))
                }
                BlockKind::Q8_0 => {
                    for (v, &c) in q.iter_mut().zip(&b[2..34]) {
                        *v = c ^ 0x80;
                    }
                    (d, 0.0)
                }
                _ => unreachable!("not a type of this GEMM: {kind:?}"),
            })
        }
    }
}

/// Unpacks rows n0..n0+valid of the weight into `panel` (one entry per 32-block); rows
/// past `valid` get zero codes and scales.
pub(super) fn repack(
    kind: BlockKind,
    weight: &[u8],
    row_bytes: usize,
    n0: usize,
    valid: usize,
    panel: &mut [PanelBlock],
) {
    match kind {
        BlockKind::Q4K | BlockKind::Q5K | BlockKind::Q6K => {
            repack_k(kind, weight, row_bytes, n0, valid, panel)
        }
        _ => repack_ref(kind, weight, row_bytes, n0, valid, panel),
    }
}

/// [`repack`] one 32-block at a time through [`block_codes`]: the reference, and the path
/// of the kinds without a faster one.
pub(super) fn repack_ref(
    kind: BlockKind,
    weight: &[u8],
    row_bytes: usize,
    n0: usize,
    valid: usize,
    panel: &mut [PanelBlock],
) {
    let mut q = [0u8; BLOCK];
    for (blk, pb) in panel.iter_mut().enumerate() {
        if valid < PANEL {
            *pb = PanelBlock::ZERO;
        }
        for r in 0..valid {
            let row = &weight[(n0 + r) * row_bytes..(n0 + r + 1) * row_bytes];
            let (scale, off) = block_codes(kind, row, blk, &mut q);
            (pb.scale[r], pb.scale_hi[r]) = (scale[0], scale[1]);
            (pb.off[r], pb.off_hi[r]) = (off[0], off[1]);
            for s in 0..BLOCK / 4 {
                pb.w[64 * s + 4 * r..64 * s + 4 * r + 4].copy_from_slice(&q[4 * s..4 * s + 4]);
            }
        }
    }
}

/// [`repack`] of Q4_K, Q5_K and Q6_K a super-block at a time: its scales decoded once
/// for its eight 32-blocks, and four codes moved per 32-bit word (the prompt GEMM repacks
/// every panel per call, so this runs once per weight and prompt). Same panels as
/// [`repack_ref`] (tested).
fn repack_k(
    kind: BlockKind,
    weight: &[u8],
    row_bytes: usize,
    n0: usize,
    valid: usize,
    panel: &mut [PanelBlock],
) {
    let word = |b: &[u8], i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
    let bb = kind.block_bytes();
    if valid < PANEL {
        panel.fill(PanelBlock::ZERO);
    }
    for r in 0..valid {
        let row = &weight[(n0 + r) * row_bytes..(n0 + r + 1) * row_bytes];
        for (sb, b) in row.chunks_exact(bb).enumerate() {
            let blocks = &mut panel[8 * sb..8 * sb + 8];
            for (i, pb) in blocks.iter_mut().enumerate() {
                // Code l = 4s + c of the block as byte c of word s.
                let codes: [u32; 8];
                match kind {
                    BlockKind::Q6K => {
                        let (half, part) = (i / 4, i % 4);
                        let ql = 64 * half + 32 * (part % 2);
                        let qh = 128 + 32 * half;
                        codes = std::array::from_fn(|s| {
                            let low = (word(b, ql + 4 * s) >> (4 * (part / 2))) & 0x0F0F_0F0F;
                            let high = (word(b, qh + 4 * s) >> (2 * part)) & 0x0303_0303;
                            low | high << 4
                        });
                        // Unsigned codes q = signed + 32, so w = scale·q − 32·scale.
                        let d = f16_at(b, 208);
                        let sc = &b[192 + 8 * half + 2 * part..];
                        let (s0, s1) = (d * sc[0] as i8 as f32, d * sc[1] as i8 as f32);
                        (pb.scale[r], pb.scale_hi[r]) = (s0, s1);
                        (pb.off[r], pb.off_hi[r]) = (-32.0 * s0, -32.0 * s1);
                    }
                    _ => {
                        let qs = if kind == BlockKind::Q4K { 16 } else { 48 } + 32 * (i / 2);
                        let shift = 4 * (i % 2);
                        codes = std::array::from_fn(|s| {
                            let low = (word(b, qs + 4 * s) >> shift) & 0x0F0F_0F0F;
                            if kind == BlockKind::Q5K {
                                low | ((word(b, 16 + 4 * s) >> i) & 0x0101_0101) << 4
                            } else {
                                low
                            }
                        });
                        let (d, dmin) = (f16_at(b, 0), f16_at(b, 2));
                        let (sc, m) = super::scalar::k_scale_min(&b[4..16], i);
                        let (scale, off) = (d * sc as f32, -dmin * m as f32);
                        (pb.scale[r], pb.scale_hi[r]) = (scale, scale);
                        (pb.off[r], pb.off_hi[r]) = (off, off);
                    }
                }
                for (s, c) in codes.iter().enumerate() {
                    pb.w[64 * s + 4 * r..][..4].copy_from_slice(&c.to_le_bytes());
                }
            }
        }
    }
}

/// The reference tile: tokens t0..t0+tn against one panel, `out[t][r]` for its 16 rows.
pub(super) fn tile_scalar(
    panel: &[PanelBlock],
    acts: &Acts,
    form: Form,
    t0: usize,
    tn: usize,
) -> Vec<[f32; PANEL]> {
    let mut acc = vec![[0f32; PANEL]; tn];
    for (b, pb) in panel.iter().enumerate() {
        for (t, acc) in acc.iter_mut().enumerate() {
            let tok = t0 + t;
            let a = &acts.qs[tok * acts.cols + b * BLOCK..][..BLOCK];
            let e = tok * acts.nb + b;
            for (r, acc) in acc.iter_mut().enumerate() {
                let isum = |ks: std::ops::Range<usize>| -> i32 {
                    ks.map(|k| pb.w[64 * (k / 4) + 4 * r + k % 4] as i32 * a[k] as i32)
                        .sum()
                };
                match form {
                    Form::Unsigned => {
                        *acc = (isum(0..BLOCK) as f32).mul_add(pb.scale[r] * acts.d[e], *acc);
                        *acc = pb.off[r].mul_add(acts.dsum[e], *acc);
                    }
                    Form::Signed => {
                        let i = isum(0..BLOCK) - acts.csum[e];
                        *acc = (i as f32).mul_add(pb.scale[r] * acts.d[e], *acc);
                    }
                    Form::Halves => {
                        let (lo, hi) = (isum(0..16), isum(16..BLOCK));
                        *acc = (lo as f32).mul_add(pb.scale[r] * acts.d[e], *acc);
                        *acc = pb.off[r].mul_add(acts.dsum_half[2 * e], *acc);
                        *acc = (hi as f32).mul_add(pb.scale_hi[r] * acts.d[e], *acc);
                        *acc = pb.off_hi[r].mul_add(acts.dsum_half[2 * e + 1], *acc);
                    }
                }
            }
        }
    }
    acc
}

/// Which tile kernel runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Tile {
    /// The reference (tests).
    #[cfg_attr(not(test), allow(dead_code))]
    Scalar,
    /// AVX2 `maddubs` + `madd` (any x86-64 CPU with AVX2).
    #[cfg(target_arch = "x86_64")]
    Avx2,
    /// 256-bit `vpdpbusd` (AVX-VNNI).
    #[cfg(target_arch = "x86_64")]
    AvxVnni,
    /// 512-bit `vpdpbusd` (AVX-512 VNNI).
    #[cfg(target_arch = "x86_64")]
    Vnni,
}

/// The fast tile for this CPU within `SMELT_ISA` (see [`super::cpu`]), if it has one.
pub(super) fn fast_tile() -> Option<Tile> {
    #[cfg(target_arch = "x86_64")]
    {
        let f = super::cpu::x86();
        if f.avx512 {
            return Some(Tile::Vnni);
        }
        if f.avxvnni {
            return Some(Tile::AvxVnni);
        }
        if f.avx2 {
            return Some(Tile::Avx2);
        }
    }
    None
}

/// Every tile this CPU can run, the reference first (tests compare them).
#[cfg(test)]
pub(super) fn all_tiles() -> Vec<Tile> {
    #[allow(unused_mut)]
    let mut t = vec![Tile::Scalar];
    #[cfg(target_arch = "x86_64")]
    {
        let f = super::cpu::x86();
        if f.avx2 {
            t.push(Tile::Avx2);
        }
        if f.avxvnni {
            t.push(Tile::AvxVnni);
        }
        if f.avx512 {
            t.push(Tile::Vnni);
        }
    }
    t
}

/// One weight of a product: its block type, ggml blocks and rows.
#[derive(Clone, Copy)]
pub struct PromptWeight<'a> {
    pub kind: BlockKind,
    pub data: &'a [u8],
    pub rows: usize,
}

/// `out[t · rows + n] = Σ_k x[t, k] · W[n, k]` through the integer tiles, the weight's
/// 16-row panels split over the kernel pool; activations get one scale per `span`.
#[allow(clippy::too_many_arguments)]
pub(super) fn matmul(
    tile: Tile,
    kind: BlockKind,
    weight: &[u8],
    rows: usize,
    cols: usize,
    x: &[f32],
    m: usize,
    span: usize,
) -> Vec<f32> {
    let w = PromptWeight {
        kind,
        data: weight,
        rows,
    };
    matmul_many(tile, &[w], cols, x, m, |_| span)
        .pop()
        .expect("one weight in, one out")
}

/// [`matmul`] for several weights over the same input (q/k/v, gate/up): the input is
/// quantized once per span, and the panels of all weights share one parallel run.
pub(super) fn matmul_many(
    tile: Tile,
    weights: &[PromptWeight],
    cols: usize,
    x: &[f32],
    m: usize,
    span: impl Fn(BlockKind) -> usize,
) -> Vec<Vec<f32>> {
    assert_eq!(x.len(), m * cols);
    let mut acts: Vec<(usize, Acts)> = Vec::new();
    let mut jobs = Vec::new(); // (weight, row bytes, acts index, panels)
    for (i, w) in weights.iter().enumerate() {
        assert!(supported(w.kind), "{:?} has no integer GEMM", w.kind);
        assert!(cols.is_multiple_of(w.kind.block_elems()));
        let row_bytes = cols / w.kind.block_elems() * w.kind.block_bytes();
        assert_eq!(w.data.len(), w.rows * row_bytes);
        let sp = span(w.kind);
        let a = match acts.iter().position(|(s, _)| *s == sp) {
            Some(a) => a,
            None => {
                acts.push((sp, quantize(x, m, cols, sp, avx512_quantize(tile))));
                acts.len() - 1
            }
        };
        jobs.push((i, row_bytes, a, w.rows.div_ceil(PANEL)));
    }
    let mut outs: Vec<Vec<f32>> = weights.iter().map(|w| vec![0f32; m * w.rows]).collect();
    let shared: Vec<SharedOut> = outs.iter_mut().map(|o| SharedOut(o.as_mut_ptr())).collect();
    // Panel p of the whole run: weight j's panels follow weight j − 1's. Threads take
    // panels in turn from a counter (a descheduled thread on a busy machine holds up no
    // fixed share); a panel's results do not depend on which thread computes them.
    let starts: Vec<usize> = jobs
        .iter()
        .scan(0, |acc, j| {
            let s = *acc;
            *acc += j.3;
            Some(s)
        })
        .collect();
    let total: usize = jobs.iter().map(|j| j.3).sum();
    let next = std::sync::atomic::AtomicUsize::new(0);
    let nb = cols / BLOCK;
    pool::global().run(&|_, _| {
        // Allocated at the first panel: parts that find none left cost nothing.
        let mut panel = Vec::new();
        loop {
            let g = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            if g >= total {
                return;
            }
            if panel.is_empty() {
                panel = vec![PanelBlock::ZERO; nb];
            }
            let j = starts.partition_point(|&s| s <= g) - 1;
            let (i, row_bytes, a, _) = jobs[j];
            let (w, acts, out) = (&weights[i], &acts[a].1, &shared[i]);
            let n0 = (g - starts[j]) * PANEL;
            let valid = PANEL.min(w.rows - n0);
            repack(w.kind, w.data, row_bytes, n0, valid, &mut panel);
            let form = Form::of(w.kind);
            // SAFETY: rows n0..n0+valid of every token belong to this panel alone, and
            // the counter hands each panel to one thread.
            unsafe { run_panel(tile, &panel, acts, form, out, w.rows, n0, valid, m) };
        }
    });
    outs
}

/// Every token of the call against one unpacked panel.
///
/// # Safety
/// `out` holds m · rows floats and no other thread writes rows n0..n0+valid.
#[allow(clippy::too_many_arguments)]
unsafe fn run_panel(
    tile: Tile,
    panel: &[PanelBlock],
    acts: &Acts,
    form: Form,
    out: &SharedOut,
    rows: usize,
    n0: usize,
    valid: usize,
    m: usize,
) {
    let mut t0 = 0;
    while t0 < m {
        let tn = TILE.min(m - t0);
        match tile {
            Tile::Scalar => {
                for (t, acc) in tile_scalar(panel, acts, form, t0, tn).iter().enumerate() {
                    for (r, &v) in acc.iter().enumerate().take(valid) {
                        *out.at((t0 + t) * rows + n0 + r) = v;
                    }
                }
            }
            // SAFETY: each x86 tile is only chosen where the CPU has its features.
            #[cfg(target_arch = "x86_64")]
            Tile::Vnni => {
                super::avx512::tile(panel, acts, form, t0, tn, out.at(0), rows, n0, valid)
            }
            #[cfg(target_arch = "x86_64")]
            Tile::Avx2 | Tile::AvxVnni => super::tile_avx2::tile(
                tile == Tile::AvxVnni,
                panel,
                acts,
                form,
                t0,
                tn,
                out.at(0),
                rows,
                n0,
                valid,
            ),
        }
        t0 += tn;
    }
}

#[cfg(test)]
#[path = "gemm_tests.rs"]
mod tests;
