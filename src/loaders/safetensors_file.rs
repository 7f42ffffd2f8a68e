//! Memory-mapped safetensors shards read one tensor at a time. After a tensor is copied
//! out (and, under ISQ, quantized), its pages are handed back to the kernel, so streaming
//! a checkpoint never keeps the full-precision file resident: peak memory stays near the
//! loaded model plus the largest tensor.

use anyhow::{bail, Context, Result};
use candle_core::safetensors::Load;
use candle_core::{Device, Tensor};
use memmap2::{Mmap, UncheckedAdvice};
use safetensors::tensor::{Metadata, SafeTensors, TensorView};
use std::collections::HashMap;
use std::path::PathBuf;

struct Shard {
    path: PathBuf,
    mmap: Mmap,
    /// Bytes before the data section (8-byte length + JSON header).
    data_start: usize,
    metadata: Metadata,
}

pub struct SafetensorsFiles {
    shards: Vec<Shard>,
    /// Tensor name → shard index.
    index: HashMap<String, usize>,
}

impl SafetensorsFiles {
    pub fn open(paths: &[PathBuf]) -> Result<Self> {
        let mut shards = Vec::with_capacity(paths.len());
        let mut index = HashMap::new();
        for path in paths {
            let file = std::fs::File::open(path)
                .with_context(|| format!("cannot open {}", path.display()))?;
            // SAFETY: read-only map; a file changed under us can only yield wrong values.
            let mmap = unsafe { Mmap::map(&file) }
                .with_context(|| format!("cannot map {}", path.display()))?;
            let (header_len, metadata) = SafeTensors::read_metadata(&mmap).map_err(|e| {
                anyhow::anyhow!(
                    "{} is not valid safetensors (truncated or corrupt?): {e:?}",
                    path.display()
                )
            })?;
            let data_start = 8 + header_len;
            for (name, info) in metadata.tensors() {
                if data_start + info.data_offsets.1 > mmap.len() {
                    bail!(
                        "{} is truncated: tensor {name} ends past the end of the file",
                        path.display()
                    );
                }
                index.insert(name, shards.len());
            }
            shards.push(Shard {
                path: path.clone(),
                mmap,
                data_start,
                metadata,
            });
        }
        Ok(Self { shards, index })
    }

    /// The free-form `__metadata__` of the first file.
    pub fn user_metadata(&self) -> Option<&HashMap<String, String>> {
        self.shards.first()?.metadata.metadata().as_ref()
    }

    /// Raw bytes, dtype and shape of one tensor (no conversion).
    pub fn raw(&self, name: &str) -> Result<(safetensors::Dtype, Vec<usize>, &[u8])> {
        let (shard, start, end, info) = self.locate(name)?;
        Ok((info.dtype, info.shape.clone(), &shard.mmap[start..end]))
    }

    pub fn contains(&self, name: &str) -> bool {
        self.index.contains_key(name)
    }

    /// Copies one tensor out of the map (on the CPU) and releases its pages.
    pub fn load(&self, name: &str) -> Result<Tensor> {
        let (shard, start, end, info) = self.locate(name)?;
        copy_out(shard, name, info.dtype, info.shape.clone(), start, end)
    }

    /// Slice `index` of tensor `name`'s outermost dimension (one expert of a stacked
    /// expert tensor), copied out with its pages released.
    pub fn load_slice(&self, name: &str, index: usize) -> Result<Tensor> {
        let (shard, start, end, info) = self.locate(name)?;
        let outer = *info.shape.first().context("a 0-d tensor has no slices")?;
        anyhow::ensure!(
            index < outer,
            "tensor {name} of shape {:?} has no slice {index}",
            info.shape
        );
        let per = (end - start) / outer;
        let (from, to) = (start + index * per, start + (index + 1) * per);
        copy_out(shard, name, info.dtype, info.shape[1..].to_vec(), from, to)
    }

    /// The shard holding `name`, the tensor's byte range in its map, and its header entry.
    fn locate(
        &self,
        name: &str,
    ) -> Result<(&Shard, usize, usize, &safetensors::tensor::TensorInfo)> {
        let shard = &self.shards[*self
            .index
            .get(name)
            .with_context(|| format!("tensor {name} is missing from the checkpoint"))?];
        let info = shard
            .metadata
            .info(name)
            .with_context(|| format!("tensor {name} is missing from {}", shard.path.display()))?;
        Ok((
            shard,
            shard.data_start + info.data_offsets.0,
            shard.data_start + info.data_offsets.1,
            info,
        ))
    }
}

/// Bytes `from..to` of a shard's map as a tensor on the CPU, their pages then released.
fn copy_out(
    shard: &Shard,
    name: &str,
    dtype: safetensors::Dtype,
    shape: Vec<usize>,
    from: usize,
    to: usize,
) -> Result<Tensor> {
    let view = TensorView::new(dtype, shape, &shard.mmap[from..to])
        .map_err(|e| anyhow::anyhow!("tensor {name} in {}: {e:?}", shard.path.display()))?;
    let tensor = view
        .load(&Device::Cpu)
        .with_context(|| format!("reading tensor {name} from {}", shard.path.display()))?;
    release_pages(&shard.mmap, from, to);
    Ok(tensor)
}

/// Drops the whole pages inside `start..end` from this process's resident set (they
/// are file-backed, so a later read just faults them in again).
pub(crate) fn release_pages(mmap: &Mmap, start: usize, end: usize) {
    const PAGE: usize = 4096;
    let (from, to) = (start.div_ceil(PAGE) * PAGE, end / PAGE * PAGE);
    if to > from {
        // SAFETY: DONTNEED on a read-only file mapping only discards cached pages; the
        // data stays readable from the file.
        let _ = unsafe { mmap.unchecked_advise_range(UncheckedAdvice::DontNeed, from, to - from) };
    }
}
