//! Rotary position embeddings (rotate-half convention, as in transformers), with every
//! frequency scaling the supported configs use. Frequencies follow transformers'
//! `modeling_rope_utils`; cos/sin rows are computed per forward pass for the positions
//! it runs, so long-context models need no position table and LongRoPE / dynamic NTK can
//! pick their frequencies from the sequence length as transformers does.

use super::config::{parse_rope_scaling, HfFields};
use anyhow::{bail, Result};

/// How the base frequencies are rescaled.
#[derive(Debug, Clone, PartialEq)]
pub enum RopeScaling {
    None,
    /// Positions divided by `factor`.
    Linear {
        factor: f64,
    },
    /// NTK-aware base growth once a sequence passes `max_position_embeddings`.
    Dynamic {
        factor: f64,
        max_position_embeddings: usize,
    },
    /// Llama 3's frequency-dependent interpolation.
    Llama3 {
        factor: f64,
        low_freq_factor: f64,
        high_freq_factor: f64,
        original_max_position_embeddings: usize,
    },
    Yarn {
        factor: f64,
        original_max_position_embeddings: usize,
        attention_factor: Option<f64>,
        beta_fast: f64,
        beta_slow: f64,
        mscale: Option<f64>,
        mscale_all_dim: Option<f64>,
        truncate: bool,
    },
    /// Phi-3's LongRoPE (`longrope`, formerly `su`): per-frequency divisors, the short
    /// set while a sequence fits `original_max_position_embeddings`, the long set beyond.
    LongRope {
        short_factor: Vec<f32>,
        long_factor: Vec<f32>,
        original_max_position_embeddings: usize,
        factor: f64,
        attention_factor: Option<f64>,
        /// Phi-3.5-MoE's cos/sin multipliers for short and long sequences, in place of
        /// the attention factor.
        mscales: Option<(f64, f64)>,
    },
}

/// One rotary embedding: base, scaling and how many dimensions of a head it rotates.
#[derive(Debug, Clone, PartialEq)]
pub struct RopeConfig {
    pub theta: f64,
    pub scaling: RopeScaling,
    /// Rotated dimensions per head (`head_dim · partial_rotary_factor`); the rest pass.
    pub rotary_dim: usize,
    /// Per-frequency divisors (GGUF's `rope_freqs.weight`, llama.cpp's form of llama3
    /// scaling), applied after `scaling`.
    pub freq_factors: Option<Vec<f32>>,
}

impl RopeConfig {
    pub fn plain(theta: f64, head_dim: usize) -> Self {
        Self {
            theta,
            scaling: RopeScaling::None,
            rotary_dim: head_dim,
            freq_factors: None,
        }
    }

    /// From config.json: transformers 5's `rope_parameters` (flat, or one entry per
    /// layer type when `layer_type` names one) or the older `rope_theta` +
    /// `rope_scaling` + `partial_rotary_factor`.
    pub fn from_hf(
        f: &HfFields,
        layer_type: Option<&str>,
        head_dim: usize,
        max_pos: usize,
    ) -> Result<Self> {
        let params = f.get("rope_parameters").map(|p| {
            let nested = p.get("full_attention").is_some() || p.get("sliding_attention").is_some();
            match (nested, layer_type) {
                (true, Some(lt)) => p.get(lt).unwrap_or(p),
                (true, None) => p.get("full_attention").unwrap_or(p),
                (false, _) => p,
            }
        });
        let pnum = |k: &str| params.and_then(|p| p.get(k)).and_then(|v| v.as_f64());
        let theta = match pnum("rope_theta") {
            Some(t) => t,
            None => f.opt_f64("rope_theta")?.unwrap_or(10_000.0),
        };
        let partial = match pnum("partial_rotary_factor") {
            Some(p) => p,
            None => f.opt_f64("partial_rotary_factor")?.unwrap_or(1.0),
        };
        let fallback_original = f.opt_usize("original_max_position_embeddings")?;
        let has_type =
            |v: &serde_json::Value| v.get("rope_type").or_else(|| v.get("type")).is_some();
        let scaling = match (params.filter(|p| has_type(p)), f.get("rope_scaling")) {
            (Some(p), _) => parse_rope_scaling(p, "rope_parameters", max_pos, fallback_original)?,
            (None, Some(s)) => parse_rope_scaling(s, "rope_scaling", max_pos, fallback_original)?,
            (None, None) => RopeScaling::None,
        };
        let rotary_dim = (head_dim as f64 * partial) as usize;
        Ok(Self {
            theta,
            scaling,
            rotary_dim,
            freq_factors: None,
        })
    }

    pub fn validate(&self, head_dim: usize) -> Result<()> {
        if self.rotary_dim == 0 || self.rotary_dim > head_dim || !self.rotary_dim.is_multiple_of(2)
        {
            bail!(
                "config: {} rotary dimensions do not fit a head of {head_dim} (partial_rotary_factor)",
                self.rotary_dim
            );
        }
        let half = self.rotary_dim / 2;
        if let Some(f) = &self.freq_factors {
            if f.len() != half || f.iter().any(|&x| !(x.is_finite() && x > 0.0)) {
                bail!("rope frequency factors must be {half} positive numbers");
            }
        }
        if let RopeScaling::LongRope {
            short_factor,
            long_factor,
            ..
        } = &self.scaling
        {
            for (name, f) in [("short_factor", short_factor), ("long_factor", long_factor)] {
                if f.len() != half {
                    bail!(
                        "rope scaling {name} has {} entries, the rotary dimensions need {half}",
                        f.len()
                    );
                }
            }
        }
        if self.theta <= 0.0 || !self.theta.is_finite() {
            bail!("config: rope theta {} must be positive", self.theta);
        }
        Ok(())
    }
}

/// cos and sin of every rotated frequency at a run of positions.
pub struct RopeRows {
    cos: Vec<f32>,
    sin: Vec<f32>,
    half: usize,
    first: usize,
}

impl RopeRows {
    /// cos and sin at absolute position `pos` (one of those the rows were made for).
    pub fn row(&self, pos: usize) -> (&[f32], &[f32]) {
        let r = (pos - self.first) * self.half..(pos - self.first + 1) * self.half;
        (&self.cos[r.clone()], &self.sin[r])
    }

    pub fn half(&self) -> usize {
        self.half
    }
}

#[derive(Debug, Clone)]
pub struct RotaryEmbedding {
    cfg: RopeConfig,
    head_dim: usize,
    /// Inverse frequencies (for LongRoPE, the short set), and LongRoPE's long set.
    inv_freq: Vec<f32>,
    long_inv_freq: Option<Vec<f32>>,
    /// cos/sin multiplier (YaRN mscale, LongRoPE's attention factor), and LongRoPE's
    /// for sequences past the original length where it differs.
    attention_factor: f32,
    long_attention_factor: Option<f32>,
}

fn base_inv_freq(theta: f64, dim: usize) -> Vec<f64> {
    (0..dim / 2)
        .map(|i| 1.0 / theta.powf(2.0 * i as f64 / dim as f64))
        .collect()
}

fn llama3_scale(inv_freq: f64, factor: f64, low: f64, high: f64, old_ctx: f64) -> f64 {
    let low_freq_wavelen = old_ctx / low;
    let high_freq_wavelen = old_ctx / high;
    let wavelen = 2.0 * std::f64::consts::PI / inv_freq;
    if wavelen < high_freq_wavelen {
        inv_freq
    } else if wavelen > low_freq_wavelen {
        inv_freq / factor
    } else {
        let smooth = (old_ctx / wavelen - low) / (high - low);
        (1.0 - smooth) * inv_freq / factor + smooth * inv_freq
    }
}

fn yarn_mscale(scale: f64, mscale: f64) -> f64 {
    if scale <= 1.0 {
        1.0
    } else {
        0.1 * mscale * scale.ln() + 1.0
    }
}

impl RotaryEmbedding {
    pub fn new(cfg: &RopeConfig, head_dim: usize) -> Result<Self> {
        cfg.validate(head_dim)?;
        let dim = cfg.rotary_dim;
        let base = base_inv_freq(cfg.theta, dim);
        let mut attention_factor = 1.0f64;
        let mut long_attention_factor = None;
        let mut long = None;
        let inv: Vec<f64> = match &cfg.scaling {
            RopeScaling::None | RopeScaling::Dynamic { .. } => base,
            RopeScaling::Linear { factor } => base.iter().map(|f| f / factor).collect(),
            RopeScaling::Llama3 {
                factor,
                low_freq_factor,
                high_freq_factor,
                original_max_position_embeddings,
            } => base
                .iter()
                .map(|&f| {
                    llama3_scale(
                        f,
                        *factor,
                        *low_freq_factor,
                        *high_freq_factor,
                        *original_max_position_embeddings as f64,
                    )
                })
                .collect(),
            RopeScaling::Yarn {
                factor,
                original_max_position_embeddings,
                attention_factor: af,
                beta_fast,
                beta_slow,
                mscale,
                mscale_all_dim,
                truncate,
            } => {
                attention_factor = match (af, mscale, mscale_all_dim) {
                    (Some(a), _, _) => *a,
                    (None, Some(m), Some(ma)) if *m != 0.0 && *ma != 0.0 => {
                        yarn_mscale(*factor, *m) / yarn_mscale(*factor, *ma)
                    }
                    _ => yarn_mscale(*factor, 1.0),
                };
                let orig = *original_max_position_embeddings as f64;
                let d = dim as f64;
                let correction = |rot: f64| {
                    d * (orig / (rot * 2.0 * std::f64::consts::PI)).ln() / (2.0 * cfg.theta.ln())
                };
                let (mut low, mut high) = (correction(*beta_fast), correction(*beta_slow));
                if *truncate {
                    low = low.floor();
                    high = high.ceil();
                }
                let (low, mut high) = (low.max(0.0), high.min(d - 1.0));
                if low == high {
                    high += 0.001;
                }
                base.iter()
                    .enumerate()
                    .map(|(i, &extrap)| {
                        let ramp = ((i as f64 - low) / (high - low)).clamp(0.0, 1.0);
                        let keep = 1.0 - ramp;
                        extrap / factor * (1.0 - keep) + extrap * keep
                    })
                    .collect()
            }
            RopeScaling::LongRope {
                short_factor,
                long_factor,
                original_max_position_embeddings,
                factor,
                attention_factor: af,
                mscales,
            } => {
                if let Some((short, long)) = mscales {
                    long_attention_factor = Some(*long as f32);
                    attention_factor = *short;
                } else {
                    attention_factor = af.unwrap_or_else(|| {
                        if *factor <= 1.0 {
                            1.0
                        } else {
                            (1.0 + factor.ln() / (*original_max_position_embeddings as f64).ln())
                                .sqrt()
                        }
                    });
                }
                let scaled = |ext: &[f32]| -> Vec<f32> {
                    base.iter()
                        .zip(ext)
                        .map(|(&f, &e)| (f / e as f64) as f32)
                        .collect()
                };
                long = Some(scaled(long_factor));
                scaled(short_factor).into_iter().map(f64::from).collect()
            }
        };
        let divide = |v: Vec<f64>| -> Vec<f32> {
            v.into_iter()
                .enumerate()
                .map(|(i, f)| {
                    let d = cfg.freq_factors.as_ref().map_or(1.0, |d| d[i] as f64);
                    (f / d) as f32
                })
                .collect()
        };
        Ok(Self {
            cfg: cfg.clone(),
            head_dim,
            inv_freq: divide(inv),
            long_inv_freq: long,
            attention_factor: attention_factor as f32,
            long_attention_factor,
        })
    }

    /// Rotated dimensions per head.
    pub fn rotary_dim(&self) -> usize {
        self.cfg.rotary_dim
    }

    pub fn head_dim(&self) -> usize {
        self.head_dim
    }

    /// The frequencies a forward pass ending at `seq_end` tokens uses.
    fn inv_freq_for(&self, seq_end: usize) -> std::borrow::Cow<'_, [f32]> {
        match &self.cfg.scaling {
            RopeScaling::LongRope {
                original_max_position_embeddings,
                ..
            } if seq_end > *original_max_position_embeddings => self
                .long_inv_freq
                .as_deref()
                .unwrap_or(&self.inv_freq)
                .into(),
            RopeScaling::Dynamic {
                factor,
                max_position_embeddings,
            } if seq_end > *max_position_embeddings => {
                let dim = self.cfg.rotary_dim as f64;
                let grow =
                    factor * seq_end as f64 / *max_position_embeddings as f64 - (factor - 1.0);
                let theta = self.cfg.theta * grow.powf(dim / (dim - 2.0));
                base_inv_freq(theta, self.cfg.rotary_dim)
                    .into_iter()
                    .map(|f| f as f32)
                    .collect::<Vec<_>>()
                    .into()
            }
            _ => self.inv_freq.as_slice().into(),
        }
    }

    /// cos/sin rows for positions `first..first + n` of a forward pass that ends at
    /// `first + n` tokens (transformers picks LongRoPE's set and dynamic NTK's base from
    /// that length).
    pub fn rows(&self, first: usize, n: usize) -> RopeRows {
        let inv = self.inv_freq_for(first + n);
        let half = inv.len();
        let (mut cos, mut sin) = (Vec::with_capacity(n * half), Vec::with_capacity(n * half));
        let af = match (&self.cfg.scaling, self.long_attention_factor) {
            (
                RopeScaling::LongRope {
                    original_max_position_embeddings,
                    ..
                },
                Some(long),
            ) if first + n > *original_max_position_embeddings => long,
            _ => self.attention_factor,
        };
        for p in first..first + n {
            for &f in inv.iter() {
                // The angle in f32 as transformers forms it, its cos/sin rounded once.
                let a = (p as f32 * f) as f64;
                cos.push(a.cos() as f32 * af);
                sin.push(a.sin() as f32 * af);
            }
        }
        RopeRows {
            cos,
            sin,
            half,
            first,
        }
    }
}
