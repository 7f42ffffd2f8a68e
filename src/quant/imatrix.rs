//! Importance matrices: per input column of every linear, the mean square of the
//! activations it saw on calibration text. Read from llama.cpp's legacy `.dat` files and
//! its newer GGUF container, written in the `.dat` format (which every llama.cpp reads),
//! and collected here by running the model over text (`--calibration-file`).
//!
//! Entries are keyed by GGUF tensor names without `.weight` (`blk.3.attn_q`), as llama.cpp
//! writes them; [`Imatrix::for_weight`] looks one up by Hugging Face name.

use crate::loaders::gguf_file::GgufFile;
use anyhow::{bail, Context, Result};
use std::collections::HashMap;
use std::io::Write;
use std::path::Path;
use std::sync::Mutex;

#[derive(Debug, Clone, Default)]
pub struct Imatrix {
    /// Mean squared activation per input column.
    entries: HashMap<String, Vec<f32>>,
    /// Calibration chunks the statistics came from (the `.dat` file's ncall).
    pub chunks: usize,
    pub dataset: String,
}

fn strip_weight(name: &str) -> &str {
    name.strip_suffix(".weight").unwrap_or(name)
}

impl Imatrix {
    pub fn from_means(entries: HashMap<String, Vec<f32>>, chunks: usize, dataset: &str) -> Self {
        Self {
            entries,
            chunks,
            dataset: dataset.to_string(),
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Reads either format (GGUF is recognised by its magic).
    pub fn load(path: &Path) -> Result<Self> {
        let mut magic = [0u8; 4];
        let mut f = std::fs::File::open(path)
            .with_context(|| format!("cannot open imatrix {}", path.display()))?;
        use std::io::Read;
        let is_gguf = f.read_exact(&mut magic).is_ok() && &magic == b"GGUF";
        let m = if is_gguf {
            Self::load_gguf(path)
        } else {
            Self::load_dat(path)
        }
        .with_context(|| format!("reading imatrix {}", path.display()))?;
        if m.entries.is_empty() {
            bail!("the imatrix {} has no entries", path.display());
        }
        tracing::info!(
            "imatrix {}: {} tensors from {} chunks of {}",
            path.display(),
            m.entries.len(),
            m.chunks,
            if m.dataset.is_empty() {
                "?"
            } else {
                &m.dataset
            }
        );
        Ok(m)
    }

    fn load_dat(path: &Path) -> Result<Self> {
        let data = std::fs::read(path)?;
        let mut r = Reader { data: &data, at: 0 };
        let n = r.i32("the entry count")?;
        if n <= 0 {
            bail!("bad entry count {n} (not a llama.cpp imatrix .dat file?)");
        }
        let mut entries = HashMap::new();
        let mut chunks = 0usize;
        for i in 0..n {
            let len = r.i32("a name length")?;
            if !(1..=4096).contains(&len) {
                bail!("entry {i}: bad name length {len}");
            }
            let name = String::from_utf8(r.bytes(len as usize, "a name")?.to_vec())
                .with_context(|| format!("entry {i}: name is not UTF-8"))?;
            let ncall = r.i32("ncall")?;
            let nval = r.i32("nval")?;
            if !(0..=1 << 26).contains(&nval) {
                bail!("entry {name}: bad value count {nval}");
            }
            let raw = r.bytes(nval as usize * 4, "values")?;
            // llama.cpp's reader divides by ncall to get the means back.
            let div = if ncall > 0 { ncall as f32 } else { 1.0 };
            let values: Vec<f32> = raw
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]) / div)
                .collect();
            chunks = chunks.max(ncall.max(0) as usize);
            entries.insert(strip_weight(&name).to_string(), values);
        }
        // Optional trailer: chunk count and dataset name.
        let mut dataset = String::new();
        if let Ok(last) = r.i32("") {
            chunks = chunks.max(last.max(0) as usize);
            if let Ok(len) = r.i32("") {
                if (0..=4096).contains(&len) {
                    if let Ok(b) = r.bytes(len as usize, "") {
                        dataset = String::from_utf8_lossy(b).into_owned();
                    }
                }
            }
        }
        Ok(Self {
            entries,
            chunks,
            dataset,
        })
    }

    fn load_gguf(path: &Path) -> Result<Self> {
        let f = GgufFile::open(path)?;
        let mut entries = HashMap::new();
        for info in &f.tensors {
            let Some(base) = info.name.strip_suffix(".in_sum2") else {
                continue;
            };
            let counts_name = format!("{base}.counts");
            let counts = f
                .tensor_info(&counts_name)
                .with_context(|| format!("{} has no {counts_name}", info.name))?;
            let as_f32 = |i: &crate::loaders::gguf_file::GgufTensorInfo| -> Result<Vec<f32>> {
                if i.ty
                    != crate::loaders::gguf_file::TensorType::Ggml(
                        candle_core::quantized::GgmlDType::F32,
                    )
                {
                    bail!("{} is {:?}, expected F32", i.name, i.ty);
                }
                Ok(f.tensor_bytes(i)
                    .chunks_exact(4)
                    .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                    .collect())
            };
            let sums = as_f32(info)?;
            let counts = as_f32(counts)?;
            // Experts' matrices are stacked: one count per matrix.
            let per = sums.len() / counts.len().max(1);
            let means = sums
                .iter()
                .enumerate()
                .map(|(i, s)| {
                    let c = counts.get(i / per.max(1)).copied().unwrap_or(0.0);
                    if c > 0.0 {
                        s / c
                    } else {
                        1.0
                    }
                })
                .collect();
            entries.insert(strip_weight(base).to_string(), means);
        }
        let chunks = f
            .get("imatrix.chunk_count")
            .and_then(|v| v.as_u64())
            .unwrap_or(0) as usize;
        let dataset = f
            .get("imatrix.datasets")
            .and_then(|v| v.as_array())
            .and_then(|a| a.first())
            .and_then(|v| v.as_str())
            .unwrap_or_default()
            .to_string();
        Ok(Self {
            entries,
            chunks,
            dataset,
        })
    }

    /// The importances for a Hugging Face weight name (`model.layers.3.self_attn.q_proj`).
    pub fn for_weight(&self, hf_name: &str) -> Option<&[f32]> {
        let gguf =
            crate::loaders::gguf::gguf_name(hf_name, crate::models::config::NormPlacement::Pre)
                .ok()?;
        self.entries
            .get(&gguf)
            .or_else(|| self.entries.get(hf_name))
            .map(Vec::as_slice)
    }

    /// Writes llama.cpp's legacy `.dat` format (values scaled by the chunk count, as
    /// llama-imatrix does, so readers that divide by ncall get the means back).
    pub fn save_dat(&self, path: &Path) -> Result<()> {
        let mut out = Vec::new();
        let ncall = self.chunks.max(1) as i32;
        let mut names: Vec<&String> = self.entries.keys().collect();
        names.sort();
        out.extend((names.len() as i32).to_le_bytes());
        for name in names {
            let full = format!("{name}.weight");
            out.extend((full.len() as i32).to_le_bytes());
            out.extend(full.as_bytes());
            let values = &self.entries[name];
            out.extend(ncall.to_le_bytes());
            out.extend((values.len() as i32).to_le_bytes());
            for v in values {
                out.extend((v * ncall as f32).to_le_bytes());
            }
        }
        out.extend(ncall.to_le_bytes());
        out.extend((self.dataset.len() as i32).to_le_bytes());
        out.extend(self.dataset.as_bytes());
        let mut f = std::fs::File::create(path)
            .with_context(|| format!("cannot write {}", path.display()))?;
        f.write_all(&out)?;
        Ok(())
    }
}

struct Reader<'a> {
    data: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn bytes(&mut self, n: usize, what: &str) -> Result<&[u8]> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.data.len());
        let Some(end) = end else {
            bail!("truncated file: {what} runs past its end");
        };
        let b = &self.data[self.at..end];
        self.at = end;
        Ok(b)
    }

    fn i32(&mut self, what: &str) -> Result<i32> {
        let b = self.bytes(4, what)?;
        Ok(i32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
}

/// Accumulates Σx² per input column and the row count for every observed linear while
/// the model runs calibration text.
#[derive(Debug, Default)]
pub struct Collector {
    stats: Mutex<HashMap<String, (Vec<f64>, u64)>>,
}

impl Collector {
    /// Adds `rows` activation rows of `x` (rows × cols) seen by the weight `gguf_name`.
    pub fn observe(&self, gguf_name: &str, x: &[f32], cols: usize) {
        let mut stats = self.stats.lock().unwrap_or_else(|e| e.into_inner());
        let entry = stats
            .entry(gguf_name.to_string())
            .or_insert_with(|| (vec![0f64; cols], 0));
        for row in x.chunks_exact(cols) {
            for (s, v) in entry.0.iter_mut().zip(row) {
                *s += (*v as f64) * (*v as f64);
            }
            entry.1 += 1;
        }
    }

    pub fn finish(&self, chunks: usize, dataset: &str) -> Imatrix {
        let stats = self.stats.lock().unwrap_or_else(|e| e.into_inner());
        let entries = stats
            .iter()
            .map(|(k, (sums, n))| {
                let n = (*n).max(1) as f64;
                (k.clone(), sums.iter().map(|s| (s / n) as f32).collect())
            })
            .collect();
        Imatrix::from_means(entries, chunks, dataset)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dat_round_trips_and_truncation_is_an_error() {
        let mut e = HashMap::new();
        e.insert("blk.0.attn_q".to_string(), vec![0.5, 2.0, 3.25]);
        e.insert("blk.1.ffn_down".to_string(), vec![1.0; 4]);
        let m = Imatrix::from_means(e, 7, "text.txt");
        let dir = std::env::temp_dir().join(format!("smelt-imatrix-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("m.dat");
        m.save_dat(&p).unwrap();
        let back = Imatrix::load(&p).unwrap();
        assert_eq!(back.chunks, 7);
        assert_eq!(back.dataset, "text.txt");
        assert_eq!(
            back.for_weight("model.layers.0.self_attn.q_proj").unwrap(),
            &[0.5, 2.0, 3.25]
        );
        let bytes = std::fs::read(&p).unwrap();
        std::fs::write(&p, &bytes[..30]).unwrap();
        let err = format!("{:#}", Imatrix::load(&p).unwrap_err());
        assert!(err.contains("truncated"), "{err}");
        std::fs::remove_dir_all(&dir).ok();
    }
}

/// A linear that reports its inputs to a [`Collector`] before running (calibration).
#[derive(Debug)]
pub struct ObservedLinear {
    inner: std::sync::Arc<dyn super::QuantLinear>,
    /// GGUF-style name the statistics are filed under.
    name: String,
    collector: std::sync::Arc<Collector>,
}

impl ObservedLinear {
    pub fn wrap(
        inner: std::sync::Arc<dyn super::QuantLinear>,
        hf_name: &str,
        collector: std::sync::Arc<Collector>,
    ) -> std::sync::Arc<dyn super::QuantLinear> {
        let name =
            crate::loaders::gguf::gguf_name(hf_name, crate::models::config::NormPlacement::Pre)
                .unwrap_or_else(|_| hf_name.to_string());
        std::sync::Arc::new(Self {
            inner,
            name,
            collector,
        })
    }
}

impl super::QuantLinear for ObservedLinear {
    fn forward(&self, x: &candle_core::Tensor) -> Result<candle_core::Tensor> {
        let cols = x.dim(candle_core::D::Minus1)?;
        let flat: Vec<f32> = x
            .to_dtype(candle_core::DType::F32)?
            .flatten_all()?
            .to_vec1()?;
        self.collector.observe(&self.name, &flat, cols);
        self.inner.forward(x)
    }
    fn dequantize(&self) -> Result<candle_core::Tensor> {
        self.inner.dequantize()
    }
    fn size_in_bytes(&self) -> usize {
        self.inner.size_in_bytes()
    }
    fn storage_name(&self) -> String {
        self.inner.storage_name()
    }
    fn shape(&self) -> (usize, usize) {
        self.inner.shape()
    }
    fn bias(&self) -> Option<&candle_core::Tensor> {
        self.inner.bias()
    }
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}
