//! MLX checkpoints (config.json `quantization: {group_size, bits}`, as mlx-lm writes
//! them): a quantized layer has `weight` u32 (codes packed as `mx.quantize` packs them),
//! `scales` and `biases` (f16/bf16/f32) `[out, in / group_size]`. Per-module entries in
//! the same map override the defaults (`"model.layers.0.mlp.down_proj": {"bits": 8,
//! "group_size": 64}`) or mark a module unquantized (`false`). Loaded as AFQ layers.

use super::safetensors_file::SafetensorsFiles;
use crate::quant::afq::AfqLinear;
use anyhow::{bail, ensure, Context, Result};
use candle_core::{DType, Tensor};
use std::collections::HashMap;

const BITS: [u32; 5] = [2, 3, 4, 6, 8];
const GROUPS: [usize; 3] = [32, 64, 128];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MlxParams {
    pub bits: u32,
    pub group_size: usize,
}

#[derive(Debug, Clone)]
pub struct MlxQuant {
    pub default: MlxParams,
    /// Per-module settings; None: the module is not quantized.
    pub overrides: HashMap<String, Option<MlxParams>>,
}

fn params(v: &serde_json::Value, what: &str) -> Result<MlxParams> {
    let field = |k: &str| v.get(k).and_then(|x| x.as_u64());
    let bits = field("bits").with_context(|| format!("{what} has no `bits`"))? as u32;
    let group_size =
        field("group_size").with_context(|| format!("{what} has no `group_size`"))? as usize;
    if !BITS.contains(&bits) {
        bail!("{what}: MLX quantization with {bits} bits is not supported (2, 3, 4, 6 or 8)");
    }
    if !GROUPS.contains(&group_size) {
        bail!("{what}: MLX group size {group_size} is not supported (32, 64 or 128)");
    }
    Ok(MlxParams { bits, group_size })
}

impl MlxQuant {
    /// The `quantization` map of config.json.
    pub fn from_config(q: &serde_json::Value) -> Result<Self> {
        if let Some(mode) = q.get("mode").and_then(|m| m.as_str()) {
            ensure!(
                mode == "affine",
                "MLX quantization mode `{mode}` is not supported (affine)"
            );
        }
        let default = params(q, "the MLX `quantization` entry")?;
        let mut overrides = HashMap::new();
        for (key, v) in q.as_object().into_iter().flatten() {
            match v {
                serde_json::Value::Object(_) => {
                    let p = params(v, &format!("the MLX override for `{key}`"))?;
                    overrides.insert(key.clone(), Some(p));
                }
                serde_json::Value::Bool(false) => {
                    overrides.insert(key.clone(), None);
                }
                _ => {}
            }
        }
        Ok(Self { default, overrides })
    }

    /// The settings of module `name`, None when it is not quantized.
    fn params_for(&self, name: &str) -> Option<MlxParams> {
        match self.overrides.get(name) {
            Some(p) => *p,
            None => Some(self.default),
        }
    }
}

/// The MLX affine layer `name` (`.weight` u32 codes, `.scales`, `.biases`), if the
/// checkpoint stores it quantized.
pub fn layer(
    files: &SafetensorsFiles,
    name: &str,
    q: &MlxQuant,
    bias: Option<Tensor>,
) -> Result<Option<AfqLinear>> {
    if !files.contains(&format!("{name}.scales")) {
        return Ok(None);
    }
    let p = q
        .params_for(name)
        .with_context(|| format!("{name} has MLX scales but config.json marks it unquantized"))?;
    let (dt, shape, bytes) = files.raw(&format!("{name}.weight"))?;
    if dt != safetensors::Dtype::U32 || shape.len() != 2 {
        bail!("{name}.weight of an MLX layer must be a 2-D uint32 tensor, got {dt:?} {shape:?}");
    }
    ensure!(
        (shape[1] * 32).is_multiple_of(p.bits as usize),
        "{name}.weight: {} words per row do not hold whole {}-bit codes",
        shape[1],
        p.bits
    );
    let (rows, cols) = (shape[0], shape[1] * 32 / p.bits as usize);
    let words: Vec<u32> = bytes
        .chunks_exact(4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    let half = |suffix: &str| -> Result<Vec<half::f16>> {
        let t = files.load(&format!("{name}.{suffix}"))?;
        if t.dims() != [rows, cols / p.group_size] {
            bail!(
                "{name}.{suffix} has shape {:?}; {rows}×{cols} ({}-bit) with groups of {} needs [{rows}, {}]",
                t.dims(),
                p.bits,
                p.group_size,
                cols / p.group_size
            );
        }
        Ok(t.to_dtype(DType::F16)?.flatten_all()?.to_vec1()?)
    };
    let layer = AfqLinear::from_parts(
        rows,
        cols,
        p.bits,
        p.group_size,
        words,
        half("scales")?,
        half("biases")?,
        bias,
    )
    .with_context(|| format!("MLX layer {name}"))?;
    Ok(Some(layer))
}
