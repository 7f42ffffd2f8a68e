//! Perplexity computed as llama.cpp's llama-perplexity does, so figures are comparable:
//! the text is tokenized whole (with BOS when the vocabulary adds one), split into
//! non-overlapping chunks of `ctx` tokens whose first token becomes BOS, and only the
//! second half of each chunk is scored. PPL = exp(mean NLL), ± from the NLL variance.

use crate::engine::Engine;
use anyhow::{bail, Result};

#[derive(Debug, Clone)]
pub struct PerplexityResult {
    pub ppl: f64,
    /// llama.cpp's ± figure: ppl · sqrt(var(NLL) / (n − 1)).
    pub ppl_err: f64,
    pub chunks: usize,
    pub scored_tokens: usize,
    /// Running perplexity after each chunk, as llama.cpp prints it.
    pub per_chunk: Vec<f64>,
}

pub fn perplexity(
    engine: &Engine,
    text: &str,
    ctx: usize,
    max_chunks: Option<usize>,
) -> Result<PerplexityResult> {
    if ctx < 8 {
        bail!("--ctx must be at least 8 tokens");
    }
    if ctx > engine.context_length() {
        bail!(
            "--ctx {ctx} exceeds the model's context of {} tokens",
            engine.context_length()
        );
    }
    let tokens = engine.tokenize(text, true)?;
    // What the tokenizer puts before a raw text is the BOS llama.cpp re-inserts per chunk.
    let bos = engine.tokenize("", true)?.first().copied();
    let n_chunks = (tokens.len() / ctx).min(max_chunks.unwrap_or(usize::MAX));
    if n_chunks == 0 {
        bail!(
            "the text has {} tokens; at least {ctx} are needed for one chunk (lower --ctx)",
            tokens.len()
        );
    }
    tracing::info!(
        "perplexity: {} tokens, {n_chunks} chunks of {ctx}",
        tokens.len()
    );
    let first = ctx / 2;
    let (mut nll, mut nll2, mut count) = (0f64, 0f64, 0usize);
    let mut per_chunk = Vec::with_capacity(n_chunks);
    let bar = crate::progress::bar(n_chunks as u64, "perplexity");
    for c in 0..n_chunks {
        let mut chunk = tokens[c * ctx..(c + 1) * ctx].to_vec();
        if let Some(b) = bos {
            chunk[0] = b;
        }
        let mut session = engine.new_session();
        // Only the scored rows are needed: positions first..ctx-1 predict first+1..ctx.
        let logits = engine.model.forward(&chunk, &mut session.cache, first)?;
        let rows = logits.narrow(0, 0, ctx - 1 - first)?;
        let lsm = candle_nn::ops::log_softmax(&rows, candle_core::D::Minus1)?;
        let lsm: Vec<Vec<f32>> = lsm.to_vec2()?;
        for (j, row) in lsm.iter().enumerate() {
            let target = chunk[first + j + 1] as usize;
            let v = -(row[target] as f64);
            nll += v;
            nll2 += v * v;
            count += 1;
        }
        per_chunk.push((nll / count as f64).exp());
        bar.inc(1);
    }
    bar.finish_and_clear();
    let mean = nll / count as f64;
    let var = nll2 / count as f64 - mean * mean;
    let ppl = mean.exp();
    let ppl_err = if var > 0.0 && count > 1 {
        (var / (count - 1) as f64).sqrt() * ppl
    } else {
        0.0
    };
    Ok(PerplexityResult {
        ppl,
        ppl_err,
        chunks: n_chunks,
        scored_tokens: count,
        per_chunk,
    })
}
