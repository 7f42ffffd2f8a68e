//! Grammars that force tool calls: the generic format always (a call or a reply, or only
//! calls), native formats under `required` or a named function. Each call's arguments
//! follow the function's parameter schema, `name` first so calls stream in order.

use super::{ToolChoice, ToolFormat, ToolSetup, HERMES_CLOSE, HERMES_OPEN, MISTRAL_MARKER};
use crate::engine::constraint::{compact_json, GrammarSpec};
use serde_json::{json, Value};

/// One call of any offered tool, with the arguments under `args_key`.
fn call_schema(setup: &ToolSetup, args_key: &str) -> Value {
    let alts: Vec<Value> = setup
        .offered()
        .iter()
        .map(|t| {
            let params = if t.parameters.is_object() {
                t.parameters.clone()
            } else {
                json!({"type": "object"})
            };
            json!({
                "type": "object",
                "properties": {"name": {"const": t.name}, args_key: params},
                "required": ["name", args_key],
                "additionalProperties": false,
            })
        })
        .collect();
    if alts.len() == 1 {
        alts.into_iter().next().expect("one")
    } else {
        json!({"anyOf": alts})
    }
}

fn calls_array(setup: &ToolSetup) -> Value {
    let mut a = json!({"type": "array", "items": call_schema(setup, "arguments"), "minItems": 1});
    if !setup.parallel {
        a["maxItems"] = json!(1);
    }
    a
}

/// A marker as the grammar spells it: its own token when the vocabulary has one (so the
/// model writes it as it was trained to), else the literal text.
fn marker(text: &str, token_of: &dyn Fn(&str) -> Option<u32>) -> String {
    match token_of(text) {
        Some(id) => format!("<[{id}]>"),
        None => serde_json::to_string(text).expect("a string serializes"),
    }
}

/// The grammar for this request's tools, or None when decoding is free (native formats
/// under `auto`, or `none`).
pub fn tool_grammar(
    setup: &ToolSetup,
    token_of: &dyn Fn(&str) -> Option<u32>,
) -> Option<GrammarSpec> {
    let forced = matches!(setup.choice, ToolChoice::Required | ToolChoice::Named(_));
    if setup.choice == ToolChoice::None || setup.offered().is_empty() {
        return None;
    }
    let repeat = |call: &str, sep: &str| {
        if setup.parallel {
            format!("start: call ({sep} call)*\ncall: {call}")
        } else {
            format!("start: call\ncall: {call}")
        }
    };
    match setup.format {
        ToolFormat::Generic => {
            let calls = json!({
                "type": "object",
                "properties": {"tool_calls": calls_array(setup)},
                "required": ["tool_calls"],
                "additionalProperties": false,
            });
            Some(GrammarSpec::JsonSchema(if forced {
                calls
            } else {
                let reply = json!({
                    "type": "object",
                    "properties": {"response": {"type": "string"}},
                    "required": ["response"],
                    "additionalProperties": false,
                });
                json!({"anyOf": [calls, reply]})
            }))
        }
        _ if !forced => None,
        ToolFormat::Hermes => {
            let call = format!(
                "{} \"\\n\" %json {} \"\\n\" {}",
                marker(HERMES_OPEN, token_of),
                compact_json(call_schema(setup, "arguments")),
                marker(HERMES_CLOSE, token_of)
            );
            Some(GrammarSpec::Lark(repeat(&call, "\"\\n\"")))
        }
        ToolFormat::Llama3 => {
            let call = format!("%json {}", compact_json(call_schema(setup, "parameters")));
            Some(GrammarSpec::Lark(repeat(&call, "\"; \"")))
        }
        ToolFormat::Mistral => Some(GrammarSpec::Lark(format!(
            "start: {} %json {}",
            marker(MISTRAL_MARKER, token_of),
            compact_json(calls_array(setup))
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::super::{parse, Tool};
    use super::*;
    use crate::engine::constraint::testing::{compiler, run};

    fn setup(format: ToolFormat, choice: ToolChoice, parallel: bool) -> ToolSetup {
        let tool = |name: &str| Tool {
            name: name.into(),
            description: None,
            parameters: json!({"type": "object", "properties": {"city": {"type": "string"},
                "days": {"type": "integer"}}, "required": ["city", "days"],
                "additionalProperties": false}),
        };
        ToolSetup {
            tools: vec![tool("weather"), tool("time")],
            choice,
            parallel,
            format,
        }
    }

    /// Under `required` / a named function every format's grammar yields calls that parse
    /// back with arguments valid against the schema, whatever the model prefers.
    #[test]
    fn forced_calls_parse_and_validate_in_every_format() {
        let c = compiler();
        for format in [
            ToolFormat::Hermes,
            ToolFormat::Llama3,
            ToolFormat::Mistral,
            ToolFormat::Generic,
        ] {
            for choice in [ToolChoice::Required, ToolChoice::Named("time".into())] {
                let s = setup(format, choice.clone(), false);
                let g = tool_grammar(&s, &|_| None).expect("forced calls have a grammar");
                let mut k = c.compile(&g).unwrap_or_else(|e| panic!("{format:?}: {e}"));
                let out = String::from_utf8(run(&mut k, b"Sure! The weather is nice.")).unwrap();
                let (_, calls) = parse(format, &out);
                assert_eq!(calls.len(), 1, "{format:?} {out:?}");
                if let ToolChoice::Named(n) = &choice {
                    assert_eq!(&calls[0].name, n);
                }
                let args: serde_json::Value = serde_json::from_str(&calls[0].arguments).unwrap();
                assert!(
                    args["city"].is_string() && args["days"].is_i64(),
                    "{format:?}: {args}"
                );
            }
        }
        // Native formats under auto decode freely; the generic one still constrains.
        assert!(
            tool_grammar(&setup(ToolFormat::Hermes, ToolChoice::Auto, true), &|_| {
                None
            })
            .is_none()
        );
        let g = tool_grammar(&setup(ToolFormat::Generic, ToolChoice::Auto, true), &|_| {
            None
        })
        .unwrap();
        let mut k = c.compile(&g).unwrap();
        let out = String::from_utf8(run(&mut k, b"{\"response\": \"hi\"}")).unwrap();
        assert_eq!(parse(ToolFormat::Generic, &out).0, "hi");
    }

    #[test]
    fn markers_use_their_own_token() {
        let s = setup(ToolFormat::Hermes, ToolChoice::Required, true);
        let Some(GrammarSpec::Lark(g)) = tool_grammar(&s, &|m| (m == HERMES_OPEN).then_some(7))
        else {
            panic!()
        };
        assert!(g.contains("<[7]>") && g.contains("\"</tool_call>\""), "{g}");
    }
}
