//! A bounds-checked GGUF reader over a memory map.
//!
//! candle's reader trusts every length in the header (a corrupt string length becomes a
//! multi-exabyte allocation); this one checks each read against the file size so a
//! truncated or corrupt file is a clear error, and tensors stay memory-mapped until used.

use anyhow::{bail, Context, Result};
use candle_core::quantized::{ggml_file::qtensor_from_ggml, GgmlDType, QTensor};
use candle_core::Device;
use memmap2::Mmap;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

const GGUF_MAGIC: u32 = 0x4655_4747; // "GGUF" little-endian
const DEFAULT_ALIGNMENT: u64 = 32;

#[derive(Debug, Clone, PartialEq)]
pub enum GgufValue {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    U64(u64),
    I64(i64),
    F32(f32),
    F64(f64),
    Bool(bool),
    String(String),
    Array(Vec<GgufValue>),
}

impl GgufValue {
    pub fn as_u64(&self) -> Option<u64> {
        Some(match *self {
            Self::U8(v) => v as u64,
            Self::U16(v) => v as u64,
            Self::U32(v) => v as u64,
            Self::U64(v) => v,
            Self::I8(v) if v >= 0 => v as u64,
            Self::I16(v) if v >= 0 => v as u64,
            Self::I32(v) if v >= 0 => v as u64,
            Self::I64(v) if v >= 0 => v as u64,
            _ => return None,
        })
    }
    pub fn as_f64(&self) -> Option<f64> {
        Some(match *self {
            Self::F32(v) => v as f64,
            Self::F64(v) => v,
            _ => self.as_u64()? as f64,
        })
    }
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Self::String(s) => Some(s),
            _ => None,
        }
    }
    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            Self::Bool(b) => Some(b),
            _ => self.as_u64().map(|v| v != 0),
        }
    }
    pub fn as_array(&self) -> Option<&[GgufValue]> {
        match self {
            Self::Array(a) => Some(a),
            _ => None,
        }
    }
}

/// A tensor's storage type: one candle knows, or MXFP4 (ggml type 39), which smelt
/// reads itself (`quant/mxfp4.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TensorType {
    Ggml(GgmlDType),
    Mxfp4,
}

/// ggml's id of MXFP4.
const MXFP4_ID: u32 = 39;

impl TensorType {
    fn from_id(id: u32) -> Result<Self> {
        match id {
            MXFP4_ID => Ok(Self::Mxfp4),
            _ => Ok(Self::Ggml(ggml_dtype_from_id(id)?)),
        }
    }
    fn block_size(self) -> usize {
        match self {
            Self::Ggml(d) => d.block_size(),
            Self::Mxfp4 => crate::quant::mxfp4::BLOCK,
        }
    }
    fn type_size(self) -> usize {
        match self {
            Self::Ggml(d) => d.type_size(),
            Self::Mxfp4 => crate::quant::mxfp4::BLOCK_BYTES,
        }
    }
}

#[derive(Debug, Clone)]
pub struct GgufTensorInfo {
    pub name: String,
    /// Dimensions in ggml order (innermost first).
    pub ggml_dims: Vec<usize>,
    pub ty: TensorType,
    /// Absolute byte offset in the file.
    pub offset: usize,
    pub nbytes: usize,
}

impl GgufTensorInfo {
    /// The candle dtype of a tensor candle can hold; MXFP4 is an error naming it.
    pub fn dtype(&self) -> Result<GgmlDType> {
        match self.ty {
            TensorType::Ggml(d) => Ok(d),
            TensorType::Mxfp4 => bail!(
                "tensor {} is MXFP4, which only MoE expert weights may use here",
                self.name
            ),
        }
    }

    /// Dimensions in row-major (safetensors / candle) order.
    pub fn shape(&self) -> Vec<usize> {
        self.ggml_dims.iter().rev().copied().collect()
    }
}

pub struct GgufFile {
    pub path: PathBuf,
    pub version: u32,
    pub metadata: HashMap<String, GgufValue>,
    pub tensors: Vec<GgufTensorInfo>,
    index: HashMap<String, usize>,
    mmap: Mmap,
}

struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: u64, what: &str) -> Result<&'a [u8]> {
        let end = (self.pos as u64)
            .checked_add(n)
            .filter(|&e| e <= self.buf.len() as u64)
            .with_context(|| {
                format!(
                    "GGUF header is truncated or corrupt: {what} needs {n} bytes at offset {} but the file has {}",
                    self.pos,
                    self.buf.len()
                )
            })? as usize;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.take(4, "u32")?.try_into()?))
    }
    fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.take(8, "u64")?.try_into()?))
    }
    fn string(&mut self) -> Result<String> {
        let len = self.u64()?;
        let bytes = self.take(len, "string")?;
        // Some converters write invalid UTF-8 in vocabularies; keep the bytes readable.
        Ok(String::from_utf8_lossy(bytes).into_owned())
    }
    fn value(&mut self, ty: u32, depth: usize) -> Result<GgufValue> {
        macro_rules! num {
            ($t:ty, $n:expr, $v:ident) => {
                GgufValue::$v(<$t>::from_le_bytes(
                    self.take($n, stringify!($t))?.try_into()?,
                ))
            };
        }
        Ok(match ty {
            0 => num!(u8, 1, U8),
            1 => num!(i8, 1, I8),
            2 => num!(u16, 2, U16),
            3 => num!(i16, 2, I16),
            4 => num!(u32, 4, U32),
            5 => num!(i32, 4, I32),
            6 => num!(f32, 4, F32),
            7 => GgufValue::Bool(self.take(1, "bool")?[0] != 0),
            8 => GgufValue::String(self.string()?),
            9 => {
                if depth > 2 {
                    bail!("GGUF metadata nests arrays too deeply (corrupt file?)");
                }
                let elem_ty = self.u32()?;
                let n = self.u64()?;
                // Every element takes at least one byte: reject counts the file cannot hold.
                let remaining = (self.buf.len() - self.pos) as u64;
                if n > remaining {
                    bail!("GGUF array claims {n} elements but only {remaining} bytes remain (corrupt file?)");
                }
                let mut v = Vec::with_capacity(n as usize);
                for _ in 0..n {
                    v.push(self.value(elem_ty, depth + 1)?);
                }
                GgufValue::Array(v)
            }
            10 => num!(u64, 8, U64),
            11 => num!(i64, 8, I64),
            12 => num!(f64, 8, F64),
            other => bail!("GGUF metadata value type {other} is unknown (corrupt file?)"),
        })
    }
}

/// The GGUF/ggml type id of a dtype (inverse of [`ggml_dtype_from_id`]).
pub fn ggml_dtype_id(dt: GgmlDType) -> u32 {
    (0..=30)
        .find(|&id| ggml_dtype_from_id(id).is_ok_and(|d| d == dt))
        .expect("every candle ggml dtype has an id")
}

pub fn ggml_dtype_from_id(id: u32) -> Result<GgmlDType> {
    Ok(match id {
        0 => GgmlDType::F32,
        1 => GgmlDType::F16,
        2 => GgmlDType::Q4_0,
        3 => GgmlDType::Q4_1,
        6 => GgmlDType::Q5_0,
        7 => GgmlDType::Q5_1,
        8 => GgmlDType::Q8_0,
        9 => GgmlDType::Q8_1,
        10 => GgmlDType::Q2K,
        11 => GgmlDType::Q3K,
        12 => GgmlDType::Q4K,
        13 => GgmlDType::Q5K,
        14 => GgmlDType::Q6K,
        15 => GgmlDType::Q8K,
        30 => GgmlDType::BF16,
        other => bail!("ggml tensor type {other} is not supported (supported: F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q8_1, Q2_K..Q8_K)"),
    })
}

impl GgufFile {
    pub fn open(path: &Path) -> Result<Self> {
        let file = std::fs::File::open(path)
            .with_context(|| format!("cannot open GGUF file {}", path.display()))?;
        // SAFETY: the map is read-only; a file changed under us can only yield wrong values.
        let mmap = unsafe { Mmap::map(&file) }
            .with_context(|| format!("cannot memory-map {}", path.display()))?;
        Self::parse(path, mmap).with_context(|| format!("invalid GGUF file {}", path.display()))
    }

    fn parse(path: &Path, mmap: Mmap) -> Result<Self> {
        let mut c = Cursor {
            buf: &mmap[..],
            pos: 0,
        };
        let magic = c.u32().context("file is too short to be GGUF")?;
        if magic != GGUF_MAGIC {
            bail!("not a GGUF file (bad magic {magic:#010x})");
        }
        let version = c.u32()?;
        if !(2..=3).contains(&version) {
            bail!("GGUF version {version} is not supported (2 and 3 are)");
        }
        let n_tensors = c.u64()?;
        let n_kv = c.u64()?;
        let mut metadata = HashMap::new();
        for _ in 0..n_kv {
            let key = c.string()?;
            let ty = c.u32()?;
            let value = c
                .value(ty, 0)
                .with_context(|| format!("reading metadata {key}"))?;
            metadata.insert(key, value);
        }
        let mut raw = Vec::new();
        for _ in 0..n_tensors {
            let name = c.string()?;
            let n_dims = c.u32()?;
            if n_dims == 0 || n_dims > 4 {
                bail!("tensor {name} has {n_dims} dimensions (corrupt file?)");
            }
            let mut dims = Vec::with_capacity(n_dims as usize);
            for _ in 0..n_dims {
                dims.push(c.u64()? as usize);
            }
            let dtype = TensorType::from_id(c.u32()?).with_context(|| format!("tensor {name}"))?;
            let offset = c.u64()?;
            raw.push((name, dims, dtype, offset));
        }
        let alignment = metadata
            .get("general.alignment")
            .and_then(|v| v.as_u64())
            .unwrap_or(DEFAULT_ALIGNMENT)
            .max(1);
        let data_start = (c.pos as u64).div_ceil(alignment) * alignment;
        let file_len = mmap.len() as u64;
        let mut tensors = Vec::with_capacity(raw.len());
        let mut index = HashMap::new();
        for (name, dims, dtype, rel) in raw {
            let elems = dims
                .iter()
                .try_fold(1u64, |a, &d| a.checked_mul(d as u64))
                .with_context(|| format!("tensor {name}: element count overflows"))?;
            let bs = dtype.block_size() as u64;
            if dims.is_empty() || !(dims[0] as u64).is_multiple_of(bs) {
                bail!("tensor {name}: row length {:?} is not a multiple of the {dtype:?} block size {bs}", dims.first());
            }
            let nbytes = elems / bs * dtype.type_size() as u64;
            let offset = data_start + rel;
            if offset.checked_add(nbytes).is_none_or(|end| end > file_len) {
                bail!(
                    "file is truncated: tensor {name} needs bytes {offset}..{} but the file has {file_len}",
                    offset.saturating_add(nbytes)
                );
            }
            index.insert(name.clone(), tensors.len());
            tensors.push(GgufTensorInfo {
                name,
                ggml_dims: dims,
                ty: dtype,
                offset: offset as usize,
                nbytes: nbytes as usize,
            });
        }
        Ok(Self {
            path: path.to_path_buf(),
            version,
            metadata,
            tensors,
            index,
            mmap,
        })
    }

    pub fn get(&self, key: &str) -> Option<&GgufValue> {
        self.metadata.get(key)
    }

    pub fn tensor_info(&self, name: &str) -> Option<&GgufTensorInfo> {
        self.index.get(name).map(|&i| &self.tensors[i])
    }

    /// The raw (still quantized) bytes of a tensor, straight from the map.
    pub fn tensor_bytes(&self, info: &GgufTensorInfo) -> &[u8] {
        &self.mmap[info.offset..info.offset + info.nbytes]
    }

    /// Hands a tensor's pages back to the kernel once it has been copied out.
    pub fn release(&self, info: &GgufTensorInfo) {
        super::safetensors_file::release_pages(&self.mmap, info.offset, info.offset + info.nbytes);
    }

    pub fn qtensor(&self, name: &str, device: &Device) -> Result<QTensor> {
        let info = self
            .tensor_info(name)
            .with_context(|| format!("tensor {name} is missing from {}", self.path.display()))?;
        qtensor_from_ggml(info.dtype()?, self.tensor_bytes(info), info.shape(), device)
            .with_context(|| format!("loading tensor {name}"))
    }
}
