//! UQFF's residual file: every tensor a model reads besides its quantized linears
//! (embeddings, norms, an unquantized output head), recorded while the model loads, so
//! `--write-uqff FILE` can save them beside the layers (`FILE` with the extension
//! `.residual.safetensors`) and `--from-uqff FILE` can load with only config.json and the
//! tokenizer next to it. Quantized embeddings and heads go into the layers file itself.

use super::{GgmlLinear, QuantLinear, UnquantLinear};
use crate::models::{Embedding, WeightSource};
use crate::sync::lock;
use anyhow::Result;
use candle_core::{Device, Tensor};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// Where the residual of the UQFF file `uqff` lives.
pub fn residual_path(uqff: &Path) -> PathBuf {
    uqff.with_extension("residual.safetensors")
}

/// What a model read besides its attention/MLP linears.
#[derive(Default)]
pub struct Recorder {
    /// Dense tensors under their checkpoint names (`model.norm.weight`).
    tensors: Mutex<BTreeMap<String, Tensor>>,
    /// Quantized embeddings and heads, under their module names.
    layers: Mutex<BTreeMap<String, Arc<dyn QuantLinear>>>,
}

impl Recorder {
    fn tensor(&self, name: String, t: &Tensor) {
        lock(&self.tensors).insert(name, t.clone());
    }
    fn layer(&self, name: &str, l: Arc<dyn QuantLinear>) {
        lock(&self.layers).insert(name.to_string(), l);
    }
    /// The dense tensors, for the residual file.
    pub fn tensors(&self) -> Vec<(String, Tensor)> {
        lock(&self.tensors)
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }
    /// The quantized embeddings and heads, for the layers file.
    pub fn layers(&self) -> Vec<(String, Arc<dyn QuantLinear>)> {
        lock(&self.layers)
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }
}

/// A weight source that passes everything through and records the residual tensors.
pub struct RecordingSource {
    inner: Arc<dyn WeightSource>,
    rec: Arc<Recorder>,
}

impl RecordingSource {
    pub fn new(inner: Arc<dyn WeightSource>, rec: Arc<Recorder>) -> Self {
        Self { inner, rec }
    }
}

/// Whether `head` is nothing but the tied embedding `emb` (so a loader rebuilds it).
fn is_embedding(head: &dyn QuantLinear, emb: Option<&Embedding>) -> bool {
    match emb {
        Some(Embedding::Dense(t)) => head
            .as_any()
            .downcast_ref::<UnquantLinear>()
            .is_some_and(|u| u.weight().id() == t.id()),
        Some(Embedding::Quantized(q)) => head
            .as_any()
            .downcast_ref::<GgmlLinear>()
            .is_some_and(|g| Arc::ptr_eq(g.qtensor(), q)),
        None => false,
    }
}

impl WeightSource for RecordingSource {
    fn device(&self) -> &Device {
        self.inner.device()
    }
    fn has(&self, name: &str) -> bool {
        self.inner.has(name)
    }
    fn linear(&self, name: &str, bias: bool) -> Result<Arc<dyn QuantLinear>> {
        self.inner.linear(name, bias)
    }
    fn linear_as(
        &self,
        name: &str,
        bias: bool,
        isq: Option<super::IsqType>,
    ) -> Result<Arc<dyn QuantLinear>> {
        self.inner.linear_as(name, bias, isq)
    }
    fn re_isq_type(&self, name: &str, ty: Option<super::IsqType>) -> Option<super::IsqType> {
        self.inner.re_isq_type(name, ty)
    }
    fn dense(&self, name: &str) -> Result<Tensor> {
        let t = self.inner.dense(name)?;
        self.rec.tensor(format!("{name}.weight"), &t);
        Ok(t)
    }
    fn dense_raw(&self, name: &str) -> Result<Tensor> {
        let t = self.inner.dense_raw(name)?;
        self.rec.tensor(name.to_string(), &t);
        Ok(t)
    }
    fn embedding(&self, name: &str) -> Result<Embedding> {
        let e = self.inner.embedding(name)?;
        match &e {
            Embedding::Dense(t) => self.rec.tensor(format!("{name}.weight"), t),
            Embedding::Quantized(q) => self
                .rec
                .layer(name, Arc::new(GgmlLinear::new(q.clone(), None)?)),
        }
        Ok(e)
    }
    fn lm_head(&self, name: &str, tied: Option<&str>) -> Result<Arc<dyn QuantLinear>> {
        let head = self.inner.lm_head(name, tied)?;
        // A tied head that is the embedding itself is rebuilt from it on load.
        let emb = match tied {
            Some(e) => Some(self.inner.embedding(e)?),
            None => None,
        };
        if !is_embedding(head.as_ref(), emb.as_ref()) {
            match head.as_any().downcast_ref::<UnquantLinear>() {
                Some(u) => self.rec.tensor(format!("{name}.weight"), u.weight()),
                None => self.rec.layer(name, head.clone()),
            }
        }
        Ok(head)
    }
}
