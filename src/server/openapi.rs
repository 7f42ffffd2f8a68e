//! The OpenAPI 3.1 description of every route, written out by hand (the request types are
//! few and this keeps a schema-generation dependency out).

use axum::Json;
use serde_json::{json, Value};

pub async fn document() -> Json<Value> {
    Json(spec())
}

fn error_responses() -> Value {
    let e = json!({"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}});
    json!({
        "400": {"description": "Malformed JSON or an invalid value", "content": e["content"]},
        "401": {"description": "Missing or wrong API key", "content": e["content"]},
        "404": {"description": "Unknown model or route", "content": e["content"]},
        "413": {"description": "Body over the size limit", "content": e["content"]},
        "422": {"description": "A field of the wrong type", "content": e["content"]},
        "429": {"description": "Queue full", "content": e["content"]},
        "500": {"description": "Engine failure", "content": e["content"]},
    })
}

fn post_op(summary: &str, schema: &str, response: &str) -> Value {
    let mut responses = error_responses();
    responses["200"] = json!({
        "description": format!("{response}; with `stream: true`, server-sent events of chunks ending with `data: [DONE]`"),
        "content": {
            "application/json": {"schema": {"type": "object"}},
            "text/event-stream": {"schema": {"type": "string"}},
        }
    });
    json!({"post": {
        "summary": summary,
        "requestBody": {"required": true, "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{schema}")}}}},
        "responses": responses,
    }})
}

fn sampling_properties() -> Value {
    json!({
        "model": {"type": "string"},
        "max_tokens": {"type": "integer", "minimum": 1},
        "temperature": {"type": "number", "minimum": 0, "maximum": 2, "default": 1},
        "top_p": {"type": "number", "exclusiveMinimum": 0, "maximum": 1, "default": 1},
        "top_k": {"type": "integer", "minimum": -1, "default": 0},
        "min_p": {"type": "number", "minimum": 0, "maximum": 1, "default": 0},
        "stop": {"oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}, "maxItems": 16}]},
        "seed": {"type": "integer"},
        "n": {"type": "integer", "minimum": 1, "maximum": 16, "default": 1},
        "presence_penalty": {"type": "number", "minimum": -2, "maximum": 2},
        "frequency_penalty": {"type": "number", "minimum": -2, "maximum": 2},
        "repetition_penalty": {"type": "number", "exclusiveMinimum": 0},
        "logit_bias": {"type": "object", "additionalProperties": {"type": "number", "minimum": -100, "maximum": 100}},
        "user": {"type": "string"},
        "stream": {"type": "boolean", "default": false},
        "stream_options": {"type": "object", "properties": {"include_usage": {"type": "boolean"}}},
    })
}

pub fn spec() -> Value {
    let mut chat_props = sampling_properties();
    chat_props["messages"] =
        json!({"type": "array", "minItems": 1, "items": {"$ref": "#/components/schemas/Message"}});
    chat_props["max_completion_tokens"] = json!({"type": "integer", "minimum": 1});
    chat_props["logprobs"] = json!({"type": "boolean"});
    chat_props["top_logprobs"] = json!({"type": "integer", "minimum": 0, "maximum": 20});
    let mut completion_props = sampling_properties();
    completion_props["prompt"] = json!({"oneOf": [
        {"type": "string"},
        {"type": "array", "items": {"type": "string"}},
        {"type": "array", "items": {"type": "integer"}},
        {"type": "array", "items": {"type": "array", "items": {"type": "integer"}}},
    ]});
    completion_props["logprobs"] = json!({"type": "integer", "minimum": 0, "maximum": 5});
    completion_props["echo"] = json!({"type": "boolean"});
    let get_op = |summary: &str, content_type: &str| json!({"get": {"summary": summary, "responses": {"200": {"description": "OK", "content": {content_type: {"schema": {"type": if content_type == "application/json" {"object"} else {"string"}}}}}}}});
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "smelt",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "OpenAI-compatible API of the smelt inference server",
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Error": {"type": "object", "properties": {"error": {"type": "object", "properties": {
                    "message": {"type": "string"}, "type": {"type": "string"},
                    "param": {"type": ["string", "null"]}, "code": {"type": ["string", "null"]}}}}},
                "Message": {"type": "object", "required": ["role"], "properties": {
                    "role": {"enum": ["system", "developer", "user", "assistant", "tool"]},
                    "content": {"oneOf": [
                        {"type": "string"},
                        {"type": "array", "items": {"type": "object", "properties": {"type": {"const": "text"}, "text": {"type": "string"}}}},
                        {"type": "null"}]}}},
                "ChatCompletionRequest": {"type": "object", "required": ["messages"], "properties": chat_props},
                "CompletionRequest": {"type": "object", "required": ["prompt"], "properties": completion_props},
                "ReIsqRequest": {"type": "object", "properties": {"ggml_type": {"type": ["string", "null"],
                    "description": "Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q8_1, Q2K..Q8K, a bit width, or none for the load dtype"}}},
            }
        },
        "security": [{"bearer": []}],
        "paths": {
            "/v1/chat/completions": post_op("Chat completion", "ChatCompletionRequest", "A chat.completion object"),
            "/v1/completions": post_op("Text completion", "CompletionRequest", "A text_completion object"),
            "/v1/re_isq": post_op("Re-quantize the loaded model in place", "ReIsqRequest", "{status, ggml_type, seconds}"),
            "/re_isq": post_op("Alias of /v1/re_isq", "ReIsqRequest", "{status, ggml_type, seconds}"),
            "/v1/models": get_op("The served model", "application/json"),
            "/v1/models/{model}": get_op("One model", "application/json"),
            "/health": {"get": {"summary": "Liveness (no API key needed)", "security": [], "responses": {"200": {"description": "OK"}}}},
            "/metrics": get_op("Prometheus metrics", "text/plain"),
            "/openapi.json": get_op("This document", "application/json"),
        }
    })
}
