//! smelt: an LLM inference engine whose edge is in-situ quantization.
//!
//! `loaders` turn files into a model + tokenizer, `models` hold the architectures (written
//! against the one linear-layer trait in `quant`), `engine` runs generation, and the
//! fronts (`repl`, `perplexity`, `bench`) drive the engine.

pub mod bench;
pub mod builder;
pub mod calibrate;
pub mod engine;
pub mod loaders;
pub mod models;
pub mod perplexity;
pub mod progress;
pub mod quant;
pub mod repl;
pub mod server;

pub use builder::ModelBuilder;
pub use engine::Engine;
pub use loaders::{load, LoadOptions, ModelSpec};
pub use quant::IsqType;
