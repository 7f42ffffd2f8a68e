//! Turning files on disk into a model, a tokenizer and a chat template.

pub mod auto;
pub mod awq;
pub mod bnb;
pub mod fp8;
pub mod gguf;
pub mod gguf_file;
mod gguf_names;
pub mod gguf_tokenizer;
pub mod gptq;
pub mod hub;
pub mod mlx;
pub mod mxfp4;
pub mod plain;
pub mod prequantized;
pub mod safetensors_file;

use crate::models::{self, CausalLm, ModelConfig, WeightSource};
use crate::quant::{IsqOrganization, IsqType};
use anyhow::{Context, Result};
use candle_core::{DType, Device};
use std::path::PathBuf;
use std::time::Instant;
use tokenizers::Tokenizer;

/// Which files to load, as the CLI's loader subcommands name them.
#[derive(Debug, Clone)]
pub enum ModelSpec {
    /// Hugging Face layout: safetensors + config.json + tokenizer.json.
    Plain { model_id: String, revision: String },
    /// A GGUF file, found directly or inside `model_id` (a directory or Hub repo).
    Gguf {
        model_id: Option<String>,
        file: String,
        tokenizer_json: Option<PathBuf>,
    },
}

#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Storage dtype for unquantized weights of plain models.
    pub dtype: DType,
    pub isq: Option<IsqType>,
    /// Per-layer / per-weight overrides of `isq`.
    pub topology: Option<crate::quant::Topology>,
    /// Per-column importances for ISQ (`--imatrix`, or collected by calibration).
    pub imatrix: Option<std::sync::Arc<crate::quant::imatrix::Imatrix>>,
    /// Take attention and MLP linears from this UQFF file instead of quantizing.
    pub from_uqff: Option<PathBuf>,
    /// Keep what the model reads besides its linears, for a UQFF residual file
    /// (`--write-uqff`).
    pub record_residual: bool,
    /// Which linears `isq` applies to (moqe: MoE experts only); a topology rule still
    /// overrides it.
    pub organization: IsqOrganization,
    /// `--isq auto --max-memory SIZE`: types chosen by measurement (`loaders/auto.rs`).
    pub auto: Option<crate::quant::auto::AutoIsq>,
    /// Set for the measuring pass of `auto`: weights are measured, not kept.
    pub measure: Option<std::sync::Arc<crate::quant::auto::source::Measurements>>,
    pub device: Device,
}

impl LoadOptions {
    /// The ISQ type for one linear weight (Hugging Face name without `.weight`).
    pub fn isq_for(&self, name: &str) -> Option<IsqType> {
        let default = self.re_isq_type(name, self.isq);
        match &self.topology {
            Some(t) => t.isq_for(name, default),
            None => default,
        }
    }

    /// The importances the token embedding is quantized with: its own imatrix entry, else
    /// the head's (a tied embedding is the head; llama.cpp's imatrix names it either way).
    pub fn embedding_importance(&self) -> Option<&[f32]> {
        self.imatrix_for("model.embed_tokens")
            .or_else(|| self.imatrix_for("lm_head"))
    }

    /// The imatrix entry for a weight, if an imatrix was given and has one.
    pub fn imatrix_for(&self, name: &str) -> Option<&[f32]> {
        self.imatrix.as_deref().and_then(|m| m.for_weight(name))
    }

    /// Quantizes `weight` (the source of `name`) to `ty`, with its imatrix entry if any.
    pub fn quantize(
        &self,
        name: &str,
        weight: &candle_core::Tensor,
        bias: Option<candle_core::Tensor>,
        ty: IsqType,
    ) -> Result<std::sync::Arc<dyn crate::quant::QuantLinear>> {
        let im = self.imatrix_for(name);
        if self.imatrix.is_some() && im.is_none() {
            tracing::warn!("the imatrix has no entry for {name}; quantizing it unweighted");
        }
        crate::quant::isq::quantize_linear_weighted(weight, bias, ty, im)
    }

    /// `ty` where the organization covers weight `name`, else None (kept dense).
    pub fn re_isq_type(&self, name: &str, ty: Option<IsqType>) -> Option<IsqType> {
        ty.filter(|_| self.organization.covers(name))
    }

    /// The output head keeps its load dtype unless the topology names it (`/lm_head/`).
    pub fn head_isq(&self) -> Option<IsqType> {
        self.topology
            .as_ref()
            .and_then(|t| t.isq_for("lm_head", None))
    }

    /// The token embedding keeps its load storage unless the topology names it
    /// (`model.embed_tokens`); only ggml block types can be looked up by row.
    pub fn embedding_isq(&self) -> Result<Option<candle_core::quantized::GgmlDType>> {
        let ty = self
            .topology
            .as_ref()
            .and_then(|t| t.isq_for("model.embed_tokens", None));
        match ty {
            None => Ok(None),
            Some(IsqType::Ggml(dt)) => Ok(Some(dt)),
            Some(other) => anyhow::bail!(
                "the token embedding can take only a ggml block type (Q4_0…Q8_0, Q2K…Q6K), not {other}"
            ),
        }
    }

    /// The token embedding `weight` quantized to `dt` (with its imatrix entry, if any),
    /// after llama.cpp's step-down for its row length; None when no type fits the rows.
    pub fn quantize_embedding(
        &self,
        weight: &candle_core::Tensor,
        dt: candle_core::quantized::GgmlDType,
    ) -> Result<Option<std::sync::Arc<candle_core::quantized::QTensor>>> {
        let lin = crate::quant::isq::quantize_linear_weighted(
            weight,
            None,
            IsqType::Ggml(dt),
            self.embedding_importance(),
        )?;
        Ok(lin
            .as_any()
            .downcast_ref::<crate::quant::GgmlLinear>()
            .map(|g| g.qtensor().clone()))
    }

    /// Whether any layer may be quantized (for progress messages).
    pub fn any_isq(&self) -> bool {
        self.isq.is_some() || self.topology.is_some() || self.auto.is_some()
    }
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            dtype: DType::F32,
            isq: None,
            topology: None,
            imatrix: None,
            from_uqff: None,
            record_residual: false,
            organization: IsqOrganization::Default,
            auto: None,
            measure: None,
            device: Device::Cpu,
        }
    }
}

/// Everything text-side of a model: tokenizer, special tokens and chat template.
#[derive(Clone)]
pub struct TokenizerAssets {
    pub tokenizer: Tokenizer,
    pub chat_template: Option<String>,
    pub bos_token: Option<String>,
    pub eos_token: Option<String>,
    /// Token ids that end a generation.
    pub eos_token_ids: Vec<u32>,
}

pub struct LoadedModel {
    pub model: Box<dyn CausalLm>,
    pub assets: TokenizerAssets,
    /// A short name for logs and the API (`HuggingFaceTB/SmolLM2-135M-Instruct`).
    pub name: String,
    pub load_seconds: f64,
    pub isq_seconds: f64,
    /// With `record_residual`: the embeddings, norms and head the model read.
    pub residual: Option<std::sync::Arc<crate::quant::uqff_residual::Recorder>>,
}

pub fn load(spec: &ModelSpec, opts: &LoadOptions) -> Result<LoadedModel> {
    if let Some(auto) = &opts.auto {
        return auto::load(spec, opts, auto);
    }
    let start = Instant::now();
    crate::quant::isq::take_isq_seconds();
    let mut loaded = match spec {
        ModelSpec::Plain { model_id, revision } => plain::load(model_id, revision, opts),
        ModelSpec::Gguf {
            model_id,
            file,
            tokenizer_json,
        } => gguf::load(model_id.as_deref(), file, tokenizer_json.as_deref(), opts),
    }?;
    loaded.load_seconds = start.elapsed().as_secs_f64();
    loaded.isq_seconds = crate::quant::isq::take_isq_seconds();
    if opts.measure.is_some() {
        return Ok(loaded);
    }
    let summary: Vec<String> = loaded
        .model
        .linear_storage_summary()
        .into_iter()
        .map(|(k, n)| format!("{n}×{k}"))
        .collect();
    let isq = if loaded.isq_seconds > 0.0 {
        format!(" (ISQ {:.2}s)", loaded.isq_seconds)
    } else {
        String::new()
    };
    tracing::info!(
        "loaded {} in {:.2}s{isq}: {:.1} MB of weights, linears {}",
        loaded.name,
        loaded.load_seconds,
        loaded.model.weights_size_in_bytes() as f64 / 1e6,
        summary.join(", ")
    );
    Ok(loaded)
}

/// The common end of every loader: build the model from its weight source.
pub(crate) fn finish_load(
    cfg: ModelConfig,
    src: std::sync::Arc<dyn WeightSource>,
    assets: TokenizerAssets,
    name: String,
    opts: &LoadOptions,
) -> Result<LoadedModel> {
    if let Some(t) = &opts.topology {
        t.validate(cfg.num_hidden_layers)?;
    }
    let residual = opts
        .record_residual
        .then(|| std::sync::Arc::new(crate::quant::uqff_residual::Recorder::default()));
    // What the model reads is recorded above any UQFF source, so a UQFF-loaded model can
    // be written out again.
    let recorded = |src: std::sync::Arc<dyn WeightSource>| -> std::sync::Arc<dyn WeightSource> {
        match &residual {
            Some(rec) => std::sync::Arc::new(crate::quant::uqff_residual::RecordingSource::new(
                src,
                rec.clone(),
            )),
            None => src,
        }
    };
    if let Some(path) = &opts.from_uqff {
        if opts.any_isq() {
            anyhow::bail!("--from-uqff loads layers already quantized; drop --isq / --topology");
        }
        let s = crate::quant::uqff::UqffSource::open(path, &cfg, src)?;
        return Ok(LoadedModel {
            model: build_model(cfg, recorded(std::sync::Arc::new(s)), "loading from UQFF")?,
            assets,
            name,
            load_seconds: 0.0,
            isq_seconds: 0.0,
            residual,
        });
    }
    let src = recorded(src);
    if opts.organization == IsqOrganization::Moqe {
        anyhow::ensure!(
            cfg.moe.is_some(),
            "--isq-organization moqe quantizes only mixture-of-experts layers, and this {:?} model has none (MoE architectures: mixtral, qwen3_moe, deepseek_v2, deepseek_v3, phimoe, gpt_oss); use --isq-organization default",
            cfg.architecture
        );
    }
    if let Some(found) = &opts.measure {
        let heads = crate::quant::auto::source::Heads {
            heads: cfg.num_attention_heads,
            kv_heads: cfg.num_key_value_heads,
            head_dim: cfg.head_dim,
        };
        let s = crate::quant::auto::source::MeasuringSource::new(
            src,
            found.clone(),
            opts.clone(),
            heads,
        );
        return Ok(LoadedModel {
            model: build_model(cfg, std::sync::Arc::new(s), "measuring ISQ types")?,
            assets,
            name,
            load_seconds: 0.0,
            isq_seconds: 0.0,
            residual: None,
        });
    }
    if opts.any_isq() {
        tracing::info!(
            "ISQ organization {}: {}",
            opts.organization,
            match opts.organization {
                IsqOrganization::Default => "every attention and FFN linear",
                IsqOrganization::Moqe =>
                    "MoE expert linears only; attention, router, embeddings and head keep the load dtype",
            }
        );
    }
    let what = match opts.isq {
        Some(t) => format!("loading + ISQ {t}"),
        None if opts.any_isq() => "loading + ISQ (topology)".to_string(),
        None => "loading".to_string(),
    };
    Ok(LoadedModel {
        model: build_model(cfg, src, &what)?,
        assets,
        name,
        load_seconds: 0.0,
        isq_seconds: 0.0,
        residual,
    })
}

/// Builds the model for `cfg.architecture` from `src`, with a layer progress bar.
pub(crate) fn build_model(
    cfg: ModelConfig,
    src: std::sync::Arc<dyn WeightSource>,
    what: &str,
) -> Result<Box<dyn CausalLm>> {
    let bar = crate::progress::bar(cfg.num_hidden_layers as u64, what);
    let progress = |done: usize, _total: usize| bar.set_position(done as u64);
    // Every family is the one decoder; its config says what differs.
    let model: Box<dyn CausalLm> = Box::new(models::Decoder::load(cfg, src, &progress)?);
    bar.finish_and_clear();
    Ok(model)
}

/// Reads a special token from tokenizer_config.json, written as a string or as
/// `{"content": ...}`.
pub(crate) fn special_token(cfg: &serde_json::Value, key: &str) -> Option<String> {
    match cfg.get(key)? {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Object(o) => o.get("content")?.as_str().map(str::to_string),
        _ => None,
    }
}

pub(crate) fn read_json(path: &std::path::Path) -> Result<serde_json::Value> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{} is not valid JSON", path.display()))
}
