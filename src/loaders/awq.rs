//! AWQ checkpoints (`quantization_config.quant_method: awq`, GEMM layout, 4 bits):
//! `qweight` i32 `[K, N/8]` packed along the output dim N with the eight columns of a word
//! interleaved as [0, 2, 4, 6, 1, 3, 5, 7] (nibble i holds column 8j + ORDER[i]), `qzeros`
//! i32 `[K/gs, N/8]` packed the same way (no offset), `scales` f16 `[K/gs, N]`;
//! W[n, k] = s[k/gs, n] · (q[k, n] − z[k/gs, n]). Loaded as the shared affine storage,
//! through the same builder as GPTQ.

use super::gptq::{affine_layer, group_scales, i32s, IntCodes};
use super::safetensors_file::SafetensorsFiles;
use crate::quant::QuantLinear;
use anyhow::{bail, ensure, Context, Result};
use candle_core::Tensor;
use std::sync::Arc;

/// The nibble holding column c of a word: the inverse of AWQ's [0, 2, 4, 6, 1, 3, 5, 7].
const NIBBLE_OF_COLUMN: [usize; 8] = [0, 4, 1, 5, 2, 6, 3, 7];

#[derive(Debug, Clone, Copy)]
pub struct AwqQuant {
    pub group_size: usize,
}

impl AwqQuant {
    pub fn from_config(q: &serde_json::Value) -> Result<Self> {
        let bits = q
            .get("bits")
            .or_else(|| q.get("w_bit"))
            .and_then(|v| v.as_u64())
            .context("AWQ config has no `bits`")?;
        if bits != 4 {
            bail!("AWQ with {bits} bits is not supported (4)");
        }
        let version = q
            .get("version")
            .and_then(|v| v.as_str())
            .unwrap_or("gemm")
            .to_ascii_lowercase();
        if version != "gemm" {
            bail!("AWQ `{version}` layout is not supported (gemm)");
        }
        let group_size = q
            .get("group_size")
            .or_else(|| q.get("q_group_size"))
            .and_then(|v| v.as_u64())
            .context("AWQ config has no `group_size`")? as usize;
        ensure!(group_size > 0, "AWQ group_size must be positive");
        Ok(Self { group_size })
    }
}

/// The layer `name` if this checkpoint stores it AWQ-packed.
pub fn layer(
    files: &SafetensorsFiles,
    name: &str,
    q: AwqQuant,
    bias: Option<Tensor>,
) -> Result<Option<Arc<dyn QuantLinear>>> {
    if !files.contains(&format!("{name}.qweight")) {
        return Ok(None);
    }
    let what = |t: &str| format!("AWQ tensor {name}.{t}");
    let (qshape, qweight) =
        i32s(files, &format!("{name}.qweight")).with_context(|| what("qweight"))?;
    ensure!(qshape.len() == 2, "{} must be 2-D", what("qweight"));
    let (k, words) = (qshape[0], qshape[1]);
    let (n, gs) = (words * 8, q.group_size);
    ensure!(
        k % gs == 0,
        "{}: {k} input rows do not divide group size {gs}",
        what("qweight")
    );
    let groups = k / gs;
    let scales = group_scales(files, name, groups, n)?;
    let (zshape, qzeros) =
        i32s(files, &format!("{name}.qzeros")).with_context(|| what("qzeros"))?;
    ensure!(
        zshape == [groups, words],
        "{} has shape {zshape:?}, expected [{groups}, {words}]",
        what("qzeros")
    );
    let nibble = |word: u32, col: usize| (word >> (4 * NIBBLE_OF_COLUMN[col % 8])) & 0xF;
    let code = |kk: usize, nn: usize| nibble(qweight[kk * words + nn / 8], nn);
    let zero = |g: usize, nn: usize| nibble(qzeros[g * words + nn / 8], nn);
    affine_layer(
        &format!("AWQ layer {name}"),
        IntCodes {
            rows: n,
            cols: k,
            bits: 4,
            group: gs,
            scales: &scales,
        },
        code,
        zero,
        (0..k as u32).collect(),
        bias,
    )
    .map(Some)
}
