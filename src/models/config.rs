//! The shape of a model, read from Hugging Face's config.json or from GGUF metadata.
//!
//! Every family is the Llama decoder plus a [`Variant`] (norm placement, q/k norms,
//! activation, fused projections, scales and soft-caps) and a per-layer [`LayerKind`]
//! (sliding window, which rotary embedding). Each family file in `models/` fills in only
//! what differs; this file holds the fields every family shares.

use super::rope::{RopeConfig, RopeScaling};
use anyhow::{bail, Context, Result};
use serde_json::Value;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Architecture {
    /// Llama 2/3, Mistral (with its sliding window), SmolLM 1/2.
    Llama,
    Qwen2,
    Qwen3,
    Gemma2,
    Gemma3,
    Phi3,
    SmolLm3,
    Granite,
    Olmo2,
    /// The Llama decoder with a sparse mixture-of-experts FFN.
    Mixtral,
    Qwen3Moe,
    DeepSeekV2,
    DeepSeekV3,
    PhiMoe,
    GptOss,
}

pub const SUPPORTED_ARCHITECTURES: &str = "llama (LlamaForCausalLM), mistral (MistralForCausalLM), \
qwen2 (Qwen2ForCausalLM), qwen3 (Qwen3ForCausalLM), gemma2 (Gemma2ForCausalLM), \
gemma3_text (Gemma3ForCausalLM; GGUF gemma3), phi3 (Phi3ForCausalLM), smollm3 (SmolLM3ForCausalLM), \
granite (GraniteForCausalLM), olmo2 (Olmo2ForCausalLM), mixtral (MixtralForCausalLM), \
qwen3_moe (Qwen3MoeForCausalLM; GGUF qwen3moe), deepseek_v2 (DeepseekV2ForCausalLM), \
deepseek_v3 (DeepseekV3ForCausalLM), phimoe (PhiMoEForCausalLM), gpt_oss (GptOssForCausalLM)";

impl Architecture {
    /// From a config.json `model_type` / `architectures` entry or a GGUF
    /// `general.architecture` value.
    pub fn parse(name: &str) -> Result<Self> {
        Ok(match name.to_ascii_lowercase().as_str() {
            "llama" | "llamaforcausallm" | "mistral" | "mistralforcausallm" => Self::Llama,
            "qwen2" | "qwen2forcausallm" => Self::Qwen2,
            "qwen3" | "qwen3forcausallm" => Self::Qwen3,
            "gemma2" | "gemma2forcausallm" => Self::Gemma2,
            "gemma3_text" | "gemma3" | "gemma3forcausallm" => Self::Gemma3,
            "phi3" | "phi3forcausallm" => Self::Phi3,
            "smollm3" | "smollm3forcausallm" => Self::SmolLm3,
            "granite" | "graniteforcausallm" => Self::Granite,
            "olmo2" | "olmo2forcausallm" => Self::Olmo2,
            "mixtral" | "mixtralforcausallm" => Self::Mixtral,
            "qwen3_moe" | "qwen3moe" | "qwen3moeforcausallm" => Self::Qwen3Moe,
            "deepseek_v2" | "deepseekv2forcausallm" | "deepseek2" => Self::DeepSeekV2,
            "deepseek_v3" | "deepseekv3forcausallm" => Self::DeepSeekV3,
            "phimoe" | "phimoeforcausallm" => Self::PhiMoe,
            "gpt_oss" | "gpt-oss" | "gptossforcausallm" => Self::GptOss,
            _ => bail!("unsupported architecture `{name}`; supported: {SUPPORTED_ARCHITECTURES}"),
        })
    }
}

/// A sparse mixture-of-experts FFN: a router picks `top_k` of `num_experts` SwiGLU
/// experts per token (each `expert_intermediate` wide), see `models/moe.rs`.
#[derive(Debug, Clone, PartialEq)]
pub struct MoeConfig {
    pub num_experts: usize,
    pub top_k: usize,
    pub router: super::moe::Router,
    pub expert_intermediate: usize,
    /// Width of the shared experts every token runs (DeepSeek), if any.
    pub shared_intermediate: Option<usize>,
    /// Multiplies the routed experts' weights (DeepSeek's `routed_scaling_factor`).
    pub routed_scale: f32,
    pub names: super::moe::MoeNames,
}

impl MoeConfig {
    /// Mixtral's: softmax top-k renormalised, `block_sparse_moe.experts.E.w1/w3/w2`.
    pub fn mixtral(num_experts: usize, top_k: usize, intermediate: usize) -> Self {
        Self {
            num_experts,
            top_k,
            router: super::moe::Router::SoftmaxTopK { renormalize: true },
            expert_intermediate: intermediate,
            shared_intermediate: None,
            routed_scale: 1.0,
            names: super::moe::MoeNames::MIXTRAL,
        }
    }
}

/// Where a block's RMSNorms sit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NormPlacement {
    /// Llama: before attention and before the FFN.
    Pre,
    /// Gemma 2/3: before and after both attention and the FFN.
    Sandwich,
    /// OLMo 2: after attention and after the FFN only.
    Post,
}

/// RMSNorm of queries and keys before RoPE.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QkNorm {
    None,
    /// Over each head's `head_dim` values (Qwen3, Gemma 3).
    PerHead,
    /// Over the whole projection, all heads together (OLMo 2).
    Whole,
}

/// The gated FFN's activation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Activation {
    /// SwiGLU.
    Silu,
    /// GeGLU with the tanh approximation of GELU (Gemma).
    GeluTanh,
    /// GPT-OSS's clamped SwiGLU: `(clamp(up, ±limit) + 1) · g · σ(alpha · g)` with
    /// `g = min(gate, limit)`.
    ClampedSwiglu { alpha: f32, limit: f32 },
}

/// How a family's block differs from Llama's. `Variant::default()` is Llama.
#[derive(Debug, Clone, PartialEq)]
pub struct Variant {
    pub norms: NormPlacement,
    /// Added to every RMSNorm weight at load: Gemma stores `w` and scales by `1 + w`
    /// (llama.cpp's converter already adds it, so GGUF files say 0).
    pub norm_offset: f32,
    pub qk_norm: QkNorm,
    pub activation: Activation,
    /// One `qkv_proj` / `gate_up_proj` tensor instead of three / two (Phi-3).
    pub fused_qkv: bool,
    pub fused_gate_up: bool,
    /// Embeddings are multiplied by this (Gemma √hidden, Granite embedding_multiplier).
    pub embed_scale: f32,
    /// Attention and FFN outputs are multiplied by this before the residual add (Granite).
    pub residual_scale: f32,
    /// Softmax scale of attention scores; None: 1/√head_dim.
    pub attn_scale: Option<f32>,
    /// `cap · tanh(score / cap)` on attention scores (Gemma 2).
    pub attn_softcap: Option<f32>,
    /// `cap · tanh(logit / cap)` on the output logits (Gemma 2).
    pub final_softcap: Option<f32>,
    /// Logits are multiplied by this (Granite: 1 / logits_scaling).
    pub logit_scale: f32,
    /// LayerNorm with bias instead of RMSNorm for the block and final norms (Phi-3.5-MoE).
    pub layer_norm: bool,
    /// RMSNorm plus a bias (llama.cpp's reading of a Phi-3.5-MoE GGUF).
    pub norm_bias: bool,
    /// A bias on the attention output projection (Phi-3.5-MoE's `attention_bias`).
    pub o_bias: bool,
    /// A bias on the output head (`lm_head_bias`).
    pub head_bias: bool,
    /// Per-head attention sink logits (`self_attn.sinks`, GPT-OSS).
    pub attn_sinks: bool,
}

impl Default for Variant {
    fn default() -> Self {
        Self {
            norms: NormPlacement::Pre,
            norm_offset: 0.0,
            qk_norm: QkNorm::None,
            activation: Activation::Silu,
            fused_qkv: false,
            fused_gate_up: false,
            embed_scale: 1.0,
            residual_scale: 1.0,
            attn_scale: None,
            attn_softcap: None,
            final_softcap: None,
            logit_scale: 1.0,
            layer_norm: false,
            norm_bias: false,
            o_bias: false,
            head_bias: false,
            attn_sinks: false,
        }
    }
}

/// Which rotary embedding a layer applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayerRope {
    /// `ModelConfig::rope`.
    Global,
    /// `ModelConfig::local_rope` (Gemma 3's sliding layers).
    Local,
    /// No positional embedding (SmolLM3's NoPE layers).
    None,
}

/// Per-layer settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LayerKind {
    /// Sliding window: a query sees itself and the `window - 1` tokens before it.
    pub window: Option<usize>,
    pub rope: LayerRope,
    /// A dense MLP in a mixture-of-experts model (Qwen3-MoE's `mlp_only_layers`).
    pub dense_ffn: bool,
}

impl LayerKind {
    pub const GLOBAL: Self = Self {
        window: None,
        rope: LayerRope::Global,
        dense_ffn: false,
    };
}

/// Multi-head latent attention (DeepSeek V2/V3): queries through an optional low-rank
/// `q_a_proj → q_a_layernorm → q_b_proj` (or one `q_proj`); keys and values from a
/// `kv_lora_rank` latent (`kv_a_proj_with_mqa → kv_a_layernorm`, expanded per head by
/// `kv_b_proj`) plus one roped key part of `qk_rope_head_dim` shared by all heads. The
/// cache keeps the latent and the roped part per token, not full keys and values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MlaConfig {
    pub q_lora_rank: Option<usize>,
    pub kv_lora_rank: usize,
    pub qk_nope_head_dim: usize,
    pub qk_rope_head_dim: usize,
    pub v_head_dim: usize,
    /// The rope dimensions come as interleaved pairs (x0, x1), (x2, x3), … (DeepSeek's
    /// checkpoints); false: rotate-half halves.
    pub rope_interleave: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ModelConfig {
    pub architecture: Architecture,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    pub head_dim: usize,
    pub vocab_size: usize,
    pub rms_norm_eps: f64,
    /// The rotary embedding of global layers (of every layer unless `layers` says else).
    pub rope: RopeConfig,
    /// The rotary embedding of sliding layers where it differs (Gemma 3).
    pub local_rope: Option<RopeConfig>,
    pub max_position_embeddings: usize,
    pub tie_word_embeddings: bool,
    /// Bias on q/k/v projections (Qwen2).
    pub qkv_bias: bool,
    /// Sparse MoE FFN instead of the dense MLP (Mixtral).
    pub moe: Option<MoeConfig>,
    pub variant: Variant,
    /// One entry per layer.
    pub layers: Vec<LayerKind>,
    /// Latent attention instead of GQA (DeepSeek); `head_dim` is then the q/k head
    /// (`qk_nope_head_dim + qk_rope_head_dim`).
    pub mla: Option<MlaConfig>,
}

/// Typed reads of config.json fields, with errors that name the field.
pub struct HfFields<'a>(pub &'a Value);

impl HfFields<'_> {
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.0.get(key).filter(|v| !v.is_null())
    }
    pub fn opt_usize(&self, key: &str) -> Result<Option<usize>> {
        self.get(key)
            .map(|v| {
                v.as_u64()
                    .map(|x| x as usize)
                    .with_context(|| format!("config.json field `{key}` is not a whole number"))
            })
            .transpose()
    }
    pub fn usize(&self, key: &str, family: &str) -> Result<usize> {
        self.opt_usize(key)?
            .with_context(|| format!("a {family} config.json needs the field `{key}`"))
    }
    pub fn opt_f64(&self, key: &str) -> Result<Option<f64>> {
        self.get(key)
            .map(|v| {
                v.as_f64()
                    .with_context(|| format!("config.json field `{key}` is not a number"))
            })
            .transpose()
    }
    pub fn f64(&self, key: &str, family: &str) -> Result<f64> {
        self.opt_f64(key)?
            .with_context(|| format!("a {family} config.json needs the field `{key}`"))
    }
    pub fn opt_bool(&self, key: &str) -> Option<bool> {
        self.get(key).and_then(|v| v.as_bool())
    }
    /// A list with one entry per layer (`layer_types`, `no_rope_layers`).
    pub fn per_layer(&self, key: &str, layers: usize) -> Result<Option<&Vec<Value>>> {
        let Some(v) = self.get(key) else {
            return Ok(None);
        };
        let list = v
            .as_array()
            .with_context(|| format!("config.json field `{key}` is not a list"))?;
        if list.len() != layers {
            bail!(
                "config.json `{key}` has {} entries for {layers} layers",
                list.len()
            );
        }
        Ok(Some(list))
    }
}

impl ModelConfig {
    pub fn from_hf_json(text: &str) -> Result<Self> {
        let raw: Value = serde_json::from_str(text).context("config.json is not valid JSON")?;
        let arch_name = raw
            .get("model_type")
            .and_then(|v| v.as_str())
            .map(str::to_string)
            .or_else(|| {
                raw.get("architectures")?
                    .as_array()?
                    .first()?
                    .as_str()
                    .map(str::to_string)
            })
            .context("config.json names no model_type or architectures")?;
        let architecture = Architecture::parse(&arch_name)?;
        let f = HfFields(&raw);
        let fam = arch_name.as_str();
        let hidden = f.usize("hidden_size", fam)?;
        let heads = f.usize("num_attention_heads", fam)?;
        let layers = f.usize("num_hidden_layers", fam)?;
        let head_dim = f.opt_usize("head_dim")?.unwrap_or(hidden / heads.max(1));
        let max_pos = f.opt_usize("max_position_embeddings")?.unwrap_or(4096);
        let mut cfg = Self {
            architecture,
            hidden_size: hidden,
            intermediate_size: f.usize("intermediate_size", fam)?,
            num_hidden_layers: layers,
            num_attention_heads: heads,
            num_key_value_heads: f.opt_usize("num_key_value_heads")?.unwrap_or(heads),
            head_dim,
            vocab_size: f.usize("vocab_size", fam)?,
            rms_norm_eps: f.opt_f64("rms_norm_eps")?.unwrap_or(1e-6),
            rope: RopeConfig::from_hf(&f, None, head_dim, max_pos)?,
            local_rope: None,
            max_position_embeddings: max_pos,
            tie_word_embeddings: f.opt_bool("tie_word_embeddings").unwrap_or(false),
            qkv_bias: f.opt_bool("attention_bias").unwrap_or(false),
            moe: None,
            variant: Variant::default(),
            layers: vec![LayerKind::GLOBAL; layers],
            mla: None,
        };
        // Mistral, Qwen2/3, Phi-3, SmolLM3: a window on every layer, or on the layers
        // `layer_types` / `use_sliding_window` name. Families with their own pattern
        // (Gemma) overwrite this.
        cfg.layers = sliding_layers_from_hf(&f, layers, None)?;
        match architecture {
            Architecture::Llama => {}
            Architecture::Qwen2 => super::qwen2::hf(&mut cfg),
            Architecture::Qwen3 => super::qwen3::hf(&mut cfg),
            Architecture::Gemma2 => super::gemma2::hf(&f, &mut cfg)?,
            Architecture::Gemma3 => super::gemma3::hf(&f, &mut cfg)?,
            Architecture::Phi3 => super::phi3::hf(&f, &mut cfg)?,
            Architecture::SmolLm3 => super::smollm3::hf(&f, &mut cfg)?,
            Architecture::Granite => super::granite::hf(&f, &mut cfg)?,
            Architecture::Olmo2 => super::olmo2::hf(&mut cfg),
            Architecture::Qwen3Moe => super::qwen3_moe::hf(&f, &mut cfg)?,
            Architecture::DeepSeekV2 => super::deepseek::hf(&f, &mut cfg, false)?,
            Architecture::DeepSeekV3 => super::deepseek::hf(&f, &mut cfg, true)?,
            Architecture::PhiMoe => super::phimoe::hf(&f, &mut cfg)?,
            Architecture::GptOss => super::gpt_oss::hf(&f, &mut cfg)?,
            Architecture::Mixtral => {
                cfg.moe = Some(MoeConfig::mixtral(
                    f.usize("num_local_experts", fam)?,
                    f.opt_usize("num_experts_per_tok")?.unwrap_or(2),
                    cfg.intermediate_size,
                ))
            }
        }
        // Dynamic NTK exists to run past the trained length: allow `factor` times it.
        if let RopeScaling::Dynamic { factor, .. } = cfg.rope.scaling {
            if factor > 1.0 {
                cfg.max_position_embeddings = (max_pos as f64 * factor) as usize;
            }
        }
        cfg.validate()?;
        Ok(cfg)
    }

    pub fn validate(&self) -> Result<()> {
        if self.num_attention_heads == 0
            || self.num_key_value_heads == 0
            || !self
                .num_attention_heads
                .is_multiple_of(self.num_key_value_heads)
        {
            bail!(
                "config: {} attention heads cannot be shared by {} key/value heads",
                self.num_attention_heads,
                self.num_key_value_heads
            );
        }
        if self.head_dim == 0 || !self.head_dim.is_multiple_of(2) {
            bail!(
                "config: head_dim {} must be even and non-zero",
                self.head_dim
            );
        }
        for rope in std::iter::once(&self.rope).chain(&self.local_rope) {
            rope.validate(self.head_dim)?;
        }
        if let Some(m) = &self.moe {
            if m.num_experts == 0 || m.top_k == 0 || m.top_k > m.num_experts {
                bail!(
                    "config: {} experts per token out of {} experts is not a valid MoE",
                    m.top_k,
                    m.num_experts
                );
            }
        }
        if self.num_hidden_layers == 0 || self.hidden_size == 0 || self.vocab_size == 0 {
            bail!("config: hidden_size, num_hidden_layers and vocab_size must be non-zero");
        }
        if self.layers.len() != self.num_hidden_layers {
            bail!(
                "config: {} layer types for {} layers",
                self.layers.len(),
                self.num_hidden_layers
            );
        }
        if self.layers.iter().any(|l| l.window == Some(0)) {
            bail!("config: a sliding window of 0 tokens");
        }
        if self.layers.iter().any(|l| l.rope == LayerRope::Local) && self.local_rope.is_none() {
            bail!("config: layers use a local rotary embedding that is not defined");
        }
        Ok(())
    }

    /// Whether any layer keeps only a window of the cache.
    pub fn windows(&self) -> Vec<Option<usize>> {
        self.layers.iter().map(|l| l.window).collect()
    }

    /// f32 values one token keeps in one layer's cache: (key row, value row). Latent
    /// attention keeps the latent and the roped key part as its one row.
    pub fn kv_rows(&self) -> (usize, usize) {
        match &self.mla {
            Some(m) => (m.kv_lora_rank + m.qk_rope_head_dim, 0),
            None => {
                let row = self.num_key_value_heads * self.head_dim;
                (row, row)
            }
        }
    }

    /// KV cache bytes per token, all layers.
    pub fn kv_bytes_per_token(&self) -> usize {
        let (k, v) = self.kv_rows();
        self.num_hidden_layers * (k + v) * std::mem::size_of::<f32>()
    }
}

/// Per-layer windows from config.json: `layer_types` (`sliding_attention` /
/// `full_attention`) when present, else `sliding_window` on every layer — gated by
/// `use_sliding_window` and `max_window_layers` where the config has them (Qwen) —
/// else `default_pattern(layer)` (true: sliding) when the family has one.
pub fn sliding_layers_from_hf(
    f: &HfFields,
    layers: usize,
    default_pattern: Option<&dyn Fn(usize) -> bool>,
) -> Result<Vec<LayerKind>> {
    let window = f.opt_usize("sliding_window")?;
    let types: Option<Vec<bool>> = match f.per_layer("layer_types", layers)? {
        None => None,
        Some(list) => Some(
            list.iter()
                .map(|t| match t.as_str() {
                    Some("sliding_attention") => Ok(true),
                    Some("full_attention") => Ok(false),
                    other => bail!(
                        "config.json `layer_types` entry {other:?} is not supported (sliding_attention, full_attention)"
                    ),
                })
                .collect::<Result<_>>()?,
        ),
    };
    let sliding: Vec<bool> = match (types, default_pattern) {
        (Some(t), _) => t,
        (None, Some(p)) => (0..layers).map(p).collect(),
        (None, None) => {
            let on = f.opt_bool("use_sliding_window").unwrap_or(true);
            let from = f.opt_usize("max_window_layers")?.unwrap_or(0);
            // Qwen's configs carry sliding_window with use_sliding_window false.
            (0..layers).map(|i| on && i >= from).collect()
        }
    };
    Ok(sliding
        .into_iter()
        .map(|s| LayerKind {
            window: if s { window } else { None },
            ..LayerKind::GLOBAL
        })
        .collect())
}

/// The rope-scaling object of a config (`rope_scaling`, or transformers 5's
/// `rope_parameters`) as a typed value; an unknown type is an error naming it.
pub fn parse_rope_scaling(
    v: &Value,
    field: &str,
    max_pos: usize,
    fallback_original: Option<usize>,
) -> Result<RopeScaling> {
    let kind = v
        .get("rope_type")
        .or_else(|| v.get("type"))
        .and_then(|t| t.as_str())
        .unwrap_or("default");
    let num = |k: &str| v.get(k).and_then(|x| x.as_f64());
    let need =
        |k: &str| num(k).with_context(|| format!("{field}.{k} is missing (rope type {kind})"));
    let original = || -> Result<usize> {
        num("original_max_position_embeddings")
            .map(|x| x as usize)
            .or(fallback_original)
            .with_context(|| {
                format!("{field}.original_max_position_embeddings is missing (rope type {kind})")
            })
    };
    let factors = |k: &str| -> Result<Vec<f32>> {
        v.get(k)
            .and_then(|x| x.as_array())
            .with_context(|| format!("{field}.{k} is missing (rope type {kind})"))?
            .iter()
            .map(|x| {
                x.as_f64()
                    .map(|x| x as f32)
                    .with_context(|| format!("{field}.{k} holds a non-number"))
            })
            .collect()
    };
    Ok(match kind {
        "default" => RopeScaling::None,
        "linear" => RopeScaling::Linear {
            factor: need("factor")?,
        },
        "dynamic" => RopeScaling::Dynamic {
            factor: need("factor")?,
            max_position_embeddings: max_pos,
        },
        "llama3" => RopeScaling::Llama3 {
            factor: need("factor")?,
            low_freq_factor: num("low_freq_factor").unwrap_or(1.0),
            high_freq_factor: num("high_freq_factor").unwrap_or(4.0),
            original_max_position_embeddings: num("original_max_position_embeddings")
                .unwrap_or(8192.0) as usize,
        },
        "yarn" => {
            let original = original()?;
            let factor = num("factor").unwrap_or(max_pos as f64 / original as f64);
            RopeScaling::Yarn {
                factor,
                original_max_position_embeddings: original,
                attention_factor: num("attention_factor"),
                beta_fast: num("beta_fast").filter(|&b| b != 0.0).unwrap_or(32.0),
                beta_slow: num("beta_slow").filter(|&b| b != 0.0).unwrap_or(1.0),
                mscale: num("mscale"),
                mscale_all_dim: num("mscale_all_dim"),
                truncate: v.get("truncate").and_then(|t| t.as_bool()).unwrap_or(true),
            }
        }
        "longrope" | "su" => {
            let original = original()?;
            RopeScaling::LongRope {
                short_factor: factors("short_factor")?,
                long_factor: factors("long_factor")?,
                original_max_position_embeddings: original,
                factor: num("factor").unwrap_or(max_pos as f64 / original as f64),
                attention_factor: num("attention_factor"),
                mscales: num("short_mscale").zip(num("long_mscale")),
            }
        }
        other => bail!(
            "{field} type `{other}` is not supported (supported: default, linear, dynamic, yarn, longrope, su, llama3)"
        ),
    })
}

/// A GGUF file's metadata under its architecture's prefix (`gemma2.` …) and its small
/// tensors, as the family files read them (llama.cpp's key names, without the prefix).
pub trait GgufMeta {
    fn num(&self, key: &str) -> Option<f64>;
    /// An array value, or a scalar as a one-element list.
    fn nums(&self, key: &str) -> Option<Vec<f64>>;
    fn text(&self, key: &str) -> Option<String>;
    /// A small tensor as f32 values, if the file has it.
    fn tensor(&self, name: &str) -> Result<Option<Vec<f32>>>;
    fn has_tensor(&self, name: &str) -> bool;
    /// The architecture's name in the keys (`qwen3moe`), for messages.
    fn arch(&self) -> &str;
    /// A count the family cannot do without: an error naming the key when absent.
    fn count(&self, key: &str) -> Result<usize> {
        self.num(key)
            .map(|v| v as usize)
            .with_context(|| format!("GGUF metadata has no {}.{key}", self.arch()))
    }
}

/// Sliding layers from llama.cpp's `attention.sliding_window_pattern`: a per-layer
/// array of flags, or a period `n` in which every layer but the n-th slides (the
/// family's `default_period` when the key is absent).
pub fn gguf_swa_layers(
    g: &dyn GgufMeta,
    layers: usize,
    window: usize,
    default_period: usize,
) -> Result<Vec<LayerKind>> {
    let pattern = g.nums("attention.sliding_window_pattern");
    let sliding: Vec<bool> = match pattern {
        Some(p) if p.len() == layers && layers > 1 => p.iter().map(|&v| v != 0.0).collect(),
        Some(p) if p.len() == 1 => {
            let n = p[0] as usize;
            anyhow::ensure!(n > 0, "GGUF attention.sliding_window_pattern is 0");
            (0..layers).map(|i| i % n < n - 1).collect()
        }
        Some(p) => bail!(
            "GGUF attention.sliding_window_pattern has {} entries for {layers} layers",
            p.len()
        ),
        None => (0..layers)
            .map(|i| i % default_period < default_period - 1)
            .collect(),
    };
    Ok(sliding
        .into_iter()
        .map(|s| LayerKind {
            window: s.then_some(window),
            ..LayerKind::GLOBAL
        })
        .collect())
}
