//! Hugging Face checkpoints: safetensors (single or sharded) + config.json + tokenizer.json.

use super::hub::ModelFiles;
use super::safetensors_file::SafetensorsFiles;
use super::{read_json, special_token, LoadOptions, LoadedModel, TokenizerAssets};
use crate::models::{Embedding, ModelConfig, WeightSource};
use crate::quant::afq::AfqLinear;
use crate::quant::{isq, IsqType, QuantLinear, UnquantLinear};
use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use tokenizers::Tokenizer;

pub fn load(model_id: &str, revision: &str, opts: &LoadOptions) -> Result<LoadedModel> {
    let files = ModelFiles::resolve(model_id, revision, "config.json")?;
    let need = |name: &str| -> Result<PathBuf> {
        files
            .get(name)?
            .with_context(|| format!("model {} has no {name}", files.describe()))
    };
    let config_path = need("config.json")?;
    let config_text = std::fs::read_to_string(&config_path)?;
    let cfg = ModelConfig::from_hf_json(&config_text)
        .with_context(|| format!("reading {}", config_path.display()))?;
    let config_json: serde_json::Value = serde_json::from_str(&config_text)?;
    let gptq = gptq_quantization(&config_json)
        .with_context(|| format!("reading {}", config_path.display()))?;
    let awq = awq_quantization(&config_json)
        .with_context(|| format!("reading {}", config_path.display()))?;
    let mlx = match (gptq, awq) {
        (None, None) => mlx_quantization(&config_json)
            .with_context(|| format!("reading {}", config_path.display()))?,
        _ => None,
    };
    if let Some(a) = &awq {
        tracing::info!(
            "AWQ checkpoint: 4-bit GEMM layout, group size {}",
            a.group_size
        );
    }
    if let Some(g) = &gptq {
        tracing::info!(
            "GPTQ checkpoint: {}-bit, group size {}",
            g.bits,
            g.group_size
                .map_or("whole row".to_string(), |s| s.to_string())
        );
    }
    if let Some(q) = &mlx {
        tracing::info!(
            "MLX checkpoint: {}-bit affine layers, group size {}",
            q.bits,
            q.group_size
        );
    }
    let weights = safetensor_paths(&files)?;
    let tensors = SafetensorsFiles::open(&weights)?;
    let assets = load_tokenizer_assets(&files, &cfg)?;
    let src = SafetensorsSource {
        tensors,
        dtype: opts.dtype,
        opts: opts.clone(),
        device: opts.device.clone(),
        embed_cache: Mutex::new(None),
        mlx,
        gptq,
        awq,
    };
    super::finish_load(cfg, Arc::new(src), assets, model_id.to_string(), opts)
}

fn safetensor_paths(files: &ModelFiles) -> Result<Vec<PathBuf>> {
    if let Some(index) = files.get("model.safetensors.index.json")? {
        let json = read_json(&index)?;
        let map = json
            .get("weight_map")
            .and_then(|m| m.as_object())
            .with_context(|| format!("{} has no weight_map", index.display()))?;
        let mut shards: Vec<String> = map
            .values()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect();
        shards.sort();
        shards.dedup();
        return shards
            .iter()
            .map(|s| {
                files
                    .get(s)?
                    .with_context(|| format!("shard {s} listed in the index is missing"))
            })
            .collect();
    }
    match files.get("model.safetensors")? {
        Some(p) => Ok(vec![p]),
        None => bail!(
            "model {} has neither model.safetensors nor model.safetensors.index.json",
            files.describe()
        ),
    }
}

pub(crate) fn load_tokenizer_assets(
    files: &ModelFiles,
    cfg: &ModelConfig,
) -> Result<TokenizerAssets> {
    let tok_path = files
        .get("tokenizer.json")?
        .with_context(|| format!("model {} has no tokenizer.json", files.describe()))?;
    let tokenizer = Tokenizer::from_file(&tok_path)
        .map_err(|e| anyhow::anyhow!("cannot load {}: {e}", tok_path.display()))?;
    let tcfg = match files.get("tokenizer_config.json")? {
        Some(p) => read_json(&p)?,
        None => serde_json::Value::Null,
    };
    let mut chat_template = match tcfg.get("chat_template") {
        Some(serde_json::Value::String(s)) => Some(s.clone()),
        // A list of named templates: use "default".
        Some(serde_json::Value::Array(list)) => list
            .iter()
            .find(|t| t.get("name").and_then(|n| n.as_str()) == Some("default"))
            .and_then(|t| t.get("template")?.as_str().map(str::to_string)),
        _ => None,
    };
    if chat_template.is_none() {
        if let Some(p) = files.get("chat_template.jinja")? {
            chat_template = Some(std::fs::read_to_string(p)?);
        }
    }
    let bos_token = special_token(&tcfg, "bos_token");
    let eos_token = special_token(&tcfg, "eos_token");
    let mut eos_token_ids = Vec::new();
    if let Some(p) = files.get("generation_config.json")? {
        collect_ids(read_json(&p)?.get("eos_token_id"), &mut eos_token_ids);
    }
    if let Some(p) = files.get("config.json")? {
        collect_ids(read_json(&p)?.get("eos_token_id"), &mut eos_token_ids);
    }
    if let Some(id) = eos_token.as_deref().and_then(|t| tokenizer.token_to_id(t)) {
        eos_token_ids.push(id);
    }
    eos_token_ids.sort_unstable();
    eos_token_ids.dedup();
    let _ = cfg;
    Ok(TokenizerAssets {
        tokenizer,
        chat_template,
        bos_token,
        eos_token,
        eos_token_ids,
    })
}

fn collect_ids(v: Option<&serde_json::Value>, out: &mut Vec<u32>) {
    match v {
        Some(serde_json::Value::Number(n)) => out.extend(n.as_u64().map(|x| x as u32)),
        Some(serde_json::Value::Array(a)) => {
            out.extend(a.iter().filter_map(|x| x.as_u64()).map(|x| x as u32))
        }
        _ => {}
    }
}

/// An MLX checkpoint's quantization (config.json `quantization`, or
/// `quantization_config` without another `quant_method`).
#[derive(Debug, Clone, Copy)]
struct MlxQuant {
    bits: u32,
    group_size: usize,
}

/// GPTQ settings from config.json's `quantization_config`, if that is what it holds.
fn gptq_quantization(cfg: &serde_json::Value) -> Result<Option<super::gptq::GptqQuant>> {
    let Some(q) = cfg.get("quantization_config") else {
        return Ok(None);
    };
    if q.get("quant_method").and_then(|m| m.as_str()) != Some("gptq") {
        return Ok(None);
    }
    Ok(Some(super::gptq::GptqQuant::from_config(q)?))
}

/// AWQ settings from config.json's `quantization_config`, if that is what it holds.
fn awq_quantization(cfg: &serde_json::Value) -> Result<Option<super::awq::AwqQuant>> {
    let Some(q) = cfg.get("quantization_config") else {
        return Ok(None);
    };
    if q.get("quant_method").and_then(|m| m.as_str()) != Some("awq") {
        return Ok(None);
    }
    Ok(Some(super::awq::AwqQuant::from_config(q)?))
}

/// Reads the prequantized-checkpoint settings of config.json. Formats smelt does not load
/// yet are refused here rather than read as garbage.
fn mlx_quantization(cfg: &serde_json::Value) -> Result<Option<MlxQuant>> {
    let Some(q) = cfg
        .get("quantization")
        .or_else(|| cfg.get("quantization_config"))
    else {
        return Ok(None);
    };
    match q.get("quant_method").and_then(|m| m.as_str()) {
        None | Some("mlx") | Some("affine") => {}
        Some(other) => bail!(
            "this is a prequantized `{other}` checkpoint; smelt does not load {other} weights yet (supported: MLX affine, GPTQ, AWQ)"
        ),
    }
    let field = |k: &str| q.get(k).and_then(|v| v.as_u64());
    let bits = field("bits").context("the MLX `quantization` entry has no `bits`")? as u32;
    let group_size =
        field("group_size").context("the MLX `quantization` entry has no `group_size`")? as usize;
    if ![2, 3, 4, 6, 8].contains(&bits) {
        bail!("MLX quantization with {bits} bits is not supported (2, 3, 4, 6 or 8)");
    }
    if ![32, 64, 128].contains(&group_size) {
        bail!("MLX group size {group_size} is not supported (32, 64 or 128)");
    }
    Ok(Some(MlxQuant { bits, group_size }))
}

/// Weights from memory-mapped safetensors, read one tensor at a time.
struct SafetensorsSource {
    tensors: SafetensorsFiles,
    dtype: DType,
    opts: LoadOptions,
    device: Device,
    /// The embedding, kept so a tied output head shares its storage.
    embed_cache: Mutex<Option<Tensor>>,
    /// Set for MLX checkpoints: layers with `.scales` are affine-quantized.
    mlx: Option<MlxQuant>,
    /// Set for GPTQ checkpoints: layers with `.qweight` are GPTQ-packed.
    gptq: Option<super::gptq::GptqQuant>,
    /// Set for AWQ checkpoints: layers with `.qweight` are AWQ-packed.
    awq: Option<super::awq::AwqQuant>,
}

impl SafetensorsSource {
    fn load(&self, name: &str, dtype: DType) -> Result<Tensor> {
        let t = self.tensors.load(name)?;
        Ok(t.to_dtype(dtype)?.to_device(&self.device)?)
    }
    /// An MLX affine layer `name` (`.weight` u32 codes, `.scales`, `.biases`), if this is
    /// an MLX checkpoint and the layer is quantized.
    fn mlx_layer(&self, name: &str, bias: Option<Tensor>) -> Result<Option<AfqLinear>> {
        let Some(q) = self.mlx else {
            return Ok(None);
        };
        if !self.tensors.contains(&format!("{name}.scales")) {
            return Ok(None);
        }
        let (dt, shape, bytes) = self.tensors.raw(&format!("{name}.weight"))?;
        if dt != safetensors::Dtype::U32 || shape.len() != 2 {
            bail!(
                "{name}.weight of an MLX layer must be a 2-D uint32 tensor, got {dt:?} {shape:?}"
            );
        }
        let (rows, cols) = (shape[0], shape[1] * 32 / q.bits as usize);
        let words: Vec<u32> = bytes
            .chunks_exact(4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        let half = |suffix: &str| -> Result<Vec<half::f16>> {
            let t = self.tensors.load(&format!("{name}.{suffix}"))?;
            if t.dims() != [rows, cols / q.group_size] {
                bail!(
                    "{name}.{suffix} has shape {:?}; {rows}×{cols} with groups of {} needs [{rows}, {}]",
                    t.dims(),
                    q.group_size,
                    cols / q.group_size
                );
            }
            Ok(t.to_dtype(DType::F16)?.flatten_all()?.to_vec1()?)
        };
        let layer = AfqLinear::from_parts(
            rows,
            cols,
            q.bits,
            q.group_size,
            words,
            half("scales")?,
            half("biases")?,
            bias,
        )
        .with_context(|| format!("MLX layer {name}"))?;
        Ok(Some(layer))
    }

    fn embed_tensor(&self, name: &str) -> Result<Tensor> {
        let mut cache = self.embed_cache.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(t) = cache.as_ref() {
            return Ok(t.clone());
        }
        // A quantized MLX embedding is expanded once; rows are looked up densely.
        let t = match self.mlx_layer(name, None)? {
            Some(q) => q.dequantize()?.to_dtype(self.dtype)?,
            None => self.load(&format!("{name}.weight"), self.dtype)?,
        };
        *cache = Some(t.clone());
        Ok(t)
    }
}

impl WeightSource for SafetensorsSource {
    fn device(&self) -> &Device {
        &self.device
    }
    fn has(&self, name: &str) -> bool {
        self.tensors.contains(&format!("{name}.weight"))
    }
    fn linear(&self, name: &str, bias: bool) -> Result<Arc<dyn QuantLinear>> {
        self.linear_as(name, bias, self.opts.isq_for(name))
    }
    fn re_isq_type(&self, name: &str, ty: Option<IsqType>) -> Option<IsqType> {
        self.opts.re_isq_type(name, ty)
    }
    fn linear_as(
        &self,
        name: &str,
        bias: bool,
        isq: Option<IsqType>,
    ) -> Result<Arc<dyn QuantLinear>> {
        let bias = if bias {
            Some(self.load(&format!("{name}.bias"), DType::F32)?)
        } else {
            None
        };
        let wname = format!("{name}.weight");
        let prequantized: Option<Arc<dyn QuantLinear>> = match (self.gptq, self.awq) {
            (Some(q), _) => super::gptq::layer(&self.tensors, name, q, bias.clone())?,
            (None, Some(q)) => super::awq::layer(&self.tensors, name, q, bias.clone())?,
            (None, None) => self
                .mlx_layer(name, bias.clone())?
                .map(|l| Arc::new(l) as Arc<dyn QuantLinear>),
        };
        if let Some(layer) = prequantized {
            return match isq {
                Some(ty) => self
                    .opts
                    .quantize(name, &layer.dequantize()?, bias, ty)
                    .with_context(|| format!("quantizing {wname} to {ty}")),
                None => Ok(layer),
            };
        }
        match isq {
            // Quantize straight from the f32 view of this one tensor; it is dropped
            // before the next is read, so full precision never sits in memory whole.
            Some(ty) => self
                .opts
                .quantize(name, &self.load(&wname, DType::F32)?, bias, ty)
                .with_context(|| format!("quantizing {wname} to {ty}")),
            None => Ok(Arc::new(UnquantLinear::new(
                self.load(&wname, self.dtype)?,
                bias,
            )?)),
        }
    }
    fn dense(&self, name: &str) -> Result<Tensor> {
        self.load(&format!("{name}.weight"), DType::F32)
    }
    fn embedding(&self, name: &str) -> Result<Embedding> {
        Ok(Embedding::Dense(self.embed_tensor(name)?))
    }
    fn lm_head(&self, name: &str, tied: Option<&str>) -> Result<Arc<dyn QuantLinear>> {
        if tied.is_none() {
            if let Some(head) = self.mlx_layer(name, None)? {
                return match self.opts.head_isq() {
                    Some(ty) => isq::quantize_linear(&head.dequantize()?, None, ty),
                    None => Ok(Arc::new(head)),
                };
            }
        }
        let w = match tied {
            Some(embed) => self.embed_tensor(embed)?,
            None => self.load(&format!("{name}.weight"), self.dtype)?,
        };
        match self.opts.head_isq() {
            // A tied head quantizes a copy; the embedding stays dense.
            Some(ty) => isq::quantize_linear(&w, None, ty),
            None => Ok(Arc::new(UnquantLinear::new(w, None)?)),
        }
    }
}
