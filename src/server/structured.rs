//! Structured output: OpenAI's `response_format` (`text`, `json_object`, `json_schema`
//! with `strict`) and vLLM's grammar extension (`structured_outputs` with `json`, `regex`,
//! `grammar` — Lark, llguidance's dialect — or `choice`, and the older `guided_*`
//! spellings), turned into one grammar for the engine's constrained decoding.

use super::error::{ApiError, ApiResult};
use crate::engine::constraint::GrammarSpec;
use serde::Deserialize;
use serde_json::{json, Value};
use utoipa::ToSchema;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct JsonSchemaFormat {
    /// The schema's name and description label it for the client; decoding follows the
    /// schema alone (docs/SERVER.md).
    #[serde(default)]
    #[allow(dead_code)]
    pub name: Option<String>,
    #[serde(default)]
    #[allow(dead_code)]
    pub description: Option<String>,
    #[serde(default)]
    pub schema: Option<Value>,
    #[serde(default)]
    pub strict: Option<bool>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ResponseFormat {
    Text,
    JsonObject,
    JsonSchema { json_schema: JsonSchemaFormat },
}

/// vLLM's `structured_outputs` object; exactly one member may be set.
#[derive(Debug, Deserialize, Default, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StructuredOutputs {
    #[serde(default)]
    pub json: Option<Value>,
    #[serde(default)]
    pub regex: Option<String>,
    #[serde(default)]
    pub grammar: Option<String>,
    #[serde(default)]
    pub choice: Option<Vec<String>>,
}

/// The structured-output fields of a generation request.
#[derive(Debug, Deserialize, Default, ToSchema)]
pub struct StructuredFields {
    #[serde(default)]
    pub response_format: Option<ResponseFormat>,
    #[serde(default)]
    pub structured_outputs: Option<StructuredOutputs>,
    #[serde(default)]
    pub guided_json: Option<Value>,
    #[serde(default)]
    pub guided_regex: Option<String>,
    #[serde(default)]
    pub guided_grammar: Option<String>,
    #[serde(default)]
    pub guided_choice: Option<Vec<String>>,
}

impl StructuredFields {
    /// The grammar the output must follow, if any; more than one is a 400.
    pub fn grammar(&self) -> ApiResult<Option<(&'static str, GrammarSpec)>> {
        let mut found: Vec<(&'static str, GrammarSpec)> = Vec::new();
        match &self.response_format {
            None | Some(ResponseFormat::Text) => {}
            Some(ResponseFormat::JsonObject) => found.push((
                "response_format",
                GrammarSpec::JsonSchema(json!({"type": "object"})),
            )),
            Some(ResponseFormat::JsonSchema { json_schema }) => {
                let param = "response_format.json_schema.schema";
                let schema = json_schema.schema.clone().unwrap_or(json!({}));
                if !schema.is_object() && !schema.is_boolean() {
                    return Err(ApiError::invalid(param, "the schema must be a JSON object"));
                }
                if json_schema.strict == Some(true) {
                    check_strict(&schema, "#").map_err(|m| ApiError::invalid(param, m))?;
                }
                found.push(("response_format", GrammarSpec::JsonSchema(schema)));
            }
        }
        let so = self.structured_outputs.as_ref();
        let json = so.and_then(|s| s.json.clone());
        let regex = so.and_then(|s| s.regex.clone());
        let grammar = so.and_then(|s| s.grammar.clone());
        let choice = so.and_then(|s| s.choice.clone());
        for (name, v) in [
            ("structured_outputs.json", json),
            ("guided_json", self.guided_json.clone()),
        ] {
            if let Some(v) = v {
                // A schema may come as a JSON string (vLLM accepts both).
                let v = match v {
                    Value::String(s) => serde_json::from_str(&s).map_err(|e| {
                        ApiError::invalid(name, format!("`{name}` is not a JSON schema: {e}"))
                    })?,
                    v => v,
                };
                found.push((name, GrammarSpec::JsonSchema(v)));
            }
        }
        for (name, v) in [
            ("structured_outputs.regex", regex),
            ("guided_regex", self.guided_regex.clone()),
        ] {
            if let Some(v) = v {
                found.push((name, GrammarSpec::Regex(v)));
            }
        }
        for (name, v) in [
            ("structured_outputs.grammar", grammar),
            ("guided_grammar", self.guided_grammar.clone()),
        ] {
            if let Some(v) = v {
                found.push((name, GrammarSpec::Lark(v)));
            }
        }
        for (name, v) in [
            ("structured_outputs.choice", choice),
            ("guided_choice", self.guided_choice.clone()),
        ] {
            if let Some(v) = v {
                if v.is_empty() {
                    return Err(ApiError::invalid(name, format!("`{name}` is empty")));
                }
                found.push((name, choice_grammar(&v)));
            }
        }
        match found.len() {
            0 => Ok(None),
            1 => Ok(found.pop()),
            _ => Err(ApiError::invalid(
                found[1].0,
                format!(
                    "only one output constraint per request; got {}",
                    found
                        .iter()
                        .map(|f| format!("`{}`", f.0))
                        .collect::<Vec<_>>()
                        .join(" and ")
                ),
            )),
        }
    }
}

/// Exactly one of the strings: a Lark alternation of string literals.
fn choice_grammar(options: &[String]) -> GrammarSpec {
    let alts: Vec<String> = options
        .iter()
        .map(|o| serde_json::to_string(o).expect("a string serializes"))
        .collect();
    GrammarSpec::Lark(format!("start: {}", alts.join(" | ")))
}

/// OpenAI's strict mode: every object lists all its properties as required and allows no
/// others, so that the output has exactly the schema's shape.
fn check_strict(schema: &Value, path: &str) -> Result<(), String> {
    let Some(obj) = schema.as_object() else {
        return Ok(());
    };
    if let Some(props) = obj.get("properties").and_then(Value::as_object) {
        if obj.get("additionalProperties") != Some(&Value::Bool(false)) {
            return Err(format!(
                "with `strict: true`, the object at {path} must set `additionalProperties: false`"
            ));
        }
        let required: Vec<&str> = obj
            .get("required")
            .and_then(Value::as_array)
            .map(|r| r.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        if let Some(missing) = props.keys().find(|k| !required.contains(&k.as_str())) {
            return Err(format!(
                "with `strict: true`, every property must be required; `{missing}` at {path} is not"
            ));
        }
        for (k, v) in props {
            check_strict(v, &format!("{path}/properties/{k}"))?;
        }
    }
    for key in ["items", "additionalProperties", "not"] {
        if let Some(v) = obj.get(key) {
            check_strict(v, &format!("{path}/{key}"))?;
        }
    }
    for key in ["anyOf", "oneOf", "allOf", "prefixItems"] {
        for (i, v) in obj
            .get(key)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .enumerate()
        {
            check_strict(v, &format!("{path}/{key}/{i}"))?;
        }
    }
    for key in ["$defs", "definitions"] {
        for (k, v) in obj
            .get(key)
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
        {
            check_strict(v, &format!("{path}/{key}/{k}"))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(v: Value) -> StructuredFields {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn strict_needs_closed_objects() {
        let open =
            json!({"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]});
        assert!(check_strict(&open, "#")
            .unwrap_err()
            .contains("additionalProperties"));
        let partial = json!({"type": "object", "properties": {"a": {}, "b": {}}, "required": ["a"],
            "additionalProperties": false});
        assert!(check_strict(&partial, "#").unwrap_err().contains("`b`"));
        let nested = json!({"type": "object", "properties": {"a": {"type": "object",
            "properties": {"x": {}}}}, "required": ["a"], "additionalProperties": false});
        assert!(check_strict(&nested, "#")
            .unwrap_err()
            .contains("#/properties/a"));
    }

    #[test]
    fn one_constraint_per_request() {
        let f = fields(json!({"response_format": {"type": "json_object"}, "guided_regex": "a+"}));
        assert!(f.grammar().unwrap_err().message.contains("only one"));
        let f = fields(json!({"structured_outputs": {"choice": ["yes", "no"]}}));
        assert_eq!(
            f.grammar().unwrap(),
            Some((
                "structured_outputs.choice",
                GrammarSpec::Lark("start: \"yes\" | \"no\"".into())
            ))
        );
        assert_eq!(
            fields(json!({"response_format": {"type": "text"}}))
                .grammar()
                .unwrap(),
            None
        );
    }
}
