//! Linear layer over a ggml block-quantized weight (candle-core's quantized module).

use super::{add_bias, kernels, QuantLinear};
use anyhow::{Context, Result};
use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{DType, Module, Tensor};
use std::sync::Arc;

#[derive(Debug, Clone)]
pub struct GgmlLinear {
    qtensor: Arc<QTensor>,
    matmul: QMatMul,
    bias: Option<Tensor>,
}

impl GgmlLinear {
    pub fn new(qtensor: Arc<QTensor>, bias: Option<Tensor>) -> Result<Self> {
        anyhow::ensure!(
            qtensor.rank() == 2,
            "linear weight must be 2-D, got {:?}",
            qtensor.shape()
        );
        let matmul = QMatMul::from_arc(qtensor.clone())?;
        Ok(Self {
            qtensor,
            matmul,
            bias,
        })
    }

    pub fn qtensor(&self) -> &Arc<QTensor> {
        &self.qtensor
    }

    pub fn ggml_dtype(&self) -> GgmlDType {
        self.qtensor.dtype()
    }

    /// The weight's blocks in CPU memory, where our kernels cover the block type.
    pub fn blocks(&self) -> Option<kernels::PromptWeight<'_>> {
        let kind = kernels::BlockKind::from_ggml(self.qtensor.dtype())?;
        match self.qtensor.data().ok()? {
            std::borrow::Cow::Borrowed(data) => Some(kernels::PromptWeight {
                kind,
                data,
                rows: self.shape().0,
            }),
            std::borrow::Cow::Owned(_) => None,
        }
    }

    /// Prompt-sized products on the CPU through the integer GEMM, where this CPU and block
    /// type have it; None leaves the work to the other paths.
    fn forward_prompt_gemm(&self, x: &Tensor, rows: usize) -> Result<Option<Tensor>> {
        let Some(kind) = kernels::BlockKind::from_ggml(self.qtensor.dtype()) else {
            return Ok(None);
        };
        if rows < kernels::MAX_KERNEL_ROWS
            || !kernels::has_prompt_gemm(kind)
            || !x.device().is_cpu()
        {
            return Ok(None);
        }
        let (out_features, in_features) = self.shape();
        let weight = self.qtensor.data()?;
        let xs: Vec<f32> = x.flatten_all()?.to_vec1()?;
        let mut dims = x.dims().to_vec();
        *dims.last_mut().expect("rank ≥ 1") = out_features;
        let y = kernels::matmul_prompt(kind, &weight, out_features, in_features, &xs, rows);
        Ok(Some(Tensor::from_vec(y, dims, x.device())?))
    }

    /// Few-row products (decode) on the CPU through our SIMD kernels, where they cover
    /// the block type; None leaves the work to candle.
    fn forward_own_kernel(&self, x: &Tensor) -> Result<Option<Tensor>> {
        let Some(kind) = kernels::BlockKind::from_ggml(self.qtensor.dtype()) else {
            return Ok(None);
        };
        let (out_features, in_features) = self.shape();
        let weight = self.qtensor.data()?;
        let limit = if kernels::q8_activations() {
            usize::MAX
        } else {
            kernels::MAX_KERNEL_ROWS
        };
        Ok(kernels::apply_to_rows_below(
            x,
            out_features,
            limit,
            |xs, m| kernels::matmul(kind, &weight, out_features, in_features, xs, m),
        )?)
    }
}

impl QuantLinear for GgmlLinear {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let x = x.to_dtype(DType::F32)?;
        let rows = x.elem_count() / x.dim(candle_core::D::Minus1)?.max(1);
        let y = if let Some(y) = self.forward_prompt_gemm(&x, rows)? {
            y
        } else if let Some(y) = self.forward_own_kernel(&x)? {
            y
        } else if rows >= kernels::MAX_KERNEL_ROWS && matches!(self.matmul, QMatMul::QTensor(_)) {
            // Prompt batches: one dequantization amortised over many rows lets the
            // blocked f32 GEMM run, far faster than a row-by-row quantized dot product.
            let w = self.qtensor.dequantize(&self.qtensor.device())?;
            x.broadcast_matmul(&w.t()?)?
        } else {
            self.matmul
                .forward(&x)
                .with_context(|| format!("{:?} matmul", self.qtensor.dtype()))?
        };
        add_bias(y, self.bias.as_ref())
    }
    fn dequantize(&self) -> Result<Tensor> {
        Ok(self.qtensor.dequantize(&self.qtensor.device())?)
    }
    fn size_in_bytes(&self) -> usize {
        self.qtensor.storage_size_in_bytes()
            + self
                .bias
                .as_ref()
                .map_or(0, |b| b.elem_count() * b.dtype().size_in_bytes())
    }
    fn storage_name(&self) -> String {
        super::isq::ggml_name(self.qtensor.dtype()).to_string()
    }
    fn shape(&self) -> (usize, usize) {
        let d = self.qtensor.shape().dims();
        (d[0], d[1])
    }
    fn bias(&self) -> Option<&Tensor> {
        self.bias.as_ref()
    }
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn quantized_forward_matches_dequantized_matmul() {
        let dev = Device::Cpu;
        for dt in [
            GgmlDType::Q4_0,
            GgmlDType::Q4_1,
            GgmlDType::Q8_0,
            GgmlDType::Q4K,
            GgmlDType::Q6K,
        ] {
            let w = Tensor::randn(0f32, 1.0, (64, 512), &dev).unwrap();
            let x = Tensor::randn(0f32, 1.0, (1, 3, 512), &dev).unwrap();
            let lin = GgmlLinear::new(Arc::new(QTensor::quantize(&w, dt).unwrap()), None).unwrap();
            let y = lin.forward(&x).unwrap();
            let reference = x
                .broadcast_matmul(&lin.dequantize().unwrap().t().unwrap())
                .unwrap();
            let err = (y - &reference)
                .unwrap()
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            let scale = reference
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            eprintln!("{dt:?}: max err {err} of {scale}");
            assert!(err / scale < 0.02, "{dt:?}: {err} vs {scale}");
        }
    }
}
