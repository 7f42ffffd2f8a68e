//! Blockwise FP8 checkpoints (`quantization_config.quant_method: fp8`, `fmt: e4m3`,
//! `weight_block_size: [bo, bi]`, as transformers' fine-grained FP8 and DeepSeek-V3 write
//! them): per layer `weight` F8_E4M3 `[out, in]` and `weight_scale_inv` f32 (or bf16)
//! `[ceil(out/bo), ceil(in/bi)]`, W[r, c] = e4m3(weight[r, c]) · scale_inv[r/bo, c/bi].
//! Without a block size, one scalar `weight_scale_inv` covers the tensor. Layers listed in
//! `modules_to_not_convert` have no scale and load as ordinary weights.

use super::safetensors_file::SafetensorsFiles;
use crate::quant::{Fp8Linear, QuantLinear};
use anyhow::{bail, ensure, Context, Result};
use candle_core::{DType, Tensor};
use std::sync::Arc;

#[derive(Debug, Clone, Copy)]
pub struct Fp8Quant {
    /// [rows, cols] of a scale block; None: one scale per tensor.
    pub block: Option<(usize, usize)>,
}

impl Fp8Quant {
    pub fn from_config(q: &serde_json::Value) -> Result<Self> {
        if let Some(fmt) = q.get("fmt").and_then(|v| v.as_str()) {
            if !fmt.eq_ignore_ascii_case("e4m3") {
                bail!("FP8 format `{fmt}` is not supported (e4m3)");
            }
        }
        let block = match q.get("weight_block_size") {
            None | Some(serde_json::Value::Null) => None,
            Some(v) => {
                let dims: Vec<u64> = v
                    .as_array()
                    .map(|a| a.iter().filter_map(|d| d.as_u64()).collect())
                    .unwrap_or_default();
                match dims.as_slice() {
                    [r, c] if *r > 0 && *c > 0 => Some((*r as usize, *c as usize)),
                    _ => bail!("FP8 weight_block_size {v} is not two positive integers"),
                }
            }
        };
        Ok(Self { block })
    }
}

/// The layer `name` if this checkpoint stores it in FP8.
pub fn layer(
    files: &SafetensorsFiles,
    name: &str,
    q: Fp8Quant,
    bias: Option<Tensor>,
) -> Result<Option<Arc<dyn QuantLinear>>> {
    let scale_name = format!("{name}.weight_scale_inv");
    if !files.contains(&scale_name) {
        return Ok(None);
    }
    let wname = format!("{name}.weight");
    let (dt, shape, codes) = files.raw(&wname)?;
    ensure!(
        dt == safetensors::Dtype::F8_E4M3 && shape.len() == 2,
        "FP8 tensor {wname} must be a 2-D F8_E4M3 tensor, got {dt:?} {shape:?}"
    );
    let (rows, cols) = (shape[0], shape[1]);
    let scales = files.load(&scale_name)?;
    let (bo, bi) = q.block.unwrap_or((rows, cols));
    let (nr, nc) = (rows.div_ceil(bo), cols.div_ceil(bi));
    let expected: &[usize] = if q.block.is_some() { &[nr, nc] } else { &[] };
    // A per-tensor scale may also be stored as [1] or [1, 1].
    ensure!(
        scales.dims() == expected || (q.block.is_none() && scales.elem_count() == 1),
        "FP8 tensor {scale_name} has shape {:?}; a {rows} × {cols} weight in [{bo}, {bi}] blocks needs {expected:?}",
        scales.dims()
    );
    let blocks: Vec<f32> = scales.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
    // One scale per row per column block: each block row's scales repeated over its rows.
    let per_row: Vec<f32> = (0..rows)
        .flat_map(|r| blocks[(r / bo) * nc..(r / bo + 1) * nc].iter().copied())
        .collect();
    let layer = Fp8Linear::from_column_blocks(rows, cols, codes.to_vec(), per_row, bi, bias)
        .with_context(|| format!("FP8 layer {name}"))?;
    Ok(Some(Arc::new(layer)))
}
