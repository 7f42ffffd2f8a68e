//! Paged key/value cache. Storage comes in fixed-size blocks of [`BLOCK_TOKENS`] tokens
//! of one layer (that layer's keys and values of those tokens) from a [`BlockPool`] that
//! enforces a memory budget; a sequence's cache is one block table per layer, so
//! sequences grow and shrink without copying or fragmenting, and the scheduler can tell
//! exactly how much room is left before admitting or growing a sequence.
//!
//! A layer with a sliding window hands back the blocks that fell wholly out of its
//! window after each forward pass, so between passes such a layer holds at most
//! `window / BLOCK_TOKENS + 2` blocks however long the sequence grows; only global
//! layers grow with it.
//!
//! Within a block the layout is `[k|v][token][row]` in f32 (rows of kv_heads × head_dim,
//! or for latent attention one latent row and no value rows), so the keys of one token
//! are one contiguous row.

use anyhow::{bail, Result};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// Tokens per block.
pub const BLOCK_TOKENS: usize = 16;

/// The shared allocator of cache blocks, bounded by a block budget.
#[derive(Debug)]
pub struct BlockPool {
    /// The sliding window of each layer (None: the layer keeps every token).
    windows: Vec<Option<usize>>,
    /// f32 values per token of a key and of a value (a value row of 0: latent attention
    /// keeps one row per token).
    k_row: usize,
    v_row: usize,
    capacity: usize,
    in_use: AtomicUsize,
    /// Released blocks kept for reuse (allocating 100s of KiB per block is not free).
    free: Mutex<Vec<Box<[f32]>>>,
}

/// No block is free: the scheduler queues or preempts, it never fails a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the KV cache memory budget is exhausted")]
pub struct KvFull;

/// Blocks needed to hold `tokens` tokens of one global layer.
pub fn blocks_for(tokens: usize) -> usize {
    tokens.div_ceil(BLOCK_TOKENS)
}

impl BlockPool {
    /// A pool of at most `capacity` blocks for a model whose layers have these sliding
    /// windows, with `kv_row = kv_heads × head_dim`.
    pub fn new(windows: Vec<Option<usize>>, kv_row: usize, capacity: usize) -> Arc<Self> {
        Self::with_rows(windows, (kv_row, kv_row), capacity)
    }

    /// A pool whose key and value rows differ (`rows = (key, value)`).
    pub fn with_rows(
        windows: Vec<Option<usize>>,
        (k_row, v_row): (usize, usize),
        capacity: usize,
    ) -> Arc<Self> {
        Arc::new(Self {
            windows,
            k_row,
            v_row,
            capacity,
            in_use: AtomicUsize::new(0),
            free: Mutex::new(Vec::new()),
        })
    }

    /// A pool for `layers` global layers.
    pub fn global(layers: usize, kv_row: usize, capacity: usize) -> Arc<Self> {
        Self::new(vec![None; layers], kv_row, capacity)
    }

    /// A pool without a budget (single-sequence use: CLI, REPL, perplexity, bench).
    pub fn unbounded(windows: Vec<Option<usize>>, kv_row: usize) -> Arc<Self> {
        Self::new(windows, kv_row, usize::MAX)
    }

    /// A pool holding as many blocks as fit in `bytes`.
    pub fn with_budget_bytes(
        windows: Vec<Option<usize>>,
        rows: (usize, usize),
        bytes: usize,
    ) -> Arc<Self> {
        let per_block = Self::block_bytes_for(rows);
        Self::with_rows(windows, rows, bytes / per_block.max(1))
    }

    pub fn block_bytes_for((k_row, v_row): (usize, usize)) -> usize {
        BLOCK_TOKENS * (k_row + v_row) * std::mem::size_of::<f32>()
    }

    pub fn block_bytes(&self) -> usize {
        Self::block_bytes_for((self.k_row, self.v_row))
    }

    pub fn layers(&self) -> usize {
        self.windows.len()
    }

    /// Blocks a prompt of `tokens` tokens takes while it runs: every layer holds all of
    /// it until the pass ends, when windowed layers hand back what fell out of their
    /// window.
    pub fn blocks_for_tokens(&self, tokens: usize) -> usize {
        self.windows.len() * blocks_for(tokens)
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    pub fn used(&self) -> usize {
        self.in_use.load(Ordering::Relaxed)
    }

    pub fn available(&self) -> usize {
        self.capacity.saturating_sub(self.used())
    }

    fn alloc(&self) -> Result<Box<[f32]>, KvFull> {
        let mut used = self.in_use.load(Ordering::Relaxed);
        loop {
            if used >= self.capacity {
                return Err(KvFull);
            }
            match self.in_use.compare_exchange_weak(
                used,
                used + 1,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => break,
                Err(now) => used = now,
            }
        }
        let reused = self.free.lock().ok().and_then(|mut f| f.pop());
        Ok(reused.unwrap_or_else(|| {
            vec![0f32; self.block_bytes() / std::mem::size_of::<f32>()].into_boxed_slice()
        }))
    }

    fn release(&self, block: Box<[f32]>) {
        self.in_use.fetch_sub(1, Ordering::AcqRel);
        if let Ok(mut f) = self.free.lock() {
            f.push(block);
        }
    }
}

/// First block a layer with `window` must keep once `len` tokens are cached: the next
/// query (at position `len`) sees keys from `len + 1 - window` on.
fn first_needed_block(len: usize, window: Option<usize>) -> usize {
    window.map_or(0, |w| (len + 1).saturating_sub(w) / BLOCK_TOKENS)
}

/// One layer's block table: blocks `first..first + blocks.len()` of the sequence.
#[derive(Debug, Default)]
struct LayerBlocks {
    first: usize,
    blocks: VecDeque<Box<[f32]>>,
}

impl LayerBlocks {
    fn end(&self) -> usize {
        self.first + self.blocks.len()
    }
}

/// One sequence's cache: a block table per layer over a shared pool.
#[derive(Debug)]
pub struct KvCache {
    pool: Arc<BlockPool>,
    layers: Vec<LayerBlocks>,
    len: usize,
    max_len: usize,
}

impl KvCache {
    pub fn new(pool: Arc<BlockPool>, max_len: usize) -> Self {
        let layers = (0..pool.layers()).map(|_| LayerBlocks::default()).collect();
        Self {
            pool,
            layers,
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

    /// Forget everything after the first `len` tokens (to reuse a shared prefix), giving
    /// blocks no longer needed back to the pool. A windowed layer that already dropped
    /// keys the shorter prefix would need cannot go back: then everything is forgotten.
    /// Returns the length kept.
    pub fn truncate(&mut self, len: usize) -> usize {
        let len = self.len.min(len);
        let reachable = self
            .layers
            .iter()
            .zip(&self.pool.windows)
            .all(|(l, &w)| l.first <= first_needed_block(len, w) || len == 0);
        let len = if reachable { len } else { 0 };
        self.len = len;
        for layer in &mut self.layers {
            while layer.end() > blocks_for(len) {
                let Some(b) = layer.blocks.pop_back() else {
                    break;
                };
                self.pool.release(b);
            }
            if len == 0 {
                layer.first = 0;
            }
        }
        len
    }

    /// Bytes held by this cache's blocks.
    pub fn size_in_bytes(&self) -> usize {
        self.num_blocks() * self.pool.block_bytes()
    }

    /// Blocks this cache holds, all layers together.
    pub fn num_blocks(&self) -> usize {
        self.layers.iter().map(|l| l.blocks.len()).sum()
    }

    /// Blocks layer `layer` holds.
    pub fn layer_blocks(&self, layer: usize) -> usize {
        self.layers[layer].blocks.len()
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

    /// Extra blocks `n` more tokens would take.
    pub fn blocks_needed(&self, n: usize) -> usize {
        let end = blocks_for(self.len + n);
        self.layers
            .iter()
            .map(|l| end.saturating_sub(l.end()))
            .sum()
    }

    /// Makes sure `n` more tokens have storage. On [`KvFull`] the blocks that were taken
    /// stay with the cache (they will be used by the next attempt).
    pub fn reserve(&mut self, n: usize) -> Result<(), KvFull> {
        let end = blocks_for(self.len + n);
        for layer in &mut self.layers {
            while layer.end() < end {
                let b = self.pool.alloc()?;
                layer.blocks.push_back(b);
            }
        }
        Ok(())
    }

    /// Where token `tok_in_block`'s key (or value) row starts in a block.
    fn offset(&self, value: bool, tok_in_block: usize) -> usize {
        let p = &self.pool;
        if value {
            BLOCK_TOKENS * p.k_row + tok_in_block * p.v_row
        } else {
            tok_in_block * p.k_row
        }
    }

    fn row_len(&self, value: bool) -> usize {
        if value {
            self.pool.v_row
        } else {
            self.pool.k_row
        }
    }

    /// Writes keys and values of `k.len() / k_row` new tokens (token-major) of `layer`
    /// at positions `len()..` (`v` is empty for a pool without value rows). Storage must
    /// have been [`reserved`](Self::reserve); every layer writes the same tokens, then
    /// [`KvCache::advance`] moves the length on.
    pub fn write(&mut self, layer: usize, k: &[f32], v: &[f32]) {
        let (k_row, v_row) = (self.pool.k_row, self.pool.v_row);
        for i in 0..k.len() / k_row {
            let pos = self.len + i;
            let (ko, vo) = (
                self.offset(false, pos % BLOCK_TOKENS),
                self.offset(true, pos % BLOCK_TOKENS),
            );
            let l = &mut self.layers[layer];
            let block = &mut l.blocks[pos / BLOCK_TOKENS - l.first];
            block[ko..ko + k_row].copy_from_slice(&k[i * k_row..(i + 1) * k_row]);
            block[vo..vo + v_row].copy_from_slice(&v[i * v_row..(i + 1) * v_row]);
        }
    }

    /// Read access to one layer's first `tokens` cached positions (those its window
    /// still holds).
    pub fn view(&self, layer: usize, tokens: usize) -> KvView<'_> {
        KvView {
            cache: self,
            layer,
            tokens,
        }
    }

    /// Marks `n` tokens as cached after every layer wrote them, and hands back the
    /// blocks windowed layers no longer need.
    pub fn advance(&mut self, n: usize) {
        self.len += n;
        for (layer, &w) in self.layers.iter_mut().zip(&self.pool.windows) {
            debug_assert!(self.len <= layer.end() * BLOCK_TOKENS);
            let keep_from = first_needed_block(self.len, w);
            while layer.first < keep_from && !layer.blocks.is_empty() {
                let b = layer.blocks.pop_front().expect("non-empty");
                layer.first += 1;
                self.pool.release(b);
            }
        }
    }
}

impl Drop for KvCache {
    fn drop(&mut self) {
        self.truncate(0);
    }
}

/// One layer of a cache, row by row.
#[derive(Clone, Copy)]
pub struct KvView<'a> {
    cache: &'a KvCache,
    layer: usize,
    tokens: usize,
}

impl<'a> KvView<'a> {
    pub fn len(&self) -> usize {
        self.tokens
    }

    pub fn is_empty(&self) -> bool {
        self.tokens == 0
    }

    #[inline]
    fn row(&self, value: bool, pos: usize) -> &'a [f32] {
        let n = self.cache.row_len(value);
        let o = self.cache.offset(value, pos % BLOCK_TOKENS);
        let l = &self.cache.layers[self.layer];
        &l.blocks[pos / BLOCK_TOKENS - l.first][o..o + n]
    }

    /// Keys of position `pos` (`kv_heads × head_dim`).
    #[inline]
    pub fn key(&self, pos: usize) -> &'a [f32] {
        self.row(false, pos)
    }

    #[inline]
    pub fn value(&self, pos: usize) -> &'a [f32] {
        self.row(true, pos)
    }

    /// Keys (or values) of positions `from..len()` as one token-major matrix, for the
    /// GEMM attention of prompts.
    pub fn gather(&self, value: bool, from: usize) -> Vec<f32> {
        let mut out = Vec::with_capacity((self.tokens - from) * self.cache.row_len(value));
        for pos in from..self.tokens {
            out.extend_from_slice(self.row(value, pos));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_round_trip_across_blocks_and_budget_holds() {
        // Two layers, 21 tokens: two blocks per layer.
        let pool = BlockPool::global(2, 3, 5);
        let mut c = KvCache::new(pool.clone(), 100);
        let n = BLOCK_TOKENS + 5;
        c.reserve(n).unwrap();
        assert_eq!(pool.used(), 4);
        for layer in 0..2 {
            let k: Vec<f32> = (0..n * 3).map(|i| (layer * 1000 + i) as f32).collect();
            let v: Vec<f32> = k.iter().map(|x| -x).collect();
            c.write(layer, &k, &v);
        }
        c.advance(n);
        for layer in 0..2 {
            let view = c.view(layer, n);
            for pos in 0..n {
                let base = (layer * 1000 + pos * 3) as f32;
                assert_eq!(view.key(pos), &[base, base + 1.0, base + 2.0]);
                assert_eq!(view.value(pos)[0], -base);
            }
            assert_eq!(view.gather(false, 0).len(), n * 3);
            assert_eq!(view.gather(true, 4).len(), (n - 4) * 3);
        }
        // A second cache gets the one block left, then the pool is full.
        let mut other = KvCache::new(pool.clone(), 100);
        assert_eq!(other.reserve(1), Err(KvFull));
        assert_eq!(pool.used(), 5);
        drop(other);
        assert_eq!(pool.used(), 4);
        assert_eq!(c.truncate(3), 3);
        assert_eq!(pool.used(), 2);
        drop(c);
        assert_eq!(pool.used(), 0);
    }

    /// A windowed layer hands back blocks that fell out of its window; a global one
    /// grows; keys inside the window stay readable; truncating below what the window
    /// kept forgets everything.
    #[test]
    fn sliding_layers_keep_only_their_window() {
        let window = 20;
        let pool = BlockPool::unbounded(vec![Some(window), None], 1);
        let mut c = KvCache::new(pool.clone(), 1000);
        for step in 0..200usize {
            c.reserve(1).unwrap();
            for layer in 0..2 {
                c.write(layer, &[step as f32], &[-(step as f32)]);
            }
            c.advance(1);
            let len = step + 1;
            // The next query (at `len`) sees keys len + 1 - window ..= len.
            let first = (len + 1).saturating_sub(window);
            let view = c.view(0, len);
            for pos in first..len {
                assert_eq!(view.key(pos), &[pos as f32]);
            }
            assert!(c.layer_blocks(0) <= window.div_ceil(BLOCK_TOKENS) + 1);
            assert_eq!(c.layer_blocks(1), blocks_for(len));
        }
        assert_eq!(pool.used(), c.layer_blocks(0) + blocks_for(200));
        // 200 tokens: the windowed layer holds 2 blocks, the global one 13.
        assert_eq!(c.layer_blocks(0), 2);
        assert_eq!(c.truncate(195), 195);
        assert_eq!(c.truncate(100), 0);
        assert_eq!(pool.used(), 0);
    }
}
