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
mod sync;

pub use builder::ModelBuilder;
pub use engine::Engine;
pub use loaders::{load, LoadOptions, ModelSpec};
pub use quant::IsqType;

/// Makes glibc keep freed memory for reuse instead of handing every large buffer back to
/// the OS. By default a buffer above the (adaptive) mmap threshold is mapped fresh and
/// unmapped on free, and the heap's top is trimmed, so each prompt's activation and
/// output buffers were new pages: page faults and zeroing were a fifth of a 512-token
/// prompt at 2 threads. Buffers up to 32 MiB (glibc's largest threshold) now come from
/// the heap, which is trimmed only past 512 MiB of free top. Called once at start-up by
/// the binary; peak RSS is unchanged (the same buffers were live at the peak before).
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets allocator parameters; called before other threads start.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 512 << 20);
    }
}
