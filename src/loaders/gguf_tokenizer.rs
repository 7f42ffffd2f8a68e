//! A Hugging Face tokenizer rebuilt from GGUF metadata (`tokenizer.ggml.*`), so a lone
//! GGUF file is enough to chat. Byte-level BPE (`gpt2`) vocabularies get the
//! pre-tokenizer their `tokenizer.ggml.pre` names; SentencePiece (`llama`) vocabularies
//! become a byte-fallback BPE with merges ranked by piece score, as transformers converts
//! them.

use super::gguf_file::{GgufFile, GgufValue};
use super::TokenizerAssets;
use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use std::collections::HashMap;
use tokenizers::Tokenizer;

const TOKEN_TYPE_CONTROL: u64 = 3;
const TOKEN_TYPE_USER_DEFINED: u64 = 4;

const LLAMA3_REGEX: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const QWEN2_REGEX: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

fn strings(g: &GgufFile, key: &str) -> Result<Vec<String>> {
    g.get(key)
        .and_then(GgufValue::as_array)
        .with_context(|| format!("GGUF metadata has no {key} array"))?
        .iter()
        .map(|v| {
            v.as_str()
                .map(str::to_string)
                .with_context(|| format!("{key} holds a non-string"))
        })
        .collect()
}

fn token_id(g: &GgufFile, key: &str) -> Option<u32> {
    g.get(key).and_then(|v| v.as_u64()).map(|v| v as u32)
}

fn byte_level(use_regex: bool) -> Value {
    json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": use_regex})
}

fn split_then_byte_level(regex: &str) -> Value {
    json!({"type": "Sequence", "pretokenizers": [
        {"type": "Split", "pattern": {"Regex": regex}, "behavior": "Isolated", "invert": false},
        byte_level(false)
    ]})
}

/// The pre-tokenizer llama.cpp applies for a `tokenizer.ggml.pre` value.
fn gpt2_pre_tokenizer(pre: &str) -> Value {
    match pre {
        "smollm" | "starcoder" | "refact" | "codeshell" | "command-r" | "exaone" | "minerva-7b" => {
            json!({
                "type": "Sequence",
                "pretokenizers": [{"type": "Digits", "individual_digits": true}, byte_level(true)]
            })
        }
        "llama3" | "llama-v3" | "llama-bpe" | "falcon3" | "pixtral" => {
            split_then_byte_level(LLAMA3_REGEX)
        }
        "qwen2" | "deepseek-r1-qwen" | "megrez" => split_then_byte_level(QWEN2_REGEX),
        "default" | "gpt2" | "gpt-2" => byte_level(true),
        other => {
            tracing::warn!(
                "tokenizer.ggml.pre `{other}` is not known; using GPT-2 pre-tokenization"
            );
            byte_level(true)
        }
    }
}

/// Merges for a SentencePiece vocabulary: every split of a piece into two pieces of the
/// vocabulary, ranked by the merged piece's score (higher first), then by the ids.
fn spm_merges(tokens: &[String], scores: &[f32]) -> Vec<(String, String)> {
    let vocab: HashMap<&str, usize> = tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (t.as_str(), i))
        .collect();
    let mut merges: Vec<(f32, usize, usize, usize)> = Vec::new();
    for (id, piece) in tokens.iter().enumerate() {
        let bounds: Vec<usize> = piece.char_indices().map(|(i, _)| i).skip(1).collect();
        for b in bounds {
            let (l, r) = piece.split_at(b);
            if let (Some(&li), Some(&ri)) = (vocab.get(l), vocab.get(r)) {
                merges.push((scores.get(id).copied().unwrap_or(0.0), id, li, ri));
            }
        }
    }
    merges.sort_by(|a, b| {
        b.0.total_cmp(&a.0)
            .then(a.1.cmp(&b.1))
            .then(a.2.cmp(&b.2))
            .then(a.3.cmp(&b.3))
    });
    merges
        .into_iter()
        .map(|(_, _, l, r)| (tokens[l].clone(), tokens[r].clone()))
        .collect()
}

/// The tokenizer.json document equivalent to the GGUF vocabulary.
pub fn tokenizer_json_from_gguf(g: &GgufFile) -> Result<Value> {
    let model = g
        .get("tokenizer.ggml.model")
        .and_then(|v| v.as_str())
        .context("GGUF metadata has no tokenizer.ggml.model")?;
    let tokens = strings(g, "tokenizer.ggml.tokens")?;
    let types: Vec<u64> = match g
        .get("tokenizer.ggml.token_type")
        .and_then(GgufValue::as_array)
    {
        Some(a) => a.iter().map(|v| v.as_u64().unwrap_or(1)).collect(),
        None => vec![1; tokens.len()],
    };
    let added: Vec<Value> = tokens
        .iter()
        .zip(&types)
        .enumerate()
        .filter(|(_, (_, &t))| t == TOKEN_TYPE_CONTROL || t == TOKEN_TYPE_USER_DEFINED)
        .map(|(id, (content, &t))| {
            json!({"id": id, "content": content, "single_word": false, "lstrip": false, "rstrip": false,
                   "normalized": false, "special": t == TOKEN_TYPE_CONTROL})
        })
        .collect();
    let vocab: serde_json::Map<String, Value> = tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (t.clone(), json!(i)))
        .collect();
    let add_bos = g
        .get("tokenizer.ggml.add_bos_token")
        .and_then(|v| v.as_bool());
    let bos = token_id(g, "tokenizer.ggml.bos_token_id");
    let mut doc = match model {
        "gpt2" => {
            // A vocabulary of single bytes has no merges, and writers then omit the key.
            let merges = match g.get("tokenizer.ggml.merges") {
                Some(_) => strings(g, "tokenizer.ggml.merges")?,
                None => Vec::new(),
            };
            let merges: Vec<Value> = merges
                .iter()
                .map(|m| {
                    let (a, b) = m.split_once(' ').unwrap_or((m, ""));
                    json!([a, b])
                })
                .collect();
            let pre = g
                .get("tokenizer.ggml.pre")
                .and_then(|v| v.as_str())
                .unwrap_or("default");
            json!({
                "version": "1.0", "truncation": null, "padding": null, "added_tokens": added,
                "normalizer": null,
                "pre_tokenizer": gpt2_pre_tokenizer(pre),
                "post_processor": byte_level(true),
                "decoder": byte_level(true),
                "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
                          "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false,
                          "ignore_merges": pre.starts_with("llama"), "vocab": vocab, "merges": merges}
            })
        }
        "llama" => {
            let scores: Vec<f32> =
                match g.get("tokenizer.ggml.scores").and_then(GgufValue::as_array) {
                    Some(a) => a.iter().map(|v| v.as_f64().unwrap_or(0.0) as f32).collect(),
                    None => vec![0.0; tokens.len()],
                };
            let merges: Vec<Value> = spm_merges(&tokens, &scores)
                .into_iter()
                .map(|(a, b)| json!([a, b]))
                .collect();
            let unk = token_id(g, "tokenizer.ggml.unknown_token_id")
                .and_then(|i| tokens.get(i as usize))
                .cloned();
            let prefix = g
                .get("tokenizer.ggml.add_space_prefix")
                .and_then(|v| v.as_bool())
                .unwrap_or(true);
            let mut normalizers = Vec::new();
            if prefix {
                normalizers.push(json!({"type": "Prepend", "prepend": "▁"}));
            }
            normalizers
                .push(json!({"type": "Replace", "pattern": {"String": " "}, "content": "▁"}));
            let mut decoders = vec![
                json!({"type": "Replace", "pattern": {"String": "▁"}, "content": " "}),
                json!({"type": "ByteFallback"}),
                json!({"type": "Fuse"}),
            ];
            if prefix {
                decoders.push(json!({"type": "Strip", "content": " ", "start": 1, "stop": 0}));
            }
            json!({
                "version": "1.0", "truncation": null, "padding": null, "added_tokens": added,
                "normalizer": {"type": "Sequence", "normalizers": normalizers},
                "pre_tokenizer": null,
                "post_processor": null,
                "decoder": {"type": "Sequence", "decoders": decoders},
                "model": {"type": "BPE", "dropout": null, "unk_token": unk, "continuing_subword_prefix": null,
                          "end_of_word_suffix": null, "fuse_unk": true, "byte_fallback": true,
                          "ignore_merges": false, "vocab": vocab, "merges": merges}
            })
        }
        other => bail!("GGUF tokenizer model `{other}` is not supported (supported: gpt2, llama)"),
    };
    // BOS is added by the post-processor when the vocabulary asks for it (SentencePiece
    // vocabularies do unless told otherwise), as llama.cpp's tokenizer does.
    if add_bos.unwrap_or(model == "llama") {
        if let Some(bos) = bos.and_then(|b| tokens.get(b as usize).map(|t| (b, t.clone()))) {
            doc["post_processor"] = json!({
                "type": "TemplateProcessing",
                "single": [{"SpecialToken": {"id": bos.1, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
                "pair": [{"SpecialToken": {"id": bos.1, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                         {"Sequence": {"id": "B", "type_id": 1}}],
                "special_tokens": {bos.1.clone(): {"id": bos.1, "ids": [bos.0], "tokens": [bos.1]}}
            });
        }
    }
    Ok(doc)
}

pub fn tokenizer_from_gguf(g: &GgufFile) -> Result<Tokenizer> {
    let doc = tokenizer_json_from_gguf(g)?;
    let bytes = serde_json::to_vec(&doc)?;
    Tokenizer::from_bytes(bytes)
        .map_err(|e| anyhow::anyhow!("cannot build a tokenizer from GGUF metadata: {e}"))
}

pub fn assets_from_gguf(g: &GgufFile) -> Result<TokenizerAssets> {
    let tokenizer = tokenizer_from_gguf(g)?;
    let name = |key: &str| token_id(g, key).and_then(|id| tokenizer.id_to_token(id));
    let mut eos_token_ids: Vec<u32> =
        ["tokenizer.ggml.eos_token_id", "tokenizer.ggml.eot_token_id"]
            .iter()
            .filter_map(|k| token_id(g, k))
            .collect();
    eos_token_ids.sort_unstable();
    eos_token_ids.dedup();
    Ok(TokenizerAssets {
        chat_template: g
            .get("tokenizer.chat_template")
            .and_then(|v| v.as_str())
            .map(str::to_string),
        bos_token: name("tokenizer.ggml.bos_token_id"),
        eos_token: name("tokenizer.ggml.eos_token_id"),
        eos_token_ids,
        tokenizer,
    })
}
