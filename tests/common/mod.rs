//! Shared helpers for tests on the real test model (fetched by scripts/fetch-test-models.sh).
#![allow(dead_code)]

pub mod http;

use smelt::engine::Engine;
use smelt::loaders::{LoadOptions, ModelSpec};
use std::path::PathBuf;

pub const PLAIN_ID: &str = "HuggingFaceTB/SmolLM2-135M-Instruct";

pub fn gguf_path() -> PathBuf {
    let dir = std::env::var("SMELT_TEST_MODELS")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/smelt-test-models")
        });
    let p = dir.join("SmolLM2-135M-Instruct.Q4_1.gguf");
    assert!(
        p.is_file(),
        "test model missing at {}: run scripts/fetch-test-models.sh first",
        p.display()
    );
    p
}

pub fn gguf_spec() -> ModelSpec {
    ModelSpec::Gguf {
        model_id: None,
        file: gguf_path().to_string_lossy().into_owned(),
        tokenizer_json: None,
    }
}

pub fn plain_spec() -> ModelSpec {
    ModelSpec::Plain {
        model_id: PLAIN_ID.to_string(),
        revision: "main".to_string(),
    }
}

pub fn engine(spec: &ModelSpec) -> Engine {
    let loaded = smelt::load(spec, &LoadOptions::default()).expect("load test model");
    Engine::new(loaded).expect("engine")
}

pub fn reference() -> serde_json::Value {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/reference.json"
    ))
    .unwrap();
    serde_json::from_str(&text).unwrap()
}

/// The plain copy's snapshot directory in the HF cache.
pub fn plain_snapshot() -> PathBuf {
    let cache = hf_hub::Cache::from_env();
    let file = cache
        .model(PLAIN_ID.to_string())
        .get("config.json")
        .expect("plain test model missing from the HF cache: run scripts/fetch-test-models.sh");
    file.parent().unwrap().to_path_buf()
}

/// Starts the HTTP server for `engine` on a free loopback port, on a runtime of its own;
/// it lives until the test process ends.
pub fn start_server(
    engine: Engine,
    cfg: smelt::server::ServerConfig,
) -> (
    std::net::SocketAddr,
    smelt::engine::scheduler::SchedulerHandle,
) {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let handle =
                smelt::engine::scheduler::SchedulerHandle::start(engine, cfg.scheduler.clone())
                    .unwrap();
            let app = smelt::server::router(handle.clone(), &cfg).unwrap();
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send((listener.local_addr().unwrap(), handle)).unwrap();
            axum::serve(listener, app).await.unwrap();
        });
    });
    rx.recv().unwrap()
}
