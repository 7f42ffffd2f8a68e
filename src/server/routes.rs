//! Route handlers: parse and check the request, turn it into engine sequences, and shape
//! the engine's events into OpenAI responses (one JSON body here, SSE chunks in sse.rs).

use super::error::{ApiError, ApiResult};
use super::responses::{
    AssistantMessage, ChatChoice, ChatCompletion, ChatCompletionChunk, Completion,
    CompletionChoice, ErrorResponse, FunctionCallOut, Health, ModelCard, ModelList, ReIsqResponse,
    ToolCallOut, Usage,
};
use super::sse::{stream_response, StreamShape};
use super::types::{parse_body, ChatRequest, CompletionRequest, Generation, Prompt, ReIsqRequest};
use super::AppState;
use crate::engine::constraint::{Constraint, GrammarSpec};
use crate::engine::ids::{new_id, now_secs};
use crate::engine::scheduler::{SeqEvent, SeqRequest, SubmitError, TokenLogprob};
use crate::engine::tools::{parse as parse_tool_calls, ToolChoice};
use crate::engine::FinishReason;
use crate::quant::IsqType;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};
use std::sync::Arc;
use tokio::sync::mpsc;

type St = State<Arc<AppState>>;

pub(super) fn body_bytes(body: Result<Bytes, BytesRejection>) -> ApiResult<Bytes> {
    body.map_err(|e| {
        let status = e.status();
        let msg = if status == StatusCode::PAYLOAD_TOO_LARGE {
            "the request body is larger than the server's limit".to_string()
        } else {
            e.body_text()
        };
        ApiError::new(status, msg)
    })
}

#[utoipa::path(get, path = "/health", security(()), responses(
    (status = 200, description = "Serving", body = Health),
    (status = 503, description = "Loading the model, or draining at shutdown", body = Health)))]
pub async fn health() -> Json<Health> {
    Json(Health { status: "ok" })
}

fn model_card(st: &AppState) -> ModelCard {
    ModelCard {
        id: st.model_name.clone(),
        object: "model",
        created: st.created,
        owned_by: "smelt",
        max_model_len: st.context_length,
    }
}

#[utoipa::path(get, path = "/v1/models", responses((status = 200, body = ModelList)))]
pub async fn models(State(st): St) -> Json<ModelList> {
    Json(ModelList {
        object: "list",
        data: vec![model_card(&st)],
    })
}

#[utoipa::path(get, path = "/v1/models/{model}", params(("model" = String, Path, description = "The served model's id")),
    responses((status = 200, body = ModelCard), (status = 404, body = ErrorResponse)))]
pub async fn model(State(st): St, Path(id): Path<String>) -> ApiResult<Json<ModelCard>> {
    st.check_model(Some(&id))?;
    Ok(Json(model_card(&st)))
}

#[utoipa::path(get, path = "/metrics", responses((status = 200, description = "Prometheus text: smelt_* counters and vLLM's gauges", content_type = "text/plain", body = String)))]
pub async fn metrics(State(st): St) -> impl IntoResponse {
    (
        [("content-type", "text/plain; version=0.0.4")],
        st.handle.metrics.render(&st.model_name),
    )
}

#[utoipa::path(post, path = "/v1/re_isq", request_body = ReIsqRequest, responses(
    (status = 200, body = ReIsqResponse), (status = 400, body = ErrorResponse), (status = 500, body = ErrorResponse)))]
pub async fn re_isq(
    State(st): St,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Json<ReIsqResponse>> {
    let req: ReIsqRequest = parse_body(&body_bytes(body)?)?;
    let ty = match req.ggml_type.as_deref().map(str::trim) {
        None | Some("none") | Some("") => None,
        Some(name) => Some(name.parse::<IsqType>().map_err(|e| {
            ApiError::invalid("ggml_type", format!("{e:#}")).code("invalid_isq_type")
        })?),
    };
    let start = std::time::Instant::now();
    st.handle
        .re_isq(ty)
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e))?;
    Ok(Json(ReIsqResponse {
        status: "ok",
        ggml_type: ty.map(|t| t.to_string()),
        seconds: start.elapsed().as_secs_f64(),
    }))
}

/// One request's sequences: a prompt each, `n` choices per prompt.
struct Job {
    prompts: Vec<Vec<u32>>,
    gen: Generation,
    logprobs: Option<usize>,
    /// The compiled output grammar; each choice gets its own copy.
    constraint: Option<Constraint>,
}

/// A submitted choice.
pub(super) struct Choice {
    pub(super) index: usize,
    pub(super) prompt: usize,
    pub(super) events: mpsc::UnboundedReceiver<SeqEvent>,
}

fn submit_error(e: SubmitError) -> ApiError {
    match e {
        SubmitError::Invalid(msg) => {
            let code = msg.contains("context").then_some("context_length_exceeded");
            let mut err = ApiError::new(StatusCode::BAD_REQUEST, msg);
            err.code = code;
            err
        }
        SubmitError::QueueFull(_) => {
            ApiError::new(StatusCode::TOO_MANY_REQUESTS, e.to_string()).code("queue_full")
        }
        SubmitError::ShuttingDown => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    }
}

impl AppState {
    pub(super) fn check_model(&self, model: Option<&str>) -> ApiResult<()> {
        match model {
            Some(m) if !m.is_empty() && m != self.model_name => Err(ApiError::new(
                StatusCode::NOT_FOUND,
                format!(
                    "the model `{m}` does not exist; this server serves `{}`",
                    self.model_name
                ),
            )
            .param("model")
            .code("model_not_found")),
            _ => Ok(()),
        }
    }

    fn check_prompt(&self, tokens: &[u32], param: &str) -> ApiResult<()> {
        if tokens.is_empty() {
            return Err(ApiError::invalid(param, "the prompt is empty"));
        }
        if tokens.len() >= self.context_length {
            return Err(ApiError::invalid(
                param,
                format!(
                    "this model's maximum context length is {} tokens, but the prompt is {} tokens",
                    self.context_length,
                    tokens.len()
                ),
            )
            .code("context_length_exceeded"));
        }
        Ok(())
    }

    fn submit(&self, job: &Job) -> ApiResult<Vec<Choice>> {
        let mut choices = Vec::new();
        for (p, prompt) in job.prompts.iter().enumerate() {
            for j in 0..job.gen.n {
                let mut sampling = job.gen.sampling.clone();
                sampling.seed = sampling.seed.map(|s| s.wrapping_add(j as u64));
                let room = self.context_length - prompt.len();
                let req = SeqRequest {
                    prompt_tokens: prompt.clone(),
                    max_tokens: job.gen.max_tokens.unwrap_or(room).min(room),
                    sampling,
                    stop: job.gen.stop.clone(),
                    logprobs: job.logprobs,
                    constraint: job.constraint.clone(),
                };
                let events = self.handle.submit(req).map_err(submit_error)?;
                choices.push(Choice {
                    index: p * job.gen.n + j,
                    prompt: p,
                    events,
                });
            }
        }
        Ok(choices)
    }

    /// Compiles the request's output grammar; a grammar that does not compile is a 400
    /// naming the field and the problem.
    fn compile(
        &self,
        grammar: &Option<(&'static str, GrammarSpec)>,
    ) -> ApiResult<Option<Constraint>> {
        let Some((param, spec)) = grammar else {
            return Ok(None);
        };
        let engine = self.engine()?;
        engine.compile_grammar(spec).map(Some).map_err(|e| {
            ApiError::invalid(param, format!("`{param}` does not compile: {e:#}"))
                .code("invalid_grammar")
        })
    }

    pub(super) fn engine(
        &self,
    ) -> ApiResult<std::sync::RwLockReadGuard<'_, crate::engine::Engine>> {
        self.handle
            .engine
            .read()
            .map_err(|_| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "the engine failed"))
    }
}

/// Everything a finished choice produced.
#[derive(Default)]
struct Collected {
    text: String,
    logprobs: Vec<TokenLogprob>,
    finish: Option<FinishReason>,
    completion_tokens: usize,
}

async fn collect(choice: &mut Choice) -> ApiResult<Collected> {
    let mut out = Collected::default();
    while let Some(ev) = choice.events.recv().await {
        match ev {
            SeqEvent::Text { text, logprobs } => {
                out.text.push_str(&text);
                out.logprobs.extend(logprobs);
            }
            SeqEvent::Done {
                finish_reason,
                completion_tokens,
                ..
            } => {
                out.finish = Some(finish_reason);
                out.completion_tokens = completion_tokens;
                return Ok(out);
            }
            SeqEvent::Error(e) => {
                return Err(ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e));
            }
        }
    }
    Err(ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "the engine stopped before the reply was complete",
    ))
}

pub(super) fn usage(prompt_tokens: usize, completion_tokens: usize) -> Value {
    serde_json::to_value(Usage::new(prompt_tokens, completion_tokens)).expect("usage serializes")
}

pub(super) fn chat_logprobs(lps: &[TokenLogprob]) -> Value {
    let entry = |token: &str, logprob: f32| json!({"token": token, "logprob": logprob, "bytes": token.as_bytes()});
    json!({
        "content": lps.iter().map(|l| {
            let mut e = entry(&l.token, l.logprob);
            e["top_logprobs"] = l.top.iter().map(|(t, p)| entry(t, *p)).collect();
            e
        }).collect::<Vec<_>>()
    })
}

/// The legacy completions logprobs object; `offset` is where this text starts.
pub(super) fn completion_logprobs(lps: &[TokenLogprob], mut offset: usize) -> Value {
    let mut text_offset = Vec::with_capacity(lps.len());
    for l in lps {
        text_offset.push(offset);
        offset += l.token.len();
    }
    json!({
        "tokens": lps.iter().map(|l| l.token.clone()).collect::<Vec<_>>(),
        "token_logprobs": lps.iter().map(|l| l.logprob).collect::<Vec<_>>(),
        "top_logprobs": lps.iter().map(|l| {
            l.top.iter().map(|(t, p)| (t.clone(), json!(p))).collect::<serde_json::Map<_, _>>()
        }).collect::<Vec<_>>(),
        "text_offset": text_offset,
    })
}

#[utoipa::path(post, path = "/v1/chat/completions", request_body = ChatRequest, responses(
    (status = 200, description = "A chat completion; with `stream: true`, server-sent events of chunks ending with `data: [DONE]`",
     content((ChatCompletion = "application/json"), (ChatCompletionChunk = "text/event-stream"))),
    (status = 400, description = "Invalid request, unsupported field, grammar that does not compile", body = ErrorResponse),
    (status = 401, body = ErrorResponse), (status = 404, body = ErrorResponse), (status = 413, body = ErrorResponse),
    (status = 422, description = "A field of the wrong type", body = ErrorResponse),
    (status = 429, description = "Queue full", body = ErrorResponse), (status = 503, description = "Loading", body = ErrorResponse)))]
pub async fn chat_completions(State(st): St, body: Result<Bytes, BytesRejection>) -> Response {
    match chat_inner(st, body).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

async fn chat_inner(st: Arc<AppState>, body: Result<Bytes, BytesRejection>) -> ApiResult<Response> {
    let req: ChatRequest = parse_body(&body_bytes(body)?)?;
    if let Some(user) = &req.common.user {
        tracing::debug!("chat request from user `{user}`");
    }
    st.check_model(req.common.model.as_deref())?;
    let (max, param) = match req.max_completion_tokens {
        Some(m) => (Some(m), "max_completion_tokens"),
        None => (req.common.max_tokens, "max_tokens"),
    };
    let mut gen = req.common.generation(max, param)?;
    let logprobs = req.logprobs()?;
    let messages = req.chat_messages()?;
    let (prompt, tools) = {
        let engine = st.engine()?;
        let tools = req
            .tool_setup(engine.tool_format())?
            .filter(|t| t.choice != ToolChoice::None);
        let prompt = match &tools {
            Some(t) => engine.chat_tokens_with_tools(&messages, t),
            None => engine.chat_tokens(&messages),
        }
        .map_err(|e| ApiError::invalid("messages", format!("{e:#}")))?;
        if let Some(g) = tools.as_ref().and_then(|t| engine.tool_grammar(t)) {
            if let Some((p, _)) = &gen.grammar {
                return Err(ApiError::invalid(
                    p,
                    format!("`{p}` cannot be combined with tool calls that constrain the output (tool_choice required or named, or a template without native tool support)"),
                ));
            }
            gen.grammar = Some(("tools", g));
        }
        (prompt, tools)
    };
    st.check_prompt(&prompt, "messages")?;
    let prompt_tokens = prompt.len();
    let constraint = st.compile(&gen.grammar)?;
    let job = Job {
        prompts: vec![prompt],
        gen,
        logprobs,
        constraint,
    };
    let choices = st.submit(&job)?;
    let (id, created) = (new_id("chatcmpl"), now_secs());
    if job.gen.stream {
        return Ok(stream_response(
            StreamShape::Chat { tools },
            st.clone(),
            id,
            created,
            choices,
            vec![prompt_tokens],
            job.gen.include_usage,
        ));
    }
    let mut out = Vec::new();
    let mut completion_tokens = 0;
    for mut c in choices {
        let got = collect(&mut c).await?;
        completion_tokens += got.completion_tokens;
        let mut finish = got.finish.map(|f| f.as_str());
        let message = match &tools {
            None => AssistantMessage {
                role: "assistant",
                content: Some(got.text),
                tool_calls: None,
            },
            Some(t) => {
                let (content, mut calls) = parse_tool_calls(t.format, &got.text);
                if !t.parallel {
                    calls.truncate(1);
                }
                if !calls.is_empty() && finish == Some("stop") {
                    finish = Some("tool_calls");
                }
                let only_calls = !calls.is_empty() && content.trim().is_empty();
                AssistantMessage {
                    role: "assistant",
                    content: (!only_calls).then_some(content),
                    tool_calls: (!calls.is_empty()).then(|| {
                        calls
                            .into_iter()
                            .map(|c| ToolCallOut {
                                id: c.id,
                                kind: "function",
                                function: FunctionCallOut {
                                    name: c.name,
                                    arguments: c.arguments,
                                },
                            })
                            .collect()
                    }),
                }
            }
        };
        out.push(ChatChoice {
            index: c.index,
            message,
            logprobs: logprobs.map(|_| chat_logprobs(&got.logprobs)),
            finish_reason: finish,
        });
    }
    Ok(Json(ChatCompletion {
        id,
        object: "chat.completion",
        created,
        model: st.model_name.clone(),
        system_fingerprint: st.fingerprint.clone(),
        choices: out,
        usage: Usage::new(prompt_tokens, completion_tokens),
    })
    .into_response())
}

#[utoipa::path(post, path = "/v1/completions", request_body = CompletionRequest, responses(
    (status = 200, description = "A text completion; with `stream: true`, server-sent events of `text_completion` chunks ending with `data: [DONE]`",
     content((Completion = "application/json"), (Completion = "text/event-stream"))),
    (status = 400, body = ErrorResponse), (status = 401, body = ErrorResponse), (status = 404, body = ErrorResponse),
    (status = 413, body = ErrorResponse), (status = 422, body = ErrorResponse), (status = 429, body = ErrorResponse),
    (status = 503, body = ErrorResponse)))]
pub async fn completions(State(st): St, body: Result<Bytes, BytesRejection>) -> Response {
    match completions_inner(st, body).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

async fn completions_inner(
    st: Arc<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Response> {
    let req: CompletionRequest = parse_body(&body_bytes(body)?)?;
    if let Some(user) = &req.common.user {
        tracing::debug!("completion request from user `{user}`");
    }
    st.check_model(req.common.model.as_deref())?;
    let gen = req.common.generation(req.common.max_tokens, "max_tokens")?;
    let logprobs = req.logprobs()?;
    let echo = req.echo.unwrap_or(false);
    let mut prompts = Vec::new();
    let mut prompt_texts = Vec::new();
    {
        let engine = st.engine()?;
        for p in req.prompt.into_prompts()? {
            let (tokens, text) = match p {
                Prompt::Text(t) => (
                    engine
                        .tokenize(&t, true)
                        .map_err(|e| ApiError::invalid("prompt", format!("{e:#}")))?,
                    t,
                ),
                Prompt::Tokens(ids) => {
                    let vocab = engine.model.config().vocab_size;
                    if let Some(bad) = ids.iter().find(|&&i| i as usize >= vocab) {
                        return Err(ApiError::invalid(
                            "prompt",
                            format!("token id {bad} is outside the vocabulary of {vocab}"),
                        ));
                    }
                    let text = engine.detokenize(&ids).unwrap_or_default();
                    (ids, text)
                }
            };
            prompts.push(tokens);
            prompt_texts.push(text);
        }
    }
    for p in &prompts {
        st.check_prompt(p, "prompt")?;
    }
    let prompt_lens: Vec<usize> = prompts.iter().map(Vec::len).collect();
    let constraint = st.compile(&gen.grammar)?;
    let job = Job {
        prompts,
        gen,
        logprobs,
        constraint,
    };
    let choices = st.submit(&job)?;
    let (id, created) = (new_id("cmpl"), now_secs());
    if job.gen.stream {
        let shape = StreamShape::Completion {
            echo: echo.then_some(prompt_texts),
        };
        return Ok(stream_response(
            shape,
            st.clone(),
            id,
            created,
            choices,
            prompt_lens,
            job.gen.include_usage,
        ));
    }
    let mut out = Vec::new();
    let mut completion_tokens = 0;
    for mut c in choices {
        let got = collect(&mut c).await?;
        completion_tokens += got.completion_tokens;
        let prefix = if echo {
            prompt_texts[c.prompt].as_str()
        } else {
            ""
        };
        out.push(CompletionChoice {
            index: c.index,
            text: format!("{prefix}{}", got.text),
            logprobs: logprobs.map(|_| completion_logprobs(&got.logprobs, prefix.len())),
            finish_reason: got.finish.map(|f| f.as_str()),
        });
    }
    Ok(Json(Completion {
        id,
        object: "text_completion",
        created,
        model: st.model_name.clone(),
        system_fingerprint: st.fingerprint.clone(),
        choices: out,
        usage: Usage::new(prompt_lens.iter().sum(), completion_tokens),
    })
    .into_response())
}
