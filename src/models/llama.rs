//! The Llama decoder (Llama 2/3, Mistral, SmolLM): GQA attention with RoPE, RMSNorm,
//! SwiGLU MLP, tied or untied output head. Qwen2 reuses it with q/k/v biases.

use super::config::ModelConfig;
use super::rope::RotaryEmbedding;
use super::{CausalLm, Embedding, WeightSource};
use crate::engine::kv_cache::KvCache;
use crate::quant::{IsqType, QuantLinear};
use anyhow::{Context, Result};
use candle_core::{DType, Device, Tensor};
use std::collections::BTreeMap;
use std::sync::Arc;

struct Attention {
    q: Arc<dyn QuantLinear>,
    k: Arc<dyn QuantLinear>,
    v: Arc<dyn QuantLinear>,
    o: Arc<dyn QuantLinear>,
}

struct Mlp {
    gate: Arc<dyn QuantLinear>,
    up: Arc<dyn QuantLinear>,
    down: Arc<dyn QuantLinear>,
}

struct Block {
    input_norm: Tensor,
    attn: Attention,
    post_attn_norm: Tensor,
    mlp: Mlp,
}

pub struct Llama {
    cfg: ModelConfig,
    embed: Embedding,
    blocks: Vec<Block>,
    norm: Tensor,
    lm_head: Arc<dyn QuantLinear>,
    rope: RotaryEmbedding,
    device: Device,
    /// The head shares the embedding's storage (counted once).
    tied_head: bool,
}

impl Llama {
    pub fn load(
        cfg: ModelConfig,
        src: &dyn WeightSource,
        progress: &dyn Fn(usize, usize),
    ) -> Result<Self> {
        let device = src.device().clone();
        let embed = src.embedding("model.embed_tokens")?;
        let mut blocks = Vec::with_capacity(cfg.num_hidden_layers);
        for i in 0..cfg.num_hidden_layers {
            let p = format!("model.layers.{i}");
            let lin = |n: &str, bias: bool| src.linear(&format!("{p}.{n}"), bias);
            let block = Block {
                input_norm: src.dense(&format!("{p}.input_layernorm"))?,
                attn: Attention {
                    q: lin("self_attn.q_proj", cfg.qkv_bias)?,
                    k: lin("self_attn.k_proj", cfg.qkv_bias)?,
                    v: lin("self_attn.v_proj", cfg.qkv_bias)?,
                    o: lin("self_attn.o_proj", false)?,
                },
                post_attn_norm: src.dense(&format!("{p}.post_attention_layernorm"))?,
                mlp: Mlp {
                    gate: lin("mlp.gate_proj", false)?,
                    up: lin("mlp.up_proj", false)?,
                    down: lin("mlp.down_proj", false)?,
                },
            };
            block
                .check_shapes(&cfg)
                .with_context(|| format!("layer {i}"))?;
            blocks.push(block);
            progress(i + 1, cfg.num_hidden_layers);
        }
        let norm = src.dense("model.norm")?;
        let tied = cfg.tie_word_embeddings || !src.has("lm_head");
        let lm_head = src.lm_head("lm_head", tied.then_some("model.embed_tokens"))?;
        anyhow::ensure!(
            lm_head.shape().1 == cfg.hidden_size,
            "lm_head has {} columns, expected hidden size {}",
            lm_head.shape().1,
            cfg.hidden_size
        );
        let rope = RotaryEmbedding::new(&cfg, &device)?;
        Ok(Self {
            cfg,
            embed,
            blocks,
            norm,
            lm_head,
            rope,
            device,
            tied_head: tied,
        })
    }

    fn linears_mut(&mut self) -> impl Iterator<Item = &mut Arc<dyn QuantLinear>> {
        self.blocks.iter_mut().flat_map(|b| {
            [
                &mut b.attn.q,
                &mut b.attn.k,
                &mut b.attn.v,
                &mut b.attn.o,
                &mut b.mlp.gate,
                &mut b.mlp.up,
                &mut b.mlp.down,
            ]
        })
    }

    fn linears(&self) -> impl Iterator<Item = &Arc<dyn QuantLinear>> {
        self.blocks.iter().flat_map(|b| {
            [
                &b.attn.q,
                &b.attn.k,
                &b.attn.v,
                &b.attn.o,
                &b.mlp.gate,
                &b.mlp.up,
                &b.mlp.down,
            ]
        })
    }
}

impl Block {
    fn check_shapes(&self, cfg: &ModelConfig) -> Result<()> {
        let (h, hd) = (cfg.hidden_size, cfg.head_dim);
        let expect = [
            ("q_proj", &self.attn.q, (cfg.num_attention_heads * hd, h)),
            ("k_proj", &self.attn.k, (cfg.num_key_value_heads * hd, h)),
            ("v_proj", &self.attn.v, (cfg.num_key_value_heads * hd, h)),
            ("o_proj", &self.attn.o, (h, cfg.num_attention_heads * hd)),
            ("gate_proj", &self.mlp.gate, (cfg.intermediate_size, h)),
            ("up_proj", &self.mlp.up, (cfg.intermediate_size, h)),
            ("down_proj", &self.mlp.down, (h, cfg.intermediate_size)),
        ];
        for (name, lin, shape) in expect {
            anyhow::ensure!(
                lin.shape() == shape,
                "{name} has shape {:?}, the config implies {shape:?}",
                lin.shape()
            );
        }
        Ok(())
    }

    fn forward(
        &self,
        x: &Tensor,
        cfg: &ModelConfig,
        rope: &RotaryEmbedding,
        cache: &mut KvCache,
        layer: usize,
    ) -> Result<Tensor> {
        let eps = cfg.rms_norm_eps as f32;
        let h = candle_nn::ops::rms_norm(x, &self.input_norm, eps)?;
        let h = self.attn.forward(&h, cfg, rope, cache, layer)?;
        let x = (x + h)?;
        let h = candle_nn::ops::rms_norm(&x, &self.post_attn_norm, eps)?;
        let h = self.mlp.forward(&h)?;
        Ok((x + h)?)
    }
}

impl Mlp {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let gate = candle_nn::ops::silu(&self.gate.forward(x)?)?;
        let up = self.up.forward(x)?;
        self.down.forward(&(gate * up)?)
    }
}

impl Attention {
    fn forward(
        &self,
        x: &Tensor,
        cfg: &ModelConfig,
        rope: &RotaryEmbedding,
        cache: &mut KvCache,
        layer: usize,
    ) -> Result<Tensor> {
        let (b, t, _) = x.dims3()?;
        let (nh, nkv, hd) = (
            cfg.num_attention_heads,
            cfg.num_key_value_heads,
            cfg.head_dim,
        );
        let offset = cache.len();
        let heads = |y: Tensor, n: usize| -> Result<Tensor> {
            Ok(y.reshape((b, t, n, hd))?.transpose(1, 2)?.contiguous()?)
        };
        let q = rope.apply(&heads(self.q.forward(x)?, nh)?, offset)?;
        let k = rope.apply(&heads(self.k.forward(x)?, nkv)?, offset)?;
        let v = heads(self.v.forward(x)?, nkv)?;
        let (k, v) = cache.append(layer, &k, &v)?;
        let kv_len = k.dim(2)?;
        let rep = nh / nkv;
        // Grouped-query attention without copying K/V: the `rep` query heads sharing a
        // KV head are stacked along the sequence axis.
        let q = q.reshape((b, nkv, rep * t, hd))?;
        let scale = 1.0 / (hd as f64).sqrt();
        let scores = (q.matmul(&k.t()?)? * scale)?;
        let scores = if t > 1 {
            let mask = causal_mask(t, offset, kv_len, x.device())?;
            scores
                .reshape((b, nkv, rep, t, kv_len))?
                .broadcast_add(&mask)?
                .reshape((b, nkv, rep * t, kv_len))?
        } else {
            scores
        };
        let probs = candle_nn::ops::softmax_last_dim(&scores)?;
        let out = probs.matmul(&v.contiguous()?)?;
        let out = out
            .reshape((b, nh, t, hd))?
            .transpose(1, 2)?
            .reshape((b, t, nh * hd))?;
        self.o.forward(&out)
    }
}

/// (t, kv_len) additive mask: query i (absolute position offset+i) sees keys ≤ offset+i.
fn causal_mask(t: usize, offset: usize, kv_len: usize, device: &Device) -> Result<Tensor> {
    let mask: Vec<f32> = (0..t)
        .flat_map(|i| {
            (0..kv_len).map(move |j| {
                if j > offset + i {
                    f32::NEG_INFINITY
                } else {
                    0.0
                }
            })
        })
        .collect();
    Ok(Tensor::from_vec(mask, (t, kv_len), device)?)
}

impl CausalLm for Llama {
    fn config(&self) -> &ModelConfig {
        &self.cfg
    }

    fn forward(&self, tokens: &[u32], cache: &mut KvCache, logits_from: usize) -> Result<Tensor> {
        anyhow::ensure!(!tokens.is_empty(), "forward needs at least one token");
        cache.check_room(tokens.len())?;
        if let Some(&bad) = tokens
            .iter()
            .find(|&&t| t as usize >= self.embed.vocab_size())
        {
            anyhow::bail!(
                "token id {bad} is outside the vocabulary of {}",
                self.embed.vocab_size()
            );
        }
        let ids = Tensor::new(tokens, &self.device)?;
        let mut x = self.embed.forward(&ids)?.unsqueeze(0)?;
        for (i, block) in self.blocks.iter().enumerate() {
            x = block.forward(&x, &self.cfg, &self.rope, cache, i)?;
        }
        cache.advance(tokens.len());
        let from = logits_from.min(tokens.len() - 1);
        let x = x.narrow(1, from, tokens.len() - from)?;
        let x = candle_nn::ops::rms_norm(&x, &self.norm, self.cfg.rms_norm_eps as f32)?;
        let logits = self.lm_head.forward(&x)?.squeeze(0)?;
        Ok(logits.to_dtype(DType::F32)?)
    }

    fn weights_size_in_bytes(&self) -> usize {
        let dense = |t: &Tensor| t.elem_count() * t.dtype().size_in_bytes();
        let embed = match &self.embed {
            Embedding::Dense(t) => dense(t),
            Embedding::Quantized(q) => q.storage_size_in_bytes(),
        };
        let norms: usize = self
            .blocks
            .iter()
            .map(|b| dense(&b.input_norm) + dense(&b.post_attn_norm))
            .sum();
        let head = if self.tied_head {
            0
        } else {
            self.lm_head.size_in_bytes()
        };
        embed
            + norms
            + dense(&self.norm)
            + head
            + self.linears().map(|l| l.size_in_bytes()).sum::<usize>()
    }

    fn linear_storage_summary(&self) -> Vec<(String, usize)> {
        let mut m = BTreeMap::new();
        for l in self.linears() {
            *m.entry(l.storage_name()).or_insert(0) += 1;
        }
        m.into_iter().collect()
    }

    fn apply_isq(&mut self, ty: IsqType) -> Result<()> {
        for lin in self.linears_mut() {
            *lin = lin.apply_isq(ty)?;
        }
        Ok(())
    }
}

/// Converts row-major logits to a Vec for sampling.
pub fn last_logits_vec(logits: &Tensor) -> Result<Vec<f32>> {
    let l = if logits.rank() == 2 {
        logits.get(logits.dim(0)? - 1)?
    } else {
        logits.clone()
    };
    Ok(l.to_dtype(DType::F32)?.to_vec1()?)
}
