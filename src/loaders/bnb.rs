//! bitsandbytes checkpoints (`quantization_config.quant_method: bitsandbytes`), as
//! transformers saves them.
//!
//! 4-bit (`load_in_4bit`, `bnb_4bit_quant_type` nf4 | fp4): `weight` u8 (two codes a
//! byte), `weight.absmax` (f32 per block, or u8 codes when nested), `weight.quant_map`
//! f32[16], nested: `weight.nested_absmax` f32 and `weight.nested_quant_map` f32[256],
//! and `weight.quant_state.bitsandbytes__nf4|fp4`: JSON bytes {quant_type, blocksize,
//! shape, nested_blocksize, nested_offset}. A nested absmax is
//! nested_quant_map[code] · nested_absmax[i / nested_blocksize] + nested_offset.
//!
//! 8-bit (`load_in_8bit`, LLM.int8): `weight` i8 [out, in], `SCB` f32 [out],
//! optionally `weight_format` (0: row-major). Layers bitsandbytes skipped
//! (`llm_int8_skip_modules`) are ordinary weights.

use super::safetensors_file::SafetensorsFiles;
use crate::quant::bnb::{Bnb4Kind, Bnb4Linear, BnbInt8Linear};
use crate::quant::QuantLinear;
use anyhow::{bail, ensure, Context, Result};
use candle_core::{DType, Tensor};
use std::sync::Arc;

#[derive(Debug, Clone, Copy)]
pub enum BnbQuant {
    FourBit(Bnb4Kind),
    Int8,
}

impl BnbQuant {
    pub fn from_config(q: &serde_json::Value) -> Result<Self> {
        let flag = |k: &str| q.get(k).and_then(|v| v.as_bool()).unwrap_or(false);
        if flag("load_in_4bit") {
            let kind = q
                .get("bnb_4bit_quant_type")
                .and_then(|v| v.as_str())
                .unwrap_or("fp4");
            let kind = Bnb4Kind::parse(kind).with_context(|| {
                format!("bitsandbytes 4-bit type `{kind}` is not supported (nf4 or fp4)")
            })?;
            Ok(Self::FourBit(kind))
        } else if flag("load_in_8bit") {
            Ok(Self::Int8)
        } else {
            bail!("bitsandbytes config has neither load_in_4bit nor load_in_8bit")
        }
    }
}

fn f32s(files: &SafetensorsFiles, name: &str) -> Result<Vec<f32>> {
    Ok(files
        .load(name)
        .with_context(|| format!("bitsandbytes tensor {name}"))?
        .to_dtype(DType::F32)?
        .flatten_all()?
        .to_vec1()?)
}

/// The layer `name` if this checkpoint stores it bitsandbytes-quantized.
pub fn layer(
    files: &SafetensorsFiles,
    name: &str,
    bias: Option<Tensor>,
) -> Result<Option<Arc<dyn QuantLinear>>> {
    if files.contains(&format!("{name}.SCB")) {
        return int8_layer(files, name, bias).map(Some);
    }
    let state = ["nf4", "fp4"]
        .iter()
        .map(|k| format!("{name}.weight.quant_state.bitsandbytes__{k}"))
        .find(|k| files.contains(k));
    match state {
        Some(state) => four_bit_layer(files, name, &state, bias).map(Some),
        // A layer without quant state was skipped by bitsandbytes (kept dense).
        None => Ok(None),
    }
}

fn int8_layer(
    files: &SafetensorsFiles,
    name: &str,
    bias: Option<Tensor>,
) -> Result<Arc<dyn QuantLinear>> {
    let wname = format!("{name}.weight");
    let (dt, shape, bytes) = files.raw(&wname)?;
    ensure!(
        dt == safetensors::Dtype::I8 && shape.len() == 2,
        "bitsandbytes int8 tensor {wname} must be a 2-D int8 tensor, got {dt:?} {shape:?}"
    );
    let format_name = format!("{name}.weight_format");
    if files.contains(&format_name) {
        let f = f32s(files, &format_name)?;
        ensure!(
            f.iter().all(|&v| v == 0.0),
            "{format_name} is {f:?}: only the row-major int8 layout (0) is supported"
        );
    }
    let scb = f32s(files, &format!("{name}.SCB"))?;
    let codes = bytes.iter().map(|&b| b as i8).collect();
    let layer = BnbInt8Linear::from_parts(shape[0], shape[1], codes, &scb, bias)
        .with_context(|| format!("bitsandbytes int8 layer {name}"))?;
    Ok(Arc::new(layer))
}

fn four_bit_layer(
    files: &SafetensorsFiles,
    name: &str,
    state_name: &str,
    bias: Option<Tensor>,
) -> Result<Arc<dyn QuantLinear>> {
    let what = || format!("bitsandbytes layer {name}");
    let (_, _, json) = files.raw(state_name)?;
    let state: serde_json::Value = serde_json::from_slice(json)
        .with_context(|| format!("{state_name} is not JSON"))
        .with_context(what)?;
    let kind_name = state_name.rsplit("__").next().unwrap_or_default();
    let kind = Bnb4Kind::parse(
        state
            .get("quant_type")
            .and_then(|v| v.as_str())
            .unwrap_or(kind_name),
    )
    .with_context(|| format!("{state_name}: unknown quant_type"))?;
    let usize_of = |k: &str| -> Result<usize> {
        state
            .get(k)
            .and_then(|v| v.as_u64())
            .map(|v| v as usize)
            .with_context(|| format!("{state_name} has no `{k}`"))
    };
    let blocksize = usize_of("blocksize")?;
    let shape: Vec<usize> = state
        .get("shape")
        .and_then(|v| v.as_array())
        .map(|a| {
            a.iter()
                .filter_map(|d| d.as_u64().map(|d| d as usize))
                .collect()
        })
        .unwrap_or_default();
    let [rows, cols] = shape[..] else {
        bail!("{state_name}: `shape` {shape:?} is not 2-D");
    };
    let wname = format!("{name}.weight");
    let (dt, _, packed) = files.raw(&wname)?;
    ensure!(
        dt == safetensors::Dtype::U8,
        "bitsandbytes 4-bit tensor {wname} must be uint8, got {dt:?}"
    );
    let absmax_name = format!("{name}.weight.absmax");
    // The quant state says whether absmax is double-quantized; the tensors must agree.
    let nested = state.get("nested_offset").is_some()
        || files.contains(&format!("{name}.weight.nested_absmax"));
    let absmax = if nested {
        // Double quantization: the absmax values are themselves 8-bit codes.
        let (dt, _, codes) = files.raw(&absmax_name)?;
        ensure!(
            dt == safetensors::Dtype::U8,
            "nested {absmax_name} must be uint8 codes, got {dt:?}"
        );
        let map = f32s(files, &format!("{name}.weight.nested_quant_map"))?;
        let scales = f32s(files, &format!("{name}.weight.nested_absmax"))?;
        let nested_block = usize_of("nested_blocksize")?;
        let offset = state
            .get("nested_offset")
            .and_then(|v| v.as_f64())
            .with_context(|| format!("{state_name} has no `nested_offset`"))?
            as f32;
        ensure!(
            map.len() == 256 && nested_block > 0,
            "{name}: nested_quant_map must have 256 values and nested_blocksize be positive"
        );
        ensure!(
            scales.len() == codes.len().div_ceil(nested_block),
            "{name}.weight.nested_absmax has {} values; {} codes in blocks of {nested_block} need {}",
            scales.len(),
            codes.len(),
            codes.len().div_ceil(nested_block)
        );
        codes
            .iter()
            .enumerate()
            .map(|(i, &c)| map[c as usize] * scales[i / nested_block] + offset)
            .collect()
    } else {
        let (dt, _, _) = files.raw(&absmax_name)?;
        ensure!(
            matches!(
                dt,
                safetensors::Dtype::F32 | safetensors::Dtype::F16 | safetensors::Dtype::BF16
            ),
            "{absmax_name} is {dt:?}: 8-bit absmax codes need nested_absmax and nested_quant_map"
        );
        f32s(files, &absmax_name)?
    };
    let map_name = format!("{name}.weight.quant_map");
    let codebook = if files.contains(&map_name) {
        let m = f32s(files, &map_name)?;
        <[f32; 16]>::try_from(m.as_slice())
            .map_err(|_| anyhow::anyhow!("{map_name} has {} values, expected 16", m.len()))?
    } else {
        kind.default_codebook()
    };
    let layer = Bnb4Linear::from_parts(
        rows,
        cols,
        kind,
        packed.to_vec(),
        absmax,
        blocksize,
        codebook,
        bias,
    )
    .with_context(what)?;
    Ok(Arc::new(layer))
}
