//! Response objects shaped like OpenAI's (`.choices[0].message.content`,
//! `.usage.prompt_tokens`, `.choices[0].delta.content`), read-only.

use pyo3::prelude::*;

macro_rules! repr {
    ($t:ty) => {
        #[pymethods]
        impl $t {
            fn __repr__(&self) -> String {
                format!("{self:?}")
            }
        }
    };
}

/// Token counts of a request: prompt, completion and their sum.
#[pyclass(module = "smelt", get_all, frozen)]
#[derive(Clone, Debug)]
pub struct Usage {
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    pub total_tokens: usize,
}
repr!(Usage);

impl Usage {
    pub fn new(prompt_tokens: usize, completion_tokens: usize) -> Self {
        Self {
            prompt_tokens,
            completion_tokens,
            total_tokens: prompt_tokens + completion_tokens,
        }
    }
}

/// The assistant's reply in a `Choice`.
#[pyclass(module = "smelt", get_all, frozen)]
#[derive(Clone, Debug)]
pub struct ResponseMessage {
    pub role: String,
    pub content: Option<String>,
}
repr!(ResponseMessage);

/// One reply of a chat completion.
#[pyclass(module = "smelt", get_all, frozen)]
#[derive(Clone, Debug)]
pub struct Choice {
    pub index: usize,
    pub message: ResponseMessage,
    /// `stop` or `length` (`cancelled` if the engine was stopped).
    pub finish_reason: String,
}
repr!(Choice);

/// A chat completion (`object: "chat.completion"`), shaped like OpenAI's.
#[pyclass(module = "smelt", get_all, frozen)]
#[derive(Clone, Debug)]
pub struct ChatCompletionResponse {
    pub id: String,
    pub object: String,
    pub created: u64,
    pub model: String,
    pub system_fingerprint: String,
    pub choices: Vec<Choice>,
    pub usage: Usage,
}
repr!(ChatCompletionResponse);

/// What a streamed chunk adds to the reply.
#[pyclass(module = "smelt", get_all, frozen)]
#[derive(Clone, Debug)]
pub struct Delta {
    /// `assistant` on the first chunk, None after.
    pub role: Option<String>,
    pub content: Option<String>,
}
repr!(Delta);

/// The one choice of a streamed chunk.
#[pyclass(module = "smelt", get_all, frozen)]
#[derive(Clone, Debug)]
pub struct ChunkChoice {
    pub index: usize,
    pub delta: Delta,
    pub finish_reason: Option<String>,
}
repr!(ChunkChoice);

/// One chunk of a streamed chat completion (`object: "chat.completion.chunk"`).
#[pyclass(module = "smelt", get_all, frozen)]
#[derive(Clone, Debug)]
pub struct ChatCompletionChunk {
    pub id: String,
    pub object: String,
    pub created: u64,
    pub model: String,
    pub choices: Vec<ChunkChoice>,
    /// On the last chunk only.
    pub usage: Option<Usage>,
}
repr!(ChatCompletionChunk);

/// One reply of a text completion.
#[pyclass(module = "smelt", get_all, frozen)]
#[derive(Clone, Debug)]
pub struct CompletionChoice {
    pub index: usize,
    pub text: String,
    pub finish_reason: String,
}
repr!(CompletionChoice);

/// A text completion (`object: "text_completion"`), shaped like OpenAI's.
#[pyclass(module = "smelt", get_all, frozen)]
#[derive(Clone, Debug)]
pub struct CompletionResponse {
    pub id: String,
    pub object: String,
    pub created: u64,
    pub model: String,
    pub choices: Vec<CompletionChoice>,
    pub usage: Usage,
}
repr!(CompletionResponse);
