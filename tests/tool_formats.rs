//! Native tool-call formats end to end, on a tiny random model (the phimoe fixture, whose context fits the tool prompts) given
//! a chat template of each family's style (written for this test): the template receives
//! `tools` and replayed calls, and with `tool_choice: required` the constrained output
//! comes back as OpenAI tool calls whose arguments validate, streamed and not.

mod common;

use common::http;
use serde_json::{json, Value};
use smelt::engine::Engine;
use smelt::loaders::{LoadOptions, ModelSpec};
use smelt::server::ServerConfig;

/// Hermes / Qwen style: tools in the system turn, calls in `<tool_call>` tags.
const HERMES: &str = r#"{%- if tools %}<|im_start|>system
You may call: {% for t in tools %}{{ t.function | tojson }}{% endfor %}
Answer with <tool_call>{"name": ..., "arguments": ...}</tool_call>.<|im_end|>
{% endif %}{%- for m in messages %}<|im_start|>{{ m.role }}
{% if m.tool_calls %}{% for c in m.tool_calls %}<tool_call>
{{ {"name": c.function.name, "arguments": c.function.arguments} | tojson }}
</tool_call>{% endfor %}{% else %}{{ m.content }}{% endif %}<|im_end|>
{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant
{% endif %}"#;

/// Llama 3.x style: headers, JSON calls with `parameters`.
const LLAMA3: &str = r#"{%- for m in messages %}<|start_header_id|>{{ m.role }}<|end_header_id|>

{% if m.tool_calls %}{{ {"name": m.tool_calls[0].function.name, "parameters": m.tool_calls[0].function.arguments} | tojson }}{% else %}{{ m.content }}{% endif %}<|eot_id|>{% endfor %}
{%- if tools %}<|start_header_id|>user<|end_header_id|>

Functions: {{ tools | tojson }}<|eot_id|>{% endif %}
{%- if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>

{% endif %}"#;

/// Mistral style: `[AVAILABLE_TOOLS]` and `[TOOL_CALLS]`.
const MISTRAL: &str = r#"{%- if tools %}[AVAILABLE_TOOLS]{{ tools | tojson }}[/AVAILABLE_TOOLS]{% endif %}
{%- for m in messages %}{% if m.role == "user" %}[INST]{{ m.content }}[/INST]{% elif m.tool_calls %}[TOOL_CALLS]{{ m.tool_calls | map(attribute="function") | list | tojson }}{% elif m.role == "tool" %}[TOOL_RESULTS]{{ m.content }}[/TOOL_RESULTS]{% else %}{{ m.content }}{% endif %}{% endfor %}"#;

fn engine(template: &str) -> Engine {
    let dir =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/families/phimoe");
    let spec = ModelSpec::Plain {
        model_id: dir.to_string_lossy().into_owned(),
        revision: "main".into(),
    };
    let mut loaded = smelt::load(&spec, &LoadOptions::default()).unwrap();
    loaded.assets.chat_template = Some(template.to_string());
    Engine::new(loaded).unwrap()
}

fn tools() -> Value {
    json!([{"type": "function", "function": {"name": "lookup", "description": "Look a word up",
        "parameters": {"type": "object", "properties": {"word": {"type": "string", "maxLength": 12},
            "limit": {"type": "integer", "minimum": 1, "maximum": 9}},
            "required": ["word", "limit"], "additionalProperties": false}}}])
}

fn check_args(args: &str) {
    let v: Value = serde_json::from_str(args).unwrap_or_else(|e| panic!("{args:?}: {e}"));
    assert!(
        v["word"].as_str().is_some_and(|w| w.chars().count() <= 12),
        "{v}"
    );
    assert!(
        v["limit"].as_i64().is_some_and(|l| (1..=9).contains(&l)),
        "{v}"
    );
    assert_eq!(v.as_object().unwrap().len(), 2, "{v}");
}

#[test]
fn native_formats_force_valid_calls_and_stream_them() {
    for (name, template, format) in [
        ("hermes", HERMES, smelt::engine::tools::ToolFormat::Hermes),
        ("llama3", LLAMA3, smelt::engine::tools::ToolFormat::Llama3),
        (
            "mistral",
            MISTRAL,
            smelt::engine::tools::ToolFormat::Mistral,
        ),
    ] {
        let e = engine(template);
        assert_eq!(e.tool_format(), format, "{name}");
        let (addr, _h) = common::start_server(e, ServerConfig::default());
        let ask = json!([{"role": "user", "content": "Look up the word cat."}]);
        let body = json!({"messages": ask, "tools": tools(), "tool_choice": "required",
            "max_tokens": 120, "temperature": 0, "parallel_tool_calls": false});
        let r = http::post(addr, "/v1/chat/completions", &body);
        assert_eq!(r.status, 200, "{name}: {}", r.body);
        let v: Value = serde_json::from_str(&r.body).unwrap();
        let choice = &v["choices"][0];
        assert_eq!(choice["finish_reason"], "tool_calls", "{name}: {v}");
        let calls = choice["message"]["tool_calls"].as_array().unwrap();
        assert_eq!(calls.len(), 1, "{name}: {v}");
        assert_eq!(calls[0]["function"]["name"], "lookup");
        let args = calls[0]["function"]["arguments"]
            .as_str()
            .unwrap()
            .to_string();
        check_args(&args);

        // Streamed: the header first, then the same arguments in pieces.
        let mut sbody = body.clone();
        sbody["stream"] = json!(true);
        let r = http::post(addr, "/v1/chat/completions", &sbody);
        let (mut streamed, mut pieces, mut header) = (String::new(), 0, false);
        for data in http::sse_data(&r.body) {
            if data == "[DONE]" {
                continue;
            }
            let c: Value = serde_json::from_str(&data).unwrap();
            for d in c["choices"][0]["delta"]["tool_calls"]
                .as_array()
                .into_iter()
                .flatten()
            {
                if d.get("id").is_some() {
                    assert!(!header && d["function"]["name"] == "lookup", "{name}: {d}");
                    header = true;
                } else {
                    assert!(header, "{name}: arguments before the header");
                }
                if let Some(a) = d["function"]["arguments"]
                    .as_str()
                    .filter(|a| !a.is_empty())
                {
                    streamed.push_str(a);
                    pieces += 1;
                }
            }
        }
        assert_eq!(streamed, args, "{name}");
        assert!(pieces > 1, "{name}: arguments in one piece");

        // The call and its result go back into the prompt through the template.
        let history = json!([ask[0],
            {"role": "assistant", "content": null, "tool_calls": [{"id": calls[0]["id"], "type": "function",
                "function": {"name": "lookup", "arguments": args}}]},
            {"role": "tool", "tool_call_id": calls[0]["id"], "content": "a small feline"}]);
        let body =
            json!({"messages": history, "tools": tools(), "max_tokens": 8, "temperature": 0});
        let r = http::post(addr, "/v1/chat/completions", &body);
        assert_eq!(r.status, 200, "{name}: {}", r.body);
        let v: Value = serde_json::from_str(&r.body).unwrap();
        assert!(
            v["usage"]["prompt_tokens"].as_u64().unwrap() > 30,
            "{name}: {v}"
        );
    }
}
