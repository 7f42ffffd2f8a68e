//! UQFF: a model's quantized linear layers saved to one safetensors file, so a later load
//! skips ISQ (`--write-uqff FILE`, `--from-uqff FILE`). The per-layer layout follows the
//! peer's UQFF 1.x: under each module key, `<key>.weight.format` (u8: 0 ggml blocks,
//! 1 unquantized, 2 HQQ, 3 FP8, 4 AFQ), `<key>.weight` (ggml: the raw block bytes as u8;
//! unquantized: the weight in its dtype; HQQ/AFQ: the packed u32 codes; FP8: E4M3 codes),
//! `.weight.scales` / `.weight.zeros` (HQQ, f16), `.weight.scales` / `.weight.biases` (AFQ,
//! f16), `.weight.scales` (FP8, f32 [rows, scales per row]) with `.weight.group_size` (columns
//! per scale; absent: one per row), `.weight.bits` and `.weight.group_size` (u32), HQQ's
//! `.weight.axis` (u32, hqq's grouping axis; absent before 1.1: axis 0),
//! `<key>.weight.dtype` (u32 ggml type id), `<key>.weight.shape` (u32 dims),
//! `<key>.bias` (f32) when the layer has one, and u32 scalars `uqff.version.major|minor|
//! patch`. The header's `__metadata__` records the model's shape, checked on load so a
//! file from another model is refused, and the methods used (`methods: "30×Q4K, …"`).
//!
//! The tensors a model reads besides these layers (embeddings, norms, an unquantized head)
//! go to a residual safetensors file beside it (`uqff_residual.rs`); quantized embeddings
//! and heads are layers of the main file. Unlike the peer's directory of shards, the
//! layers are one file.

use super::uqff_residual::{residual_path, Recorder};
use super::{GgmlLinear, QuantLinear, UnquantLinear};
use crate::loaders::gguf_file::{ggml_dtype_from_id, ggml_dtype_id};
use crate::loaders::safetensors_file::SafetensorsFiles;
use crate::models::{CausalLm, Embedding, ModelConfig, WeightSource};
use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use safetensors::tensor::TensorView;
use safetensors::Dtype;
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

/// The format version written; files of another major version are refused.
pub const VERSION: (u32, u32, u32) = (1, 1, 0);

const FORMAT_GGML: u8 = 0;
const FORMAT_UNQUANTIZED: u8 = 1;
const FORMAT_HQQ: u8 = 2;
const FORMAT_FP8: u8 = 3;
const FORMAT_AFQ: u8 = 4;

fn u32_bytes(v: &[u32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn f16_bytes(v: &[half::f16]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// The config fields a UQFF file must agree with.
fn shape_metadata(cfg: &ModelConfig) -> Vec<(&'static str, String)> {
    vec![
        (
            "architecture",
            format!("{:?}", cfg.architecture).to_lowercase(),
        ),
        ("hidden_size", cfg.hidden_size.to_string()),
        ("intermediate_size", cfg.intermediate_size.to_string()),
        ("num_hidden_layers", cfg.num_hidden_layers.to_string()),
        ("num_attention_heads", cfg.num_attention_heads.to_string()),
        ("num_key_value_heads", cfg.num_key_value_heads.to_string()),
        ("vocab_size", cfg.vocab_size.to_string()),
    ]
}

fn tensor_bytes(t: &Tensor) -> Result<(Dtype, Vec<u8>)> {
    let flat = t.flatten_all()?;
    Ok(match t.dtype() {
        DType::F32 => (
            Dtype::F32,
            flat.to_vec1::<f32>()?
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect(),
        ),
        DType::F16 => (
            Dtype::F16,
            flat.to_vec1::<half::f16>()?
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect(),
        ),
        DType::BF16 => (
            Dtype::BF16,
            flat.to_vec1::<half::bf16>()?
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect(),
        ),
        other => bail!("cannot store a {other:?} tensor in UQFF"),
    })
}

/// Writes every attention and MLP linear of `model` to `path`.
/// Writes a loaded model: its layers to `path` and, when loading recorded them
/// ([`crate::loaders::LoadOptions::record_residual`]), the residual tensors beside it.
pub fn write_loaded(loaded: &crate::loaders::LoadedModel, path: &Path) -> Result<()> {
    write(
        loaded.model.as_ref(),
        &loaded.name,
        path,
        loaded.residual.as_deref(),
    )
}

/// Writes every attention and MLP linear of `model` to `path`, plus the quantized
/// embeddings/heads of `residual`, whose dense tensors go to [`residual_path`]`(path)`.
pub fn write(
    model: &dyn CausalLm,
    model_name: &str,
    path: &Path,
    residual: Option<&Recorder>,
) -> Result<()> {
    let start = std::time::Instant::now();
    // (name, dtype, shape, bytes), kept until serialization.
    let mut tensors: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = Vec::new();
    let scalar_u32 = |v: u32| (Dtype::U32, vec![1], v.to_le_bytes().to_vec());
    let mut layers = model.named_linears();
    layers.extend(residual.map(|r| r.layers()).unwrap_or_default());
    // The header names the methods used, e.g. "30×Q4K, 180×Q5_0".
    let mut methods = std::collections::BTreeMap::<String, usize>::new();
    for (_, l) in &layers {
        *methods.entry(l.storage_name()).or_default() += 1;
    }
    let methods: Vec<String> = methods.iter().map(|(k, n)| format!("{n}×{k}")).collect();
    for (name, lin) in layers {
        let (rows, cols) = lin.shape();
        let shape_bytes: Vec<u8> = [rows as u32, cols as u32]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        if let Some(g) = lin.as_any().downcast_ref::<GgmlLinear>() {
            let q = g.qtensor();
            let bytes = q.data()?.into_owned();
            tensors.push((
                format!("{name}.weight.format"),
                Dtype::U8,
                vec![1],
                vec![FORMAT_GGML],
            ));
            let n = bytes.len();
            tensors.push((format!("{name}.weight"), Dtype::U8, vec![n], bytes));
            let (dt, sh, b) = scalar_u32(ggml_dtype_id(q.dtype()));
            tensors.push((format!("{name}.weight.dtype"), dt, sh, b));
        } else if let Some(u) = lin.as_any().downcast_ref::<UnquantLinear>() {
            tensors.push((
                format!("{name}.weight.format"),
                Dtype::U8,
                vec![1],
                vec![FORMAT_UNQUANTIZED],
            ));
            let (dt, bytes) = tensor_bytes(u.weight())?;
            tensors.push((format!("{name}.weight"), dt, vec![rows, cols], bytes));
        } else if let Some(h) = lin.as_any().downcast_ref::<super::hqq::HqqLinear>() {
            let packed = super::packing::pack(&h.codes(), h.bits());
            let grouped = [
                (
                    format!("{name}.weight.format"),
                    Dtype::U8,
                    vec![1],
                    vec![FORMAT_HQQ],
                ),
                (
                    format!("{name}.weight"),
                    Dtype::U32,
                    vec![packed.len()],
                    u32_bytes(&packed),
                ),
                (
                    format!("{name}.weight.scales"),
                    Dtype::F16,
                    vec![h.scales().len()],
                    f16_bytes(h.scales()),
                ),
                (
                    format!("{name}.weight.zeros"),
                    Dtype::F16,
                    vec![h.zeros().len()],
                    f16_bytes(h.zeros()),
                ),
            ];
            tensors.extend(grouped);
            let (dt, sh, b) = scalar_u32(h.bits());
            tensors.push((format!("{name}.weight.bits"), dt, sh, b));
            let (dt, sh, b) = scalar_u32(h.group_size() as u32);
            tensors.push((format!("{name}.weight.group_size"), dt, sh, b));
            // Absent in files written before the contiguous grouping: those are axis 0.
            let (dt, sh, b) = scalar_u32(u32::from(h.axis().hqq_axis()));
            tensors.push((format!("{name}.weight.axis"), dt, sh, b));
        } else if let Some(a) = lin.as_any().downcast_ref::<super::afq::AfqLinear>() {
            let grouped = [
                (
                    format!("{name}.weight.format"),
                    Dtype::U8,
                    vec![1],
                    vec![FORMAT_AFQ],
                ),
                (
                    format!("{name}.weight"),
                    Dtype::U32,
                    vec![a.packed().len()],
                    u32_bytes(a.packed()),
                ),
                (
                    format!("{name}.weight.scales"),
                    Dtype::F16,
                    vec![a.scales().len()],
                    f16_bytes(a.scales()),
                ),
                (
                    format!("{name}.weight.biases"),
                    Dtype::F16,
                    vec![a.biases().len()],
                    f16_bytes(a.biases()),
                ),
            ];
            tensors.extend(grouped);
            let (dt, sh, b) = scalar_u32(a.bits());
            tensors.push((format!("{name}.weight.bits"), dt, sh, b));
            let (dt, sh, b) = scalar_u32(a.group_size() as u32);
            tensors.push((format!("{name}.weight.group_size"), dt, sh, b));
        } else if let Some(f) = lin.as_any().downcast_ref::<super::fp8::Fp8Linear>() {
            tensors.push((
                format!("{name}.weight.format"),
                Dtype::U8,
                vec![1],
                vec![FORMAT_FP8],
            ));
            tensors.push((
                format!("{name}.weight"),
                Dtype::F8_E4M3,
                vec![rows, cols],
                f.codes().to_vec(),
            ));
            let per_row = f.scales().len() / rows.max(1);
            tensors.push((
                format!("{name}.weight.scales"),
                Dtype::F32,
                vec![rows, per_row],
                f32_bytes(f.scales()),
            ));
            let (dt, sh, b) = scalar_u32(f.scale_cols() as u32);
            tensors.push((format!("{name}.weight.group_size"), dt, sh, b));
        } else {
            bail!(
                "UQFF cannot store {name}: its storage ({}) has no UQFF layout yet",
                lin.storage_name()
            );
        }
        tensors.push((
            format!("{name}.weight.shape"),
            Dtype::U32,
            vec![2],
            shape_bytes,
        ));
        if let Some(b) = lin.bias() {
            let (dt, bytes) = tensor_bytes(&b.to_dtype(DType::F32)?)?;
            tensors.push((format!("{name}.bias"), dt, vec![rows], bytes));
        }
    }
    for (part, v) in [
        ("major", VERSION.0),
        ("minor", VERSION.1),
        ("patch", VERSION.2),
    ] {
        let (dt, sh, b) = scalar_u32(v);
        tensors.push((format!("uqff.version.{part}"), dt, sh, b));
    }
    let mut meta: HashMap<String, String> = shape_metadata(model.config())
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
    meta.insert("format".into(), "uqff".into());
    meta.insert("model".into(), model_name.to_string());
    meta.insert("methods".into(), methods.join(", "));
    meta.insert(
        "writer".into(),
        format!("smelt {}", env!("CARGO_PKG_VERSION")),
    );
    if let Some(r) = residual {
        let dense: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = r
            .tensors()
            .into_iter()
            .map(|(n, t)| {
                let (dt, bytes) = tensor_bytes(&t)?;
                Ok((n, dt, t.dims().to_vec(), bytes))
            })
            .collect::<Result<_>>()?;
        let mut rmeta = meta.clone();
        rmeta.insert("format".into(), "uqff-residual".into());
        serialize_atomically(&dense, rmeta, &residual_path(path))?;
    }
    serialize_atomically(&tensors, meta, path)?;
    tracing::info!(
        "wrote UQFF {} ({:.1} MB) in {:.2}s",
        path.display(),
        std::fs::metadata(path).map_or(0, |m| m.len()) as f64 / 1e6,
        start.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Serializes `tensors` to a temporary file renamed into `path`, so a failed write never
/// leaves a half file under the final name.
fn serialize_atomically(
    tensors: &[(String, Dtype, Vec<usize>, Vec<u8>)],
    meta: HashMap<String, String>,
    path: &Path,
) -> Result<()> {
    let views: Vec<(String, TensorView)> = tensors
        .iter()
        .map(|(n, dt, sh, b)| {
            TensorView::new(*dt, sh.clone(), b)
                .map(|v| (n.clone(), v))
                .map_err(|e| anyhow::anyhow!("UQFF tensor {n}: {e:?}"))
        })
        .collect::<Result<_>>()?;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".part");
    let tmp = std::path::PathBuf::from(tmp);
    safetensors::serialize_to_file(views, Some(meta), &tmp)
        .map_err(|e| anyhow::anyhow!("writing {}: {e:?}", tmp.display()))?;
    std::fs::rename(&tmp, path)
        .with_context(|| format!("cannot move the UQFF file into {}", path.display()))
}

/// A weight source whose attention and MLP linears come from a UQFF file, and whose
/// embeddings, norms and head come from its residual file when there is one; everything
/// else (and re-quantization from the original weights) from the model's own files.
pub struct UqffSource {
    inner: Arc<dyn WeightSource>,
    file: SafetensorsFiles,
    residual: Option<SafetensorsFiles>,
    path: std::path::PathBuf,
}

impl UqffSource {
    /// Opens `path` and checks that it was written for a model shaped like `cfg`.
    pub fn open(path: &Path, cfg: &ModelConfig, inner: Arc<dyn WeightSource>) -> Result<Self> {
        let file = SafetensorsFiles::open(&[path.to_path_buf()])
            .with_context(|| format!("reading UQFF {}", path.display()))?;
        let u32_scalar = |name: &str| -> Result<u32> {
            let (dt, _, b) = file.raw(name)?;
            if dt != Dtype::U32 || b.len() != 4 {
                bail!("{name} is not a u32 scalar");
            }
            Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        };
        let major = u32_scalar("uqff.version.major")
            .with_context(|| format!("{} is not a UQFF file (no version)", path.display()))?;
        let minor = u32_scalar("uqff.version.minor").unwrap_or(0);
        if major != VERSION.0 {
            bail!(
                "{} is UQFF format {major}.{minor}; this smelt reads format {}.x",
                path.display(),
                VERSION.0
            );
        }
        check_written_for(&file, path, cfg)?;
        let rpath = residual_path(path);
        let residual = if rpath.exists() {
            let r = SafetensorsFiles::open(std::slice::from_ref(&rpath))
                .with_context(|| format!("reading the UQFF residual {}", rpath.display()))?;
            check_written_for(&r, &rpath, cfg)?;
            Some(r)
        } else {
            None
        };
        let meta = file.user_metadata().cloned().unwrap_or_default();
        tracing::info!(
            "loading quantized layers from UQFF {} (format {major}.{minor}, written for {})",
            path.display(),
            meta.get("model").map_or("?", |s| s.as_str())
        );
        Ok(Self {
            inner,
            file,
            residual,
            path: path.to_path_buf(),
        })
    }

    /// Whether the layers file holds module `name` (a linear, embedding or head).
    fn has_layer(&self, name: &str) -> bool {
        self.file.contains(&format!("{name}.weight.format"))
    }

    /// `{name}.weight` from the residual file, if it holds it.
    fn residual_tensor(&self, name: &str) -> Result<Option<Tensor>> {
        self.residual_raw(&format!("{name}.weight"))
    }

    /// Tensor `key` (full name) of the residual file, if it has it.
    fn residual_raw(&self, key: &str) -> Result<Option<Tensor>> {
        match &self.residual {
            Some(r) if r.contains(key) => Ok(Some(
                r.load(key)
                    .with_context(|| format!("{key} in the UQFF residual"))?
                    .to_device(self.inner.device())?,
            )),
            _ => Ok(None),
        }
    }

    fn u32s(&self, name: &str) -> Result<Vec<u32>> {
        let (dt, _, b) = self
            .file
            .raw(name)
            .with_context(|| format!("{name} in UQFF {}", self.path.display()))?;
        if dt != Dtype::U32 {
            bail!(
                "{name} in UQFF {} is {dt:?}, expected U32",
                self.path.display()
            );
        }
        Ok(b.chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect())
    }

    fn f16s(&self, name: &str) -> Result<Vec<half::f16>> {
        let (dt, _, b) = self
            .file
            .raw(name)
            .with_context(|| format!("{name} in UQFF {}", self.path.display()))?;
        if dt != Dtype::F16 {
            bail!(
                "{name} in UQFF {} is {dt:?}, expected F16",
                self.path.display()
            );
        }
        Ok(b.chunks_exact(2)
            .map(|c| half::f16::from_le_bytes([c[0], c[1]]))
            .collect())
    }

    fn layer(&self, name: &str, bias: bool) -> Result<Arc<dyn QuantLinear>> {
        let what = |t: &str| format!("{t} in UQFF {}", self.path.display());
        let (_, _, fmt) = self
            .file
            .raw(&format!("{name}.weight.format"))
            .with_context(|| what(&format!("{name}.weight.format")))?;
        let (_, _, shape) = self
            .file
            .raw(&format!("{name}.weight.shape"))
            .with_context(|| what(&format!("{name}.weight.shape")))?;
        if shape.len() != 8 {
            bail!(
                "{} must hold two u32 dims",
                what(&format!("{name}.weight.shape"))
            );
        }
        let dim =
            |i: usize| u32::from_le_bytes(shape[4 * i..4 * i + 4].try_into().unwrap()) as usize;
        let (rows, cols) = (dim(0), dim(1));
        let bias = if bias {
            Some(
                self.file
                    .load(&format!("{name}.bias"))
                    .with_context(|| what(&format!("{name}.bias")))?,
            )
        } else {
            None
        };
        Ok(match fmt.first() {
            Some(&FORMAT_GGML) => {
                let (_, _, id) = self
                    .file
                    .raw(&format!("{name}.weight.dtype"))
                    .with_context(|| what(&format!("{name}.weight.dtype")))?;
                let id = u32::from_le_bytes(id.try_into().map_err(|_| {
                    anyhow::anyhow!("{} is not a u32", what(&format!("{name}.weight.dtype")))
                })?);
                let dt = ggml_dtype_from_id(id)?;
                let (_, _, bytes) = self
                    .file
                    .raw(&format!("{name}.weight"))
                    .with_context(|| what(&format!("{name}.weight")))?;
                let expect = rows * cols / dt.block_size() * dt.type_size();
                if cols % dt.block_size() != 0 || bytes.len() != expect {
                    bail!(
                        "{} holds {} bytes; {rows}×{cols} {dt:?} needs {expect}",
                        what(&format!("{name}.weight")),
                        bytes.len()
                    );
                }
                let q = candle_core::quantized::ggml_file::qtensor_from_ggml(
                    dt,
                    bytes,
                    vec![rows, cols],
                    &Device::Cpu,
                )?;
                Arc::new(GgmlLinear::new(Arc::new(q), bias)?)
            }
            Some(&FORMAT_UNQUANTIZED) => {
                let w = self
                    .file
                    .load(&format!("{name}.weight"))
                    .with_context(|| what(&format!("{name}.weight")))?;
                if w.dims() != [rows, cols] {
                    bail!(
                        "{} has shape {:?}, expected [{rows}, {cols}]",
                        what(name),
                        w.dims()
                    );
                }
                Arc::new(UnquantLinear::new(w, bias)?)
            }
            Some(&tag @ (FORMAT_HQQ | FORMAT_AFQ)) => {
                let words = self.u32s(&format!("{name}.weight"))?;
                let scales = self.f16s(&format!("{name}.weight.scales"))?;
                let bits = self.u32s(&format!("{name}.weight.bits"))?;
                let group = self.u32s(&format!("{name}.weight.group_size"))?;
                let (bits, group) = match (bits.as_slice(), group.as_slice()) {
                    ([b], [g]) => (*b, *g as usize),
                    _ => bail!("{} must be u32 scalars", what(&format!("{name}.weight.bits/group_size"))),
                };
                if tag == FORMAT_HQQ {
                    let zeros = self.f16s(&format!("{name}.weight.zeros"))?;
                    let axis_key = format!("{name}.weight.axis");
                    let axis = if self.file.contains(&axis_key) {
                        match self.u32s(&axis_key)?.as_slice() {
                            [a] if *a <= 1 => super::hqq::HqqAxis::from_hqq_axis(*a as u8)?,
                            _ => bail!("{} must be a u32 scalar, 0 or 1", what(&axis_key)),
                        }
                    } else {
                        super::hqq::HqqAxis::Strided
                    };
                    Arc::new(
                        super::hqq::HqqLinear::from_parts(rows, cols, bits, group, axis, words, scales, zeros, bias)
                            .with_context(|| what(name))?,
                    )
                } else {
                    let biases = self.f16s(&format!("{name}.weight.biases"))?;
                    Arc::new(
                        super::afq::AfqLinear::from_parts(rows, cols, bits, group, words, scales, biases, bias)
                            .with_context(|| what(name))?,
                    )
                }
            }
            Some(&FORMAT_FP8) => {
                let (_, _, codes) = self
                    .file
                    .raw(&format!("{name}.weight"))
                    .with_context(|| what(&format!("{name}.weight")))?;
                let (_, _, s) = self
                    .file
                    .raw(&format!("{name}.weight.scales"))
                    .with_context(|| what(&format!("{name}.weight.scales")))?;
                let scales = s
                    .chunks_exact(4)
                    .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                    .collect();
                // Files without a group size hold one scale per row.
                let key = format!("{name}.weight.group_size");
                let scale_cols = match self.file.contains(&key) {
                    true => match self.u32s(&key)?.as_slice() {
                        [g] => *g as usize,
                        _ => bail!("{} must be a u32 scalar", what(&key)),
                    },
                    false => cols,
                };
                Arc::new(
                    super::fp8::Fp8Linear::from_column_blocks(
                        rows,
                        cols,
                        codes.to_vec(),
                        scales,
                        scale_cols,
                        bias,
                    )
                    .with_context(|| what(name))?,
                )
            }
            other => bail!(
                "{} has format tag {other:?}; this smelt reads 0 (ggml), 1 (unquantized), 2 (HQQ), 3 (FP8) and 4 (AFQ)",
                what(&format!("{name}.weight.format"))
            ),
        })
    }
}

/// Refuses a UQFF or residual file whose metadata describes another model shape.
fn check_written_for(file: &SafetensorsFiles, path: &Path, cfg: &ModelConfig) -> Result<()> {
    let meta = file.user_metadata().cloned().unwrap_or_default();
    for (key, want) in shape_metadata(cfg) {
        match meta.get(key) {
            Some(got) if *got == want => {}
            Some(got) => bail!(
                "{} was written for another model: its {key} is {got}, this model's is {want} (UQFF from {})",
                path.display(),
                meta.get("model").map_or("an unknown model", |s| s.as_str())
            ),
            None => bail!("{} lacks the `{key}` metadata", path.display()),
        }
    }
    Ok(())
}

impl WeightSource for UqffSource {
    fn device(&self) -> &Device {
        self.inner.device()
    }
    fn has(&self, name: &str) -> bool {
        self.has_layer(name)
            || self
                .residual
                .as_ref()
                .is_some_and(|r| r.contains(&format!("{name}.weight")))
            || self.inner.has(name)
    }
    fn linear(&self, name: &str, bias: bool) -> Result<Arc<dyn QuantLinear>> {
        self.layer(name, bias)
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
        match self.residual_tensor(name)? {
            Some(t) => Ok(t),
            None => self.inner.dense(name),
        }
    }
    fn dense_raw(&self, name: &str) -> Result<Tensor> {
        match self.residual_raw(name)? {
            Some(t) => Ok(t),
            None => self.inner.dense_raw(name),
        }
    }
    fn embedding(&self, name: &str) -> Result<Embedding> {
        if self.has_layer(name) {
            return match self
                .layer(name, false)?
                .as_any()
                .downcast_ref::<GgmlLinear>()
            {
                Some(g) => Ok(Embedding::Quantized(g.qtensor().clone())),
                None => bail!(
                    "{name} in UQFF {} must be stored in ggml blocks",
                    self.path.display()
                ),
            };
        }
        match self.residual_tensor(name)? {
            Some(t) => Ok(Embedding::Dense(t)),
            None => self.inner.embedding(name),
        }
    }
    fn lm_head(&self, name: &str, tied: Option<&str>) -> Result<Arc<dyn QuantLinear>> {
        if self.has_layer(name) {
            return self.layer(name, false);
        }
        // A head that is the tied embedding itself: built from it as the loaders do.
        if let Some(embed) = tied {
            if self.has_layer(embed) || self.residual_tensor(embed)?.is_some() {
                return Ok(match self.embedding(embed)? {
                    Embedding::Dense(t) => Arc::new(UnquantLinear::new(t, None)?),
                    Embedding::Quantized(q) => Arc::new(GgmlLinear::new(q, None)?),
                });
            }
        }
        match self.residual_tensor(name)? {
            Some(t) => Ok(Arc::new(UnquantLinear::new(t, None)?)),
            None => self.inner.lm_head(name, tied),
        }
    }
}
