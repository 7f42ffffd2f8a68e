//! `POST /v1/embeddings`: one vector per input (a string, strings, token ids or lists of
//! them), pooled as the server was told (`--embedding-pooling`, last token by default)
//! and unit length; `encoding_format` float or base64 (little-endian f32, as OpenAI).

use super::error::{ApiError, ApiResult};
use super::responses::{
    EmbeddingData, EmbeddingList, EmbeddingUsage, EmbeddingVector, ErrorResponse,
};
use super::routes::body_bytes;
use super::types::{parse_body, KnownFields, Prompt, PromptField};
use super::AppState;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use base64::Engine as _;
use serde::Deserialize;
use std::sync::Arc;
use utoipa::ToSchema;

#[derive(Debug, Deserialize, ToSchema)]
pub struct EmbeddingRequest {
    pub input: PromptField,
    #[serde(default)]
    pub model: Option<String>,
    #[serde(default)]
    pub encoding_format: Option<String>,
    /// Logged only, as on the other routes.
    #[serde(default)]
    pub user: Option<String>,
}

impl KnownFields for EmbeddingRequest {
    fn known(f: &str) -> bool {
        ["input", "model", "encoding_format", "user"].contains(&f)
    }
}

#[utoipa::path(post, path = "/v1/embeddings", request_body = EmbeddingRequest, responses(
    (status = 200, body = EmbeddingList), (status = 400, body = ErrorResponse), (status = 404, body = ErrorResponse),
    (status = 422, body = ErrorResponse), (status = 503, body = ErrorResponse)))]
pub async fn embeddings(
    State(st): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Json<EmbeddingList>> {
    let req: EmbeddingRequest = parse_body(&body_bytes(body)?)?;
    if let Some(user) = &req.user {
        tracing::debug!("embedding request from user `{user}`");
    }
    st.check_model(req.model.as_deref())?;
    let base64 = match req.encoding_format.as_deref() {
        None | Some("float") => false,
        Some("base64") => true,
        Some(other) => {
            return Err(ApiError::invalid(
                "encoding_format",
                format!("unknown encoding_format `{other}`; use float or base64"),
            ))
        }
    };
    let inputs = req
        .input
        .into_prompts()
        .map_err(|e| ApiError::invalid("input", e.message))?;
    let st2 = st.clone();
    // The forward passes run on a blocking thread, beside the engine's own.
    let vectors = tokio::task::spawn_blocking(move || -> ApiResult<(Vec<Vec<f32>>, usize)> {
        let engine = st2.engine()?;
        let vocab = engine.model.config().vocab_size;
        let mut out = Vec::new();
        let mut tokens_used = 0;
        for (i, p) in inputs.into_iter().enumerate() {
            let ids = match p {
                Prompt::Text(t) => engine
                    .tokenize(&t, true)
                    .map_err(|e| ApiError::invalid("input", format!("{e:#}")))?,
                Prompt::Tokens(ids) => ids,
            };
            if let Some(bad) = ids.iter().find(|&&t| t as usize >= vocab) {
                return Err(ApiError::invalid(
                    "input",
                    format!("token id {bad} is outside the vocabulary of {vocab}"),
                ));
            }
            tokens_used += ids.len();
            let v = engine
                .embed(&ids, st2.pooling)
                .map_err(|e| ApiError::invalid("input", format!("input {i}: {e:#}")))?;
            out.push(v);
        }
        Ok((out, tokens_used))
    })
    .await
    .map_err(|_| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the embedding task failed",
        )
    })??;
    let (vectors, tokens) = vectors;
    let data: Vec<EmbeddingData> = vectors
        .into_iter()
        .enumerate()
        .map(|(index, v)| {
            let embedding = if base64 {
                let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
                EmbeddingVector::Base64(base64::engine::general_purpose::STANDARD.encode(bytes))
            } else {
                EmbeddingVector::Float(v)
            };
            EmbeddingData {
                object: "embedding",
                index,
                embedding,
            }
        })
        .collect();
    Ok(Json(EmbeddingList {
        object: "list",
        data,
        model: st.model_name.clone(),
        usage: EmbeddingUsage {
            prompt_tokens: tokens,
            total_tokens: tokens,
        },
    }))
}
