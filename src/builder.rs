//! The library's front door: load a model by id or path, optionally quantized in situ,
//! and get an [`Engine`] to generate with.
//!
//! ```no_run
//! use smelt::{IsqType, ModelBuilder};
//! let engine = ModelBuilder::new("HuggingFaceTB/SmolLM2-135M-Instruct")
//!     .with_isq(IsqType::Q4K)
//!     .build()?;
//! # Ok::<(), anyhow::Error>(())
//! ```

use crate::engine::Engine;
use crate::loaders::{LoadOptions, ModelSpec};
use crate::quant::IsqType;
use anyhow::Result;
use candle_core::DType;

pub struct ModelBuilder {
    spec: ModelSpec,
    opts: LoadOptions,
}

impl ModelBuilder {
    /// A Hugging Face checkpoint: a local directory, or a repo id looked up in the local
    /// cache (then the Hub when online).
    pub fn new(model_id: &str) -> Self {
        Self {
            spec: ModelSpec::Plain {
                model_id: model_id.to_string(),
                revision: "main".to_string(),
            },
            opts: LoadOptions::default(),
        }
    }

    /// A GGUF file; its tokenizer and chat template come from its metadata.
    pub fn gguf(path: &str) -> Self {
        Self {
            spec: ModelSpec::Gguf {
                model_id: None,
                file: path.to_string(),
                tokenizer_json: None,
            },
            opts: LoadOptions::default(),
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
        self
    }

    /// Which linears ISQ applies to (`Moqe`: only the experts of an MoE model).
    pub fn with_isq_organization(mut self, org: crate::quant::IsqOrganization) -> Self {
        self.opts.organization = org;
        self
    }

    /// Storage dtype of unquantized weights (f32 by default).
    pub fn with_dtype(mut self, dtype: DType) -> Self {
        self.opts.dtype = dtype;
        self
    }

    pub fn build(self) -> Result<Engine> {
        Engine::new(crate::loaders::load(&self.spec, &self.opts)?)
    }
}
