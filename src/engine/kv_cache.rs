//! Per-sequence key/value cache. Storage grows geometrically (no full-context
//! preallocation, so short chats stay small) and appends in place.

use anyhow::{bail, Result};
use candle_core::Tensor;

const GROWTH_QUANTUM: usize = 256;

#[derive(Debug, Clone, Default)]
struct LayerKv {
    /// (1, kv_heads, capacity, head_dim) each.
    k: Option<Tensor>,
    v: Option<Tensor>,
}

#[derive(Debug, Clone)]
pub struct KvCache {
    layers: Vec<LayerKv>,
    len: usize,
    max_len: usize,
}

impl KvCache {
    pub fn new(num_layers: usize, max_len: usize) -> Self {
        Self {
            layers: vec![LayerKv::default(); num_layers],
            len: 0,
            max_len,
        }
    }

    /// Tokens already cached.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn max_len(&self) -> usize {
        self.max_len
    }

    pub fn clear(&mut self) {
        self.len = 0;
    }

    /// Forget everything after the first `len` tokens (e.g. to reuse a shared prefix).
    pub fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
    }

    /// Bytes held by the cache storage.
    pub fn size_in_bytes(&self) -> usize {
        self.layers
            .iter()
            .flat_map(|l| [&l.k, &l.v])
            .flatten()
            .map(|t| t.elem_count() * t.dtype().size_in_bytes())
            .sum()
    }

    /// Checks that `n` more tokens fit in the context window.
    pub fn check_room(&self, n: usize) -> Result<()> {
        if self.len + n > self.max_len {
            bail!(
                "context length exceeded: {} cached + {n} new tokens > the model's context of {} tokens",
                self.len,
                self.max_len
            );
        }
        Ok(())
    }

    /// Appends `k`, `v` (1, kv_heads, seq, head_dim) for `layer` at position `self.len()`,
    /// returning views over everything cached so far for that layer. The last layer's
    /// call must be followed by [`KvCache::advance`].
    pub fn append(&mut self, layer: usize, k: &Tensor, v: &Tensor) -> Result<(Tensor, Tensor)> {
        let seq = k.dim(2)?;
        let start = self.len;
        let needed = start + seq;
        if needed > self.max_len {
            bail!(
                "context length exceeded: {needed} tokens > the model's context of {}",
                self.max_len
            );
        }
        let max_len = self.max_len;
        let entry = &mut self.layers[layer];
        for (slot, new) in [(&mut entry.k, k), (&mut entry.v, v)] {
            let cap = slot.as_ref().map_or(0, |t| t.dim(2).unwrap_or(0));
            if cap < needed {
                let new_cap = needed
                    .max(cap * 2)
                    .div_ceil(GROWTH_QUANTUM)
                    .saturating_mul(GROWTH_QUANTUM)
                    .min(max_len)
                    .max(needed);
                let (b, h, _, d) = new.dims4()?;
                let grown = Tensor::zeros((b, h, new_cap, d), new.dtype(), new.device())?;
                if let Some(old) = slot.as_ref() {
                    if start > 0 {
                        grown.slice_set(&old.narrow(2, 0, start)?.contiguous()?, 2, 0)?;
                    }
                }
                *slot = Some(grown);
            }
            let store = slot.as_ref().expect("allocated above");
            store.slice_set(&new.contiguous()?, 2, start)?;
        }
        let k_all = entry.k.as_ref().expect("set").narrow(2, 0, needed)?;
        let v_all = entry.v.as_ref().expect("set").narrow(2, 0, needed)?;
        Ok((k_all, v_all))
    }

    /// Marks `n` tokens as cached after every layer appended them.
    pub fn advance(&mut self, n: usize) {
        self.len += n;
    }
}
