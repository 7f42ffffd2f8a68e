//! The `smelt._smelt` extension module: the engine from Python, shaped like the peer's
//! API (`Runner`, `Which`, `ChatCompletionRequest`, OpenAI-shaped responses). Everything
//! runs through the `smelt` crate's scheduler, so requests from several Python threads are
//! batched together; the GIL is released while the engine works.

mod errors;
mod requests;
mod responses;
mod runner;
mod which;

use pyo3::prelude::*;

#[pymodule]
fn _smelt(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<which::Which>()?;
    m.add_class::<runner::Runner>()?;
    m.add_class::<requests::ChatCompletionRequest>()?;
    m.add_class::<requests::CompletionRequest>()?;
    m.add_class::<responses::Usage>()?;
    m.add_class::<responses::ResponseMessage>()?;
    m.add_class::<responses::Choice>()?;
    m.add_class::<responses::ChatCompletionResponse>()?;
    m.add_class::<responses::Delta>()?;
    m.add_class::<responses::ChunkChoice>()?;
    m.add_class::<responses::ChatCompletionChunk>()?;
    m.add_class::<responses::CompletionChoice>()?;
    m.add_class::<responses::CompletionResponse>()?;
    m.add_class::<runner::ChatCompletionStream>()?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
