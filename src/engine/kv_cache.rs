//! Paged key/value cache. Storage comes in fixed-size blocks of [`BLOCK_TOKENS`] tokens
//! (all layers' keys and values of those tokens) from a [`BlockPool`] that enforces a
//! memory budget; a sequence's cache is its list of blocks (its block table), so sequences
//! grow and shrink without copying or fragmenting, and the scheduler can tell exactly how
//! much room is left before admitting or growing a sequence.
//!
//! Within a block the layout is `[layer][k|v][token][kv_heads × head_dim]` in f32, so the
//! keys of one token of one layer are one contiguous row.

use anyhow::{bail, Result};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// Tokens per block.
pub const BLOCK_TOKENS: usize = 16;

/// The shared allocator of cache blocks, bounded by a block budget.
#[derive(Debug)]
pub struct BlockPool {
    layers: usize,
    kv_row: usize,
    capacity: usize,
    in_use: AtomicUsize,
    /// Released blocks kept for reuse (allocating 100s of KiB per block is not free).
    free: Mutex<Vec<Box<[f32]>>>,
}

/// No block is free: the scheduler queues or preempts, it never fails a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the KV cache memory budget is exhausted")]
pub struct KvFull;

impl BlockPool {
    /// A pool of at most `capacity` blocks for a model with `layers` layers and
    /// `kv_row = kv_heads × head_dim`.
    pub fn new(layers: usize, kv_row: usize, capacity: usize) -> Arc<Self> {
        Arc::new(Self {
            layers,
            kv_row,
            capacity,
            in_use: AtomicUsize::new(0),
            free: Mutex::new(Vec::new()),
        })
    }

    /// A pool without a budget (single-sequence use: CLI, REPL, perplexity, bench).
    pub fn unbounded(layers: usize, kv_row: usize) -> Arc<Self> {
        Self::new(layers, kv_row, usize::MAX)
    }

    /// A pool holding as many blocks as fit in `bytes`.
    pub fn with_budget_bytes(layers: usize, kv_row: usize, bytes: usize) -> Arc<Self> {
        let per_block = Self::block_bytes_for(layers, kv_row);
        Self::new(layers, kv_row, bytes / per_block.max(1))
    }

    pub fn block_bytes_for(layers: usize, kv_row: usize) -> usize {
        layers * 2 * BLOCK_TOKENS * kv_row * std::mem::size_of::<f32>()
    }

    pub fn block_bytes(&self) -> usize {
        Self::block_bytes_for(self.layers, self.kv_row)
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

/// One sequence's cache: a block table over a shared pool.
#[derive(Debug)]
pub struct KvCache {
    pool: Arc<BlockPool>,
    blocks: Vec<Box<[f32]>>,
    len: usize,
    max_len: usize,
}

/// Blocks needed to hold `tokens` tokens.
pub fn blocks_for(tokens: usize) -> usize {
    tokens.div_ceil(BLOCK_TOKENS)
}

impl KvCache {
    pub fn new(pool: Arc<BlockPool>, max_len: usize) -> Self {
        Self {
            pool,
            blocks: Vec::new(),
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
    /// blocks no longer needed back to the pool.
    pub fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
        while self.blocks.len() > blocks_for(self.len) {
            let b = self.blocks.pop().expect("non-empty");
            self.pool.release(b);
        }
    }

    /// Bytes held by this cache's blocks.
    pub fn size_in_bytes(&self) -> usize {
        self.blocks.len() * self.pool.block_bytes()
    }

    /// Blocks this cache holds.
    pub fn num_blocks(&self) -> usize {
        self.blocks.len()
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
        blocks_for(self.len + n).saturating_sub(self.blocks.len())
    }

    /// Makes sure `n` more tokens have storage. On [`KvFull`] the blocks that were taken
    /// stay with the cache (they will be used by the next attempt).
    pub fn reserve(&mut self, n: usize) -> Result<(), KvFull> {
        while self.blocks.len() < blocks_for(self.len + n) {
            let b = self.pool.alloc()?;
            self.blocks.push(b);
        }
        Ok(())
    }

    fn offset(&self, layer: usize, value: bool, tok_in_block: usize) -> usize {
        let kv_row = self.pool.kv_row;
        ((layer * 2 + value as usize) * BLOCK_TOKENS + tok_in_block) * kv_row
    }

    /// Writes keys and values of `k.len() / kv_row` new tokens (token-major) of `layer`
    /// at positions `len()..`. Storage must have been [`reserved`](Self::reserve); every
    /// layer writes the same tokens, then [`KvCache::advance`] moves the length on.
    pub fn write(&mut self, layer: usize, k: &[f32], v: &[f32]) {
        let kv_row = self.pool.kv_row;
        for (i, (kr, vr)) in k
            .chunks_exact(kv_row)
            .zip(v.chunks_exact(kv_row))
            .enumerate()
        {
            let pos = self.len + i;
            let (ko, vo) = (
                self.offset(layer, false, pos % BLOCK_TOKENS),
                self.offset(layer, true, pos % BLOCK_TOKENS),
            );
            let block = &mut self.blocks[pos / BLOCK_TOKENS];
            block[ko..ko + kv_row].copy_from_slice(kr);
            block[vo..vo + kv_row].copy_from_slice(vr);
        }
    }

    /// Read access to one layer's first `tokens` cached positions.
    pub fn view(&self, layer: usize, tokens: usize) -> KvView<'_> {
        KvView {
            cache: self,
            layer,
            tokens,
        }
    }

    /// Marks `n` tokens as cached after every layer wrote them.
    pub fn advance(&mut self, n: usize) {
        self.len += n;
        debug_assert!(self.len <= self.blocks.len() * BLOCK_TOKENS);
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
        let kv_row = self.cache.pool.kv_row;
        let o = self.cache.offset(self.layer, value, pos % BLOCK_TOKENS);
        &self.cache.blocks[pos / BLOCK_TOKENS][o..o + kv_row]
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

    /// All keys (or values) as one token-major matrix, for the GEMM attention of prompts.
    pub fn gather(&self, value: bool) -> Vec<f32> {
        let mut out = Vec::with_capacity(self.tokens * self.cache.pool.kv_row);
        for pos in 0..self.tokens {
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
        let pool = BlockPool::new(2, 3, 3);
        let mut c = KvCache::new(pool.clone(), 100);
        let n = BLOCK_TOKENS + 5;
        c.reserve(n).unwrap();
        assert_eq!(pool.used(), 2);
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
            assert_eq!(view.gather(false).len(), n * 3);
        }
        // A second cache gets the one block left, then the pool is full.
        let mut other = KvCache::new(pool.clone(), 100);
        other.reserve(BLOCK_TOKENS).unwrap();
        assert_eq!(other.reserve(BLOCK_TOKENS + 1), Err(KvFull));
        drop(other);
        assert_eq!(pool.used(), 2);
        c.truncate(3);
        assert_eq!(pool.used(), 1);
        drop(c);
        assert_eq!(pool.used(), 0);
    }
}
