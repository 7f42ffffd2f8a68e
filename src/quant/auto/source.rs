//! The measuring pass: a weight source that reads each weight, measures its candidates and
//! hands the model a placeholder, so the pass builds the model's structure while holding
//! one weight at a time.

use super::candidates::{for_weight, WeightKind};
use super::measure::{measure, WeightErrors};
use super::mix::{Role, Unit};
use crate::loaders::LoadOptions;
use crate::models::{Embedding, WeightSource};
use crate::quant::{IsqType, QuantLinear};
use anyhow::{bail, Result};
use candle_core::{DType, Device, Tensor};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

const EMBED: &str = "model.embed_tokens";

/// What the measuring pass found.
#[derive(Default)]
pub struct Measurements {
    units: Mutex<Vec<Unit>>,
    /// Bytes outside the search: norms, biases, weights the organization keeps.
    fixed: AtomicU64,
    /// The embedding's errors and shape, until the head says whether it is tied.
    embedding: Mutex<Option<(WeightErrors, (usize, usize))>>,
}

impl std::fmt::Debug for Measurements {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Measurements")
    }
}

impl Measurements {
    fn push(&self, u: Unit) {
        lock(&self.units).push(u);
    }
    fn add_fixed(&self, bytes: usize) {
        self.fixed.fetch_add(bytes as u64, Ordering::Relaxed);
    }
    /// The measured weights and the fixed bytes.
    pub fn finish(&self) -> (Vec<Unit>, u64) {
        if let Some((e, _)) = lock(&self.embedding).take() {
            self.push(Unit::new(vec![EMBED.into()], &[Role::Lookup], &e));
        }
        (
            std::mem::take(&mut *lock(&self.units)),
            self.fixed.load(Ordering::Relaxed),
        )
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

pub struct MeasuringSource {
    inner: Arc<dyn WeightSource>,
    found: Arc<Measurements>,
    opts: LoadOptions,
}

impl MeasuringSource {
    pub fn new(inner: Arc<dyn WeightSource>, found: Arc<Measurements>, opts: LoadOptions) -> Self {
        Self { inner, found, opts }
    }

    /// Measures a linear as loaded and returns its placeholder.
    fn measure_linear(
        &self,
        name: &str,
        lin: Arc<dyn QuantLinear>,
        roles: &[Role],
    ) -> Result<Arc<dyn QuantLinear>> {
        let bias = lin.bias().map_or(0, |b| b.elem_count() * 4);
        self.found.add_fixed(bias);
        let (rows, cols) = lin.shape();
        let w = lin.dequantize()?;
        let keep = (lin.size_in_bytes() - bias) as u64;
        drop(lin);
        let cands = for_weight(WeightKind::Linear, rows, cols);
        let errs = measure(&w, self.opts.imatrix_for(name), &cands, keep)?;
        self.found
            .push(Unit::new(vec![name.to_string()], roles, &errs));
        Ok(Arc::new(Placeholder { rows, cols }))
    }
}

impl WeightSource for MeasuringSource {
    fn device(&self) -> &Device {
        self.inner.device()
    }
    fn has(&self, name: &str) -> bool {
        self.inner.has(name)
    }
    fn linear(&self, name: &str, bias: bool) -> Result<Arc<dyn QuantLinear>> {
        let lin = self.inner.linear_as(name, bias, None)?;
        // A weight the ISQ organization leaves alone keeps its storage (and its bytes).
        if self.opts.re_isq_type(name, Some(IsqType::Q8_0)).is_none() {
            self.found.add_fixed(lin.size_in_bytes());
            let (rows, cols) = lin.shape();
            return Ok(Arc::new(Placeholder { rows, cols }));
        }
        self.measure_linear(name, lin, &[Role::Product])
    }
    fn linear_as(
        &self,
        _name: &str,
        _bias: bool,
        _isq: Option<IsqType>,
    ) -> Result<Arc<dyn QuantLinear>> {
        bail!("the measuring pass of --isq auto reads each linear once")
    }
    fn re_isq_type(&self, name: &str, ty: Option<IsqType>) -> Option<IsqType> {
        self.inner.re_isq_type(name, ty)
    }
    fn dense(&self, name: &str) -> Result<Tensor> {
        let t = self.inner.dense(name)?;
        self.found.add_fixed(t.elem_count() * 4);
        Ok(t)
    }
    fn dense_raw(&self, name: &str) -> Result<Tensor> {
        let t = self.inner.dense_raw(name)?;
        self.found.add_fixed(t.elem_count() * 4);
        Ok(t)
    }
    fn embedding(&self, name: &str) -> Result<Embedding> {
        let e = self.inner.embedding(name)?;
        let keep = e.size_in_bytes() as u64;
        if self.opts.re_isq_type(name, Some(IsqType::Q8_0)).is_none() {
            self.found.add_fixed(keep as usize);
            return Ok(e);
        }
        let w = match &e {
            Embedding::Dense(t) => t.to_dtype(DType::F32)?,
            Embedding::Quantized(q) => q.dequantize(&Device::Cpu)?,
        };
        drop(e);
        let (rows, cols) = w.dims2()?;
        let cands = for_weight(WeightKind::Embedding, rows, cols);
        // Measured once for both roles: looked up, and as the head if it is tied.
        let errs = measure(&w, self.opts.embedding_importance(), &cands, keep)?;
        *lock(&self.found.embedding) = Some((errs, (rows, cols)));
        // A zero-stride view: the model's shape without its memory.
        let ghost = Tensor::zeros(1, DType::F32, &Device::Cpu)?.broadcast_as((rows, cols))?;
        Ok(Embedding::Dense(ghost))
    }
    fn lm_head(&self, name: &str, tied: Option<&str>) -> Result<Arc<dyn QuantLinear>> {
        let emb = lock(&self.found.embedding).take();
        match (tied, emb) {
            (Some(_), Some((errs, (rows, cols)))) => {
                let names = vec![EMBED.to_string(), name.to_string()];
                self.found
                    .push(Unit::new(names, &[Role::Lookup, Role::Product], &errs));
                Ok(Arc::new(Placeholder { rows, cols }))
            }
            (_, emb) => {
                if let Some((e, _)) = emb {
                    self.found
                        .push(Unit::new(vec![EMBED.into()], &[Role::Lookup], &e));
                }
                let head = self.inner.lm_head(name, tied)?;
                if tied.is_some() || self.opts.re_isq_type(name, Some(IsqType::Q8_0)).is_none() {
                    // Kept as loaded (an embedding the organization keeps, or its tie).
                    if tied.is_none() {
                        self.found.add_fixed(head.size_in_bytes());
                    }
                    let (rows, cols) = head.shape();
                    return Ok(Arc::new(Placeholder { rows, cols }));
                }
                self.measure_linear(name, head, &[Role::Product])
            }
        }
    }
}

/// A linear of the measuring pass: its shape and nothing else.
#[derive(Debug)]
struct Placeholder {
    rows: usize,
    cols: usize,
}

impl QuantLinear for Placeholder {
    fn forward(&self, _x: &Tensor) -> Result<Tensor> {
        bail!("a model of the --isq auto measuring pass has no weights")
    }
    fn dequantize(&self) -> Result<Tensor> {
        bail!("a model of the --isq auto measuring pass has no weights")
    }
    fn size_in_bytes(&self) -> usize {
        0
    }
    fn storage_name(&self) -> String {
        "measured".into()
    }
    fn shape(&self) -> (usize, usize) {
        (self.rows, self.cols)
    }
    fn bias(&self) -> Option<&Tensor> {
        None
    }
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}
