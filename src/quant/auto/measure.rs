//! The error of each candidate type on one weight, from a sample of its rows.
//!
//! For a linear `y = W x` with per-column importances `m_j = E[x_j²]` (an imatrix, or 1
//! without one), `Σ_ij m_j (W_ij − Ŵ_ij)²` is the expected squared error the quantized
//! weight adds to `y` per token (cross-column correlations ignored, as llama.cpp's
//! quantizers do). For an embedding the error of a looked-up row is `‖e_r − ê_r‖²`,
//! averaged over rows. Quantization blocks run along rows (and HQQ's axis-0 groups over
//! 64 rows), so the error of whole blocks of 64 rows, spread evenly over the weight,
//! estimates the whole weight's error at a fraction of the cost of quantizing it all.

use crate::quant::isq::quantize_linear_weighted;
use crate::quant::IsqType;
use anyhow::{ensure, Result};
use candle_core::quantized::GgmlDType;
use candle_core::{DType, Tensor};
use rayon::prelude::*;

/// Rows per sampled block: whole HQQ axis-0 groups.
const BLOCK_ROWS: usize = 64;
/// About one row in this many is measured.
const SAMPLE_EVERY: usize = 32;
/// Weights of at most this many rows are measured whole.
const SMALL_ROWS: usize = 128;

/// Squared differences summed over the sampled rows, without and with the column
/// importances, scaled to the whole weight: `per_row` is the mean over rows (what a
/// looked-up embedding row gets), `per_token` the sum over rows weighted by the
/// importances (what a linear's output gets).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Error {
    pub per_row: f64,
    pub per_token: f64,
}

/// One candidate's cost and error on one weight.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Measured {
    /// None: kept in its load storage.
    pub ty: Option<IsqType>,
    /// Bytes of the whole weight in this type (bias excluded).
    pub bytes: u64,
    pub error: Error,
}

/// The errors of the candidates on one weight, and the same sums over the weight itself
/// (its output's expected squared norm, logged beside the errors for scale).
#[derive(Debug, Clone)]
pub struct WeightErrors {
    pub options: Vec<Measured>,
    pub signal: Error,
    /// The weight's rows, the rows measured, and per option the importance-weighted
    /// error of each measured row (for [`Self::scale_rows`]).
    rows: usize,
    sampled: Vec<usize>,
    row_errors: Vec<Vec<f64>>,
}

impl WeightErrors {
    /// Errors known as totals only (no per-row detail to rescale).
    pub fn from_totals(options: Vec<Measured>, signal: Error) -> Self {
        let row_errors = vec![Vec::new(); options.len()];
        Self {
            options,
            signal,
            rows: 0,
            sampled: Vec::new(),
            row_errors,
        }
    }

    /// Rows of the weight measured.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Scales output row `i`'s error by `gain(i)`: the error as a consumer that amplifies
    /// that output by `gain(i)` passes it on (a value projection's rows, through the
    /// output projection's columns that read them).
    pub fn scale_rows(&mut self, gain: impl Fn(usize) -> f64) {
        if self.sampled.is_empty() {
            return;
        }
        let scale = self.rows as f64 / self.sampled.len() as f64;
        for (o, errs) in self.options.iter_mut().zip(&self.row_errors) {
            if errs.is_empty() {
                continue; // kept as loaded: no error
            }
            o.error.per_token = self
                .sampled
                .iter()
                .zip(errs)
                .map(|(&r, e)| gain(r) * e)
                .sum::<f64>()
                * scale;
        }
    }
}

/// The rows measured: all of a small weight, else evenly spaced blocks of 64.
pub fn sample_rows(rows: usize) -> Vec<usize> {
    if rows <= SMALL_ROWS {
        return (0..rows).collect();
    }
    let blocks = rows / BLOCK_ROWS;
    let take = blocks.div_ceil(SAMPLE_EVERY).min(blocks);
    (0..take)
        .flat_map(|i| {
            let b = i * blocks / take;
            b * BLOCK_ROWS..(b + 1) * BLOCK_ROWS
        })
        .collect()
}

/// Measures every candidate on `weight` (any float dtype), with importances `importance`
/// per column (None: uniform) used both by the quantizers that take them and by the
/// error. `keep_bytes` is the cost of leaving the weight as loaded (error 0).
pub fn measure(
    weight: &Tensor,
    importance: Option<&[f32]>,
    candidates: &[IsqType],
    keep_bytes: u64,
) -> Result<WeightErrors> {
    let (rows, cols) = weight.dims2()?;
    if let Some(m) = importance {
        ensure!(
            m.len() == cols,
            "the importances have {} values for {cols} columns",
            m.len()
        );
    }
    let picked = sample_rows(rows);
    let idx = Tensor::from_vec(
        picked.iter().map(|&r| r as u32).collect::<Vec<_>>(),
        picked.len(),
        weight.device(),
    )?;
    let sample = weight.index_select(&idx, 0)?.to_dtype(DType::F32)?;
    let orig: Vec<f32> = sample.flatten_all()?.to_vec1()?;
    let n = picked.len() as f64;
    // Per measured row: (Σ Δ², Σ m_j Δ²).
    let sums = |diff: &dyn Fn(usize) -> f64| -> (Error, Vec<f64>) {
        let mut plain = 0.0f64;
        let mut per_row = vec![0.0f64; picked.len()];
        for i in 0..orig.len() {
            let d2 = diff(i).powi(2);
            plain += d2;
            per_row[i / cols] += importance.map_or(1.0, |m| m[i % cols] as f64) * d2;
        }
        let weighted: f64 = per_row.iter().sum();
        let e = Error {
            per_row: plain / n,
            per_token: weighted * rows as f64 / n,
        };
        (e, per_row)
    };
    let signal = sums(&|i| orig[i] as f64).0;
    let measured: Vec<(Measured, Vec<f64>)> = candidates
        .par_iter()
        .map(|&ty| -> Result<(Measured, Vec<f64>)> {
            let q = quantize_linear_weighted(&sample, None, ty, importance)?;
            let back: Vec<f32> = q.dequantize()?.flatten_all()?.to_vec1()?;
            let (error, row_errors) = sums(&|i| orig[i] as f64 - back[i] as f64);
            let bytes = match ty {
                IsqType::Ggml(dt) => ggml_bytes(dt, rows, cols),
                _ => (q.size_in_bytes() as f64 * rows as f64 / n).round() as u64,
            };
            let m = Measured {
                ty: Some(ty),
                bytes,
                error,
            };
            Ok((m, row_errors))
        })
        .collect::<Result<_>>()?;
    let (mut options, mut row_errors): (Vec<Measured>, Vec<Vec<f64>>) =
        measured.into_iter().unzip();
    options.push(Measured {
        ty: None,
        bytes: keep_bytes,
        error: Error::default(),
    });
    row_errors.push(Vec::new());
    Ok(WeightErrors {
        options,
        signal,
        rows,
        sampled: picked,
        row_errors,
    })
}

/// Bytes of a (rows, cols) weight in a ggml block type.
pub fn ggml_bytes(dt: GgmlDType, rows: usize, cols: usize) -> u64 {
    (rows * (cols / dt.block_size()) * dt.type_size()) as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::auto::candidates::{for_weight, WeightKind};

    fn weight(rows: usize, cols: usize) -> Tensor {
        let v: Vec<f32> = (0..rows * cols)
            .map(|i| ((i as f32 * 0.618).sin() * 0.1) * (1.0 + (i % 7) as f32))
            .collect();
        Tensor::from_vec(v, (rows, cols), &candle_core::Device::Cpu).unwrap()
    }

    #[test]
    fn samples_whole_blocks_spread_over_the_rows() {
        assert_eq!(sample_rows(100).len(), 100);
        let s = sample_rows(49152);
        assert_eq!(s.len(), 768 / SAMPLE_EVERY * 64);
        assert!(s.iter().all(|&r| r < 49152) && s.windows(2).all(|w| w[0] < w[1]));
        assert!(*s.last().unwrap() > 40000, "spread to the end");
        assert_eq!(sample_rows(576).len(), 64);
    }

    #[test]
    fn more_bits_less_error_and_sizes_are_exact() {
        let w = weight(512, 256);
        let cands = for_weight(WeightKind::Linear, 512, 256);
        let m = measure(&w, None, &cands, 512 * 256 * 4).unwrap();
        let get = |s: &str| {
            let t = s.parse::<IsqType>().unwrap();
            *m.options.iter().find(|o| o.ty == Some(t)).unwrap()
        };
        let err = |s: &str| get(s).error.per_token;
        assert!(err("Q2K") > err("Q4K"));
        assert!(err("Q4K") > err("Q6K"));
        assert!(err("Q6K") > err("Q8_0"));
        assert!(err("AFQ2") > err("AFQ8"));
        assert_eq!(m.options.last().unwrap().error, Error::default());
        // Without importances, the per-token error is the per-row one times the rows.
        let e = get("Q4_0").error;
        assert!((e.per_token / (e.per_row * 512.0) - 1.0).abs() < 1e-9);
        // Sizes equal what quantizing the whole weight gives.
        for o in &m.options[..m.options.len() - 1] {
            let full = quantize_linear_weighted(&w, None, o.ty.unwrap(), None).unwrap();
            assert_eq!(o.bytes, full.size_in_bytes() as u64, "{:?}", o.ty);
        }
        // The sampled error is close to the error over every row.
        let q = quantize_linear_weighted(&w, None, IsqType::Q4K, None).unwrap();
        let a: Vec<f32> = w.flatten_all().unwrap().to_vec1().unwrap();
        let b: Vec<f32> = q
            .dequantize()
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let exact: f64 = a
            .iter()
            .zip(&b)
            .map(|(x, y)| (*x as f64 - *y as f64).powi(2))
            .sum();
        let est = get("Q4K").error.per_token;
        assert!((est / exact - 1.0).abs() < 0.15, "{est} vs {exact}");
    }

    #[test]
    fn importance_weights_the_error() {
        let w = weight(64, 256);
        // Q8_0 quantizes the same with or without importances.
        let cands = [IsqType::Q8_0];
        let flat = measure(&w, None, &cands, 0).unwrap();
        let twice = vec![2.0f32; 256];
        let double = measure(&w, Some(&twice), &cands, 0).unwrap();
        let (d, f) = (double.options[0].error, flat.options[0].error);
        assert!((d.per_token / f.per_token - 2.0).abs() < 1e-9);
        assert_eq!(
            d.per_row, f.per_row,
            "the per-row error ignores importances"
        );
        assert!((double.signal.per_token / flat.signal.per_token - 2.0).abs() < 1e-9);
        assert!(measure(&w, Some(&[1.0; 3]), &cands, 0).is_err());
        // Row gains scale each row's error: a gain of 3 on every row triples it, a gain
        // on half the rows lands between.
        let mut tripled = flat.clone();
        tripled.scale_rows(|_| 3.0);
        let t = tripled.options[0].error.per_token / f.per_token;
        assert!((t - 3.0).abs() < 1e-9, "{t}");
        let mut half = flat.clone();
        half.scale_rows(|r| if r < 32 { 3.0 } else { 1.0 });
        let h = half.options[0].error.per_token / f.per_token;
        assert!(h > 1.5 && h < 2.5, "{h}");
        assert_eq!(
            tripled.options[1].error,
            Error::default(),
            "kept stays exact"
        );
    }
}
