//! Dense linear layer in f32, f16 or bf16.

use super::kernels::DenseWeight;
use super::{add_bias, QuantLinear};
use anyhow::Result;
use candle_core::{DType, Tensor};

#[derive(Debug, Clone)]
pub struct UnquantLinear {
    weight: Tensor,
    bias: Option<Tensor>,
}

impl UnquantLinear {
    pub fn new(weight: Tensor, bias: Option<Tensor>) -> Result<Self> {
        anyhow::ensure!(
            weight.rank() == 2,
            "linear weight must be 2-D, got shape {:?}",
            weight.dims()
        );
        if let Some(b) = &bias {
            anyhow::ensure!(
                b.dims() == [weight.dim(0)?],
                "bias shape {:?} does not match weight rows {}",
                b.dims(),
                weight.dim(0)?
            );
        }
        Ok(Self { weight, bias })
    }

    /// The weight as stored (f32, f16 or bf16).
    pub fn weight(&self) -> &Tensor {
        &self.weight
    }
}

impl UnquantLinear {
    /// Decode-sized products of an f32/f16/bf16 weight on the CPU through our SIMD kernel.
    fn forward_dense_kernel(&self, x: &Tensor) -> Result<Option<Tensor>> {
        if !self.weight.device().is_cpu() || !self.weight.is_contiguous() {
            return Ok(None);
        }
        let (rows, cols) = self.shape();
        let (storage, layout) = self.weight.storage_and_layout();
        let candle_core::Storage::Cpu(cpu) = &*storage else {
            return Ok(None);
        };
        let range = layout.start_offset()..layout.start_offset() + rows * cols;
        let weight = match self.weight.dtype() {
            DType::F32 => DenseWeight::F32(&cpu.as_slice::<f32>()?[range]),
            DType::F16 => DenseWeight::F16(&cpu.as_slice::<half::f16>()?[range]),
            DType::BF16 => DenseWeight::BF16(&cpu.as_slice::<half::bf16>()?[range]),
            _ => return Ok(None),
        };
        Ok(super::kernels::apply_to_rows(x, rows, |xs, m| {
            super::kernels::matmul_dense(weight, rows, cols, xs, m)
        })?)
    }
}

impl QuantLinear for UnquantLinear {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if let Some(y) = self.forward_dense_kernel(x)? {
            return add_bias(y, self.bias.as_ref());
        }
        let dtype = self.weight.dtype();
        let x = x.to_dtype(dtype)?;
        let w = self.weight.t()?;
        let y = match x.rank() {
            2 => x.matmul(&w)?,
            _ => x.broadcast_matmul(&w)?,
        };
        add_bias(y.to_dtype(DType::F32)?, self.bias.as_ref())
    }
    fn dequantize(&self) -> Result<Tensor> {
        Ok(self.weight.to_dtype(DType::F32)?)
    }
    fn size_in_bytes(&self) -> usize {
        let n = |t: &Tensor| t.elem_count() * t.dtype().size_in_bytes();
        n(&self.weight) + self.bias.as_ref().map_or(0, n)
    }
    fn storage_name(&self) -> String {
        format!("{:?}", self.weight.dtype()).to_lowercase()
    }
    fn shape(&self) -> (usize, usize) {
        let d = self.weight.dims();
        (d[0], d[1])
    }
    fn bias(&self) -> Option<&Tensor> {
        self.bias.as_ref()
    }
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}
