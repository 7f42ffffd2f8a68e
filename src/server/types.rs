//! Request bodies of the OpenAI API as smelt accepts them, and their validation into
//! engine requests. Unknown fields are ignored, as OpenAI-compatible servers do.

use super::error::{ApiError, ApiResult};
use crate::engine::chat_template::ChatMessage;
use crate::engine::sampling::SamplingParams;
use axum::http::StatusCode;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use std::collections::HashMap;

/// Parses a JSON body: malformed JSON is a 400, a well-formed body with a wrong field
/// (type, missing, bad value) a 422 naming the field.
pub fn parse_body<T: DeserializeOwned>(bytes: &[u8]) -> ApiResult<T> {
    let value: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("the request body is not valid JSON: {e}"),
        )
        .code("invalid_json")
    })?;
    if !value.is_object() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "the request body must be a JSON object",
        ));
    }
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("invalid field `{path}`: {}", e.inner()),
        )
        .param(&path)
        .code("invalid_type")
    })
}

/// `"stop": "x"` or `"stop": ["x", "y"]`.
#[derive(Debug, Deserialize)]
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
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Content {
    Text(String),
    Parts(Vec<ContentPart>),
}

#[derive(Debug, Deserialize)]
pub struct ContentPart {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub text: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct InMessage {
    pub role: String,
    #[serde(default)]
    pub content: Option<Content>,
}

#[derive(Debug, Deserialize, Default)]
pub struct StreamOptions {
    #[serde(default)]
    pub include_usage: Option<bool>,
}

/// Fields shared by both generation routes.
#[derive(Debug, Deserialize, Default)]
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
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub stream: Option<bool>,
    #[serde(default)]
    pub stream_options: Option<StreamOptions>,
}

#[derive(Debug, Deserialize)]
pub struct ChatRequest {
    pub messages: Vec<InMessage>,
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
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum PromptField {
    Text(String),
    Texts(Vec<String>),
    Tokens(Vec<u32>),
    TokenLists(Vec<Vec<u32>>),
}

#[derive(Debug, Deserialize)]
pub struct CompletionRequest {
    pub prompt: PromptField,
    #[serde(default)]
    pub logprobs: Option<i64>,
    #[serde(default)]
    pub echo: Option<bool>,
    #[serde(flatten)]
    pub common: CommonFields,
}

#[derive(Debug, Deserialize)]
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
                            format!("unknown role `{other}`; use system, user or assistant"),
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
                Ok(ChatMessage::new(role, &content))
            })
            .collect()
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
