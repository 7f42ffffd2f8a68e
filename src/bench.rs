//! `smelt bench`: llama-bench's two tests. pp<N> runs an N-token prompt in one batch on an
//! empty cache; tg<N> decodes N tokens one at a time from an empty cache. Each is
//! repeated (after one warm-up) and reported as mean ± sd tokens/s.

use crate::engine::Engine;
use anyhow::Result;
use rand::{Rng, SeedableRng};
use std::time::Instant;

#[derive(Debug, Clone)]
pub struct BenchRow {
    pub test: String,
    pub mean_tps: f64,
    pub sd_tps: f64,
    pub runs: Vec<f64>,
}

fn random_tokens(n: usize, vocab: usize, seed: u64) -> Vec<u32> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    (0..n).map(|_| rng.gen_range(0..vocab as u32)).collect()
}

fn time_prompt(engine: &Engine, tokens: &[u32]) -> Result<f64> {
    let mut s = engine.new_session();
    let t = Instant::now();
    engine.model.forward(tokens, &mut s.cache, usize::MAX)?;
    Ok(t.elapsed().as_secs_f64())
}

fn time_decode(engine: &Engine, n: usize, vocab: usize) -> Result<f64> {
    let mut s = engine.new_session();
    let mut tok = random_tokens(1, vocab, 1)[0];
    let t = Instant::now();
    for _ in 0..n {
        let logits = engine.model.forward(&[tok], &mut s.cache, usize::MAX)?;
        tok = crate::engine::sampling::argmax(&crate::models::last_logits_vec(&logits)?);
    }
    Ok(t.elapsed().as_secs_f64())
}

fn stats(test: String, n: usize, secs: Vec<f64>) -> BenchRow {
    let runs: Vec<f64> = secs.iter().map(|s| n as f64 / s).collect();
    let mean = runs.iter().sum::<f64>() / runs.len() as f64;
    let sd = if runs.len() > 1 {
        (runs.iter().map(|r| (r - mean).powi(2)).sum::<f64>() / (runs.len() - 1) as f64).sqrt()
    } else {
        0.0
    };
    BenchRow {
        test,
        mean_tps: mean,
        sd_tps: sd,
        runs,
    }
}

pub fn run(engine: &Engine, n_prompt: usize, n_gen: usize, reps: usize) -> Result<Vec<BenchRow>> {
    let vocab = engine.model.config().vocab_size;
    let ctx = engine.context_length();
    anyhow::ensure!(
        n_prompt < ctx && n_gen < ctx,
        "bench sizes must be below the context of {ctx} tokens"
    );
    let reps = reps.max(1);
    let mut rows = Vec::new();
    if n_prompt > 0 {
        let tokens = random_tokens(n_prompt, vocab, 0);
        time_prompt(engine, &tokens)?;
        let secs = (0..reps)
            .map(|_| time_prompt(engine, &tokens))
            .collect::<Result<Vec<_>>>()?;
        rows.push(stats(format!("pp{n_prompt}"), n_prompt, secs));
    }
    if n_gen > 0 {
        time_decode(engine, 1, vocab)?;
        let secs = (0..reps)
            .map(|_| time_decode(engine, n_gen, vocab))
            .collect::<Result<Vec<_>>>()?;
        rows.push(stats(format!("tg{n_gen}"), n_gen, secs));
    }
    Ok(rows)
}

/// Peak resident set size of this process in bytes (Linux VmHWM), if known.
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Read bandwidth of main memory in bytes/s with `threads` threads: the best of a few
/// passes summing a buffer far larger than the caches (the same measure as the
/// memory-bandwidth figures in the reference notes).
pub fn memory_bandwidth(threads: usize) -> f64 {
    const BYTES: usize = 512 << 20;
    let words = BYTES / 8;
    let buf: Vec<u64> = (0..words as u64).collect();
    let chunk = words.div_ceil(threads.max(1));
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads.max(1))
        .build();
    let Ok(pool) = pool else { return 0.0 };
    let mut best = f64::INFINITY;
    for _ in 0..4 {
        let start = Instant::now();
        let total: u64 = pool.install(|| {
            use rayon::prelude::*;
            buf.par_chunks(chunk)
                .map(|c| c.iter().fold(0u64, |a, &x| a.wrapping_add(x)))
                .reduce(|| 0, u64::wrapping_add)
        });
        std::hint::black_box(total);
        best = best.min(start.elapsed().as_secs_f64());
    }
    BYTES as f64 / best
}
