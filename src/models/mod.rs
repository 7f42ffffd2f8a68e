//! Model architectures, each written only against [`WeightSource`] and
//! [`crate::quant::QuantLinear`], so every loader and every quantization serves every model.

mod attention;
mod block;
pub mod config;
pub mod decoder;
pub mod deepseek;
pub mod gemma2;
pub mod gemma3;
pub mod gpt_oss;
pub mod granite;
mod linear_rows;
pub mod llama;
pub mod mixtral;
mod mla;
pub mod moe;
mod norm;
pub mod olmo2;
pub mod ops;
pub mod phi3;
pub mod phimoe;
pub mod qwen2;
pub mod qwen3;
pub mod qwen3_moe;
pub mod rope;
mod routing;
pub mod smollm3;

use crate::engine::kv_cache::{BlockPool, KvCache};
use crate::quant::{IsqType, QuantLinear};
use anyhow::Result;
use candle_core::quantized::QTensor;
use candle_core::{Device, Tensor};
use std::sync::Arc;

pub use config::{Architecture, ModelConfig, MoeConfig};
pub use decoder::Decoder;

/// Where a model's weights come from. Names are Hugging Face's without the `.weight`
/// suffix (`model.layers.3.self_attn.q_proj`); each loader maps them to its own layout.
pub trait WeightSource: Send + Sync {
    fn device(&self) -> &Device;
    fn has(&self, name: &str) -> bool;
    /// A linear layer, with its bias when `bias` is set, quantized as the load options
    /// (`--isq`, `--topology`) decide.
    fn linear(&self, name: &str, bias: bool) -> Result<Arc<dyn QuantLinear>>;
    /// The same layer read again from the source weights, quantized to `isq` (or dense).
    fn linear_as(
        &self,
        name: &str,
        bias: bool,
        isq: Option<IsqType>,
    ) -> Result<Arc<dyn QuantLinear>>;
    /// The type `re_isq(ty)` gives weight `name`: `ty`, or None where the ISQ
    /// organization the model was loaded with keeps the weight dense (moqe: all but the
    /// MoE experts).
    fn re_isq_type(&self, name: &str, ty: Option<IsqType>) -> Option<IsqType>;
    /// A small dense tensor (norm weights) as f32.
    fn dense(&self, name: &str) -> Result<Tensor>;
    /// A small dense tensor by its full Hugging Face name, suffix included
    /// (`model.layers.3.mlp.gate.e_score_correction_bias`), as f32.
    fn dense_raw(&self, name: &str) -> Result<Tensor>;
    fn embedding(&self, name: &str) -> Result<Embedding>;
    /// The output head. `tied` names the embedding it shares storage with.
    fn lm_head(&self, name: &str, tied: Option<&str>) -> Result<Arc<dyn QuantLinear>>;
}

/// Token embedding table, dense or kept block-quantized (rows dequantized on lookup).
#[derive(Debug, Clone)]
pub enum Embedding {
    Dense(Tensor),
    Quantized(Arc<QTensor>),
}

impl Embedding {
    pub fn forward(&self, ids: &Tensor) -> Result<Tensor> {
        Ok(match self {
            Self::Dense(w) => w.index_select(ids, 0)?.to_dtype(candle_core::DType::F32)?,
            Self::Quantized(q) => q.embedding(ids)?,
        })
    }
    pub fn size_in_bytes(&self) -> usize {
        match self {
            Self::Dense(w) => w.elem_count() * w.dtype().size_in_bytes(),
            Self::Quantized(q) => q.storage_size_in_bytes(),
        }
    }

    pub fn vocab_size(&self) -> usize {
        match self {
            Self::Dense(w) => w.dims()[0],
            Self::Quantized(q) => q.shape().dims()[0],
        }
    }
}

/// Rewrites one named linear (calibration wraps linears in observers).
pub type LinearWrapper<'a> = dyn FnMut(&str, Arc<dyn QuantLinear>) -> Arc<dyn QuantLinear> + 'a;

/// One sequence's share of a batched forward pass.
pub struct BatchItem<'a> {
    /// New tokens, run after the `cache.len()` tokens already cached.
    pub tokens: &'a [u32],
    pub cache: &'a mut KvCache,
    /// Index (within `tokens`) of the first token whose logits come back, clamped so at
    /// least the last token's row does.
    pub logits_from: usize,
}

/// A decoder-only language model.
pub trait CausalLm: Send + Sync {
    fn config(&self) -> &ModelConfig;
    /// Runs several sequences in one pass (continuous batching): their rows share every
    /// weight read, each attends only to its own cache. Returns per item f32 logits
    /// (rows, vocab). A sequence's results do not depend on what it was batched with.
    fn forward_batch(&self, items: &mut [BatchItem]) -> Result<Vec<Tensor>>;
    /// Runs `tokens` after the `cache.len()` tokens already in the cache, appending to it.
    /// Returns f32 logits (rows, vocab) for the tokens from index `logits_from` on
    /// (clamped so at least the last token's row comes back).
    fn forward(&self, tokens: &[u32], cache: &mut KvCache, logits_from: usize) -> Result<Tensor> {
        let mut items = [BatchItem {
            tokens,
            cache,
            logits_from,
        }];
        let mut out = self.forward_batch(&mut items)?;
        Ok(out.pop().expect("one item in, one out"))
    }
    /// Runs `tokens` like `forward` and returns the final-normed hidden state of every one
    /// of them, (rows × hidden_size) row-major: what embeddings pool.
    fn hidden_states(&self, tokens: &[u32], cache: &mut KvCache) -> Result<Vec<f32>>;
    /// A KV block pool for this model holding at most `budget_bytes`.
    fn block_pool(&self, budget_bytes: usize) -> Arc<BlockPool> {
        let c = self.config();
        BlockPool::with_budget_bytes(c.windows(), c.kv_rows(), budget_bytes)
    }
    /// A cache on a pool of its own without a budget (single-sequence use).
    fn new_cache(&self) -> KvCache {
        let c = self.config();
        KvCache::new(
            BlockPool::with_rows(c.windows(), c.kv_rows(), usize::MAX),
            c.max_position_embeddings,
        )
    }
    /// Bytes taken by the weights.
    fn weights_size_in_bytes(&self) -> usize;
    /// Bytes of weights read to decode one token (every linear and the head; one
    /// embedding row), the numerator of the memory-bandwidth bound.
    fn decode_bytes_per_token(&self) -> usize;
    /// (storage name, number of linears) for the log line after loading.
    fn linear_storage_summary(&self) -> Vec<(String, usize)>;
    /// (weight name, storage name) of every linear, the output head last
    /// (`model.layers.0.self_attn.q_proj` → `Q8_0`): which layers ISQ reached.
    fn linear_storage_by_name(&self) -> Vec<(String, String)>;
    /// Re-quantize every linear of attention and MLP (or, loaded with
    /// `--isq-organization moqe`, of the MoE experts) to `ty` (None: dense) from the
    /// source weights, which stay memory-mapped; errors leave the model as it was.
    fn re_isq(&mut self, ty: Option<IsqType>) -> Result<()>;
    /// Every attention and MLP linear with its Hugging Face name (for UQFF files).
    fn named_linears(&self) -> Vec<(String, Arc<dyn QuantLinear>)>;
    /// Replaces every attention and MLP linear, and the head (`lm_head`), by
    /// `wrap(hugging_face_name, linear)` (calibration wraps them in observers).
    fn map_linears(&mut self, wrap: &mut LinearWrapper);
}

/// The last row of row-major logits as a Vec, for sampling.
pub fn last_logits_vec(logits: &Tensor) -> Result<Vec<f32>> {
    let l = if logits.rank() == 2 {
        logits.get(logits.dim(0)? - 1)?
    } else {
        logits.clone()
    };
    Ok(l.to_dtype(candle_core::DType::F32)?.to_vec1()?)
}
