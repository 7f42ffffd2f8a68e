//! Linears over token-major f32 rows of several sequences at once: how rows are grouped
//! into calls so a sequence's arithmetic never depends on its batch, and the calls
//! themselves (one linear, or several sharing an input).

use crate::quant::kernels;
use crate::quant::QuantLinear;
use anyhow::Result;
use candle_core::{DType, Device, Tensor};
use std::ops::Range;
use std::sync::Arc;

/// Splits rows of consecutive items into the calls a linear gets: prompts long enough
/// for the GEMM path (which come first) share one call — one dequantization of each
/// weight for all of them — and short ones (decode steps, short turns) are packed up to
/// the kernel limit. Both paths compute each row independently of the others in its
/// call, so batching never changes a sequence's output (tests/server.rs checks it).
pub(super) fn row_groups(lens: &[usize]) -> Vec<Range<usize>> {
    let mut groups: Vec<Range<usize>> = Vec::new();
    let mut pending: Option<Range<usize>> = None;
    let mut start = 0;
    let mut long: Option<Range<usize>> = None;
    for &t in lens {
        let rows = start..start + t;
        if t >= kernels::MAX_KERNEL_ROWS {
            groups.extend(pending.take());
            match long.as_mut() {
                Some(l) if l.end == rows.start => l.end = rows.end,
                _ => groups.extend(long.replace(rows)),
            }
        } else {
            groups.extend(long.take());
            match pending.as_mut() {
                Some(p) if p.len() + t < kernels::MAX_KERNEL_ROWS => p.end = rows.end,
                _ => groups.extend(pending.replace(rows)),
            }
        }
        start += t;
    }
    groups.extend(long);
    groups.extend(pending);
    groups.sort_by_key(|g| g.start);
    groups
}

/// A linear applied to token-major f32 rows, one call per row group.
pub(super) fn apply(
    lin: &dyn QuantLinear,
    x: Vec<f32>,
    groups: &[Range<usize>],
) -> Result<Vec<f32>> {
    let rows: usize = groups.iter().map(|g| g.len()).sum();
    let cols = x.len() / rows.max(1);
    let run = |x: Vec<f32>, t: usize| -> Result<Vec<f32>> {
        let y = lin.forward(&Tensor::from_vec(x, (t, cols), &Device::Cpu)?)?;
        Ok(y.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?)
    };
    if groups.len() == 1 {
        return run(x, rows);
    }
    let mut out = Vec::with_capacity(rows * lin.shape().0);
    for g in groups {
        out.extend(run(x[g.start * cols..g.end * cols].to_vec(), g.len())?);
    }
    Ok(out)
}

/// Several linears over the same token-major rows (q/k/v, gate/up). Where all are
/// block-quantized without bias, each row group's input is quantized once and all
/// weights share one parallel run — the integer GEMM for prompt-sized groups, the per-row
/// kernels for short ones — with no tensor copies on the way; otherwise each goes through
/// [`apply`]. Each output is what `apply` gives for that linear alone, bit for bit.
pub(super) fn apply_many(
    lins: &[&dyn QuantLinear],
    x: Vec<f32>,
    groups: &[Range<usize>],
) -> Result<Vec<Vec<f32>>> {
    let rows: usize = groups.iter().map(|g| g.len()).sum();
    let cols = x.len() / rows.max(1);
    let weights: Option<Vec<kernels::PromptWeight>> = lins
        .iter()
        .map(|l| {
            let g = l.as_any().downcast_ref::<crate::quant::GgmlLinear>()?;
            g.bias().is_none().then(|| g.blocks()).flatten()
        })
        .collect();
    let Some(weights) = weights else {
        return lins.iter().map(|l| apply(*l, x.clone(), groups)).collect();
    };
    let prompt_gemm = weights.iter().all(|w| kernels::has_prompt_gemm(w.kind));
    let mut outs: Vec<Vec<f32>> = lins
        .iter()
        .map(|l| Vec::with_capacity(rows * l.shape().0))
        .collect();
    for g in groups {
        let part = &x[g.start * cols..g.end * cols];
        let ys = if g.len() < kernels::MAX_KERNEL_ROWS {
            kernels::matmul_many(&weights, cols, part, g.len())
        } else if prompt_gemm {
            kernels::matmul_prompt_many(&weights, cols, part, g.len())
        } else {
            let whole = 0..g.len();
            lins.iter()
                .map(|l| apply(*l, part.to_vec(), std::slice::from_ref(&whole)))
                .collect::<Result<_>>()?
        };
        if groups.len() == 1 {
            return Ok(ys);
        }
        for (o, y) in outs.iter_mut().zip(ys) {
            o.extend(y);
        }
    }
    Ok(outs)
}

/// Cuts a token-major buffer into the per-item row blocks.
pub(super) fn split_rows<'b>(
    mut buf: &'b mut [f32],
    lens: &[usize],
    row: usize,
) -> Vec<&'b mut [f32]> {
    let mut parts = Vec::with_capacity(lens.len());
    for &t in lens {
        let (head, rest) = std::mem::take(&mut buf).split_at_mut(t * row);
        parts.push(head);
        buf = rest;
    }
    parts
}

/// Projections of one input as the checkpoint stores them: `N` linears, or one fused
/// linear whose output rows are theirs in order (Phi-3's `qkv_proj`, `gate_up_proj`).
pub(super) enum Projections<const N: usize> {
    Split([Arc<dyn QuantLinear>; N]),
    Fused(Arc<dyn QuantLinear>),
}

impl<const N: usize> Projections<N> {
    pub(super) fn linears(&self) -> Vec<&Arc<dyn QuantLinear>> {
        match self {
            Self::Split(l) => l.iter().collect(),
            Self::Fused(l) => vec![l],
        }
    }

    pub(super) fn linears_mut(&mut self) -> Vec<&mut Arc<dyn QuantLinear>> {
        match self {
            Self::Split(l) => l.iter_mut().collect(),
            Self::Fused(l) => vec![l],
        }
    }
}

/// A linear has the shape the config implies, or an error naming it.
pub(super) fn check_shape(
    name: &str,
    lin: &Arc<dyn QuantLinear>,
    shape: (usize, usize),
) -> Result<()> {
    anyhow::ensure!(
        lin.shape() == shape,
        "{name} has shape {:?}, the config implies {shape:?}",
        lin.shape()
    );
    Ok(())
}
