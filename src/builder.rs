//! The library's front door: load a model by id or path, optionally quantized in situ
//! (per layer by a topology, weighted by an imatrix or one collected from a calibration
//! text, from or to UQFF), and get an [`Engine`] to generate with. The CLI and the Python
//! package load through this too.
//!
//! ```no_run
//! use smelt::{IsqType, ModelBuilder};
//! let mut engine = ModelBuilder::new("HuggingFaceTB/SmolLM2-135M-Instruct")
//!     .with_isq(IsqType::Q4K)
//!     .build()?;
//! engine.re_isq(Some(IsqType::Q8_0))?;
//! # Ok::<(), anyhow::Error>(())
//! ```

use crate::engine::Engine;
use crate::loaders::{LoadOptions, LoadedModel, ModelSpec};
use crate::quant::auto::IsqChoice;
use crate::quant::imatrix::Imatrix;
use crate::quant::{IsqOrganization, IsqType, Topology};
use anyhow::Result;
use candle_core::DType;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub struct ModelBuilder {
    spec: ModelSpec,
    opts: LoadOptions,
    topology_file: Option<PathBuf>,
    imatrix_file: Option<PathBuf>,
    /// Text to collect an imatrix from, and the chunk length.
    calibration: Option<(PathBuf, usize)>,
    write_uqff: Option<PathBuf>,
    write_topology: Option<PathBuf>,
}

impl ModelBuilder {
    /// A Hugging Face checkpoint: a local directory, or a repo id looked up in the local
    /// cache (then the Hub when online).
    pub fn new(model_id: &str) -> Self {
        Self::from_spec(ModelSpec::Plain {
            model_id: model_id.to_string(),
            revision: "main".to_string(),
        })
    }

    /// A GGUF file; its tokenizer and chat template come from its metadata.
    pub fn gguf(path: &str) -> Self {
        Self::from_spec(ModelSpec::Gguf {
            model_id: None,
            file: path.to_string(),
            tokenizer_json: None,
        })
    }

    pub fn from_spec(spec: ModelSpec) -> Self {
        Self {
            spec,
            opts: LoadOptions::default(),
            topology_file: None,
            imatrix_file: None,
            calibration: None,
            write_uqff: None,
            write_topology: None,
        }
    }

    pub fn with_revision(mut self, revision: &str) -> Self {
        if let ModelSpec::Plain { revision: r, .. } = &mut self.spec {
            *r = revision.to_string();
        }
        self
    }

    /// Quantize attention and MLP linears while loading.
    pub fn with_isq(mut self, ty: IsqType) -> Self {
        self.opts.isq = Some(ty);
        self.opts.auto = None;
        self
    }

    /// `--isq auto --max-memory`: choose each weight's type (linears, embedding, head) by
    /// measuring every candidate's error, with every weight's bytes within `max_bytes`.
    /// An imatrix or calibration text weights the errors.
    pub fn with_auto_isq(mut self, max_bytes: u64) -> Self {
        self.opts.isq = None;
        // `with_write_topology`'s path joins it in `build_loaded`.
        self.opts.auto = Some(crate::quant::auto::AutoIsq {
            max_bytes,
            write_topology: None,
        });
        self
    }

    /// A uniform type or `auto` with its budget, as [`IsqChoice::parse`] reads them.
    pub fn with_isq_choice(self, choice: IsqChoice) -> Self {
        match choice {
            IsqChoice::Uniform(t) => self.with_isq(t),
            IsqChoice::Auto { max_bytes } => self.with_auto_isq(max_bytes),
        }
    }

    /// With `with_auto_isq`: save the chosen mix as a topology file, which
    /// `with_topology` loads again to the same model.
    pub fn with_write_topology(mut self, path: impl AsRef<Path>) -> Self {
        self.write_topology = Some(path.as_ref().to_path_buf());
        self
    }

    /// Which linears ISQ applies to (`Moqe`: only the experts of an MoE model).
    pub fn with_isq_organization(mut self, org: IsqOrganization) -> Self {
        self.opts.organization = org;
        self
    }

    /// Storage dtype of unquantized weights (f32 by default).
    pub fn with_dtype(mut self, dtype: DType) -> Self {
        self.opts.dtype = dtype;
        self
    }

    /// Per-layer or per-weight ISQ choices (a topology YAML file), overriding `with_isq`.
    pub fn with_topology(mut self, path: impl AsRef<Path>) -> Self {
        self.topology_file = Some(path.as_ref().to_path_buf());
        self
    }

    /// An importance matrix (llama.cpp's .dat or GGUF imatrix) weighting ISQ.
    pub fn with_imatrix(mut self, path: impl AsRef<Path>) -> Self {
        self.imatrix_file = Some(path.as_ref().to_path_buf());
        self
    }

    /// Collect an imatrix by running the unquantized model over this text in chunks of
    /// `ctx` tokens and quantize with it; it is also written to the `with_imatrix` path
    /// (default `./imatrix.dat`).
    pub fn with_calibration_file(mut self, text: impl AsRef<Path>, ctx: usize) -> Self {
        self.calibration = Some((text.as_ref().to_path_buf(), ctx));
        self
    }

    /// Take the quantized layers from this UQFF file instead of quantizing.
    pub fn with_from_uqff(mut self, path: impl AsRef<Path>) -> Self {
        self.opts.from_uqff = Some(path.as_ref().to_path_buf());
        self
    }

    /// After loading (and ISQ), save the quantized layers to this UQFF file.
    pub fn with_write_uqff(mut self, path: impl AsRef<Path>) -> Self {
        self.write_uqff = Some(path.as_ref().to_path_buf());
        self.opts.record_residual = true;
        self
    }

    /// Loads, quantizes, and writes UQFF if asked.
    pub fn build_loaded(mut self) -> Result<LoadedModel> {
        match (&mut self.opts.auto, self.write_topology.take()) {
            (Some(a), Some(p)) => a.write_topology = Some(p),
            (None, Some(_)) => anyhow::bail!(
                "--write-topology writes the mix --isq auto chooses; give --isq auto --max-memory SIZE"
            ),
            _ => {}
        }
        if let Some(p) = &self.topology_file {
            self.opts.topology = Some(Topology::from_file(p)?);
        }
        self.opts.imatrix = match (&self.calibration, &self.imatrix_file) {
            (Some((text, ctx)), out) => {
                let mut dense = LoadOptions {
                    dtype: self.opts.dtype,
                    ..Default::default()
                };
                if self.opts.auto.is_some() {
                    // Within a memory budget, calibrate on a 4-bit model: activation
                    // statistics barely move, and full precision never loads.
                    dense.isq = Some(IsqType::Q4K);
                    dense.topology = Some(Topology::parse(
                        "model.embed_tokens:\n  isq: Q8_0\nlm_head:\n  isq: Q8_0\n",
                    )?);
                }
                let mut engine = Engine::new(crate::loaders::load(&self.spec, &dense)?)?;
                let m = crate::calibrate::collect(&mut engine, text, *ctx)?;
                let path = out.clone().unwrap_or_else(|| PathBuf::from("imatrix.dat"));
                m.save_dat(&path)?;
                tracing::info!(
                    "wrote the imatrix ({} tensors, {} chunks) to {}",
                    m.len(),
                    m.chunks,
                    path.display()
                );
                Some(Arc::new(m))
            }
            (None, Some(path)) => Some(Arc::new(Imatrix::load(path)?)),
            (None, None) => None,
        };
        if self.opts.imatrix.is_some() && !self.opts.any_isq() {
            tracing::warn!("an imatrix only matters with ISQ or a topology; loading unquantized");
        }
        match (self.opts.isq, self.opts.organization) {
            (Some(t), org) => {
                let which = match org {
                    IsqOrganization::Default => "attention and MLP linears",
                    IsqOrganization::Moqe => "MoE expert linears (moqe)",
                };
                tracing::info!(
                    "ISQ: {which} → {t} (bit widths on the CPU: 2→Q2K, 3→Q3K, 4→Q4K, 5→Q5K, 6→Q6K, 8→Q8_0)"
                );
            }
            (None, IsqOrganization::Moqe) if self.opts.topology.is_none() => {
                tracing::warn!("ISQ organization moqe without an ISQ type quantizes nothing");
            }
            _ => {}
        }
        let loaded = crate::loaders::load(&self.spec, &self.opts)?;
        if let Some(path) = &self.write_uqff {
            crate::quant::uqff::write_loaded(&loaded, path)?;
        }
        Ok(loaded)
    }

    pub fn build(self) -> Result<Engine> {
        Engine::new(self.build_loaded()?)
    }
}
