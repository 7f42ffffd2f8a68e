//! MXFP4 checkpoints (GPT-OSS as released, `quant_method: mxfp4`): the experts are stored
//! stacked as `mlp.experts.gate_up_proj_blocks` (experts, out, in/32, 16) with two FP4
//! codes a byte — the low nibble the even element — and `…_scales` (experts, out, in/32)
//! E8M0 bytes; gate and up rows alternate. Each expert becomes an [`Mxfp4Linear`] as
//! stored (repacked to ggml's nibble order, no re-quantization), gate rows first.

use super::safetensors_file::SafetensorsFiles;
use crate::quant::mxfp4::{BLOCK, BLOCK_BYTES};
use crate::quant::{Mxfp4Linear, QuantLinear};
use anyhow::{ensure, Context, Result};
use candle_core::Tensor;
use std::sync::Arc;

/// The layer `name` (`model.layers.3.mlp.experts.5.gate_up_proj`) from its stacked MXFP4
/// blocks, or None when the checkpoint has no blocks for it.
pub fn layer(
    files: &SafetensorsFiles,
    name: &str,
    bias: Option<Tensor>,
) -> Result<Option<Arc<dyn QuantLinear>>> {
    let Some((head, rest)) = name.split_once(".experts.") else {
        return Ok(None);
    };
    let Some((expert, w)) = rest.split_once('.') else {
        return Ok(None);
    };
    let (blocks_name, scales_name) = (
        format!("{head}.experts.{w}_blocks"),
        format!("{head}.experts.{w}_scales"),
    );
    if !files.contains(&blocks_name) {
        return Ok(None);
    }
    let e: usize = expert
        .parse()
        .with_context(|| format!("{name}: expert index {expert:?}"))?;
    let (_, bshape, bbytes) = files.raw(&blocks_name)?;
    let (_, sshape, sbytes) = files.raw(&scales_name)?;
    ensure!(
        bshape.len() == 4 && bshape[3] == BLOCK / 2 && sshape == bshape[..3],
        "{blocks_name} {bshape:?} and {scales_name} {sshape:?} are not MXFP4 blocks and scales"
    );
    let (experts, rows, nblocks) = (bshape[0], bshape[1], bshape[2]);
    ensure!(e < experts, "{blocks_name} has no expert {e}");
    let per_block = BLOCK / 2;
    let expert_blocks =
        &bbytes[e * rows * nblocks * per_block..(e + 1) * rows * nblocks * per_block];
    let expert_scales = &sbytes[e * rows * nblocks..(e + 1) * rows * nblocks];
    // Gate and up rows alternate in the checkpoint; the fused layer wants gate rows first.
    let order: Vec<usize> = if w == "gate_up_proj" {
        (0..rows).step_by(2).chain((1..rows).step_by(2)).collect()
    } else {
        (0..rows).collect()
    };
    let mut data = Vec::with_capacity(rows * nblocks * BLOCK_BYTES);
    for &r in &order {
        for b in 0..nblocks {
            let i = r * nblocks + b;
            data.push(expert_scales[i]);
            let src = &expert_blocks[i * per_block..(i + 1) * per_block];
            // Element 2j is src[j]'s low nibble, 2j + 1 its high one; ggml keeps element j
            // in qs[j]'s low nibble and j + 16 in its high one.
            let code = |k: usize| (src[k / 2] >> (4 * (k % 2))) & 0x0F;
            for j in 0..per_block {
                data.push(code(j) | (code(j + per_block) << 4));
            }
        }
    }
    let lin = Mxfp4Linear::from_bytes(data, rows, nblocks * BLOCK, bias)
        .with_context(|| format!("{name} from {blocks_name}"))?;
    Ok(Some(Arc::new(lin)))
}
