//! Quantized linear layers. Every model calls linears only through [`QuantLinear`], so a
//! new quantization method is one new file here and no model changes.

pub mod afq;
pub mod auto;
pub mod bnb;
pub mod fp8;
pub mod ggml;
pub mod hqq;
pub mod imatrix;
pub mod isq;
pub mod kernels;
pub mod kquants;
pub mod mxfp4;
pub mod organization;
pub mod packing;
pub mod permuted;
pub mod topology;
pub mod unquantized;
pub mod uqff;
pub mod uqff_residual;
pub mod weighted;

use anyhow::Result;
use candle_core::{DType, Tensor};
use std::sync::Arc;

pub use afq::AfqLinear;
pub use bnb::{Bnb4Linear, BnbInt8Linear};
pub use fp8::Fp8Linear;
pub use ggml::GgmlLinear;
pub use hqq::HqqLinear;
pub use isq::IsqType;
pub use mxfp4::Mxfp4Linear;
pub use organization::IsqOrganization;
pub use topology::Topology;
pub use unquantized::UnquantLinear;

/// One linear layer `y = x Wᵀ (+ b)`, whatever its storage.
pub trait QuantLinear: Send + Sync + std::fmt::Debug {
    /// `x`: (..., in_features) f32 → (..., out_features) f32.
    fn forward(&self, x: &Tensor) -> Result<Tensor>;
    /// The weight as a dense f32 (out_features, in_features) matrix.
    fn dequantize(&self) -> Result<Tensor>;
    /// Bytes the weight (and bias) occupy in memory.
    fn size_in_bytes(&self) -> usize;
    /// A short name of the storage: "f32", "bf16", "Q4_1", …
    fn storage_name(&self) -> String;
    /// (out_features, in_features).
    fn shape(&self) -> (usize, usize);
    fn bias(&self) -> Option<&Tensor>;
    /// For inspecting the concrete storage (tests, format writers).
    fn as_any(&self) -> &dyn std::any::Any;
    /// Quantize this layer to `ty`, from its current weights.
    fn apply_isq(&self, ty: IsqType) -> Result<Arc<dyn QuantLinear>> {
        isq::quantize_linear(&self.dequantize()?, self.bias().cloned(), ty)
    }
}

/// Adds the bias, if any, in f32.
pub(crate) fn add_bias(y: Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
    Ok(match bias {
        Some(b) => y.broadcast_add(&b.to_dtype(DType::F32)?)?,
        None => y,
    })
}
