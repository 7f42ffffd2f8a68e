//! Dense linear layer in f32, f16 or bf16.

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
}

impl QuantLinear for UnquantLinear {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
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
}
