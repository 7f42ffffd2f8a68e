//! Per-sequence key/value cache in plain f32 storage, token-major
//! (`[position][kv_head][head_dim]` per layer), so appending a token is one contiguous
//! copy and growth never re-lays-out what is there. Storage grows with the sequence (no
//! full-context preallocation, so short chats stay small).

use anyhow::{bail, Result};

#[derive(Debug, Clone, Default)]
pub struct LayerKv {
    pub k: Vec<f32>,
    pub v: Vec<f32>,
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
        self.truncate(0);
    }

    /// Forget everything after the first `len` tokens (to reuse a shared prefix).
    pub fn truncate(&mut self, len: usize) {
        let len = self.len.min(len);
        for l in &mut self.layers {
            let row = l.k.len().checked_div(self.len).unwrap_or(0);
            l.k.truncate(len * row);
            l.v.truncate(len * row);
        }
        self.len = len;
    }

    /// Bytes held by the cache storage.
    pub fn size_in_bytes(&self) -> usize {
        self.layers
            .iter()
            .map(|l| (l.k.capacity() + l.v.capacity()) * 4)
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

    /// Appends keys and values of new tokens (token-major, `kv_heads × head_dim` each) to
    /// `layer` and returns the layer's whole cache. Every layer appends the same number
    /// of tokens; [`KvCache::advance`] then moves the length on.
    pub fn append(&mut self, layer: usize, k: &[f32], v: &[f32]) -> &LayerKv {
        let entry = &mut self.layers[layer];
        entry.k.extend_from_slice(k);
        entry.v.extend_from_slice(v);
        entry
    }

    /// Marks `n` tokens as cached after every layer appended them.
    pub fn advance(&mut self, n: usize) {
        self.len += n;
    }
}
