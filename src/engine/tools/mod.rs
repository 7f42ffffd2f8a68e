//! Tool calling. The chat template gets the tools as transformers passes them; the
//! format the model writes its calls in is read off the template — Hermes / Qwen
//! `<tool_call>{…}</tool_call>`, Llama 3.x JSON (`{"name", "parameters"}`, optionally after
//! `<|python_tag|>`), Mistral `[TOOL_CALLS][…]` — and for templates that know no tools a
//! generic JSON format is described in a system message, with decoding constrained to
//! either a call or a reply (as llama.cpp's generic handler does). `required` or a named
//! function constrains decoding in every format, so the arguments always validate against
//! the function's schema. `parse` turns the output into calls, `stream` does it
//! incrementally.

mod grammar;
mod parse;
mod stream;

pub use parse::parse;
pub use stream::{ToolDelta, ToolStream};

use serde_json::{json, Value};

/// One function the model may call.
#[derive(Debug, Clone, PartialEq)]
pub struct Tool {
    pub name: String,
    pub description: Option<String>,
    /// JSON schema of the arguments object.
    pub parameters: Value,
}

impl Tool {
    /// The OpenAI / transformers shape templates expect.
    pub fn to_json(&self) -> Value {
        let mut f = json!({"name": self.name, "parameters": self.parameters});
        if let Some(d) = &self.description {
            f["description"] = json!(d);
        }
        json!({"type": "function", "function": f})
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum ToolChoice {
    None,
    Auto,
    Required,
    Named(String),
}

/// How a model writes its calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ToolFormat {
    /// `<tool_call>\n{"name": …, "arguments": {…}}\n</tool_call>` (Hermes, Qwen 2.5 / 3).
    Hermes,
    /// `{"name": …, "parameters": {…}}`, optionally after `<|python_tag|>` (Llama 3.1+).
    Llama3,
    /// `[TOOL_CALLS][{"name": …, "arguments": {…}}, …]` (Mistral).
    Mistral,
    /// smelt's own for templates without tools: `{"tool_calls": [{"name", "arguments"}]}`
    /// or `{"response": "…"}`.
    Generic,
}

pub const HERMES_OPEN: &str = "<tool_call>";
pub const HERMES_CLOSE: &str = "</tool_call>";
pub const PYTHON_TAG: &str = "<|python_tag|>";
pub const MISTRAL_MARKER: &str = "[TOOL_CALLS]";

impl ToolFormat {
    /// The format a chat template's own tool support implies.
    pub fn detect(template: &str) -> Self {
        if template.contains(HERMES_OPEN) {
            Self::Hermes
        } else if template.contains(MISTRAL_MARKER) {
            Self::Mistral
        } else if template.contains(PYTHON_TAG)
            || (template.contains("<|start_header_id|>") && template.contains("tools"))
        {
            Self::Llama3
        } else {
            Self::Generic
        }
    }

    /// Whether the template is handed `tools` (the generic format describes them in a
    /// system message instead).
    pub fn template_takes_tools(self) -> bool {
        self != Self::Generic
    }
}

/// A parsed call. `arguments` is the JSON text of the arguments object, as the model
/// wrote it.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolCall {
    pub id: String,
    pub name: String,
    pub arguments: String,
}

pub fn new_call_id() -> String {
    let chars: Vec<char> = ('a'..='z').chain('A'..='Z').chain('0'..='9').collect();
    let mut id = String::from("call_");
    for _ in 0..24 {
        id.push(chars[rand::random::<usize>() % chars.len()]);
    }
    id
}

/// Everything about one request's tools.
#[derive(Debug, Clone)]
pub struct ToolSetup {
    pub tools: Vec<Tool>,
    pub choice: ToolChoice,
    pub parallel: bool,
    pub format: ToolFormat,
}

impl ToolSetup {
    /// The tools the model may call under `tool_choice`.
    pub fn offered(&self) -> Vec<&Tool> {
        match &self.choice {
            ToolChoice::None => Vec::new(),
            ToolChoice::Named(n) => self.tools.iter().filter(|t| &t.name == n).collect(),
            _ => self.tools.iter().collect(),
        }
    }

    /// The system message that describes the generic format (None for native formats).
    pub fn generic_prompt(&self) -> Option<String> {
        if self.format != ToolFormat::Generic || self.choice == ToolChoice::None {
            return None;
        }
        let tools: Vec<Value> = self.offered().iter().map(|t| t.to_json()).collect();
        let many = if self.parallel {
            "one or more calls"
        } else {
            "exactly one call"
        };
        let reply = match self.choice {
            ToolChoice::Auto => {
                "\nTo answer without a tool, respond with:\n{\"response\": \"<your answer>\"}"
            }
            _ => "",
        };
        Some(format!(
            "You can call these tools:\n{}\n\nTo call tools, respond with only this JSON ({many}):\n\
             {{\"tool_calls\": [{{\"name\": \"<tool name>\", \"arguments\": {{<arguments matching the tool's parameters>}}}}]}}{reply}",
            serde_json::to_string_pretty(&tools).unwrap_or_default()
        ))
    }
}

pub use grammar::tool_grammar;
