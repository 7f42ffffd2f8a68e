//! Sequences, sampling, KV cache and the generation loop. Knows nothing of HTTP or
//! terminals: fronts hand it token ids or chat messages and get text back.

pub mod chat_template;
pub mod constraint;
pub mod ids;
pub mod kv_cache;
pub mod metrics;
pub mod sampling;
pub mod scheduler;
pub mod stream;
pub mod tools;

use crate::loaders::{LoadedModel, TokenizerAssets};
use crate::models::CausalLm;
use anyhow::{bail, Context, Result};
use chat_template::{ChatMessage, ChatTemplate, CHATML_TEMPLATE};
use constraint::{Constraint, GrammarCompiler, GrammarSpec};
use kv_cache::KvCache;
use sampling::{Sampler, SamplingParams};
use std::sync::atomic::{AtomicBool, Ordering};
use stream::{StopMatcher, TextStream};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    /// EOS or a stop string.
    Stop,
    /// max_tokens or the context window reached.
    Length,
    /// The caller asked to stop.
    Cancelled,
}

impl FinishReason {
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Stop => "stop",
            Self::Length => "length",
            Self::Cancelled => "cancelled",
        }
    }
}

/// How token states become one embedding. A causal model's last token is the only one
/// that has seen the whole input, so `Last` is the default (as vLLM does for decoder
/// models); `Mean` suits models trained with mean pooling.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Pooling {
    #[default]
    Last,
    Mean,
}

impl std::str::FromStr for Pooling {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "last" => Ok(Self::Last),
            "mean" => Ok(Self::Mean),
            other => bail!("unknown pooling `{other}`; use last or mean"),
        }
    }
}

#[derive(Debug, Clone)]
pub struct GenerateRequest {
    pub prompt_tokens: Vec<u32>,
    pub max_tokens: usize,
    pub sampling: SamplingParams,
    pub stop: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct Generation {
    pub tokens: Vec<u32>,
    pub text: String,
    pub finish_reason: FinishReason,
    pub prompt_tokens: usize,
}

/// A sequence's KV cache together with the tokens it holds, so a follow-up prompt that
/// extends the previous one (a chat turn) only runs its new tokens.
pub struct Session {
    pub cache: KvCache,
    tokens: Vec<u32>,
}

impl Session {
    pub fn clear(&mut self) {
        self.cache.clear();
        self.tokens.clear();
    }
}

pub struct Engine {
    pub model: Box<dyn CausalLm>,
    pub assets: TokenizerAssets,
    pub model_name: String,
    template: ChatTemplate,
    /// Built on the first constrained request (it walks the whole vocabulary once).
    grammar: std::sync::OnceLock<Result<std::sync::Arc<GrammarCompiler>, String>>,
}

impl Engine {
    pub fn new(loaded: LoadedModel) -> Result<Self> {
        let a = &loaded.assets;
        let source = a.chat_template.as_deref().unwrap_or_else(|| {
            tracing::warn!("the model has no chat template; using ChatML");
            CHATML_TEMPLATE
        });
        let template = ChatTemplate::new(source, a.bos_token.as_deref(), a.eos_token.as_deref())?;
        Ok(Self {
            model: loaded.model,
            assets: loaded.assets,
            model_name: loaded.name,
            template,
            grammar: std::sync::OnceLock::new(),
        })
    }

    /// Re-quantizes the loaded model to `ty` (None: back to the load dtype) from its
    /// source weights, without reloading. Sessions made before keep working: the KV cache
    /// does not depend on the weights' storage. A failure leaves the model as it was.
    pub fn re_isq(&mut self, ty: Option<crate::quant::IsqType>) -> Result<()> {
        let start = std::time::Instant::now();
        self.model.re_isq(ty)?;
        tracing::info!(
            "re-ISQ to {} in {:.2}s",
            ty.map_or("the load dtype".to_string(), |t| t.to_string()),
            start.elapsed().as_secs_f64()
        );
        Ok(())
    }

    /// Compiles a grammar against this model's vocabulary.
    pub fn compile_grammar(&self, spec: &GrammarSpec) -> Result<Constraint> {
        let compiler = self.grammar.get_or_init(|| {
            let start = std::time::Instant::now();
            let eos = self.assets.eos_token_ids.first().copied().unwrap_or(0);
            let r =
                GrammarCompiler::new(&self.assets.tokenizer, eos, self.model.config().vocab_size)
                    .map(std::sync::Arc::new)
                    .map_err(|e| format!("{e:#}"));
            tracing::info!(
                "constrained decoding ready in {:.2}s",
                start.elapsed().as_secs_f64()
            );
            r
        });
        match compiler {
            Ok(c) => c.compile(spec),
            Err(e) => bail!("constrained decoding is unavailable for this model: {e}"),
        }
    }

    /// One embedding of `tokens`: the final-normed hidden states pooled (the last token's,
    /// or their mean) and scaled to unit length.
    pub fn embed(&self, tokens: &[u32], pooling: Pooling) -> Result<Vec<f32>> {
        let ctx = self.context_length();
        if tokens.is_empty() {
            bail!("the input is empty");
        }
        if tokens.len() > ctx {
            bail!(
                "the input is {} tokens, over the model's context of {ctx} tokens",
                tokens.len()
            );
        }
        let mut cache = self.model.new_cache();
        let rows = self.model.hidden_states(tokens, &mut cache)?;
        let h = rows.len() / tokens.len();
        let mut v = match pooling {
            Pooling::Last => rows[rows.len() - h..].to_vec(),
            Pooling::Mean => {
                let mut m = vec![0f32; h];
                for r in rows.chunks_exact(h) {
                    m.iter_mut().zip(r).for_each(|(a, b)| *a += b);
                }
                m.iter_mut().for_each(|a| *a /= tokens.len() as f32);
                m
            }
        };
        let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        if norm > 0.0 {
            v.iter_mut().for_each(|x| *x /= norm);
        }
        Ok(v)
    }

    pub fn new_session(&self) -> Session {
        Session {
            cache: self.model.new_cache(),
            tokens: Vec::new(),
        }
    }

    pub fn context_length(&self) -> usize {
        self.model.config().max_position_embeddings
    }

    /// Token ids of `text`; `add_special` adds what the tokenizer adds around a raw text
    /// (BOS for most SentencePiece models). Rendered chats already carry their specials.
    pub fn tokenize(&self, text: &str, add_special: bool) -> Result<Vec<u32>> {
        let enc = self
            .assets
            .tokenizer
            .encode_fast(text, add_special)
            .map_err(|e| anyhow::anyhow!("tokenization failed: {e}"))?;
        Ok(enc.get_ids().to_vec())
    }

    pub fn detokenize(&self, ids: &[u32]) -> Result<String> {
        self.assets
            .tokenizer
            .decode(ids, true)
            .map_err(|e| anyhow::anyhow!("detokenization failed: {e}"))
    }

    pub fn render_chat(&self, messages: &[ChatMessage]) -> Result<String> {
        self.template.render(messages, true)
    }

    /// How this model's template writes tool calls.
    pub fn tool_format(&self) -> tools::ToolFormat {
        tools::ToolFormat::detect(self.template.source())
    }

    /// Renders and tokenizes a chat that offers tools: native formats hand the template
    /// `tools`; the generic one adds its description as a system message (merged into
    /// the first system message if there is one).
    pub fn chat_tokens_with_tools(
        &self,
        messages: &[ChatMessage],
        setup: &tools::ToolSetup,
    ) -> Result<Vec<u32>> {
        let text = match setup.generic_prompt() {
            Some(prompt) => {
                let mut msgs = messages.to_vec();
                match msgs.first_mut().filter(|m| m.role == "system") {
                    Some(sys) => sys.content = format!("{}\n\n{prompt}", sys.content),
                    None => msgs.insert(0, ChatMessage::new("system", &prompt)),
                }
                self.template.render(&msgs, true)?
            }
            None if setup.format.template_takes_tools()
                && setup.choice != tools::ToolChoice::None =>
            {
                let offered: Vec<serde_json::Value> =
                    setup.offered().iter().map(|t| t.to_json()).collect();
                self.template
                    .render_with_tools(messages, Some(&offered), true)?
            }
            None => self.template.render(messages, true)?,
        };
        self.tokenize(&text, false)
    }

    /// The grammar for a request's tools, markers spelled as their own tokens where the
    /// vocabulary has them.
    pub fn tool_grammar(&self, setup: &tools::ToolSetup) -> Option<GrammarSpec> {
        let tok = &self.assets.tokenizer;
        tools::tool_grammar(setup, &|m: &str| tok.token_to_id(m))
    }

    /// Renders and tokenizes a chat, ready for generation.
    pub fn chat_tokens(&self, messages: &[ChatMessage]) -> Result<Vec<u32>> {
        self.tokenize(&self.render_chat(messages)?, false)
    }

    /// Runs prompt then decodes, calling `on_text` with each new piece of text as soon as
    /// it is final (complete UTF-8, not part of a possible stop string).
    pub fn generate(
        &self,
        session: &mut Session,
        req: &GenerateRequest,
        on_text: &mut dyn FnMut(&str),
        cancel: &AtomicBool,
    ) -> Result<Generation> {
        req.sampling.validate()?;
        let ctx = self.context_length();
        let n_prompt = req.prompt_tokens.len();
        if n_prompt == 0 {
            bail!("the prompt is empty");
        }
        if n_prompt >= ctx {
            bail!("the prompt is {n_prompt} tokens, which does not fit the model's context of {ctx} tokens");
        }
        // Reuse the cached prefix shared with the previous prompt of this session.
        let shared = common_prefix(&session.tokens, &req.prompt_tokens).min(n_prompt - 1);
        // A sliding-window cache may not reach back that far; it then starts afresh.
        let shared = session.cache.truncate(shared);
        session.tokens.truncate(shared);
        tracing::debug!("prompt: {n_prompt} tokens, {shared} reused from the session's cache");
        let mut logits = self
            .model
            .forward(&req.prompt_tokens[shared..], &mut session.cache, usize::MAX)
            .context("running the prompt")?;
        session
            .tokens
            .extend_from_slice(&req.prompt_tokens[shared..]);

        let mut sampler = Sampler::new(req.sampling.clone());
        let mut stream = TextStream::new();
        let mut stop = StopMatcher::new(&req.stop);
        let mut out = Vec::new();
        let mut history = req.prompt_tokens.clone();
        let finish = loop {
            if cancel.load(Ordering::Relaxed) {
                break FinishReason::Cancelled;
            }
            let mut row = crate::models::last_logits_vec(&logits)?;
            let next = sampler.sample(&mut row, &history);
            if self.assets.eos_token_ids.contains(&next) && !req.sampling.ignore_eos {
                break FinishReason::Stop;
            }
            out.push(next);
            history.push(next);
            let piece = stream.push(&self.assets.tokenizer, next)?;
            if let Some(emit) = stop.push(&piece) {
                on_text(&emit);
            }
            if stop.matched() {
                break FinishReason::Stop;
            }
            if out.len() >= req.max_tokens || session.cache.len() + 1 >= ctx {
                break FinishReason::Length;
            }
            logits = self
                .model
                .forward(&[next], &mut session.cache, usize::MAX)?;
            session.tokens.push(next);
        };
        if let Some(rest) = stop.flush() {
            on_text(&rest);
        }
        Ok(Generation {
            tokens: out,
            text: stop.text().to_string(),
            finish_reason: finish,
            prompt_tokens: n_prompt,
        })
    }
}

fn common_prefix(a: &[u32], b: &[u32]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}
