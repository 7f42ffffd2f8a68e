//! The shape of a model, read from Hugging Face's config.json or from GGUF metadata.

use anyhow::{bail, Context, Result};
use serde::Deserialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Architecture {
    Llama,
    Qwen2,
    /// The Llama decoder with a sparse mixture-of-experts FFN.
    Mixtral,
}

pub const SUPPORTED_ARCHITECTURES: &str =
    "llama (LlamaForCausalLM, MistralForCausalLM), qwen2 (Qwen2ForCausalLM), mixtral (MixtralForCausalLM)";

impl Architecture {
    /// From a config.json `model_type` / `architectures` entry or a GGUF
    /// `general.architecture` value.
    pub fn parse(name: &str) -> Result<Self> {
        Ok(match name.to_ascii_lowercase().as_str() {
            "llama" | "llamaforcausallm" | "mistral" | "mistralforcausallm" => Self::Llama,
            "qwen2" | "qwen2forcausallm" => Self::Qwen2,
            "mixtral" | "mixtralforcausallm" => Self::Mixtral,
            _ => bail!("unsupported architecture `{name}`; supported: {SUPPORTED_ARCHITECTURES}"),
        })
    }
}

/// Llama 3 style frequency-dependent RoPE scaling.
#[derive(Debug, Clone, PartialEq)]
pub struct Llama3RopeScaling {
    pub factor: f64,
    pub low_freq_factor: f64,
    pub high_freq_factor: f64,
    pub original_max_position_embeddings: usize,
}

/// A sparse mixture-of-experts FFN: a router picks `top_k` of `num_experts` SwiGLU
/// experts per token (each `intermediate_size` wide).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MoeConfig {
    pub num_experts: usize,
    pub top_k: usize,
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
    pub rope_theta: f64,
    pub rope_scaling: Option<Llama3RopeScaling>,
    /// Per-frequency divisors (GGUF's `rope_freqs.weight`, llama.cpp's form of llama3
    /// scaling), applied after `rope_scaling`.
    pub rope_freq_factors: Option<Vec<f32>>,
    pub max_position_embeddings: usize,
    pub tie_word_embeddings: bool,
    /// Bias on q/k/v projections (Qwen2).
    pub qkv_bias: bool,
    /// Sparse MoE FFN instead of the dense MLP (Mixtral).
    pub moe: Option<MoeConfig>,
}

#[derive(Deserialize)]
struct HfConfig {
    model_type: Option<String>,
    architectures: Option<Vec<String>>,
    hidden_size: usize,
    intermediate_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    num_key_value_heads: Option<usize>,
    head_dim: Option<usize>,
    vocab_size: usize,
    rms_norm_eps: Option<f64>,
    rope_theta: Option<f64>,
    rope_scaling: Option<serde_json::Value>,
    max_position_embeddings: Option<usize>,
    tie_word_embeddings: Option<bool>,
    attention_bias: Option<bool>,
    num_local_experts: Option<usize>,
    num_experts_per_tok: Option<usize>,
}

impl ModelConfig {
    pub fn from_hf_json(text: &str) -> Result<Self> {
        let raw: serde_json::Value =
            serde_json::from_str(text).context("config.json is not valid JSON")?;
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
        let c: HfConfig =
            serde_json::from_value(raw).context("config.json is missing a required field")?;
        let _ = (&c.model_type, &c.architectures);
        let rope_scaling = match &c.rope_scaling {
            None | Some(serde_json::Value::Null) => None,
            Some(v) => parse_rope_scaling(v)?,
        };
        let cfg = Self {
            architecture,
            hidden_size: c.hidden_size,
            intermediate_size: c.intermediate_size,
            num_hidden_layers: c.num_hidden_layers,
            num_attention_heads: c.num_attention_heads,
            num_key_value_heads: c.num_key_value_heads.unwrap_or(c.num_attention_heads),
            head_dim: c
                .head_dim
                .unwrap_or(c.hidden_size / c.num_attention_heads.max(1)),
            vocab_size: c.vocab_size,
            rms_norm_eps: c.rms_norm_eps.unwrap_or(1e-6),
            rope_theta: c.rope_theta.unwrap_or(10_000.0),
            rope_scaling,
            rope_freq_factors: None,
            max_position_embeddings: c.max_position_embeddings.unwrap_or(4096),
            tie_word_embeddings: c.tie_word_embeddings.unwrap_or(false),
            qkv_bias: match architecture {
                Architecture::Qwen2 => true,
                Architecture::Llama | Architecture::Mixtral => c.attention_bias.unwrap_or(false),
            },
            moe: match architecture {
                Architecture::Mixtral => Some(MoeConfig {
                    num_experts: c
                        .num_local_experts
                        .context("a mixtral config.json needs num_local_experts")?,
                    top_k: c.num_experts_per_tok.unwrap_or(2),
                }),
                Architecture::Llama | Architecture::Qwen2 => None,
            },
        };
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
        if let Some(f) = &self.rope_freq_factors {
            if f.len() != self.head_dim / 2 || f.iter().any(|&x| !(x.is_finite() && x > 0.0)) {
                bail!(
                    "rope frequency factors must be {} positive numbers",
                    self.head_dim / 2
                );
            }
        }
        if let Some(m) = self.moe {
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
        Ok(())
    }
}

fn parse_rope_scaling(v: &serde_json::Value) -> Result<Option<Llama3RopeScaling>> {
    let kind = v
        .get("rope_type")
        .or_else(|| v.get("type"))
        .and_then(|t| t.as_str())
        .unwrap_or("default");
    let f = |k: &str| v.get(k).and_then(|x| x.as_f64());
    match kind {
        "default" => Ok(None),
        "llama3" => Ok(Some(Llama3RopeScaling {
            factor: f("factor").context("rope_scaling.factor")?,
            low_freq_factor: f("low_freq_factor").unwrap_or(1.0),
            high_freq_factor: f("high_freq_factor").unwrap_or(4.0),
            original_max_position_embeddings: f("original_max_position_embeddings")
                .unwrap_or(8192.0) as usize,
        })),
        other => bail!("rope_scaling type `{other}` is not supported (supported: default, llama3)"),
    }
}
