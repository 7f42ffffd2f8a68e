//! `--isq auto --max-memory SIZE`: a measuring pass over the streamed weights, the choice
//! of a mix within the budget, then the real load with that mix as its topology
//! (`quant/auto/`).

use super::{LoadOptions, LoadedModel, ModelSpec};
use crate::quant::auto::mix::Mix;
use crate::quant::auto::source::Measurements;
use crate::quant::auto::{format_size, AutoIsq};
use anyhow::{bail, Context, Result};
use std::sync::Arc;
use std::time::Instant;

pub fn load(spec: &ModelSpec, opts: &LoadOptions, auto: &AutoIsq) -> Result<LoadedModel> {
    let measuring = Instant::now();
    let mix = choose(spec, opts, auto)?;
    let measure_s = measuring.elapsed().as_secs_f64();
    if let Some(path) = &auto.write_topology {
        std::fs::write(path, mix.topology_yaml())
            .with_context(|| format!("cannot write the topology to {}", path.display()))?;
        tracing::info!("wrote the mix to {}", path.display());
    }
    let real = LoadOptions {
        topology: Some(mix.topology()?),
        auto: None,
        ..opts.clone()
    };
    let start = Instant::now();
    let mut loaded = super::load(spec, &real)?;
    let total = loaded.model.weights_size_in_bytes() as u64;
    if total > auto.max_bytes {
        tracing::warn!(
            "the loaded weights take {}, over --max-memory {} (the mix predicted {})",
            format_size(total),
            format_size(auto.max_bytes),
            format_size(mix.total_bytes())
        );
    }
    // The search is part of the load, and of what ISQ costs.
    loaded.load_seconds = start.elapsed().as_secs_f64() + measure_s;
    loaded.isq_seconds += measure_s;
    Ok(loaded)
}

/// The measuring pass and the search: the mix `load` quantizes with.
pub fn choose(spec: &ModelSpec, opts: &LoadOptions, auto: &AutoIsq) -> Result<Mix> {
    if opts.topology.is_some() {
        bail!("--isq auto chooses every weight's type itself; drop --topology (or use --write-topology to see the mix)");
    }
    if opts.from_uqff.is_some() {
        bail!("--isq auto quantizes while loading; it cannot load from --from-uqff");
    }
    let found = Arc::new(Measurements::default());
    let pass = LoadOptions {
        isq: None,
        auto: None,
        topology: None,
        record_residual: false,
        measure: Some(found.clone()),
        ..opts.clone()
    };
    let start = Instant::now();
    drop(super::load(spec, &pass)?);
    let (units, fixed) = found.finish();
    let mix = Mix::choose(units, fixed, auto.max_bytes)?;
    tracing::info!(
        "auto ISQ: measured in {:.2}s; {}",
        start.elapsed().as_secs_f64(),
        mix.summary()
    );
    Ok(mix)
}
