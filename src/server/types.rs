//! Request bodies of the OpenAI API as smelt accepts them, and their validation into
//! engine requests. A field smelt does not implement is a 400 naming it, so that nothing
//! a client asks for is silently ignored; a null value counts as absent.

use super::error::{ApiError, ApiResult};
use super::structured::StructuredFields;
use crate::engine::chat_template::ChatMessage;
use crate::engine::constraint::GrammarSpec;
use crate::engine::sampling::SamplingParams;
use crate::engine::tools::{Tool, ToolChoice, ToolFormat, ToolSetup};
use axum::http::StatusCode;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::Value;
use std::collections::HashMap;
use utoipa::ToSchema;

/// The top-level fields a request body may have.
pub trait KnownFields {
    fn known(field: &str) -> bool;
}

const COMMON_FIELDS: &[&str] = &[
    "model",
    "max_tokens",
    "temperature",
    "top_p",
    "top_k",
    "min_p",
    "stop",
    "seed",
    "n",
    "presence_penalty",
    "frequency_penalty",
    "repetition_penalty",
    "logit_bias",
    "ignore_eos",
    "user",
    "stream",
    "stream_options",
    "response_format",
    "structured_outputs",
    "guided_json",
    "guided_regex",
    "guided_grammar",
    "guided_choice",
];

impl KnownFields for ChatRequest {
    fn known(f: &str) -> bool {
        COMMON_FIELDS.contains(&f) || CHAT_FIELDS.contains(&f)
    }
}

const CHAT_FIELDS: &[&str] = &[
    "messages",
    "max_completion_tokens",
    "logprobs",
    "top_logprobs",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
];

impl KnownFields for CompletionRequest {
    fn known(f: &str) -> bool {
        COMMON_FIELDS.contains(&f) || ["prompt", "logprobs", "echo"].contains(&f)
    }
}

impl KnownFields for ReIsqRequest {
    fn known(f: &str) -> bool {
        ["ggml_type", "isq_type", "isq"].contains(&f)
    }
}

/// Parses a JSON body: malformed JSON is a 400, a field smelt does not know a 400 naming
/// it, a well-formed body with a wrong field (type, missing, bad value) a 422 naming the
/// field.
pub fn parse_body<T: DeserializeOwned + KnownFields>(bytes: &[u8]) -> ApiResult<T> {
    let value: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("the request body is not valid JSON: {e}"),
        )
        .code("invalid_json")
    })?;
    let Some(obj) = value.as_object() else {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "the request body must be a JSON object",
        ));
    };
    if let Some((k, _)) = obj.iter().find(|(k, v)| !T::known(k) && !v.is_null()) {
        return Err(ApiError::invalid(
            k,
            format!("the field `{k}` is not supported by this server"),
        )
        .code("unsupported_field"));
    }
    serde_path_to_error::deserialize::<_, T>(value.clone()).map_err(|e| {
        let mut path = e.path().to_string();
        if path == "." {
            // Errors inside flattened fields lose their path: find the field whose
            // removal makes the body parse.
            if let Some(k) = obj.keys().find(|k| {
                let mut rest = obj.clone();
                rest.remove(*k);
                serde_json::from_value::<T>(Value::Object(rest)).is_ok()
            }) {
                path = k.clone();
            }
        }
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("invalid field `{path}`: {}", e.inner()),
        )
        .param(&path)
        .code("invalid_type")
    })
}

/// `"stop": "x"` or `"stop": ["x", "y"]`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    fn to_vec(&self) -> Vec<String> {
        match self {
            Self::One(s) => vec![s.clone()],
            Self::Many(v) => v.clone(),
        }
    }
}

/// Message content: a string or an array of parts (`{"type": "text", "text": …}`).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum Content {
    Text(String),
    Parts(Vec<ContentPart>),
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct ContentPart {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub text: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct InMessage {
    pub role: String,
    #[serde(default)]
    pub content: Option<Content>,
    #[serde(default)]
    pub tool_calls: Option<Vec<InToolCall>>,
    #[serde(default)]
    pub tool_call_id: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    /// Anything else: refused unless null (a replayed response may carry `refusal: null`).
    #[serde(flatten)]
    #[schema(ignore)]
    pub other: HashMap<String, Value>,
}

/// A call in an assistant message sent back to the model.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InToolCall {
    #[serde(default)]
    pub id: Option<String>,
    #[serde(rename = "type", default)]
    pub kind: Option<String>,
    pub function: InCalledFunction,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InCalledFunction {
    pub name: String,
    /// JSON text, as OpenAI sends it (an object is accepted too).
    pub arguments: Value,
}

/// An entry of `tools`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InTool {
    #[serde(rename = "type")]
    pub kind: String,
    pub function: InFunction,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InFunction {
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub parameters: Option<Value>,
    /// Arguments always follow the schema when calls are forced; under `auto` a native
    /// format's call is parsed as written (docs/SERVER.md).
    #[serde(default)]
    #[allow(dead_code)]
    pub strict: Option<bool>,
}

#[derive(Debug, Deserialize, Default, ToSchema)]
pub struct StreamOptions {
    #[serde(default)]
    pub include_usage: Option<bool>,
}

/// Fields shared by both generation routes.
#[derive(Debug, Deserialize, Default, ToSchema)]
pub struct CommonFields {
    #[serde(default)]
    pub model: Option<String>,
    #[serde(default)]
    pub max_tokens: Option<i64>,
    #[serde(default)]
    pub temperature: Option<f32>,
    #[serde(default)]
    pub top_p: Option<f32>,
    #[serde(default)]
    pub top_k: Option<i64>,
    #[serde(default)]
    pub min_p: Option<f32>,
    #[serde(default)]
    pub stop: Option<OneOrMany>,
    #[serde(default)]
    pub seed: Option<i64>,
    #[serde(default)]
    pub n: Option<i64>,
    #[serde(default)]
    pub presence_penalty: Option<f32>,
    #[serde(default)]
    pub frequency_penalty: Option<f32>,
    #[serde(default)]
    pub repetition_penalty: Option<f32>,
    #[serde(default)]
    pub logit_bias: Option<HashMap<String, f32>>,
    /// vLLM's and llama-server's extension: generate `max_tokens` whatever the model says.
    #[serde(default)]
    pub ignore_eos: Option<bool>,
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub stream: Option<bool>,
    #[serde(default)]
    pub stream_options: Option<StreamOptions>,
    #[serde(flatten)]
    pub structured: StructuredFields,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct ChatRequest {
    pub messages: Vec<InMessage>,
    #[serde(default)]
    pub tools: Option<Vec<InTool>>,
    #[serde(default)]
    pub tool_choice: Option<Value>,
    #[serde(default)]
    pub parallel_tool_calls: Option<bool>,
    #[serde(default)]
    pub max_completion_tokens: Option<i64>,
    #[serde(default)]
    pub logprobs: Option<bool>,
    #[serde(default)]
    pub top_logprobs: Option<i64>,
    #[serde(flatten)]
    pub common: CommonFields,
}

/// `prompt`: a string, strings, token ids, or lists of token ids.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum PromptField {
    Text(String),
    Texts(Vec<String>),
    Tokens(Vec<u32>),
    TokenLists(Vec<Vec<u32>>),
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct CompletionRequest {
    pub prompt: PromptField,
    #[serde(default)]
    pub logprobs: Option<i64>,
    #[serde(default)]
    pub echo: Option<bool>,
    #[serde(flatten)]
    pub common: CommonFields,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct ReIsqRequest {
    /// A type name (`Q4K`, `q4_k`, `8`…), or `none` / null for the load dtype.
    #[serde(default, alias = "isq_type", alias = "isq")]
    pub ggml_type: Option<String>,
}

/// Generation settings common to every sequence of one request.
#[derive(Debug, Clone)]
pub struct Generation {
    pub max_tokens: Option<usize>,
    pub sampling: SamplingParams,
    pub stop: Vec<String>,
    pub n: usize,
    pub stream: bool,
    pub include_usage: bool,
    /// What the output must follow (`response_format`, `structured_outputs`).
    pub grammar: Option<(&'static str, GrammarSpec)>,
}

/// Most choices one request may ask for.
pub const MAX_N: usize = 16;

fn positive(param: &str, v: Option<i64>) -> ApiResult<Option<usize>> {
    match v {
        None => Ok(None),
        Some(x) if x >= 1 => Ok(Some(x as usize)),
        Some(x) => Err(ApiError::invalid(
            param,
            format!("`{param}` must be at least 1, got {x}"),
        )),
    }
}

impl CommonFields {
    /// Checks every field and builds the engine settings. `max_tokens` is the value of
    /// whichever max-tokens field the route honours.
    pub fn generation(&self, max_tokens: Option<i64>, param: &str) -> ApiResult<Generation> {
        let max_tokens = positive(param, max_tokens)?;
        let n = positive("n", self.n)?.unwrap_or(1);
        if n > MAX_N {
            return Err(ApiError::invalid(
                "n",
                format!("`n` must be at most {MAX_N}"),
            ));
        }
        let temperature = self.temperature.unwrap_or(1.0);
        if !(0.0..=2.0).contains(&temperature) {
            return Err(ApiError::invalid(
                "temperature",
                "`temperature` must be between 0 and 2",
            ));
        }
        let top_k = match self.top_k {
            None | Some(-1) => 0,
            Some(k) if k >= 0 => k as usize,
            Some(k) => {
                return Err(ApiError::invalid(
                    "top_k",
                    format!("`top_k` must be ≥ 0 (or -1 to disable), got {k}"),
                ))
            }
        };
        for (name, v, lo, hi) in [
            ("presence_penalty", self.presence_penalty, -2.0, 2.0),
            ("frequency_penalty", self.frequency_penalty, -2.0, 2.0),
        ] {
            if let Some(v) = v {
                if !(lo..=hi).contains(&v) {
                    return Err(ApiError::invalid(
                        name,
                        format!("`{name}` must be between {lo} and {hi}"),
                    ));
                }
            }
        }
        let mut logit_bias = HashMap::new();
        for (k, &v) in self.logit_bias.iter().flatten() {
            let id: u32 = k.parse().map_err(|_| {
                ApiError::invalid(
                    "logit_bias",
                    format!("logit_bias keys must be token ids, got `{k}`"),
                )
            })?;
            if !(-100.0..=100.0).contains(&v) {
                return Err(ApiError::invalid(
                    "logit_bias",
                    "logit_bias values must be between -100 and 100",
                ));
            }
            logit_bias.insert(id, v);
        }
        let stop = self.stop.as_ref().map(|s| s.to_vec()).unwrap_or_default();
        if stop.len() > 16 {
            return Err(ApiError::invalid("stop", "at most 16 stop sequences"));
        }
        let sampling = SamplingParams {
            temperature,
            top_k,
            top_p: self.top_p.unwrap_or(1.0),
            min_p: self.min_p.unwrap_or(0.0),
            repetition_penalty: self.repetition_penalty.unwrap_or(1.0),
            presence_penalty: self.presence_penalty.unwrap_or(0.0),
            frequency_penalty: self.frequency_penalty.unwrap_or(0.0),
            logit_bias,
            seed: self.seed.map(|s| s as u64),
            ignore_eos: self.ignore_eos.unwrap_or(false),
        };
        sampling.validate().map_err(|e| {
            let msg = e.to_string();
            let param = ["top_p", "min_p", "repetition_penalty", "temperature"]
                .into_iter()
                .find(|p| msg.contains(p))
                .unwrap_or("sampling");
            ApiError::invalid(param, msg)
        })?;
        Ok(Generation {
            max_tokens,
            sampling,
            stop,
            n,
            stream: self.stream.unwrap_or(false),
            include_usage: self
                .stream_options
                .as_ref()
                .and_then(|o| o.include_usage)
                .unwrap_or(false),
            grammar: self.structured.grammar()?,
        })
    }
}

impl ChatRequest {
    /// The chat as template input. Text parts are joined; other part types are refused.
    pub fn chat_messages(&self) -> ApiResult<Vec<ChatMessage>> {
        if self.messages.is_empty() {
            return Err(ApiError::invalid(
                "messages",
                "`messages` must not be empty",
            ));
        }
        self.messages
            .iter()
            .enumerate()
            .map(|(i, m)| {
                let role = match m.role.as_str() {
                    "system" | "developer" => "system",
                    "user" => "user",
                    "assistant" => "assistant",
                    "tool" => "tool",
                    other => {
                        return Err(ApiError::invalid(
                            &format!("messages[{i}].role"),
                            format!("unknown role `{other}`; use system, user, assistant or tool"),
                        ))
                    }
                };
                let content = match &m.content {
                    None => String::new(),
                    Some(Content::Text(s)) => s.clone(),
                    Some(Content::Parts(parts)) => {
                        let mut text = String::new();
                        for (j, p) in parts.iter().enumerate() {
                            if p.kind != "text" {
                                return Err(ApiError::invalid(
                                    &format!("messages[{i}].content[{j}].type"),
                                    format!(
                                        "content parts of type `{}` are not supported; this model reads text",
                                        p.kind
                                    ),
                                ));
                            }
                            text.push_str(p.text.as_deref().unwrap_or_default());
                        }
                        text
                    }
                };
                if let Some((k, _)) = m.other.iter().find(|(_, v)| !v.is_null()) {
                    return Err(ApiError::invalid(
                        &format!("messages[{i}].{k}"),
                        format!("the message field `{k}` is not supported"),
                    )
                    .code("unsupported_field"));
                }
                let mut msg = ChatMessage::new(role, &content);
                msg.tool_call_id = m.tool_call_id.clone();
                msg.name = m.name.clone();
                if let Some(calls) = &m.tool_calls {
                    if role != "assistant" {
                        return Err(ApiError::invalid(
                            &format!("messages[{i}].tool_calls"),
                            "only assistant messages carry `tool_calls`",
                        ));
                    }
                    msg.tool_calls = Some(calls.iter().map(template_call).collect());
                }
                Ok(msg)
            })
            .collect()
    }

    /// The request's tools under `tool_choice`, in the model's format; None without tools.
    pub fn tool_setup(&self, format: ToolFormat) -> ApiResult<Option<ToolSetup>> {
        let tools: Vec<Tool> = self
            .tools
            .iter()
            .flatten()
            .enumerate()
            .map(|(i, t)| {
                if t.kind != "function" {
                    return Err(ApiError::invalid(
                        &format!("tools[{i}].type"),
                        format!(
                            "tools of type `{}` are not supported; use `function`",
                            t.kind
                        ),
                    ));
                }
                let params = t
                    .function
                    .parameters
                    .clone()
                    .unwrap_or(serde_json::json!({"type": "object", "properties": {}}));
                if !params.is_object() {
                    return Err(ApiError::invalid(
                        &format!("tools[{i}].function.parameters"),
                        "`parameters` must be a JSON schema object",
                    ));
                }
                Ok(Tool {
                    name: t.function.name.clone(),
                    description: t.function.description.clone(),
                    parameters: params,
                })
            })
            .collect::<ApiResult<_>>()?;
        let choice = match &self.tool_choice {
            None => ToolChoice::Auto,
            Some(Value::String(s)) => match s.as_str() {
                "none" => ToolChoice::None,
                "auto" => ToolChoice::Auto,
                "required" => ToolChoice::Required,
                other => {
                    return Err(ApiError::invalid(
                        "tool_choice",
                        format!("unknown tool_choice `{other}`; use none, auto, required or a function"),
                    ))
                }
            },
            Some(v) => match v["function"]["name"].as_str() {
                Some(name) if v["type"] == "function" => ToolChoice::Named(name.to_string()),
                _ => {
                    return Err(ApiError::invalid(
                        "tool_choice",
                        "tool_choice must be none, auto, required or {\"type\": \"function\", \"function\": {\"name\": …}}",
                    ))
                }
            },
        };
        if tools.is_empty() {
            return match choice {
                ToolChoice::Required | ToolChoice::Named(_) => Err(ApiError::invalid(
                    "tool_choice",
                    "tool_choice asks for a call but `tools` is empty",
                )),
                _ => Ok(None),
            };
        }
        if let ToolChoice::Named(n) = &choice {
            if !tools.iter().any(|t| &t.name == n) {
                return Err(ApiError::invalid(
                    "tool_choice",
                    format!("tool_choice names `{n}`, which is not among `tools`"),
                ));
            }
        }
        Ok(Some(ToolSetup {
            tools,
            choice,
            parallel: self.parallel_tool_calls.unwrap_or(true),
            format,
        }))
    }

    /// Some(k) when logprobs were asked for.
    pub fn logprobs(&self) -> ApiResult<Option<usize>> {
        let top = self.top_logprobs.unwrap_or(0);
        if !(0..=20).contains(&top) {
            return Err(ApiError::invalid(
                "top_logprobs",
                "`top_logprobs` must be between 0 and 20",
            ));
        }
        if self.logprobs.unwrap_or(false) {
            Ok(Some(top as usize))
        } else if self.top_logprobs.is_some_and(|t| t > 0) {
            Err(ApiError::invalid(
                "top_logprobs",
                "`top_logprobs` needs `logprobs: true`",
            ))
        } else {
            Ok(None)
        }
    }
}

/// A call as chat templates expect it: arguments as an object when they parse.
fn template_call(c: &InToolCall) -> Value {
    let args = match &c.function.arguments {
        Value::String(s) => serde_json::from_str(s).unwrap_or_else(|_| Value::String(s.clone())),
        v => v.clone(),
    };
    serde_json::json!({
        "id": c.id,
        "type": c.kind.as_deref().unwrap_or("function"),
        "function": {"name": c.function.name, "arguments": args},
    })
}

impl CompletionRequest {
    pub fn logprobs(&self) -> ApiResult<Option<usize>> {
        match self.logprobs {
            None => Ok(None),
            Some(k) if (0..=5).contains(&k) => Ok(Some(k as usize)),
            Some(_) => Err(ApiError::invalid(
                "logprobs",
                "`logprobs` must be between 0 and 5",
            )),
        }
    }
}

impl PromptField {
    /// Text prompts to tokenize or token prompts as they are.
    pub fn into_prompts(self) -> ApiResult<Vec<Prompt>> {
        let prompts: Vec<Prompt> = match self {
            Self::Text(s) => vec![Prompt::Text(s)],
            Self::Texts(v) => v.into_iter().map(Prompt::Text).collect(),
            Self::Tokens(t) => vec![Prompt::Tokens(t)],
            Self::TokenLists(v) => v.into_iter().map(Prompt::Tokens).collect(),
        };
        if prompts.is_empty() {
            return Err(ApiError::invalid("prompt", "`prompt` must not be empty"));
        }
        Ok(prompts)
    }
}

pub enum Prompt {
    Text(String),
    Tokens(Vec<u32>),
}
