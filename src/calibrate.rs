//! `--calibration-file`: run the model over a text and collect an importance matrix (mean
//! squared input activation per column of every attention and MLP linear), as
//! llama-imatrix does: the text is tokenized and cut into chunks of `ctx` tokens, each
//! starting with BOS when the tokenizer adds one, and every token of every chunk counts.

use crate::engine::Engine;
use crate::quant::imatrix::{Collector, Imatrix, ObservedLinear};
use anyhow::{bail, Context, Result};
use std::path::Path;
use std::sync::Arc;

pub fn collect(engine: &mut Engine, text_path: &Path, ctx: usize) -> Result<Imatrix> {
    let text = std::fs::read_to_string(text_path)
        .with_context(|| format!("cannot read calibration text {}", text_path.display()))?;
    let tokens = engine.tokenize(&text, true)?;
    let bos = engine.tokenize("", true)?.first().copied();
    let ctx = ctx.min(engine.context_length());
    let n_chunks = tokens.len() / ctx;
    if n_chunks == 0 {
        bail!(
            "the calibration text has {} tokens; at least {ctx} are needed for one chunk",
            tokens.len()
        );
    }
    let collector = Arc::new(Collector::default());
    engine
        .model
        .map_linears(&mut |name, lin| ObservedLinear::wrap(lin, name, collector.clone()));
    tracing::info!(
        "calibration: {} tokens, {n_chunks} chunks of {ctx}",
        tokens.len()
    );
    let bar = crate::progress::bar(n_chunks as u64, "imatrix");
    let result = (|| -> Result<()> {
        for c in 0..n_chunks {
            let mut chunk = tokens[c * ctx..(c + 1) * ctx].to_vec();
            if let Some(b) = bos {
                chunk[0] = b;
            }
            let mut cache = engine.model.new_cache();
            engine.model.forward(&chunk, &mut cache, usize::MAX)?;
            bar.inc(1);
        }
        Ok(())
    })();
    bar.finish_and_clear();
    result?;
    let name = text_path.to_string_lossy();
    Ok(collector.finish(n_chunks, &name))
}
