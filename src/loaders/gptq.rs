//! GPTQ checkpoints (`quantization_config.quant_method: gptq`): per layer `qweight` i32
//! `[K·bits/32, N]`, each column a little-endian bit stream along the input dim K (code k
//! at bit bits·k, so 3-bit codes straddle words as AutoGPTQ packs them), `qzeros` i32
//! `[K/gs, N·bits/32]`, each row a bit stream along N (stored as zero − 1 in the classic
//! v1 format), `scales` f16 `[K/gs, N]`, `g_idx` i32 `[K]` (the group of each input column,
//! not monotonic under act-order). W[n, k] = s[g(k), n] · (q[k, n] − zero[g(k), n]).
//!
//! Each layer becomes the shared affine storage (AFQ: per output row, per group of input
//! columns, w = scale·q + bias with bias = −scale·zero), so GPTQ runs on the CPU with the
//! same kernels; act-order checkpoints get their input columns reordered so groups are
//! contiguous (`PermutedLinear`).

use super::safetensors_file::SafetensorsFiles;
use crate::quant::afq::AfqLinear;
use crate::quant::permuted::PermutedLinear;
use crate::quant::QuantLinear;
use anyhow::{bail, ensure, Context, Result};
use candle_core::{DType, Tensor};
use std::sync::Arc;

#[derive(Debug, Clone, Copy)]
pub struct GptqQuant {
    pub bits: u32,
    /// None: one group over the whole row (`group_size: -1`).
    pub group_size: Option<usize>,
    /// 1 for the classic format (zeros stored minus one), 0 for `gptq_v2`.
    pub zero_offset: u32,
}

impl GptqQuant {
    pub fn from_config(q: &serde_json::Value) -> Result<Self> {
        let bits = q
            .get("bits")
            .and_then(|v| v.as_u64())
            .context("GPTQ config has no `bits`")? as u32;
        if ![2, 3, 4, 8].contains(&bits) {
            bail!("GPTQ with {bits} bits is not supported (2, 3, 4 or 8)");
        }
        let group_size = match q.get("group_size").and_then(|v| v.as_i64()) {
            Some(-1) | None => None,
            Some(g) if g > 0 => Some(g as usize),
            Some(g) => bail!("GPTQ group_size {g} is not valid"),
        };
        let v2 = q.get("checkpoint_format").and_then(|v| v.as_str()) == Some("gptq_v2");
        Ok(Self {
            bits,
            group_size,
            zero_offset: if v2 { 0 } else { 1 },
        })
    }
}

/// A layer's `scales` ([groups, n], any float dtype) as f32, checked for size.
pub(crate) fn group_scales(
    files: &SafetensorsFiles,
    name: &str,
    groups: usize,
    n: usize,
) -> Result<Vec<f32>> {
    let scales: Vec<f32> = files
        .load(&format!("{name}.scales"))
        .with_context(|| format!("{name}.scales"))?
        .to_dtype(DType::F32)?
        .flatten_all()?
        .to_vec1()?;
    ensure!(
        scales.len() == groups * n,
        "{name}.scales has {} values, expected {groups}×{n}",
        scales.len()
    );
    Ok(scales)
}

pub(crate) fn i32s(files: &SafetensorsFiles, name: &str) -> Result<(Vec<usize>, Vec<u32>)> {
    let (dt, shape, bytes) = files.raw(name)?;
    ensure!(
        matches!(dt, safetensors::Dtype::I32 | safetensors::Dtype::U32),
        "{name} is {dt:?}, expected int32"
    );
    let v = bytes
        .chunks_exact(4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    Ok((shape, v))
}

/// The layer `name` if this checkpoint stores it GPTQ-packed.
pub fn layer(
    files: &SafetensorsFiles,
    name: &str,
    q: GptqQuant,
    bias: Option<Tensor>,
) -> Result<Option<Arc<dyn QuantLinear>>> {
    if !files.contains(&format!("{name}.qweight")) {
        return Ok(None);
    }
    let what = |t: &str| format!("GPTQ tensor {name}.{t}");
    let bits = q.bits as usize;
    let (qshape, qweight) =
        i32s(files, &format!("{name}.qweight")).with_context(|| what("qweight"))?;
    ensure!(qshape.len() == 2, "{} must be 2-D", what("qweight"));
    ensure!(
        (qshape[0] * 32).is_multiple_of(bits),
        "{} has {} words per column, which do not hold whole {bits}-bit codes",
        what("qweight"),
        qshape[0]
    );
    let (k, n) = (qshape[0] * 32 / bits, qshape[1]);
    let gs = q.group_size.unwrap_or(k);
    ensure!(
        k % gs == 0,
        "{}: {k} input columns do not divide group size {gs}",
        what("qweight")
    );
    let groups = k / gs;
    let scales = group_scales(files, name, groups, n)?;
    let (zshape, qzeros) =
        i32s(files, &format!("{name}.qzeros")).with_context(|| what("qzeros"))?;
    let zwords = (n * bits).div_ceil(32);
    ensure!(
        zshape == [groups, zwords],
        "{} has shape {zshape:?}, expected [{groups}, {zwords}]",
        what("qzeros")
    );
    let g_idx: Vec<usize> = if files.contains(&format!("{name}.g_idx")) {
        let (_, g) = i32s(files, &format!("{name}.g_idx")).with_context(|| what("g_idx"))?;
        ensure!(
            g.len() == k,
            "{} has {} entries for {k} columns",
            what("g_idx"),
            g.len()
        );
        g.into_iter().map(|v| v as usize).collect()
    } else {
        (0..k).map(|c| c / gs).collect()
    };
    // Columns ordered by group (stable), so each group is one contiguous run of gs.
    let mut perm: Vec<u32> = (0..k as u32).collect();
    perm.sort_by_key(|&c| g_idx[c as usize]);
    for (j, &c) in perm.iter().enumerate() {
        ensure!(
            g_idx[c as usize] == j / gs,
            "{}: group {} does not hold exactly {gs} columns",
            what("g_idx"),
            g_idx[c as usize]
        );
    }
    let code = |kk: usize, nn: usize| stream_code(|w| qweight[w * n + nn], bits * kk, bits);
    let zero = |g: usize, nn: usize| {
        stream_code(|w| qzeros[g * zwords + w], bits * nn, bits) + q.zero_offset
    };
    affine_layer(
        &format!("GPTQ layer {name}"),
        IntCodes {
            rows: n,
            cols: k,
            bits: q.bits,
            group: gs,
            scales: &scales,
        },
        code,
        zero,
        perm,
        bias,
    )
    .map(Some)
}

/// The `bits`-wide code at bit offset `bit` of a little-endian stream of u32 words
/// (`word(i)` is the i-th); a code may straddle two words.
fn stream_code(word: impl Fn(usize) -> u32, bit: usize, bits: usize) -> u32 {
    let (w, off) = (bit / 32, bit % 32);
    let mut v = word(w) >> off;
    if off + bits > 32 {
        v |= word(w + 1) << (32 - off);
    }
    v & ((1u32 << bits) - 1)
}

/// The shape of an integer-coded layer: `rows` outputs × `cols` inputs, codes of `bits`,
/// groups of `group` input columns, `scales[g · rows + n]`.
pub(crate) struct IntCodes<'a> {
    pub rows: usize,
    pub cols: usize,
    pub bits: u32,
    pub group: usize,
    pub scales: &'a [f32],
}

/// Builds the shared affine storage from integer codes `code(k, n)` and zero points
/// `zero(g, n)` (W[n, k] = scale · (code − zero)), input columns taken in `perm` order
/// (so group g is positions g·group..): a plain AFQ layer, or one behind a column
/// permutation when `perm` is not the identity.
pub(crate) fn affine_layer(
    what: &str,
    shape: IntCodes,
    code: impl Fn(usize, usize) -> u32,
    zero: impl Fn(usize, usize) -> u32,
    perm: Vec<u32>,
    bias: Option<Tensor>,
) -> Result<Arc<dyn QuantLinear>> {
    let IntCodes {
        rows,
        cols,
        bits,
        group,
        scales,
    } = shape;
    let groups = cols / group;
    let mut codes = vec![0u8; cols];
    let mut packed = Vec::with_capacity(rows * cols * bits as usize / 32);
    let (mut sc, mut bi) = (
        Vec::with_capacity(rows * groups),
        Vec::with_capacity(rows * groups),
    );
    for nn in 0..rows {
        for (j, &c) in perm.iter().enumerate() {
            codes[j] = code(c as usize, nn) as u8;
        }
        packed.extend(crate::quant::packing::pack(&codes, bits));
        for g in 0..groups {
            let s = scales[g * rows + nn];
            sc.push(half::f16::from_f32(s));
            bi.push(half::f16::from_f32(-s * zero(g, nn) as f32));
        }
    }
    let afq: Arc<dyn QuantLinear> = Arc::new(
        AfqLinear::from_parts(rows, cols, bits, group, packed, sc, bi, bias)
            .with_context(|| what.to_string())?,
    );
    let identity = perm.iter().enumerate().all(|(j, &c)| j as u32 == c);
    Ok(if identity {
        afq
    } else {
        Arc::new(PermutedLinear::new(afq, &perm)?)
    })
}
