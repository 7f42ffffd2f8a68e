//! llama-server's `/tokenize` and `/detokenize`, with its request and response shapes.

use super::error::{ApiError, ApiResult};
use super::responses::{DetokenizeResponse, ErrorResponse, TokenPiece, TokenizeResponse, Tokens};
use super::routes::body_bytes;
use super::types::{parse_body, KnownFields};
use super::AppState;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::Json;
use serde::Deserialize;
use serde_json::json;
use std::sync::Arc;
use utoipa::ToSchema;

#[derive(Debug, Deserialize, ToSchema)]
pub struct TokenizeRequest {
    pub content: String,
    /// Add what the tokenizer adds around a raw text (BOS for most models).
    #[serde(default)]
    pub add_special: bool,
    /// Also return each token's text: `[{"id", "piece"}]` instead of ids.
    #[serde(default)]
    pub with_pieces: bool,
}

impl KnownFields for TokenizeRequest {
    fn known(f: &str) -> bool {
        ["content", "add_special", "with_pieces"].contains(&f)
    }
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct DetokenizeRequest {
    pub tokens: Vec<u32>,
}

impl KnownFields for DetokenizeRequest {
    fn known(f: &str) -> bool {
        f == "tokens"
    }
}

#[utoipa::path(post, path = "/tokenize", request_body = TokenizeRequest, responses(
    (status = 200, body = TokenizeResponse), (status = 400, body = ErrorResponse), (status = 422, body = ErrorResponse)))]
pub async fn tokenize(
    State(st): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Json<TokenizeResponse>> {
    let req: TokenizeRequest = parse_body(&body_bytes(body)?)?;
    let engine = st.engine()?;
    let ids = engine
        .tokenize(&req.content, req.add_special)
        .map_err(|e| ApiError::invalid("content", format!("{e:#}")))?;
    if !req.with_pieces {
        return Ok(Json(TokenizeResponse {
            tokens: Tokens::Ids(ids),
        }));
    }
    let tok = &engine.assets.tokenizer;
    let pieces: Vec<TokenPiece> = ids
        .iter()
        .map(|&id| {
            // A piece that is not whole UTF-8 (part of a character) comes as its bytes.
            let text = tok.decode(&[id], false).unwrap_or_default();
            let piece = if text.contains('\u{FFFD}') {
                json!(tok
                    .id_to_token(id)
                    .map(|t| t.into_bytes())
                    .unwrap_or_default())
            } else {
                json!(text)
            };
            TokenPiece { id, piece }
        })
        .collect();
    Ok(Json(TokenizeResponse {
        tokens: Tokens::Pieces(pieces),
    }))
}

#[utoipa::path(post, path = "/detokenize", request_body = DetokenizeRequest, responses(
    (status = 200, body = DetokenizeResponse), (status = 400, body = ErrorResponse), (status = 422, body = ErrorResponse)))]
pub async fn detokenize(
    State(st): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Json<DetokenizeResponse>> {
    let req: DetokenizeRequest = parse_body(&body_bytes(body)?)?;
    let engine = st.engine()?;
    let vocab = engine.model.config().vocab_size;
    if let Some(bad) = req.tokens.iter().find(|&&t| t as usize >= vocab) {
        return Err(ApiError::invalid(
            "tokens",
            format!("token id {bad} is outside the vocabulary of {vocab}"),
        ));
    }
    // Special tokens are kept, as llama-server does: the text round-trips.
    let content = engine
        .assets
        .tokenizer
        .decode(&req.tokens, false)
        .map_err(|e| ApiError::invalid("tokens", format!("{e}")))?;
    Ok(Json(DetokenizeResponse { content }))
}
