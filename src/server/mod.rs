//! The OpenAI-compatible HTTP front (axum): a thin layer over the engine's scheduler.
//! Routes: chat and text completions (JSON or SSE), models, health, re-ISQ, Prometheus
//! metrics and an OpenAPI description. Every error is OpenAI's error JSON, and no bad
//! request can stop the server.

mod embeddings;
mod error;
mod openapi;
mod responses;
mod routes;
mod sse;
mod structured;
mod tokenize;
mod types;

use crate::engine::scheduler::{SchedulerConfig, SchedulerHandle};
use crate::engine::{Engine, Pooling};
use anyhow::{Context, Result};
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use error::ApiError;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub host: String,
    pub port: u16,
    /// When set, every route but /health and /metrics needs `Authorization: Bearer <key>`.
    pub api_key: Option<String>,
    /// The model id clients use (default: the loaded model's name).
    pub served_model_name: Option<String>,
    /// Largest request body accepted (bytes).
    pub body_limit: usize,
    /// How long running requests may finish after SIGINT/SIGTERM before being cancelled.
    pub shutdown_grace: Duration,
    pub scheduler: SchedulerConfig,
    /// How `/v1/embeddings` pools token states.
    pub embedding_pooling: Pooling,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            host: "127.0.0.1".into(),
            port: 1234,
            api_key: None,
            served_model_name: None,
            body_limit: 4 << 20,
            shutdown_grace: Duration::from_secs(10),
            scheduler: SchedulerConfig::default(),
            embedding_pooling: Pooling::default(),
        }
    }
}

pub struct AppState {
    handle: SchedulerHandle,
    model_name: String,
    context_length: usize,
    created: u64,
    fingerprint: String,
    api_key: Option<String>,
    pooling: Pooling,
}

/// The router over a running scheduler (also what the tests drive).
pub fn router(handle: SchedulerHandle, cfg: &ServerConfig) -> Result<Router> {
    let (model_name, context_length) = {
        let e = handle
            .engine
            .read()
            .map_err(|_| anyhow::anyhow!("engine lock poisoned"))?;
        (
            cfg.served_model_name
                .clone()
                .unwrap_or_else(|| e.model_name.clone()),
            e.context_length(),
        )
    };
    let state = Arc::new(AppState {
        handle,
        model_name,
        context_length,
        created: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        fingerprint: format!("smelt-{}", env!("CARGO_PKG_VERSION")),
        api_key: cfg.api_key.clone().filter(|k| !k.is_empty()),
        pooling: cfg.embedding_pooling,
    });
    let api = Router::new()
        .route("/v1/chat/completions", post(routes::chat_completions))
        .route("/v1/completions", post(routes::completions))
        .route("/v1/embeddings", post(embeddings::embeddings))
        .route("/tokenize", post(tokenize::tokenize))
        .route("/detokenize", post(tokenize::detokenize))
        .route("/v1/models", get(routes::models))
        .route("/v1/models/{*id}", get(routes::model))
        .route("/v1/re_isq", post(routes::re_isq))
        .route("/re_isq", post(routes::re_isq))
        .route("/metrics", get(routes::metrics))
        .route("/openapi.json", get(openapi::document))
        .route("/health", get(routes::health))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(cfg.body_limit))
        .layer(middleware::from_fn_with_state(state.clone(), guard))
        .with_state(state);
    Ok(api)
}

async fn not_found(req: Request) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        format!("no route for {} {}", req.method(), req.uri().path()),
    )
}

/// API-key check (all routes but /health) and response counting.
async fn guard(State(st): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    if let Some(key) = &st.api_key {
        let path = req.uri().path();
        let given = req
            .headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim);
        // Probes and metric scrapers (the gateway's endpoint picker, Prometheus) send no
        // key; as in vLLM, /health and /metrics stay open.
        let open = path == "/health" || path == "/metrics";
        if !open && given != Some(key.as_str()) {
            st.handle.metrics.count_http(401);
            return ApiError::new(
                StatusCode::UNAUTHORIZED,
                "missing or incorrect API key: send `Authorization: Bearer <key>`",
            )
            .code("invalid_api_key")
            .into_response();
        }
    }
    let resp = next.run(req).await;
    st.handle.metrics.count_http(resp.status().as_u16());
    resp
}

/// Serves `engine` until SIGINT/SIGTERM, then stops accepting, lets running requests
/// finish for the grace period and cancels the rest.
pub fn serve(engine: Engine, cfg: ServerConfig) -> Result<()> {
    serve_loading(cfg, move || Ok(engine))
}

/// Listens first, then loads: while `load` runs `/health` answers 503 and every other
/// route 503 "loading", so probes and load balancers see the replica before it takes
/// traffic. After SIGINT/SIGTERM it keeps listening while running requests finish (up to
/// the grace period): `/health` 503 "draining", new generation requests 503.
pub fn serve_loading(cfg: ServerConfig, load: impl FnOnce() -> Result<Engine>) -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let addr = format!("{}:{}", cfg.host, cfg.port);
    let listener = rt
        .block_on(tokio::net::TcpListener::bind(&addr))
        .with_context(|| format!("cannot listen on {addr}"))?;
    tracing::info!(
        "listening on http://{}; loading the model",
        listener.local_addr()?
    );
    let app: Arc<OnceLock<Router>> = Arc::default();
    let engine: Arc<OnceLock<SchedulerHandle>> = Arc::default();
    let draining = Arc::new(AtomicBool::new(false));
    let outer = {
        let (app, draining) = (app.clone(), draining.clone());
        Router::new().fallback(move |req: Request| {
            let (app, draining) = (app.clone(), draining.clone());
            async move { dispatch(&app, &draining, req).await }
        })
    };
    let grace = cfg.shutdown_grace;
    let server = {
        let (engine, draining) = (engine.clone(), draining.clone());
        rt.spawn(async move {
            axum::serve(listener, outer)
                .with_graceful_shutdown(async move {
                    shutdown_signal().await;
                    tracing::info!("shutdown requested: draining");
                    // Still listening while running requests finish: /health says 503 and
                    // new requests get 503, so load balancers move on; then the listener
                    // closes and open connections finish.
                    draining.store(true, Ordering::Relaxed);
                    if let Some(h) = engine.get().cloned() {
                        h.shutdown(grace).await;
                    }
                })
                .await
        })
    };
    let loaded = load();
    rt.block_on(async move {
        let loaded = match loaded {
            Ok(e) => e,
            Err(e) => {
                server.abort();
                return Err(e);
            }
        };
        let handle = SchedulerHandle::start(loaded, cfg.scheduler.clone())?;
        let _ = engine.set(handle.clone());
        let _ = app.set(router(handle.clone(), &cfg)?);
        tracing::info!("model loaded: serving the OpenAI API (Ctrl-C to stop)");
        server.await??;
        handle.shutdown(grace).await;
        tracing::info!("server stopped");
        Ok(())
    })
}

/// Before the model is loaded, or while draining, `/health` is 503; other routes go to
/// the full router once there is one.
async fn dispatch(app: &OnceLock<Router>, draining: &AtomicBool, req: Request) -> Response {
    use tower::ServiceExt;
    let health = req.uri().path() == "/health";
    match app.get() {
        Some(_) if health && draining.load(Ordering::Relaxed) => (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(serde_json::json!({"status": "draining"})),
        )
            .into_response(),
        Some(r) => match r.clone().oneshot(req).await {
            Ok(resp) => resp,
            Err(never) => match never {},
        },
        None if health => (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(serde_json::json!({"status": "loading"})),
        )
            .into_response(),
        None => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "the model is still loading",
        )
        .code("loading")
        .into_response(),
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
