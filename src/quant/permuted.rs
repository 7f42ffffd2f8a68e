//! A linear whose input columns are stored in another order: `y = W x` computed as
//! `W' x[perm]` with `W'[:, j] = W[:, perm[j]]`. GPTQ's act-order checkpoints need it: their
//! quantization groups gather input columns that are not contiguous, and reordering the
//! columns makes every group contiguous for the affine kernels.

use super::QuantLinear;
use anyhow::{ensure, Result};
use candle_core::{Tensor, D};
use std::sync::Arc;

#[derive(Debug)]
pub struct PermutedLinear {
    inner: Arc<dyn QuantLinear>,
    /// perm[j]: the original input column stored at position j.
    perm: Tensor,
    /// The inverse, to put dequantized columns back in place.
    inverse: Tensor,
}

impl PermutedLinear {
    pub fn new(inner: Arc<dyn QuantLinear>, perm: &[u32]) -> Result<Self> {
        let cols = inner.shape().1;
        ensure!(
            perm.len() == cols,
            "permutation of {} columns for {cols}",
            perm.len()
        );
        let mut inverse = vec![u32::MAX; cols];
        for (j, &p) in perm.iter().enumerate() {
            ensure!(
                (p as usize) < cols && inverse[p as usize] == u32::MAX,
                "not a permutation of 0..{cols}"
            );
            inverse[p as usize] = j as u32;
        }
        let dev = candle_core::Device::Cpu;
        Ok(Self {
            inner,
            perm: Tensor::new(perm, &dev)?,
            inverse: Tensor::new(inverse.as_slice(), &dev)?,
        })
    }
}

impl QuantLinear for PermutedLinear {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let xp = x.contiguous()?.index_select(&self.perm, x.rank() - 1)?;
        self.inner.forward(&xp)
    }
    fn dequantize(&self) -> Result<Tensor> {
        Ok(self.inner.dequantize()?.index_select(&self.inverse, 1)?)
    }
    fn size_in_bytes(&self) -> usize {
        self.inner.size_in_bytes() + self.perm.dim(D::Minus1).unwrap_or(0) * 8
    }
    fn storage_name(&self) -> String {
        format!("{} (act-order)", self.inner.storage_name())
    }
    fn shape(&self) -> (usize, usize) {
        self.inner.shape()
    }
    fn bias(&self) -> Option<&Tensor> {
        self.inner.bias()
    }
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}
