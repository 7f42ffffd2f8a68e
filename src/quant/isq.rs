//! In-situ quantization types: parsing `--isq`, block-size fallbacks, quantizing a weight.

use super::{GgmlLinear, QuantLinear};
use anyhow::{bail, Result};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{DType, Tensor};
use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Wall time spent quantizing since the last [`take_isq_seconds`], for load reports.
static ISQ_NANOS: AtomicU64 = AtomicU64::new(0);

/// Returns and resets the time spent in ISQ.
pub fn take_isq_seconds() -> f64 {
    ISQ_NANOS.swap(0, Ordering::Relaxed) as f64 / 1e9
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IsqType {
    Ggml(GgmlDType),
    /// HQQ, group 64 (`quant/hqq.rs`); bits 4 or 8, grouped along hqq's `axis`.
    Hqq {
        bits: u8,
        axis: super::hqq::HqqAxis,
    },
    /// FP8 E4M3 with a scale per row (`quant/fp8.rs`).
    Fp8,
    /// MLX affine quantization, group 64 (`quant/afq.rs`); bits 2, 3, 4, 6 or 8.
    Afq {
        bits: u8,
    },
    /// MXFP4: E2M1 in blocks of 32 with an E8M0 scale (`quant/mxfp4.rs`).
    Mxfp4,
}

/// The non-ggml methods, by name.
const METHOD_TYPES: &[(IsqType, &str)] = &[
    // `HQQ4` / `HQQ8` are the default grouping (hqq::default_axis); both can be named.
    (
        IsqType::Hqq {
            bits: 4,
            axis: super::hqq::default_axis(4),
        },
        "HQQ4",
    ),
    (
        IsqType::Hqq {
            bits: 8,
            axis: super::hqq::default_axis(8),
        },
        "HQQ8",
    ),
    (
        IsqType::Hqq {
            bits: 4,
            axis: super::hqq::HqqAxis::Strided,
        },
        "HQQ4_AXIS0",
    ),
    (
        IsqType::Hqq {
            bits: 8,
            axis: super::hqq::HqqAxis::Strided,
        },
        "HQQ8_AXIS0",
    ),
    (
        IsqType::Hqq {
            bits: 4,
            axis: super::hqq::HqqAxis::Contiguous,
        },
        "HQQ4_AXIS1",
    ),
    (
        IsqType::Hqq {
            bits: 8,
            axis: super::hqq::HqqAxis::Contiguous,
        },
        "HQQ8_AXIS1",
    ),
    (IsqType::Fp8, "FP8"),
    (IsqType::Afq { bits: 2 }, "AFQ2"),
    (IsqType::Afq { bits: 3 }, "AFQ3"),
    (IsqType::Afq { bits: 4 }, "AFQ4"),
    (IsqType::Afq { bits: 6 }, "AFQ6"),
    (IsqType::Afq { bits: 8 }, "AFQ8"),
    (IsqType::Mxfp4, "MXFP4"),
];

const GGML_TYPES: &[(GgmlDType, &str)] = &[
    (GgmlDType::Q4_0, "Q4_0"),
    (GgmlDType::Q4_1, "Q4_1"),
    (GgmlDType::Q5_0, "Q5_0"),
    (GgmlDType::Q5_1, "Q5_1"),
    (GgmlDType::Q8_0, "Q8_0"),
    (GgmlDType::Q8_1, "Q8_1"),
    (GgmlDType::Q2K, "Q2K"),
    (GgmlDType::Q3K, "Q3K"),
    (GgmlDType::Q4K, "Q4K"),
    (GgmlDType::Q5K, "Q5K"),
    (GgmlDType::Q6K, "Q6K"),
    (GgmlDType::Q8K, "Q8K"),
];

pub fn ggml_name(t: GgmlDType) -> &'static str {
    match t {
        GgmlDType::F32 => "F32",
        GgmlDType::F16 => "F16",
        GgmlDType::BF16 => "BF16",
        other => GGML_TYPES
            .iter()
            .find(|(d, _)| *d == other)
            .map_or("?", |(_, n)| n),
    }
}

impl IsqType {
    pub const Q4_0: Self = Self::Ggml(GgmlDType::Q4_0);
    pub const Q4_1: Self = Self::Ggml(GgmlDType::Q4_1);
    pub const Q5_0: Self = Self::Ggml(GgmlDType::Q5_0);
    pub const Q5_1: Self = Self::Ggml(GgmlDType::Q5_1);
    pub const Q8_0: Self = Self::Ggml(GgmlDType::Q8_0);
    pub const Q8_1: Self = Self::Ggml(GgmlDType::Q8_1);
    pub const Q2K: Self = Self::Ggml(GgmlDType::Q2K);
    pub const Q3K: Self = Self::Ggml(GgmlDType::Q3K);
    pub const Q4K: Self = Self::Ggml(GgmlDType::Q4K);
    pub const Q5K: Self = Self::Ggml(GgmlDType::Q5K);
    pub const Q6K: Self = Self::Ggml(GgmlDType::Q6K);
    pub const Q8K: Self = Self::Ggml(GgmlDType::Q8K);

    /// Every accepted spelling, for error messages.
    pub fn valid_names() -> String {
        let names: Vec<&str> = GGML_TYPES
            .iter()
            .map(|(_, n)| *n)
            .chain(METHOD_TYPES.iter().map(|(_, n)| *n))
            .collect();
        format!("{} (or a bit width 2, 3, 4, 5, 6, 8)", names.join(", "))
    }

    /// The type a bare bit width stands for on the CPU (mistral.rs' mapping).
    pub fn from_bits(bits: u32) -> Option<Self> {
        let t = match bits {
            2 => GgmlDType::Q2K,
            3 => GgmlDType::Q3K,
            4 => GgmlDType::Q4K,
            5 => GgmlDType::Q5K,
            6 => GgmlDType::Q6K,
            8 => GgmlDType::Q8_0,
            _ => return None,
        };
        Some(Self::Ggml(t))
    }

    pub fn name(&self) -> &'static str {
        match self {
            Self::Ggml(t) => ggml_name(*t),
            other => METHOD_TYPES
                .iter()
                .find(|(t, _)| t == other)
                .map_or("?", |(_, n)| n),
        }
    }

    fn block_size(&self) -> usize {
        match self {
            Self::Ggml(t) => t.block_size(),
            Self::Hqq { .. } => super::hqq::DEFAULT_GROUP,
            Self::Afq { .. } => super::afq::DEFAULT_GROUP,
            // One scale per row: any row length.
            Self::Fp8 => 1,
            Self::Mxfp4 => super::mxfp4::BLOCK,
        }
    }

    /// llama.cpp's step-down for rows that do not divide the K-quant super-block.
    fn fallback(&self) -> Option<Self> {
        let t = match self {
            Self::Ggml(GgmlDType::Q2K | GgmlDType::Q3K) => GgmlDType::Q4_0,
            Self::Ggml(GgmlDType::Q4K) => GgmlDType::Q5_0,
            Self::Ggml(GgmlDType::Q5K) => GgmlDType::Q5_1,
            Self::Ggml(GgmlDType::Q6K | GgmlDType::Q8K) => GgmlDType::Q8_0,
            _ => return None,
        };
        Some(Self::Ggml(t))
    }

    /// The type actually used for rows of `row_len` elements; None keeps the layer dense.
    /// Warns once per step-down taken.
    pub fn for_row_len(&self, row_len: usize) -> Option<Self> {
        let used = self.resolve_row_len(row_len);
        if used != Some(*self) {
            warn_fallback_once(*self, used);
        }
        used
    }

    /// [`Self::for_row_len`] without the warning (for weighing candidates).
    pub fn resolve_row_len(&self, row_len: usize) -> Option<Self> {
        let mut t = *self;
        loop {
            if row_len.is_multiple_of(t.block_size()) {
                return Some(t);
            }
            t = t.fallback()?;
        }
    }
}

impl std::str::FromStr for IsqType {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        let trimmed = s.trim();
        if let Ok(bits) = trimmed.parse::<u32>() {
            return Self::from_bits(bits).ok_or_else(|| {
                anyhow::anyhow!(
                    "no ISQ type for {bits} bits; valid: {}",
                    Self::valid_names()
                )
            });
        }
        // Accept Q4K, q4k, Q4_K, q4_k alike.
        let canon = trimmed.to_ascii_uppercase().replace("_K", "K");
        for (t, name) in GGML_TYPES {
            if name.replace("_K", "K") == canon {
                return Ok(Self::Ggml(*t));
            }
        }
        for (t, name) in METHOD_TYPES {
            if *name == canon {
                return Ok(*t);
            }
        }
        bail!("unknown ISQ type `{s}`; valid: {}", Self::valid_names())
    }
}

impl std::fmt::Display for IsqType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// (requested type, type used instead or None for dense) pairs already warned about.
type FallbackSeen = Mutex<Option<HashSet<(IsqType, Option<IsqType>)>>>;

fn warn_fallback_once(requested: IsqType, used: Option<IsqType>) {
    static SEEN: FallbackSeen = Mutex::new(None);
    let mut seen = SEEN.lock().unwrap_or_else(|e| e.into_inner());
    if seen
        .get_or_insert_with(HashSet::new)
        .insert((requested, used))
    {
        match used {
            Some(u) => tracing::warn!(
                "rows not divisible by the {requested} block size: those tensors use {u} (as llama.cpp does)"
            ),
            None => tracing::warn!(
                "rows not divisible by the {requested} block size: those tensors stay unquantized"
            ),
        }
    }
}

/// Quantize a dense (out, in) weight to `ty`, stepping down per llama.cpp when the row
/// length does not divide the block; a layer no type fits stays dense (HQQ and AFQ have no
/// step-down: rows that are not a whole number of 64-element groups stay dense, with a
/// warning).
pub fn quantize_linear(
    weight: &Tensor,
    bias: Option<Tensor>,
    ty: IsqType,
) -> Result<Arc<dyn QuantLinear>> {
    quantize_linear_weighted(weight, bias, ty, None)
}

/// [`quantize_linear`] with per-column importances from an imatrix, used by the types
/// llama.cpp uses them for (including the fallback types of rows that do not divide).
pub fn quantize_linear_weighted(
    weight: &Tensor,
    bias: Option<Tensor>,
    ty: IsqType,
    imatrix: Option<&[f32]>,
) -> Result<Arc<dyn QuantLinear>> {
    let start = Instant::now();
    let (_, cols) = weight.dims2()?;
    let weight = weight.to_dtype(DType::F32)?;
    let out: Arc<dyn QuantLinear> = match ty.for_row_len(cols) {
        Some(IsqType::Ggml(dt)) => {
            let q = match imatrix {
                Some(im) if super::weighted::uses_imatrix(dt) => {
                    super::weighted::quantize(&weight, dt, im)?
                }
                _ => quantize_ggml(&weight, dt)?,
            };
            Arc::new(GgmlLinear::new(Arc::new(q), bias)?)
        }
        Some(method) => quantize_method(&weight, bias, method)?,
        None => Arc::new(super::UnquantLinear::new(weight, bias)?),
    };
    ISQ_NANOS.fetch_add(start.elapsed().as_nanos() as u64, Ordering::Relaxed);
    Ok(out)
}

/// Quantizes a 2-D f32 tensor with one of the non-ggml methods.
fn quantize_method(
    weight: &Tensor,
    bias: Option<Tensor>,
    ty: IsqType,
) -> Result<Arc<dyn QuantLinear>> {
    let (rows, cols) = weight.dims2()?;
    let data: Vec<f32> = weight.flatten_all()?.to_vec1()?;
    Ok(match ty {
        IsqType::Hqq { bits, axis } => Arc::new(super::HqqLinear::quantize_axis(
            &data,
            rows,
            cols,
            bits.into(),
            super::hqq::DEFAULT_GROUP,
            axis,
            bias,
        )?),
        IsqType::Afq { bits } => Arc::new(super::AfqLinear::quantize(
            &data,
            rows,
            cols,
            bits.into(),
            super::afq::DEFAULT_GROUP,
            bias,
        )?),
        IsqType::Fp8 => Arc::new(super::Fp8Linear::quantize(&data, rows, cols, bias)?),
        IsqType::Mxfp4 => Arc::new(super::Mxfp4Linear::quantize(&data, rows, cols, bias)?),
        IsqType::Ggml(t) => bail!("{t:?} is a ggml type"),
    })
}

/// Quantizes a 2-D f32 tensor to a ggml type: our own quantizers where candle's differ
/// from ggml's reference (Q2_K, Q4_K, Q5_K, Q6_K), candle's where they match byte for byte.
fn quantize_ggml(weight: &Tensor, dt: GgmlDType) -> Result<QTensor> {
    let kind = match dt {
        GgmlDType::Q2K => super::kquants::KQuant::Q2K,
        GgmlDType::Q4K => super::kquants::KQuant::Q4K,
        GgmlDType::Q5K => super::kquants::KQuant::Q5K,
        GgmlDType::Q6K => super::kquants::KQuant::Q6K,
        _ => return Ok(QTensor::quantize(weight, dt)?),
    };
    let (rows, cols) = weight.dims2()?;
    let data: Vec<f32> = weight.flatten_all()?.to_vec1()?;
    let bytes = super::kquants::quantize(kind, &data, cols);
    Ok(candle_core::quantized::ggml_file::qtensor_from_ggml(
        dt,
        &bytes,
        vec![rows, cols],
        weight.device(),
    )?)
}

/// The raw ggml blocks of a block-quantized layer (None for other storage).
pub fn quantized_bytes(lin: &dyn QuantLinear) -> Option<Vec<u8>> {
    let any = lin.as_any().downcast_ref::<GgmlLinear>()?;
    Some(any.qtensor().data().ok()?.into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_spellings() {
        for s in ["Q4K", "q4k", "Q4_K", "q4_k", "4"] {
            assert_eq!(
                s.parse::<IsqType>().unwrap(),
                IsqType::Ggml(GgmlDType::Q4K),
                "{s}"
            );
        }
        assert_eq!(
            "q8_0".parse::<IsqType>().unwrap(),
            IsqType::Ggml(GgmlDType::Q8_0)
        );
        assert_eq!(
            "8".parse::<IsqType>().unwrap(),
            IsqType::Ggml(GgmlDType::Q8_0)
        );
        let err = "Q7".parse::<IsqType>().unwrap_err().to_string();
        assert!(
            err.contains("unknown ISQ type") && err.contains("Q4_0"),
            "{err}"
        );
        assert!("7".parse::<IsqType>().is_err());
    }

    #[test]
    fn parses_method_names() {
        let cases = [
            (
                "HQQ4",
                IsqType::Hqq {
                    bits: 4,
                    axis: crate::quant::hqq::default_axis(4),
                },
            ),
            (
                "hqq8",
                IsqType::Hqq {
                    bits: 8,
                    axis: crate::quant::hqq::default_axis(8),
                },
            ),
            ("fp8", IsqType::Fp8),
            ("AFQ2", IsqType::Afq { bits: 2 }),
            ("afq3", IsqType::Afq { bits: 3 }),
            (" Afq4 ", IsqType::Afq { bits: 4 }),
            ("AFQ6", IsqType::Afq { bits: 6 }),
            ("afq8", IsqType::Afq { bits: 8 }),
        ];
        for (s, t) in cases {
            assert_eq!(s.parse::<IsqType>().unwrap(), t, "{s}");
            assert_eq!(t.to_string(), s.trim().to_ascii_uppercase());
        }
        for bad in ["HQQ3", "AFQ5", "FP4", "AFQ"] {
            let err = bad.parse::<IsqType>().unwrap_err().to_string();
            assert!(err.contains("HQQ4") && err.contains("AFQ6"), "{err}");
        }
        // Bare bit widths still mean ggml types.
        assert_eq!("4".parse::<IsqType>().unwrap(), IsqType::Q4K);
        // No step-down for the grouped methods: rows of 576 fit, rows of 100 stay dense.
        assert_eq!(
            IsqType::Afq { bits: 4 }.for_row_len(576),
            Some(IsqType::Afq { bits: 4 })
        );
        assert_eq!(
            IsqType::Hqq {
                bits: 4,
                axis: crate::quant::hqq::default_axis(4)
            }
            .for_row_len(100),
            None
        );
        assert_eq!(IsqType::Fp8.for_row_len(100), Some(IsqType::Fp8));
    }

    #[test]
    fn falls_back_like_llama_cpp() {
        let q = |s: &str| s.parse::<IsqType>().unwrap();
        assert_eq!(q("Q4K").for_row_len(576), Some(q("Q5_0")));
        assert_eq!(q("Q5K").for_row_len(576), Some(q("Q5_1")));
        assert_eq!(q("Q6K").for_row_len(576), Some(q("Q8_0")));
        assert_eq!(q("Q2K").for_row_len(576), Some(q("Q4_0")));
        assert_eq!(q("Q3K").for_row_len(576), Some(q("Q4_0")));
        assert_eq!(q("Q4K").for_row_len(1536), Some(q("Q4K")));
        assert_eq!(q("Q4_0").for_row_len(40), None);
    }
}
