//! `Runner`: a loaded model behind the engine's continuous-batching scheduler. Each call
//! submits sequences and waits for their events with the GIL released, waking every
//! 50 ms to let Python deliver signals: Ctrl-C cancels the request (its sequence is
//! dropped at the engine's next step) and the runner stays usable.

use crate::errors::{engine_error, value_error};
use crate::requests::{ChatCompletionRequest, CompletionRequest, Generation};
use crate::responses::*;
use crate::which::{parse_isq, Which};
use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use smelt::engine::chat_template::ChatMessage;
use smelt::engine::ids::{new_id, now_secs};
use smelt::engine::scheduler::{
    SchedulerConfig, SchedulerHandle, SeqEvent, SeqRequest, SubmitError,
};
use smelt::engine::Engine;
use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;
use tokio::runtime::Runtime;
use tokio::sync::mpsc::UnboundedReceiver;

type Events = UnboundedReceiver<SeqEvent>;

/// A model loaded (and quantized in situ if `in_situ_quant` names an ISQ type: `Q4K`,
/// `Q8_0`, `HQQ4`, `4`…, or is `"auto"` with `max_memory`: per-weight types chosen by
/// measurement within that many bytes, `"300MiB"`, `"4GB"`…) and served to any number of Python threads, whose requests the
/// engine batches together.
#[pyclass(module = "smelt", frozen)]
pub struct Runner {
    handle: SchedulerHandle,
    model_name: String,
    context_length: usize,
}

fn waiter() -> PyResult<Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .map_err(|e| PyRuntimeError::new_err(format!("cannot start a timer: {e}")))
}

/// The next event, None once the engine dropped the sequence. Raises what a Python signal
/// handler raised (KeyboardInterrupt) while waiting.
fn next_event(py: Python<'_>, rt: &Runtime, rx: &mut Events) -> PyResult<Option<SeqEvent>> {
    loop {
        let got = py.detach(|| {
            rt.block_on(async { tokio::time::timeout(Duration::from_millis(50), rx.recv()).await })
        });
        match got {
            Ok(ev) => return Ok(ev),
            Err(_) => py.check_signals()?,
        }
    }
}

/// One finished sequence.
struct Finished {
    text: String,
    finish_reason: String,
    completion_tokens: usize,
}

fn collect(py: Python<'_>, rt: &Runtime, rx: &mut Events) -> PyResult<Finished> {
    let mut text = String::new();
    loop {
        match next_event(py, rt, rx)? {
            Some(SeqEvent::Text { text: t, .. }) => text.push_str(&t),
            Some(SeqEvent::Done {
                finish_reason,
                completion_tokens,
                ..
            }) => {
                return Ok(Finished {
                    text,
                    finish_reason: finish_reason.as_str().to_string(),
                    completion_tokens,
                })
            }
            Some(SeqEvent::Error(e)) => return Err(PyRuntimeError::new_err(e)),
            None => {
                return Err(PyRuntimeError::new_err(
                    "the engine stopped before the reply was complete",
                ))
            }
        }
    }
}

impl Runner {
    fn engine(&self) -> PyResult<std::sync::RwLockReadGuard<'_, Engine>> {
        self.handle
            .engine
            .read()
            .map_err(|_| PyRuntimeError::new_err("the engine failed"))
    }

    /// Submits the choices and waits for all of them: each one's output and the tokens
    /// generated in all.
    fn run(
        &self,
        py: Python<'_>,
        prompt: &[u32],
        g: &Generation,
    ) -> PyResult<(Vec<Finished>, usize)> {
        let rt = waiter()?;
        let mut out = Vec::new();
        for mut rx in self.submit(prompt, g)? {
            out.push(collect(py, &rt, &mut rx)?);
        }
        let tokens = out.iter().map(|f| f.completion_tokens).sum();
        Ok((out, tokens))
    }

    /// `n` sequences of `prompt` (seeds offset per choice, as the HTTP server does).
    fn submit(&self, prompt: &[u32], g: &Generation) -> PyResult<Vec<Events>> {
        if prompt.len() >= self.context_length {
            return Err(value_error(format!(
                "the prompt is {} tokens, which does not fit the model's context of {} tokens",
                prompt.len(),
                self.context_length
            )));
        }
        let room = self.context_length - prompt.len();
        (0..g.n)
            .map(|j| {
                let mut sampling = g.sampling.clone();
                sampling.seed = sampling.seed.map(|s| s.wrapping_add(j as u64));
                let req = SeqRequest {
                    prompt_tokens: prompt.to_vec(),
                    max_tokens: g.max_tokens.unwrap_or(room).min(room),
                    sampling,
                    stop: g.stop.clone(),
                    logprobs: None,
                    constraint: None,
                };
                self.handle.submit(req).map_err(|e| match e {
                    SubmitError::Invalid(m) => value_error(m),
                    other => PyRuntimeError::new_err(other.to_string()),
                })
            })
            .collect()
    }
}

#[pymethods]
impl Runner {
    /// Loads `which` (see `Which`), quantized to `in_situ_quant` if given (`"auto"` with
    /// a `max_memory` budget; `write_topology` saves the mix it chose). `max_seqs`
    /// sequences decode together; `kv_cache_mb` bounds the paged KV cache.
    #[new]
    #[pyo3(signature = (which, in_situ_quant = None, max_seqs = 16, kv_cache_mb = 1024, max_queue = 1024,
        max_memory = None, write_topology = None))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        which: Which,
        in_situ_quant: Option<String>,
        max_seqs: usize,
        kv_cache_mb: usize,
        max_queue: usize,
        max_memory: Option<String>,
        write_topology: Option<std::path::PathBuf>,
    ) -> PyResult<Self> {
        let mut builder = which.builder(in_situ_quant.as_deref(), max_memory.as_deref())?;
        if let Some(p) = write_topology {
            builder = builder.with_write_topology(p);
        }
        let engine = py.detach(|| builder.build()).map_err(engine_error)?;
        let model_name = engine.model_name.clone();
        let context_length = engine.context_length();
        let cfg = SchedulerConfig {
            max_seqs,
            kv_cache_bytes: kv_cache_mb << 20,
            max_queue,
        };
        let handle =
            SchedulerHandle::start(engine, cfg).map_err(|e| value_error(format!("{e:#}")))?;
        Ok(Self {
            handle,
            model_name,
            context_length,
        })
    }

    /// The model's name (its file or repo id).
    #[getter]
    fn model_name(&self) -> String {
        self.model_name.clone()
    }

    /// The context length, in tokens.
    #[getter]
    fn context_length(&self) -> usize {
        self.context_length
    }

    /// A chat completion: a `ChatCompletionResponse`, or with `request.stream` a
    /// `ChatCompletionStream` yielding `ChatCompletionChunk`s.
    fn send_chat_completion_request(
        &self,
        py: Python<'_>,
        request: ChatCompletionRequest,
    ) -> PyResult<Py<PyAny>> {
        let g = request.generation()?;
        let messages: Vec<ChatMessage> = request
            .messages
            .iter()
            .map(|m| {
                let role = match m["role"].as_str() {
                    "developer" => "system",
                    r => r,
                };
                let mut msg = ChatMessage::new(role, m.get("content").map_or("", String::as_str));
                msg.name = m.get("name").cloned();
                msg.tool_call_id = m.get("tool_call_id").cloned();
                msg
            })
            .collect();
        let prompt = self
            .engine()?
            .chat_tokens(&messages)
            .map_err(|e| value_error(format!("{e:#}")))?;
        let (id, created) = (new_id("chatcmpl"), now_secs());
        if request.stream {
            if g.n != 1 {
                return Err(value_error("stream=True takes n_choices=1"));
            }
            let rx = self.submit(&prompt, &g)?.pop().expect("one choice");
            let stream = ChatCompletionStream {
                state: Mutex::new(StreamState {
                    rx: Some(rx),
                    rt: Some(waiter()?),
                    pending: VecDeque::new(),
                    started: false,
                }),
                id,
                created,
                model: self.model_name.clone(),
                prompt_tokens: prompt.len(),
            };
            return Ok(Py::new(py, stream)?.into_any());
        }
        let (finished, completion_tokens) = self.run(py, &prompt, &g)?;
        let mut choices = Vec::new();
        for (index, f) in finished.into_iter().enumerate() {
            choices.push(Choice {
                index,
                message: ResponseMessage {
                    role: "assistant".into(),
                    content: Some(f.text),
                },
                finish_reason: f.finish_reason,
            });
        }
        let r = ChatCompletionResponse {
            id,
            object: "chat.completion".into(),
            created,
            model: self.model_name.clone(),
            system_fingerprint: format!("smelt-{}", env!("CARGO_PKG_VERSION")),
            choices,
            usage: Usage::new(prompt.len(), completion_tokens),
        };
        Ok(Py::new(py, r)?.into_any())
    }

    /// A text completion of `request.prompt`.
    fn send_completion_request(
        &self,
        py: Python<'_>,
        request: CompletionRequest,
    ) -> PyResult<CompletionResponse> {
        let g = request.generation()?;
        let prompt = self
            .engine()?
            .tokenize(&request.prompt, true)
            .map_err(|e| value_error(format!("{e:#}")))?;
        if prompt.is_empty() {
            return Err(value_error("the prompt is empty"));
        }
        let (finished, completion_tokens) = self.run(py, &prompt, &g)?;
        let mut choices = Vec::new();
        for (index, f) in finished.into_iter().enumerate() {
            let text = if request.echo_prompt {
                format!("{}{}", request.prompt, f.text)
            } else {
                f.text
            };
            choices.push(CompletionChoice {
                index,
                text,
                finish_reason: f.finish_reason,
            });
        }
        Ok(CompletionResponse {
            id: new_id("cmpl"),
            object: "text_completion".into(),
            created: now_secs(),
            model: self.model_name.clone(),
            choices,
            usage: Usage::new(prompt.len(), completion_tokens),
        })
    }

    /// Re-quantizes the loaded model to `isq_type` (`"Q8_0"`, `"Q4K"`, …; None: back to
    /// the load dtype) from its source weights, once running requests have finished.
    #[pyo3(signature = (isq_type))]
    fn send_re_isq(&self, py: Python<'_>, isq_type: Option<String>) -> PyResult<()> {
        let ty = isq_type.as_deref().map(parse_isq).transpose()?;
        py.detach(|| self.handle.re_isq_blocking(ty))
            .map_err(PyRuntimeError::new_err)
    }

    /// Token ids of `text`; `add_special` adds what the tokenizer adds around a raw text.
    #[pyo3(signature = (text, add_special = false))]
    fn tokenize(&self, text: &str, add_special: bool) -> PyResult<Vec<u32>> {
        self.engine()?
            .tokenize(text, add_special)
            .map_err(|e| value_error(format!("{e:#}")))
    }

    /// The text of `tokens` (special tokens kept, so text round-trips).
    fn detokenize(&self, tokens: Vec<u32>) -> PyResult<String> {
        let engine = self.engine()?;
        let vocab = engine.model.config().vocab_size;
        if let Some(bad) = tokens.iter().find(|&&t| t as usize >= vocab) {
            return Err(value_error(format!(
                "token id {bad} is outside the vocabulary of {vocab}"
            )));
        }
        engine
            .assets
            .tokenizer
            .decode(&tokens, false)
            .map_err(|e| value_error(format!("{e}")))
    }

    fn __repr__(&self) -> String {
        format!("Runner(model={:?})", self.model_name)
    }
}

struct StreamState {
    /// None once the stream has ended (or was interrupted).
    rx: Option<Events>,
    /// Taken while waiting.
    rt: Option<Runtime>,
    pending: VecDeque<ChatCompletionChunk>,
    started: bool,
}

/// The chunks of a streamed chat completion: iterate it (`for chunk in stream`). The
/// first chunk carries `delta.role`, the last `finish_reason` and `usage`. Interrupting
/// the iteration (Ctrl-C) cancels the generation.
#[pyclass(module = "smelt", frozen)]
pub struct ChatCompletionStream {
    state: Mutex<StreamState>,
    id: String,
    created: u64,
    model: String,
    prompt_tokens: usize,
}

impl ChatCompletionStream {
    fn chunk(
        &self,
        delta: Delta,
        finish: Option<String>,
        usage: Option<Usage>,
    ) -> ChatCompletionChunk {
        ChatCompletionChunk {
            id: self.id.clone(),
            object: "chat.completion.chunk".into(),
            created: self.created,
            model: self.model.clone(),
            choices: vec![ChunkChoice {
                index: 0,
                delta,
                finish_reason: finish,
            }],
            usage,
        }
    }
}

#[pymethods]
impl ChatCompletionStream {
    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__(&self, py: Python<'_>) -> PyResult<Option<ChatCompletionChunk>> {
        let poisoned = |_| PyRuntimeError::new_err("stream state poisoned");
        loop {
            let mut st = self.state.lock().map_err(poisoned)?;
            if let Some(c) = st.pending.pop_front() {
                return Ok(Some(c));
            }
            let Some(mut rx) = st.rx.take() else {
                return Ok(None);
            };
            let rt = match st.rt.take() {
                Some(rt) => rt,
                None => waiter()?,
            };
            drop(st);
            // Waiting without the lock; an interrupt drops `rx`, which cancels the sequence.
            let ev = next_event(py, &rt, &mut rx)?;
            let mut st = self.state.lock().map_err(poisoned)?;
            st.rt = Some(rt);
            if !st.started {
                st.started = true;
                let first = self.chunk(
                    Delta {
                        role: Some("assistant".into()),
                        content: Some(String::new()),
                    },
                    None,
                    None,
                );
                st.pending.push_back(first);
            }
            match ev {
                Some(SeqEvent::Text { text, .. }) => {
                    let c = self.chunk(
                        Delta {
                            role: None,
                            content: Some(text),
                        },
                        None,
                        None,
                    );
                    st.pending.push_back(c);
                    st.rx = Some(rx);
                }
                Some(SeqEvent::Done {
                    finish_reason,
                    completion_tokens,
                    ..
                }) => {
                    let c = self.chunk(
                        Delta {
                            role: None,
                            content: None,
                        },
                        Some(finish_reason.as_str().to_string()),
                        Some(Usage::new(self.prompt_tokens, completion_tokens)),
                    );
                    st.pending.push_back(c);
                }
                Some(SeqEvent::Error(e)) => return Err(PyRuntimeError::new_err(e)),
                None => {
                    return Err(PyRuntimeError::new_err(
                        "the engine stopped before the reply was complete",
                    ))
                }
            }
        }
    }
}
