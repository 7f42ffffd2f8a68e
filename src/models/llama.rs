//! The Llama decoder (Llama 2/3, Mistral, SmolLM): GQA attention with RoPE, RMSNorm,
//! SwiGLU MLP, tied or untied output head. Qwen2 reuses it with q/k/v biases, Mixtral
//! with a sparse mixture of experts in place of the MLP ([`Ffn`]).

use super::config::ModelConfig;
use super::mixtral::SparseMoe;
use super::rope::RotaryEmbedding;
use super::{ops, BatchItem, CausalLm, Embedding, WeightSource};
use crate::quant::kernels;
use crate::quant::{IsqType, QuantLinear};
use anyhow::{Context, Result};
use candle_core::{DType, Device, Tensor};
use rayon::prelude::*;
use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::Arc;

struct Attention {
    q: Arc<dyn QuantLinear>,
    k: Arc<dyn QuantLinear>,
    v: Arc<dyn QuantLinear>,
    o: Arc<dyn QuantLinear>,
}

/// A SwiGLU MLP: `down(silu(gate x) · up x)`. Also one expert of a [`SparseMoe`].
pub(super) struct Mlp {
    gate: Arc<dyn QuantLinear>,
    up: Arc<dyn QuantLinear>,
    down: Arc<dyn QuantLinear>,
}

/// The block's feed-forward part.
enum Ffn {
    Dense(Mlp),
    Moe(SparseMoe),
}

/// Names (within a layer) of the dense MLP's gate, up and down projections.
const MLP_NAMES: [&str; 3] = ["mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"];

struct Block {
    input_norm: Vec<f32>,
    attn: Attention,
    post_attn_norm: Vec<f32>,
    ffn: Ffn,
}

pub struct Llama {
    cfg: ModelConfig,
    embed: Embedding,
    blocks: Vec<Block>,
    norm: Vec<f32>,
    lm_head: Arc<dyn QuantLinear>,
    rope: RotaryEmbedding,
    device: Device,
    /// The head shares the embedding's storage (counted once).
    tied_head: bool,
    /// The weights the model was loaded from, kept for re-quantization.
    source: Arc<dyn WeightSource>,
}

impl Llama {
    pub fn load(
        cfg: ModelConfig,
        source: Arc<dyn WeightSource>,
        progress: &dyn Fn(usize, usize),
    ) -> Result<Self> {
        let src = source.as_ref();
        let device = src.device().clone();
        let embed = src.embedding("model.embed_tokens")?;
        let mut blocks = Vec::with_capacity(cfg.num_hidden_layers);
        for i in 0..cfg.num_hidden_layers {
            let p = format!("model.layers.{i}");
            let lin = |n: &str, bias: bool| src.linear(&format!("{p}.{n}"), bias);
            let block = Block {
                input_norm: norm_weight(src, &format!("{p}.input_layernorm"), cfg.hidden_size)?,
                attn: Attention {
                    q: lin("self_attn.q_proj", cfg.qkv_bias)?,
                    k: lin("self_attn.k_proj", cfg.qkv_bias)?,
                    v: lin("self_attn.v_proj", cfg.qkv_bias)?,
                    o: lin("self_attn.o_proj", false)?,
                },
                post_attn_norm: norm_weight(
                    src,
                    &format!("{p}.post_attention_layernorm"),
                    cfg.hidden_size,
                )?,
                ffn: match cfg.moe {
                    None => Ffn::Dense(Mlp::load(src, &p, MLP_NAMES)?),
                    Some(moe) => Ffn::Moe(SparseMoe::load(src, &p, moe)?),
                },
            };
            block
                .check_shapes(&cfg)
                .with_context(|| format!("layer {i}"))?;
            blocks.push(block);
            progress(i + 1, cfg.num_hidden_layers);
        }
        let norm = norm_weight(src, "model.norm", cfg.hidden_size)?;
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
        let rope = RotaryEmbedding::new(&cfg, &device)?;
        Ok(Self {
            cfg,
            embed,
            blocks,
            norm,
            lm_head,
            rope,
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
}

impl Mlp {
    /// `names`: the gate, up and down projections under layer prefix `p`.
    pub(super) fn load(src: &dyn WeightSource, p: &str, names: [&str; 3]) -> Result<Self> {
        let lin = |n: &str| src.linear(&format!("{p}.{n}"), false);
        Ok(Self {
            gate: lin(names[0])?,
            up: lin(names[1])?,
            down: lin(names[2])?,
        })
    }

    /// Gate, up, down.
    pub(super) fn linears(&self) -> [&Arc<dyn QuantLinear>; 3] {
        [&self.gate, &self.up, &self.down]
    }

    pub(super) fn linears_mut(&mut self) -> [&mut Arc<dyn QuantLinear>; 3] {
        [&mut self.gate, &mut self.up, &mut self.down]
    }

    /// `names` as for [`Mlp::load`].
    pub(super) fn check_shapes(&self, hidden: usize, inter: usize, names: [&str; 3]) -> Result<()> {
        for (name, lin, shape) in [
            (names[0], &self.gate, (inter, hidden)),
            (names[1], &self.up, (inter, hidden)),
            (names[2], &self.down, (hidden, inter)),
        ] {
            anyhow::ensure!(
                lin.shape() == shape,
                "{name} has shape {:?}, the config implies {shape:?}",
                lin.shape()
            );
        }
        Ok(())
    }
}

impl Ffn {
    fn linears(&self) -> Vec<&Arc<dyn QuantLinear>> {
        match self {
            Self::Dense(m) => m.linears().to_vec(),
            Self::Moe(m) => m.linears(),
        }
    }

    fn linears_mut(&mut self) -> Vec<&mut Arc<dyn QuantLinear>> {
        match self {
            Self::Dense(m) => m.linears_mut().into_iter().collect(),
            Self::Moe(m) => m.linears_mut(),
        }
    }

    /// Names within the layer, in `linears` order.
    fn linear_names(&self) -> Vec<String> {
        match self {
            Self::Dense(_) => MLP_NAMES.iter().map(|n| n.to_string()).collect(),
            Self::Moe(m) => m.linear_names(),
        }
    }

    /// Bytes of FFN weights one token reads (a MoE reads its router and top-k experts).
    fn decode_bytes(&self) -> usize {
        match self {
            Self::Dense(m) => m.linears().iter().map(|l| l.size_in_bytes()).sum(),
            Self::Moe(m) => m.decode_bytes(),
        }
    }

    fn forward(&self, x: Vec<f32>, groups: &[Range<usize>]) -> Result<Vec<f32>> {
        match self {
            Self::Dense(m) => m.forward(x, groups),
            Self::Moe(m) => m.forward(x, groups),
        }
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
        ];
        for (name, lin, shape) in expect {
            anyhow::ensure!(
                lin.shape() == shape,
                "{name} has shape {:?}, the config implies {shape:?}",
                lin.shape()
            );
        }
        match &self.ffn {
            Ffn::Dense(m) => m.check_shapes(h, cfg.intermediate_size, MLP_NAMES),
            Ffn::Moe(m) => m.check_shapes(h, cfg.intermediate_size),
        }
    }

    /// Attention's q, k, v, o, then the FFN's linears.
    fn linears(&self) -> Vec<&Arc<dyn QuantLinear>> {
        let a = &self.attn;
        let mut v = vec![&a.q, &a.k, &a.v, &a.o];
        v.extend(self.ffn.linears());
        v
    }

    fn linears_mut(&mut self) -> Vec<&mut Arc<dyn QuantLinear>> {
        let a = &mut self.attn;
        let mut v = vec![&mut a.q, &mut a.k, &mut a.v, &mut a.o];
        v.extend(self.ffn.linears_mut());
        v
    }

    /// (name within the layer, has bias) of each linear, in `linears` order.
    fn linear_specs(&self, cfg: &ModelConfig) -> Vec<(String, bool)> {
        let mut v: Vec<(String, bool)> = [
            ("self_attn.q_proj", cfg.qkv_bias),
            ("self_attn.k_proj", cfg.qkv_bias),
            ("self_attn.v_proj", cfg.qkv_bias),
            ("self_attn.o_proj", false),
        ]
        .into_iter()
        .map(|(n, b)| (n.to_string(), b))
        .collect();
        v.extend(self.ffn.linear_names().into_iter().map(|n| (n, false)));
        v
    }

    /// One layer over the residual stream `x` (token-major rows of every item, hidden
    /// wide), in place.
    fn forward(
        &self,
        x: &mut [f32],
        batch: &mut Batch,
        cfg: &ModelConfig,
        layer: usize,
    ) -> Result<()> {
        let eps = cfg.rms_norm_eps as f32;
        let h = ops::rms_norm(x, &self.input_norm, eps);
        let h = self.attn.forward(h, batch, cfg, layer)?;
        ops::add_in_place(x, &h);
        let h = ops::rms_norm(x, &self.post_attn_norm, eps);
        let h = self.ffn.forward(h, &batch.groups)?;
        ops::add_in_place(x, &h);
        Ok(())
    }
}

/// The sequences of one forward pass and how their rows go through the linears.
struct Batch<'i, 'a> {
    /// The sequences, prompts long enough for the GEMM path first (see `row_groups`).
    items: Vec<&'i mut BatchItem<'a>>,
    /// Rows (tokens) of each item, in order.
    lens: Vec<usize>,
    groups: Vec<Range<usize>>,
    rope: &'i RotaryEmbedding,
}

/// Splits rows of consecutive items into the calls a linear gets: prompts long enough
/// for the GEMM path (which come first) share one call — one dequantization of each
/// weight for all of them — and short ones (decode steps, short turns) are packed up to
/// the kernel limit. Both paths compute each row independently of the others in its
/// call, so batching never changes a sequence's output (tests/server.rs checks it).
fn row_groups(lens: &[usize]) -> Vec<Range<usize>> {
    let mut groups: Vec<Range<usize>> = Vec::new();
    let mut pending: Option<Range<usize>> = None;
    let mut start = 0;
    let mut long: Option<Range<usize>> = None;
    for &t in lens {
        let rows = start..start + t;
        if t >= kernels::MAX_KERNEL_ROWS {
            groups.extend(pending.take());
            match long.as_mut() {
                Some(l) if l.end == rows.start => l.end = rows.end,
                _ => groups.extend(long.replace(rows)),
            }
        } else {
            groups.extend(long.take());
            match pending.as_mut() {
                Some(p) if p.len() + t < kernels::MAX_KERNEL_ROWS => p.end = rows.end,
                _ => groups.extend(pending.replace(rows)),
            }
        }
        start += t;
    }
    groups.extend(long);
    groups.extend(pending);
    groups.sort_by_key(|g| g.start);
    groups
}

/// A linear applied to token-major f32 rows, one call per row group.
pub(super) fn apply(
    lin: &dyn QuantLinear,
    x: Vec<f32>,
    groups: &[Range<usize>],
) -> Result<Vec<f32>> {
    let rows: usize = groups.iter().map(|g| g.len()).sum();
    let cols = x.len() / rows.max(1);
    let run = |x: Vec<f32>, t: usize| -> Result<Vec<f32>> {
        let y = lin.forward(&Tensor::from_vec(x, (t, cols), &Device::Cpu)?)?;
        Ok(y.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?)
    };
    if groups.len() == 1 {
        return run(x, rows);
    }
    let mut out = Vec::with_capacity(rows * lin.shape().0);
    for g in groups {
        out.extend(run(x[g.start * cols..g.end * cols].to_vec(), g.len())?);
    }
    Ok(out)
}

/// Several linears over the same token-major rows (q/k/v, gate/up). Where all are
/// block-quantized without bias, each row group's input is quantized once and all
/// weights share one parallel run — the integer GEMM for prompt-sized groups, the per-row
/// kernels for short ones — with no tensor copies on the way; otherwise each goes through
/// [`apply`]. Each output is what `apply` gives for that linear alone, bit for bit.
pub(super) fn apply_many(
    lins: &[&dyn QuantLinear],
    x: Vec<f32>,
    groups: &[Range<usize>],
) -> Result<Vec<Vec<f32>>> {
    let rows: usize = groups.iter().map(|g| g.len()).sum();
    let cols = x.len() / rows.max(1);
    let weights: Option<Vec<kernels::PromptWeight>> = lins
        .iter()
        .map(|l| {
            let g = l.as_any().downcast_ref::<crate::quant::GgmlLinear>()?;
            g.bias().is_none().then(|| g.blocks()).flatten()
        })
        .collect();
    let Some(weights) = weights else {
        return lins.iter().map(|l| apply(*l, x.clone(), groups)).collect();
    };
    let prompt_gemm = weights.iter().all(|w| kernels::has_prompt_gemm(w.kind));
    let mut outs: Vec<Vec<f32>> = lins
        .iter()
        .map(|l| Vec::with_capacity(rows * l.shape().0))
        .collect();
    for g in groups {
        let part = &x[g.start * cols..g.end * cols];
        let ys = if g.len() < kernels::MAX_KERNEL_ROWS {
            kernels::matmul_many(&weights, cols, part, g.len())
        } else if prompt_gemm {
            kernels::matmul_prompt_many(&weights, cols, part, g.len())
        } else {
            let whole = 0..g.len();
            lins.iter()
                .map(|l| apply(*l, part.to_vec(), std::slice::from_ref(&whole)))
                .collect::<Result<_>>()?
        };
        if groups.len() == 1 {
            return Ok(ys);
        }
        for (o, y) in outs.iter_mut().zip(ys) {
            o.extend(y);
        }
    }
    Ok(outs)
}

/// One sequence's query, key and value rows.
type QkvRows<'b> = ((&'b mut [f32], &'b mut [f32]), &'b mut [f32]);

/// Cuts a token-major buffer into the per-item row blocks.
fn split_rows<'b>(mut buf: &'b mut [f32], lens: &[usize], row: usize) -> Vec<&'b mut [f32]> {
    let mut parts = Vec::with_capacity(lens.len());
    for &t in lens {
        let (head, rest) = std::mem::take(&mut buf).split_at_mut(t * row);
        parts.push(head);
        buf = rest;
    }
    parts
}

fn norm_weight(src: &dyn WeightSource, name: &str, hidden: usize) -> Result<Vec<f32>> {
    let w: Vec<f32> = src.dense(name)?.flatten_all()?.to_vec1()?;
    anyhow::ensure!(
        w.len() == hidden,
        "{name} has {} elements, expected {hidden}",
        w.len()
    );
    Ok(w)
}

impl Mlp {
    pub(super) fn forward(&self, x: Vec<f32>, groups: &[Range<usize>]) -> Result<Vec<f32>> {
        let [up, gate]: [Vec<f32>; 2] =
            apply_many(&[self.up.as_ref(), self.gate.as_ref()], x, groups)?
                .try_into()
                .expect("two linears in, two out");
        apply_many(&[self.down.as_ref()], ops::swiglu(&gate, &up), groups)
            .map(|mut v| v.pop().expect("one linear in, one out"))
    }
}

impl Attention {
    fn forward(
        &self,
        x: Vec<f32>,
        batch: &mut Batch,
        cfg: &ModelConfig,
        layer: usize,
    ) -> Result<Vec<f32>> {
        let (nh, nkv, hd) = (
            cfg.num_attention_heads,
            cfg.num_key_value_heads,
            cfg.head_dim,
        );
        let groups = &batch.groups;
        let [mut q, mut k, mut v]: [Vec<f32>; 3] = apply_many(
            &[self.q.as_ref(), self.k.as_ref(), self.v.as_ref()],
            x,
            groups,
        )?
        .try_into()
        .expect("three linears in, three out");
        let shape = ops::Heads {
            heads: nh,
            kv_heads: nkv,
            head_dim: hd,
        };
        let rope = batch.rope;
        // Each sequence attends to its own cache; sequences run in parallel.
        let per_item = |(item, ((q, k), v)): (&mut &mut BatchItem, QkvRows)| {
            let t = q.len() / (nh * hd);
            let offset = item.cache.len();
            ops::rope_in_place(q, nh, hd, offset, rope);
            ops::rope_in_place(k, nkv, hd, offset, rope);
            item.cache.write(layer, k, v);
            ops::attention(q, item.cache.view(layer, offset + t), t, offset, shape)
        };
        // Spread sequences over threads only when there is real attention work: for
        // decode steps (one query over a short cache each) waking the pool costs more.
        let work: usize = batch
            .items
            .iter()
            .zip(&batch.lens)
            .map(|(it, &t)| t * (it.cache.len() + t))
            .sum();
        let many = batch.items.len() > 1 && work * nh > 1 << 16;
        let parts = batch.items.iter_mut().zip(
            split_rows(&mut q, &batch.lens, nh * hd)
                .into_iter()
                .zip(split_rows(&mut k, &batch.lens, nkv * hd))
                .zip(split_rows(&mut v, &batch.lens, nkv * hd)),
        );
        let outs: Vec<Vec<f32>> = if many {
            parts
                .collect::<Vec<_>>()
                .into_par_iter()
                .map(per_item)
                .collect()
        } else {
            parts.map(per_item).collect()
        };
        apply_many(&[self.o.as_ref()], outs.concat(), groups)
            .map(|mut v| v.pop().expect("one linear in, one out"))
    }
}

impl CausalLm for Llama {
    fn config(&self) -> &ModelConfig {
        &self.cfg
    }

    fn forward_batch(&self, items: &mut [BatchItem]) -> Result<Vec<Tensor>> {
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
        let mut batch = Batch {
            groups: row_groups(&lens),
            lens,
            items,
            rope: &self.rope,
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
        let normed = ops::rms_norm(&rows, &self.norm, self.cfg.rms_norm_eps as f32);
        let logits = apply(self.lm_head.as_ref(), normed, &row_groups(&kept))?;
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

    fn weights_size_in_bytes(&self) -> usize {
        let embed = self.embed.size_in_bytes();
        let norms: usize = self
            .blocks
            .iter()
            .map(|b| 4 * (b.input_norm.len() + b.post_attn_norm.len()))
            .sum();
        let head = if self.tied_head {
            0
        } else {
            self.lm_head.size_in_bytes()
        };
        embed
            + norms
            + 4 * self.norm.len()
            + head
            + self.linears().map(|l| l.size_in_bytes()).sum::<usize>()
    }

    fn decode_bytes_per_token(&self) -> usize {
        let norms: usize = self
            .blocks
            .iter()
            .map(|b| 4 * (b.input_norm.len() + b.post_attn_norm.len()))
            .sum();
        let linears: usize = self
            .blocks
            .iter()
            .map(|b| {
                let a = &b.attn;
                [&a.q, &a.k, &a.v, &a.o]
                    .iter()
                    .map(|l| l.size_in_bytes())
                    .sum::<usize>()
                    + b.ffn.decode_bytes()
            })
            .sum();
        linears + self.lm_head.size_in_bytes() + norms
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

/// Converts row-major logits to a Vec for sampling.
pub fn last_logits_vec(logits: &Tensor) -> Result<Vec<f32>> {
    let l = if logits.rank() == 2 {
        logits.get(logits.dim(0)? - 1)?
    } else {
        logits.clone()
    };
    Ok(l.to_dtype(DType::F32)?.to_vec1()?)
}
