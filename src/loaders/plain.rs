//! Hugging Face checkpoints: safetensors (single or sharded) + config.json + tokenizer.json.

use super::hub::ModelFiles;
use super::prequantized::Prequantized;
use super::safetensors_file::SafetensorsFiles;
use super::{read_json, special_token, LoadOptions, LoadedModel, TokenizerAssets};
use crate::models::{Embedding, ModelConfig, WeightSource};
use crate::quant::{isq, GgmlLinear, IsqType, QuantLinear, UnquantLinear};
use crate::sync::lock;
use anyhow::{bail, Context, Result};
use candle_core::quantized::{GgmlDType, QTensor};
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
    let prequantized = Prequantized::from_config(&config_json)
        .with_context(|| format!("reading {}", config_path.display()))?;
    if let Some(p) = &prequantized {
        tracing::info!("{}", p.describe());
    }
    // A model directory holding only config and tokenizer loads from a UQFF file and
    // its residual (embeddings, norms, head).
    let weights = match safetensor_paths(&files) {
        Ok(w) => w,
        Err(e) => match opts
            .from_uqff
            .as_deref()
            .map(crate::quant::uqff_residual::residual_path)
            .filter(|r| r.exists())
        {
            Some(r) => {
                tracing::info!(
                    "{e:#}; reading embeddings and norms from the UQFF residual {}",
                    r.display()
                );
                vec![r]
            }
            None => return Err(e),
        },
    };
    let tensors = SafetensorsFiles::open(&weights)?;
    let assets = load_tokenizer_assets(&files, &cfg)?;
    let src = SafetensorsSource {
        tensors,
        dtype: opts.dtype,
        opts: opts.clone(),
        device: opts.device.clone(),
        embed_cache: Mutex::new(None),
        embed_quantized: Mutex::new(None),
        prequantized,
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

/// One expert's weight or bias inside transformers' stacked expert tensors (GPT-OSS:
/// `mlp.experts.gate_up_proj` of shape (experts, in, out), `…_bias` (experts, out)),
/// asked for by its per-expert name `mlp.experts.5.gate_up_proj.weight`.
struct StackedExpert {
    tensor: String,
    expert: usize,
    bias: bool,
    /// gate and up columns alternate in the stack; the fused layer wants gate rows first.
    interleaved: bool,
}

fn stacked_expert(name: &str) -> Option<StackedExpert> {
    let (head, rest) = name.split_once(".experts.")?;
    let mut parts = rest.splitn(3, '.');
    let expert = parts.next()?.parse().ok()?;
    let (w, kind) = (parts.next()?, parts.next()?);
    let bias = match kind {
        "weight" => false,
        "bias" => true,
        _ => return None,
    };
    let tensor = match bias {
        false => format!("{head}.experts.{w}"),
        true => format!("{head}.experts.{w}_bias"),
    };
    Some(StackedExpert {
        tensor,
        expert,
        bias,
        interleaved: w == "gate_up_proj",
    })
}

impl StackedExpert {
    fn load(&self, files: &SafetensorsFiles) -> Result<Tensor> {
        let t = files.load_slice(&self.tensor, self.expert)?;
        // (in, out) → (out, in), as a linear's weight.
        let t = if self.bias { t } else { t.t()?.contiguous()? };
        if !self.interleaved {
            return Ok(t);
        }
        let rows = t.dim(0)?;
        anyhow::ensure!(
            rows % 2 == 0,
            "{} has an odd number of gate/up rows",
            self.tensor
        );
        let idx = |from: u32| Tensor::arange_step(from, rows as u32, 2, &Device::Cpu);
        Ok(Tensor::cat(
            &[t.index_select(&idx(0)?, 0)?, t.index_select(&idx(1)?, 0)?],
            0,
        )?)
    }
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

/// Weights from memory-mapped safetensors, read one tensor at a time.
struct SafetensorsSource {
    tensors: SafetensorsFiles,
    dtype: DType,
    opts: LoadOptions,
    device: Device,
    /// The embedding, kept so a tied output head shares its storage.
    embed_cache: Mutex<Option<Tensor>>,
    /// The embedding quantized by a topology rule, kept so a tied head of the same type
    /// shares it.
    embed_quantized: Mutex<Option<Arc<QTensor>>>,
    /// Set for prequantized checkpoints (GPTQ, AWQ, MLX, bitsandbytes, FP8).
    prequantized: Option<Prequantized>,
}

impl SafetensorsSource {
    fn load(&self, name: &str, dtype: DType) -> Result<Tensor> {
        let t = match stacked_expert(name).filter(|_| !self.tensors.contains(name)) {
            Some(s) if self.tensors.contains(&s.tensor) => s.load(&self.tensors)?,
            _ => self.tensors.load(name)?,
        };
        Ok(t.to_dtype(dtype)?.to_device(&self.device)?)
    }
    /// Layer `name` as the prequantized checkpoint stores it, if it is quantized there.
    fn prequantized_layer(
        &self,
        name: &str,
        bias: Option<Tensor>,
    ) -> Result<Option<Arc<dyn QuantLinear>>> {
        match &self.prequantized {
            Some(p) => p.layer(&self.tensors, name, bias),
            None => Ok(None),
        }
    }

    fn embed_tensor(&self, name: &str) -> Result<Tensor> {
        let mut cache = self.embed_cache.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(t) = cache.as_ref() {
            return Ok(t.clone());
        }
        // A quantized embedding is expanded once; rows are looked up densely.
        let t = match self.prequantized_layer(name, None)? {
            Some(q) => q.dequantize()?.to_dtype(self.dtype)?,
            None => self.load(&format!("{name}.weight"), self.dtype)?,
        };
        // The measuring pass of --isq auto gives the head a placeholder: nothing to share.
        if self.opts.measure.is_none() {
            *cache = Some(t.clone());
        }
        Ok(t)
    }

    /// The embedding quantized to `dt` (None where no block type fits its rows), read
    /// from the file without keeping the dense copy.
    fn quantized_embedding(&self, name: &str, dt: GgmlDType) -> Result<Option<Arc<QTensor>>> {
        let mut cache = lock(&self.embed_quantized);
        if let Some(q) = cache.as_ref() {
            return Ok(Some(q.clone()));
        }
        let w = match self.prequantized_layer(name, None)? {
            Some(q) => q.dequantize()?,
            None => self.load(&format!("{name}.weight"), DType::F32)?,
        };
        let q = self
            .opts
            .quantize_embedding(&w, dt)
            .with_context(|| format!("quantizing {name} to {}", isq::ggml_name(dt)))?;
        *cache = q.clone();
        Ok(q)
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
        if let Some(layer) = self.prequantized_layer(name, bias.clone())? {
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
    fn dense_raw(&self, name: &str) -> Result<Tensor> {
        self.load(name, DType::F32)
    }
    fn embedding(&self, name: &str) -> Result<Embedding> {
        if let Some(dt) = self.opts.embedding_isq()? {
            if let Some(q) = self.quantized_embedding(name, dt)? {
                return Ok(Embedding::Quantized(q));
            }
        }
        Ok(Embedding::Dense(self.embed_tensor(name)?))
    }
    fn lm_head(&self, name: &str, tied: Option<&str>) -> Result<Arc<dyn QuantLinear>> {
        if tied.is_none() {
            if let Some(head) = self.prequantized_layer(name, None)? {
                return match self.opts.head_isq() {
                    Some(ty) => isq::quantize_linear(&head.dequantize()?, None, ty),
                    None => Ok(head),
                };
            }
        }
        if let (Some(embed), Some(IsqType::Ggml(dt))) = (tied, self.opts.head_isq()) {
            // A tied head of the embedding's type shares its blocks.
            if self.opts.embedding_isq()? == Some(dt) {
                if let Some(q) = self.quantized_embedding(embed, dt)? {
                    return Ok(Arc::new(GgmlLinear::new(q, None)?));
                }
            }
        }
        let w = match tied {
            // The embedding is quantized: read the head's copy without caching it dense.
            Some(embed) if self.opts.embedding_isq()?.is_some() && self.prequantized.is_none() => {
                self.load(&format!("{embed}.weight"), self.dtype)?
            }
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
