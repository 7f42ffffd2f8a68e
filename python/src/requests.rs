//! Request objects, named and shaped as the peer's (`stop_seqs`, `n_choices`), with
//! OpenAI's spellings accepted too (`stop`, `n`).

use crate::errors::value_error;
use pyo3::prelude::*;
use smelt::engine::sampling::SamplingParams;
use std::collections::HashMap;

/// Settings shared by chat and text completions, checked.
pub struct Generation {
    pub max_tokens: Option<usize>,
    pub sampling: SamplingParams,
    pub stop: Vec<String>,
    pub n: usize,
}

#[allow(clippy::too_many_arguments)]
fn generation(
    max_tokens: Option<usize>,
    temperature: Option<f32>,
    top_p: Option<f32>,
    top_k: Option<usize>,
    min_p: Option<f32>,
    stop: Option<Vec<String>>,
    seed: Option<u64>,
    n: usize,
    presence_penalty: Option<f32>,
    frequency_penalty: Option<f32>,
    repetition_penalty: Option<f32>,
    logit_bias: Option<HashMap<u32, f32>>,
) -> PyResult<Generation> {
    if max_tokens == Some(0) {
        return Err(value_error("max_tokens must be at least 1"));
    }
    if !(1..=16).contains(&n) {
        return Err(value_error("n_choices must be between 1 and 16"));
    }
    let sampling = SamplingParams {
        temperature: temperature.unwrap_or(1.0),
        top_k: top_k.unwrap_or(0),
        top_p: top_p.unwrap_or(1.0),
        min_p: min_p.unwrap_or(0.0),
        repetition_penalty: repetition_penalty.unwrap_or(1.0),
        presence_penalty: presence_penalty.unwrap_or(0.0),
        frequency_penalty: frequency_penalty.unwrap_or(0.0),
        logit_bias: logit_bias.unwrap_or_default(),
        seed,
        ..Default::default()
    };
    sampling
        .validate()
        .map_err(|e| value_error(e.to_string()))?;
    Ok(Generation {
        max_tokens,
        sampling,
        stop: stop.unwrap_or_default(),
        n,
    })
}

/// A chat completion: `messages` are `{"role": ..., "content": ...}` dicts (roles
/// system, user, assistant, tool). `temperature` defaults to 1 (0 is greedy); with
/// `stream=True` `send_chat_completion_request` returns an iterator of chunks.
#[pyclass(module = "smelt", get_all, from_py_object)]
#[derive(Clone, Debug)]
pub struct ChatCompletionRequest {
    pub messages: Vec<HashMap<String, String>>,
    pub model: Option<String>,
    pub max_tokens: Option<usize>,
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    pub top_k: Option<usize>,
    pub min_p: Option<f32>,
    pub stop_seqs: Option<Vec<String>>,
    pub seed: Option<u64>,
    pub n_choices: usize,
    pub presence_penalty: Option<f32>,
    pub frequency_penalty: Option<f32>,
    pub repetition_penalty: Option<f32>,
    pub logit_bias: Option<HashMap<u32, f32>>,
    pub stream: bool,
}

#[pymethods]
impl ChatCompletionRequest {
    #[new]
    #[pyo3(signature = (messages, model = None, max_tokens = None, temperature = None, top_p = None,
        top_k = None, min_p = None, stop_seqs = None, stop = None, seed = None, n_choices = 1, n = None,
        presence_penalty = None, frequency_penalty = None, repetition_penalty = None, logit_bias = None,
        stream = false))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        messages: Vec<HashMap<String, String>>,
        model: Option<String>,
        max_tokens: Option<usize>,
        temperature: Option<f32>,
        top_p: Option<f32>,
        top_k: Option<usize>,
        min_p: Option<f32>,
        stop_seqs: Option<Vec<String>>,
        stop: Option<Vec<String>>,
        seed: Option<u64>,
        n_choices: usize,
        n: Option<usize>,
        presence_penalty: Option<f32>,
        frequency_penalty: Option<f32>,
        repetition_penalty: Option<f32>,
        logit_bias: Option<HashMap<u32, f32>>,
        stream: bool,
    ) -> PyResult<Self> {
        if messages.is_empty() {
            return Err(value_error("messages must not be empty"));
        }
        for (i, m) in messages.iter().enumerate() {
            let role = m.get("role").map(String::as_str);
            if !matches!(
                role,
                Some("system" | "developer" | "user" | "assistant" | "tool")
            ) {
                return Err(value_error(format!(
                    "messages[{i}] needs a role of system, user, assistant or tool, got {role:?}"
                )));
            }
            if let Some(k) = m
                .keys()
                .find(|k| !["role", "content", "name", "tool_call_id"].contains(&k.as_str()))
            {
                return Err(value_error(format!(
                    "messages[{i}]: the field `{k}` is not supported"
                )));
            }
        }
        Ok(Self {
            messages,
            model,
            max_tokens,
            temperature,
            top_p,
            top_k,
            min_p,
            stop_seqs: stop_seqs.or(stop),
            seed,
            n_choices: n.unwrap_or(n_choices),
            presence_penalty,
            frequency_penalty,
            repetition_penalty,
            logit_bias,
            stream,
        })
    }

    fn __repr__(&self) -> String {
        format!("{self:?}")
    }
}

/// A raw-text completion of `prompt` (tokenized with the tokenizer's special tokens).
/// `echo_prompt` puts the prompt before the generated text.
#[pyclass(module = "smelt", get_all, from_py_object)]
#[derive(Clone, Debug)]
pub struct CompletionRequest {
    pub prompt: String,
    pub model: Option<String>,
    pub max_tokens: Option<usize>,
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    pub top_k: Option<usize>,
    pub min_p: Option<f32>,
    pub stop_seqs: Option<Vec<String>>,
    pub seed: Option<u64>,
    pub n_choices: usize,
    pub presence_penalty: Option<f32>,
    pub frequency_penalty: Option<f32>,
    pub repetition_penalty: Option<f32>,
    pub logit_bias: Option<HashMap<u32, f32>>,
    pub echo_prompt: bool,
}

#[pymethods]
impl CompletionRequest {
    #[new]
    #[pyo3(signature = (prompt, model = None, max_tokens = None, temperature = None, top_p = None,
        top_k = None, min_p = None, stop_seqs = None, stop = None, seed = None, n_choices = 1, n = None,
        presence_penalty = None, frequency_penalty = None, repetition_penalty = None, logit_bias = None,
        echo_prompt = false))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        prompt: String,
        model: Option<String>,
        max_tokens: Option<usize>,
        temperature: Option<f32>,
        top_p: Option<f32>,
        top_k: Option<usize>,
        min_p: Option<f32>,
        stop_seqs: Option<Vec<String>>,
        stop: Option<Vec<String>>,
        seed: Option<u64>,
        n_choices: usize,
        n: Option<usize>,
        presence_penalty: Option<f32>,
        frequency_penalty: Option<f32>,
        repetition_penalty: Option<f32>,
        logit_bias: Option<HashMap<u32, f32>>,
        echo_prompt: bool,
    ) -> Self {
        Self {
            prompt,
            model,
            max_tokens,
            temperature,
            top_p,
            top_k,
            min_p,
            stop_seqs: stop_seqs.or(stop),
            seed,
            n_choices: n.unwrap_or(n_choices),
            presence_penalty,
            frequency_penalty,
            repetition_penalty,
            logit_bias,
            echo_prompt,
        }
    }

    fn __repr__(&self) -> String {
        format!("{self:?}")
    }
}

/// Both requests carry the same sampling fields, checked the same way.
macro_rules! impl_generation {
    ($t:ty) => {
        impl $t {
            pub fn generation(&self) -> PyResult<Generation> {
                generation(
                    self.max_tokens,
                    self.temperature,
                    self.top_p,
                    self.top_k,
                    self.min_p,
                    self.stop_seqs.clone(),
                    self.seed,
                    self.n_choices,
                    self.presence_penalty,
                    self.frequency_penalty,
                    self.repetition_penalty,
                    self.logit_bias.clone(),
                )
            }
        }
    };
}
impl_generation!(ChatCompletionRequest);
impl_generation!(CompletionRequest);
