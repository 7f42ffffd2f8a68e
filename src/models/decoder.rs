//! The decoder every family runs: embeddings, the layers ([`Block`]), the final norm and
//! the head, batched over sequences for continuous batching. Families differ only in
//! their [`ModelConfig`] (its `Variant` and per-layer kinds), never in this loop.

use super::block::{Batch, Block};
use super::config::{LayerRope, ModelConfig};
use super::linear_rows::{apply, row_groups};
use super::norm::Norm;
use super::rope::RotaryEmbedding;
use super::{ops, BatchItem, CausalLm, Embedding, KvCache, WeightSource};
use crate::quant::kernels;
use crate::quant::{IsqType, QuantLinear};
use anyhow::Result;
use candle_core::{Device, Tensor};
use std::collections::BTreeMap;
use std::sync::Arc;

pub struct Decoder {
    cfg: ModelConfig,
    embed: Embedding,
    blocks: Vec<Block>,
    norm: Norm,
    /// A bias on the output head (Phi-3.5-MoE's `lm_head_bias`).
    head_bias: Option<Vec<f32>>,
    lm_head: Arc<dyn QuantLinear>,
    /// The global rotary embedding and, where the family has one, the local one.
    ropes: [Option<RotaryEmbedding>; 2],
    device: Device,
    /// The head shares the embedding's storage (counted once).
    tied_head: bool,
    /// The weights the model was loaded from, kept for re-quantization.
    source: Arc<dyn WeightSource>,
}

impl Decoder {
    pub fn load(
        cfg: ModelConfig,
        source: Arc<dyn WeightSource>,
        progress: &dyn Fn(usize, usize),
    ) -> Result<Self> {
        cfg.validate()?;
        let src = source.as_ref();
        let device = src.device().clone();
        let embed = src.embedding("model.embed_tokens")?;
        let mut blocks = Vec::with_capacity(cfg.num_hidden_layers);
        for i in 0..cfg.num_hidden_layers {
            blocks.push(Block::load(src, &cfg, i)?);
            progress(i + 1, cfg.num_hidden_layers);
        }
        let norm = Norm::load(src, "model.norm", cfg.hidden_size, &cfg.variant)?;
        let head_bias = match cfg.variant.head_bias {
            true => Some(
                src.dense_raw("lm_head.bias")?
                    .flatten_all()?
                    .to_vec1::<f32>()?,
            ),
            false => None,
        };
        let tied = cfg.tie_word_embeddings || !src.has("lm_head");
        let lm_head = src.lm_head("lm_head", tied.then_some("model.embed_tokens"))?;
        anyhow::ensure!(
            lm_head.shape().1 == cfg.hidden_size,
            "lm_head has {} columns, expected hidden size {}",
            lm_head.shape().1,
            cfg.hidden_size
        );
        // A tied head quantized apart (topology) has storage of its own.
        let tied_head = tied && lm_head.size_in_bytes() == embed.size_in_bytes();
        tracing::info!(
            "KV cache: {} bytes per token ({}){}",
            cfg.kv_bytes_per_token(),
            if cfg.mla.is_some() {
                "latent and rope part per layer"
            } else {
                "keys and values per layer"
            },
            if cfg.layers.iter().any(|l| l.window.is_some()) {
                "; sliding layers keep only their window"
            } else {
                ""
            }
        );
        let uses = |r: LayerRope| cfg.layers.iter().any(|l| l.rope == r);
        let ropes = [
            uses(LayerRope::Global)
                .then(|| RotaryEmbedding::new(&cfg.rope, cfg.head_dim))
                .transpose()?,
            match &cfg.local_rope {
                Some(r) if uses(LayerRope::Local) => Some(RotaryEmbedding::new(r, cfg.head_dim)?),
                _ => None,
            },
        ];
        Ok(Self {
            cfg,
            embed,
            blocks,
            norm,
            head_bias,
            lm_head,
            ropes,
            device,
            tied_head,
            source,
        })
    }

    fn linears_mut(&mut self) -> impl Iterator<Item = &mut Arc<dyn QuantLinear>> {
        self.blocks.iter_mut().flat_map(|b| b.linears_mut())
    }

    fn linears(&self) -> impl Iterator<Item = &Arc<dyn QuantLinear>> {
        self.blocks.iter().flat_map(|b| b.linears())
    }

    fn norm_bytes(&self) -> usize {
        self.blocks.iter().map(|b| b.norm_bytes()).sum::<usize>() + self.norm.bytes()
    }
}

impl Decoder {
    /// Embeddings → every layer → final norm, for the rows each item asks for (from its
    /// `logits_from`): the normed hidden rows, rows per item, and the items' order in them.
    fn trunk(&self, items: &mut [BatchItem]) -> Result<(Vec<f32>, Vec<usize>, Vec<usize>)> {
        anyhow::ensure!(!items.is_empty(), "forward needs at least one sequence");
        let vocab = self.embed.vocab_size();
        for item in items.iter_mut() {
            anyhow::ensure!(!item.tokens.is_empty(), "forward needs at least one token");
            item.cache.check_room(item.tokens.len())?;
            if let Some(&bad) = item.tokens.iter().find(|&&t| t as usize >= vocab) {
                anyhow::bail!("token id {bad} is outside the vocabulary of {vocab}");
            }
            item.cache.reserve(item.tokens.len())?;
        }
        // Long prompts first, so they form one contiguous GEMM group.
        let mut order: Vec<usize> = (0..items.len()).collect();
        order.sort_by_key(|&i| items[i].tokens.len() < kernels::MAX_KERNEL_ROWS);
        let mut slots: Vec<Option<&mut BatchItem>> = items.iter_mut().map(Some).collect();
        let items: Vec<&mut BatchItem> = order
            .iter()
            .map(|&i| slots[i].take().expect("each index once"))
            .collect();
        let lens: Vec<usize> = items.iter().map(|i| i.tokens.len()).collect();
        let all: Vec<u32> = items
            .iter()
            .flat_map(|i| i.tokens.iter().copied())
            .collect();
        let ids = Tensor::new(all.as_slice(), &self.device)?;
        let mut x: Vec<f32> = self.embed.forward(&ids)?.flatten_all()?.to_vec1()?;
        let embed_scale = self.cfg.variant.embed_scale;
        if embed_scale != 1.0 {
            x.iter_mut().for_each(|v| *v *= embed_scale);
        }
        // cos/sin of each sequence's new positions, once per pass for every layer.
        let ropes = items
            .iter()
            .map(|it| {
                let (first, n) = (it.cache.len(), it.tokens.len());
                self.ropes
                    .each_ref()
                    .map(|r| r.as_ref().map(|r| r.rows(first, n)))
            })
            .collect();
        let mut batch = Batch {
            groups: row_groups(&lens),
            lens,
            items,
            ropes,
        };
        for (i, block) in self.blocks.iter().enumerate() {
            block.forward(&mut x, &mut batch, &self.cfg, i)?;
        }
        // Logits only for the rows each item asked for.
        let h = self.cfg.hidden_size;
        let (mut rows, mut kept) = (Vec::new(), Vec::with_capacity(batch.lens.len()));
        let mut start = 0;
        for (item, &t) in batch.items.iter_mut().zip(&batch.lens) {
            item.cache.advance(t);
            let from = item.logits_from.min(t - 1);
            rows.extend_from_slice(&x[(start + from) * h..(start + t) * h]);
            kept.push(t - from);
            start += t;
        }
        let normed = self.norm.apply(&rows, self.cfg.rms_norm_eps as f32);
        Ok((normed, kept, order))
    }
}

impl CausalLm for Decoder {
    fn config(&self) -> &ModelConfig {
        &self.cfg
    }

    fn forward_batch(&self, items: &mut [BatchItem]) -> Result<Vec<Tensor>> {
        let (normed, kept, order) = self.trunk(items)?;
        let mut logits = apply(self.lm_head.as_ref(), normed, &row_groups(&kept))?;
        if let Some(b) = &self.head_bias {
            for row in logits.chunks_exact_mut(b.len()) {
                ops::add_in_place(row, b);
            }
        }
        let v = &self.cfg.variant;
        if v.logit_scale != 1.0 {
            logits.iter_mut().for_each(|l| *l *= v.logit_scale);
        }
        if let Some(cap) = v.final_softcap {
            ops::softcap_in_place(&mut logits, cap);
        }
        let width = logits.len() / kept.iter().sum::<usize>();
        let mut out: Vec<Option<Tensor>> = vec![None; kept.len()];
        let mut at = 0;
        for (&slot, n) in order.iter().zip(kept) {
            let part = logits[at * width..(at + n) * width].to_vec();
            out[slot] = Some(Tensor::from_vec(part, (n, width), &self.device)?);
            at += n;
        }
        Ok(out
            .into_iter()
            .map(|t| t.expect("every item has logits"))
            .collect())
    }

    fn hidden_states(&self, tokens: &[u32], cache: &mut KvCache) -> Result<Vec<f32>> {
        let mut items = [BatchItem {
            tokens,
            cache,
            logits_from: 0,
        }];
        Ok(self.trunk(&mut items)?.0)
    }

    fn weights_size_in_bytes(&self) -> usize {
        let head = if self.tied_head {
            0
        } else {
            self.lm_head.size_in_bytes()
        };
        self.embed.size_in_bytes()
            + self.norm_bytes()
            + head
            + self.linears().map(|l| l.size_in_bytes()).sum::<usize>()
    }

    fn decode_bytes_per_token(&self) -> usize {
        let linears: usize = self
            .blocks
            .iter()
            .map(|b| {
                b.attn_linears()
                    .iter()
                    .map(|l| l.size_in_bytes())
                    .sum::<usize>()
                    + b.ffn.decode_bytes()
            })
            .sum();
        linears + self.lm_head.size_in_bytes() + self.norm_bytes()
    }

    fn linear_storage_summary(&self) -> Vec<(String, usize)> {
        let mut m = BTreeMap::new();
        for l in self.linears() {
            *m.entry(l.storage_name()).or_insert(0) += 1;
        }
        m.into_iter().collect()
    }

    fn named_linears(&self) -> Vec<(String, Arc<dyn QuantLinear>)> {
        let mut out = Vec::new();
        for (i, b) in self.blocks.iter().enumerate() {
            for ((name, _), l) in b.linear_specs(&self.cfg).into_iter().zip(b.linears()) {
                out.push((format!("model.layers.{i}.{name}"), l.clone()));
            }
        }
        out
    }

    fn map_linears(&mut self, wrap: &mut super::LinearWrapper) {
        for (i, b) in self.blocks.iter_mut().enumerate() {
            let names: Vec<String> = b
                .linear_specs(&self.cfg)
                .into_iter()
                .map(|(n, _)| n)
                .collect();
            for (name, slot) in names.iter().zip(b.linears_mut()) {
                *slot = wrap(&format!("model.layers.{i}.{name}"), slot.clone());
            }
        }
        self.lm_head = wrap("lm_head", self.lm_head.clone());
    }

    fn linear_storage_by_name(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for (i, b) in self.blocks.iter().enumerate() {
            for ((name, _), l) in b.linear_specs(&self.cfg).into_iter().zip(b.linears()) {
                out.push((format!("model.layers.{i}.{name}"), l.storage_name()));
            }
        }
        out.push(("lm_head".to_string(), self.lm_head.storage_name()));
        out
    }

    fn re_isq(&mut self, ty: Option<IsqType>) -> Result<()> {
        // Build every new layer first, so a failure changes nothing. The ISQ
        // organization the model was loaded with still decides which layers take `ty`.
        let mut fresh = Vec::new();
        for (i, b) in self.blocks.iter().enumerate() {
            for (name, bias) in b.linear_specs(&self.cfg) {
                let name = format!("model.layers.{i}.{name}");
                let ty = self.source.re_isq_type(&name, ty);
                fresh.push(self.source.linear_as(&name, bias, ty)?);
            }
        }
        for (slot, new) in self.linears_mut().zip(fresh) {
            *slot = new;
        }
        Ok(())
    }
}
