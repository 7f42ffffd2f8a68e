//! Prequantized checkpoints: which format config.json declares, and each layer's weights
//! in that format. A layer the format left unquantized has no format tensors, so
//! [`Prequantized::layer`] gives None and the loader reads it as an ordinary weight.

use super::awq::AwqQuant;
use super::bnb::BnbQuant;
use super::fp8::Fp8Quant;
use super::gptq::GptqQuant;
use super::mlx::MlxQuant;
use super::safetensors_file::SafetensorsFiles;
use crate::quant::QuantLinear;
use anyhow::{bail, Result};
use candle_core::Tensor;
use std::sync::Arc;

#[derive(Debug, Clone)]
pub enum Prequantized {
    Mlx(MlxQuant),
    Gptq(GptqQuant),
    Awq(AwqQuant),
    Bnb(BnbQuant),
    Fp8(Fp8Quant),
    /// GPT-OSS's MXFP4 experts (`loaders/mxfp4.rs`); everything else is dense.
    Mxfp4,
}

impl Prequantized {
    /// Reads config.json's `quantization_config` (or MLX's `quantization`). Formats smelt
    /// does not load are refused here rather than read as garbage.
    pub fn from_config(cfg: &serde_json::Value) -> Result<Option<Self>> {
        let Some(q) = cfg
            .get("quantization_config")
            .or_else(|| cfg.get("quantization"))
        else {
            return Ok(None);
        };
        Ok(Some(
            match q.get("quant_method").and_then(|m| m.as_str()) {
                Some("gptq") => Self::Gptq(GptqQuant::from_config(q)?),
                Some("awq") => Self::Awq(AwqQuant::from_config(q)?),
                Some("bitsandbytes") => Self::Bnb(BnbQuant::from_config(q)?),
                Some("fp8") => Self::Fp8(Fp8Quant::from_config(q)?),
                Some("mxfp4") => Self::Mxfp4,
                None | Some("mlx") | Some("affine") => Self::Mlx(MlxQuant::from_config(q)?),
                Some(other) => bail!(
                    "this is a prequantized `{other}` checkpoint; smelt does not load {other} weights (supported: MLX affine, GPTQ, AWQ, bitsandbytes, FP8, MXFP4)"
                ),
            },
        ))
    }

    /// One line for the log.
    pub fn describe(&self) -> String {
        match self {
            Self::Mlx(q) => format!(
                "MLX checkpoint: {}-bit affine layers, group size {}{}",
                q.default.bits,
                q.default.group_size,
                match q.overrides.len() {
                    0 => String::new(),
                    n => format!(", {n} per-module overrides"),
                }
            ),
            Self::Gptq(g) => format!(
                "GPTQ checkpoint: {}-bit, group size {}",
                g.bits,
                g.group_size
                    .map_or("whole row".to_string(), |s| s.to_string())
            ),
            Self::Awq(a) => format!(
                "AWQ checkpoint: 4-bit GEMM layout, group size {}",
                a.group_size
            ),
            Self::Bnb(BnbQuant::FourBit(kind)) => {
                format!("bitsandbytes checkpoint: 4-bit {kind:?}")
            }
            Self::Bnb(BnbQuant::Int8) => "bitsandbytes checkpoint: LLM.int8".to_string(),
            Self::Mxfp4 => "MXFP4 checkpoint: expert layers in E2M1 blocks of 32".to_string(),
            Self::Fp8(f) => match f.block {
                Some((r, c)) => format!("FP8 checkpoint: E4M3 with [{r}, {c}] scale blocks"),
                None => "FP8 checkpoint: E4M3 with one scale per tensor".to_string(),
            },
        }
    }

    /// Layer `name` in this format, or None when the checkpoint stores it unquantized.
    pub fn layer(
        &self,
        files: &SafetensorsFiles,
        name: &str,
        bias: Option<Tensor>,
    ) -> Result<Option<Arc<dyn QuantLinear>>> {
        match self {
            Self::Mlx(q) => Ok(super::mlx::layer(files, name, q, bias)?
                .map(|l| Arc::new(l) as Arc<dyn QuantLinear>)),
            Self::Gptq(q) => super::gptq::layer(files, name, *q, bias),
            Self::Awq(q) => super::awq::layer(files, name, *q, bias),
            Self::Bnb(_) => super::bnb::layer(files, name, bias),
            Self::Fp8(q) => super::fp8::layer(files, name, *q, bias),
            Self::Mxfp4 => super::mxfp4::layer(files, name, bias),
        }
    }
}
