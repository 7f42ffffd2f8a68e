//! The measuring pass: a weight source that reads each weight, measures its candidates and
//! hands the model a placeholder, so the pass builds the model's structure while holding
//! one weight at a time.

use super::candidates::{for_weight, WeightKind};
use super::measure::{measure, WeightErrors};
use super::mix::{Role, Unit};
use crate::loaders::LoadOptions;
use crate::models::{Embedding, WeightSource};
use crate::quant::{IsqType, QuantLinear};
use crate::sync::lock;
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
    /// Value projections' errors, until their layer's output projection gives the gains.
    values: Mutex<Vec<(String, WeightErrors)>>,
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
        for (layer, e) in std::mem::take(&mut *lock(&self.values)) {
            self.push(Unit::new(
                vec![format!("{layer}{V_PROJ}")],
                &[Role::Product],
                &e,
            ));
        }
        (
            std::mem::take(&mut *lock(&self.units)),
            self.fixed.load(Ordering::Relaxed),
        )
    }
}

/// Attention's head layout, for the value rows each output-projection column reads.
#[derive(Debug, Clone, Copy)]
pub struct Heads {
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
}

pub struct MeasuringSource {
    inner: Arc<dyn WeightSource>,
    found: Arc<Measurements>,
    opts: LoadOptions,
    heads: Heads,
}

const V_PROJ: &str = "self_attn.v_proj";
const O_PROJ: &str = "self_attn.o_proj";

impl MeasuringSource {
    pub fn new(
        inner: Arc<dyn WeightSource>,
        found: Arc<Measurements>,
        opts: LoadOptions,
        heads: Heads,
    ) -> Self {
        Self {
            inner,
            found,
            opts,
            heads,
        }
    }

    /// A value projection's error reaches the residual stream only through the output
    /// projection: value row `kv·hd + d` is read by column `h·hd + d` of every query head
    /// `h` of that key-value group, so its error counts times the squared norms of those
    /// columns (summed: the heads see the same error). Returns None when the shapes do
    /// not fit that layout.
    fn value_gains(&self, o: &Tensor, v_rows: usize) -> Result<Option<Vec<f64>>> {
        let Heads {
            heads,
            kv_heads,
            head_dim: hd,
        } = self.heads;
        let (_, cols) = o.dims2()?;
        if kv_heads == 0 || heads % kv_heads != 0 || cols != heads * hd || v_rows != kv_heads * hd {
            return Ok(None);
        }
        let sq = o.to_dtype(DType::F32)?.sqr()?.sum(0)?;
        let col: Vec<f32> = sq.to_vec1()?;
        let group = heads / kv_heads;
        let gains = (0..v_rows)
            .map(|i| {
                let (kv, d) = (i / hd, i % hd);
                (kv * group..(kv + 1) * group)
                    .map(|h| col[h * hd + d] as f64)
                    .sum()
            })
            .collect();
        Ok(Some(gains))
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
        if let Some(layer) = name.strip_suffix(V_PROJ) {
            lock(&self.found.values).push((layer.to_string(), errs));
        } else {
            if let Some(layer) = name.strip_suffix(O_PROJ) {
                let pending = {
                    let mut values = lock(&self.found.values);
                    let i = values.iter().position(|(l, _)| l == layer);
                    i.map(|i| values.remove(i).1)
                };
                if let Some(mut v) = pending {
                    if let Some(g) = self.value_gains(&w, v.rows())? {
                        v.scale_rows(|r| g[r]);
                    }
                    let vname = format!("{layer}{V_PROJ}");
                    self.found.push(Unit::new(vec![vname], roles, &v));
                }
            }
            self.found
                .push(Unit::new(vec![name.to_string()], roles, &errs));
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A source that serves nothing: `value_gains` reads only the head layout.
    struct Empty;
    impl WeightSource for Empty {
        fn device(&self) -> &Device {
            &Device::Cpu
        }
        fn has(&self, _: &str) -> bool {
            false
        }
        fn linear(&self, _: &str, _: bool) -> Result<Arc<dyn QuantLinear>> {
            bail!("empty")
        }
        fn linear_as(&self, _: &str, _: bool, _: Option<IsqType>) -> Result<Arc<dyn QuantLinear>> {
            bail!("empty")
        }
        fn re_isq_type(&self, _: &str, ty: Option<IsqType>) -> Option<IsqType> {
            ty
        }
        fn dense(&self, _: &str) -> Result<Tensor> {
            bail!("empty")
        }
        fn dense_raw(&self, _: &str) -> Result<Tensor> {
            bail!("empty")
        }
        fn embedding(&self, _: &str) -> Result<Embedding> {
            bail!("empty")
        }
        fn lm_head(&self, _: &str, _: Option<&str>) -> Result<Arc<dyn QuantLinear>> {
            bail!("empty")
        }
    }

    #[test]
    fn value_rows_gain_the_norms_of_the_output_columns_that_read_them() {
        // 4 query heads over 2 key-value heads of dim 2: value row kv·2 + d is read by
        // output columns h·2 + d of heads 2kv and 2kv + 1.
        let heads = Heads {
            heads: 4,
            kv_heads: 2,
            head_dim: 2,
        };
        let src = MeasuringSource::new(
            Arc::new(Empty),
            Arc::default(),
            LoadOptions::default(),
            heads,
        );
        // Column j of o (3 rows × 8 columns) has squared norm 3·(j+1)².
        let o: Vec<f32> = (0..3)
            .flat_map(|_| (0..8).map(|j| (j + 1) as f32))
            .collect();
        let o = Tensor::from_vec(o, (3, 8), &Device::Cpu).unwrap();
        let g = src.value_gains(&o, 4).unwrap().unwrap();
        let col = |j: usize| 3.0 * ((j + 1) * (j + 1)) as f64;
        assert_eq!(
            g,
            vec![
                col(0) + col(2),
                col(1) + col(3),
                col(4) + col(6),
                col(5) + col(7)
            ]
        );
        // Shapes that do not fit the layout get no gains.
        assert!(src.value_gains(&o, 6).unwrap().is_none());
    }
}
