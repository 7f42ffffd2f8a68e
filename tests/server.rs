//! The HTTP server and its continuous-batching scheduler, in process on the real test
//! model: concurrent streams give exactly their one-at-a-time outputs, a client that
//! disconnects frees its sequence and KV blocks at once, bad requests get OpenAI error
//! JSON and leave the server serving, and a KV budget too small for the load makes
//! requests queue (and sequences get preempted) without any failing.

mod common;

use common::http::{self, next_chunk, read_head, send, sse_data};
use common::*;
use serde_json::json;
use smelt::engine::scheduler::{SchedulerConfig, SchedulerHandle, SeqEvent, SeqRequest};
use smelt::engine::Engine;
use smelt::server::ServerConfig;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

fn start(engine: Engine, cfg: ServerConfig) -> (SocketAddr, SchedulerHandle) {
    start_server(engine, cfg)
}

fn metric(addr: SocketAddr, name: &str) -> f64 {
    let body = http::get(addr, "/metrics").body;
    body.lines()
        .find(|l| l.starts_with(name) && !l.starts_with('#'))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("metric {name} missing from:\n{body}"))
}

fn chat_body(prompt: &str, max_tokens: usize, stream: bool) -> serde_json::Value {
    json!({
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": max_tokens,
        "temperature": 0,
        "stream": stream,
    })
}

/// The streamed text of one chat completion.
fn stream_text(addr: SocketAddr, body: &serde_json::Value) -> String {
    let r = http::post(addr, "/v1/chat/completions", body);
    assert_eq!(r.status, 200, "{}", r.body);
    let data = sse_data(&r.body);
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"));
    let mut text = String::new();
    for d in &data[..data.len() - 1] {
        let v: serde_json::Value = serde_json::from_str(d).unwrap();
        if let Some(t) = v["choices"][0]["delta"]["content"].as_str() {
            text.push_str(t);
        }
    }
    text
}

const PROMPTS: [&str; 16] = [
    "What is the capital of France?",
    "Write a haiku about the sea.",
    "Name three primary colors.",
    "How do I boil an egg?",
    "What is 12 times 12?",
    "Say hello in Spanish.",
    "Who wrote Romeo and Juliet?",
    "Give me a synonym for happy.",
    "What is photosynthesis?",
    "Tell me a short joke.",
    "What does a CPU do?",
    "List two fruits that are red.",
    "Why is the sky blue?",
    "What is the boiling point of water?",
    "Translate 'thank you' into French.",
    "Describe a cat in one sentence.",
];

#[test]
fn concurrent_streams_equal_one_at_a_time_and_disconnects_free_blocks() {
    let (addr, _handle) = start(engine(&gguf_spec()), ServerConfig::default());
    let max_tokens = 24;
    // Sixteen clients at once (prompts of different lengths join and leave the batch).
    let threads: Vec<_> = PROMPTS
        .iter()
        .map(|p| {
            let body = chat_body(p, max_tokens, true);
            std::thread::spawn(move || stream_text(addr, &body))
        })
        .collect();
    let together: Vec<String> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    for (p, got) in PROMPTS.iter().zip(&together) {
        let alone = stream_text(addr, &chat_body(p, max_tokens, true));
        assert_eq!(
            got, &alone,
            "prompt {p:?}: batched output differs from its solo run"
        );
        assert!(!alone.is_empty());
    }
    // Gauges are published after each engine step, a moment after the last event.
    let start = Instant::now();
    while metric(addr, "smelt_kv_cache_blocks_used") != 0.0 {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "KV blocks not freed"
        );
        std::thread::sleep(Duration::from_millis(20));
    }

    // A client that goes away mid-stream: its sequence and blocks are freed at once.
    let cancelled_before = metric(addr, "smelt_requests_finished_total{model=\"SmolLM2-135M-Instruct.Q4_1.gguf\",reason=\"cancelled\"}");
    let mut body = chat_body("Write a very long story about a dragon.", 4000, true);
    body["logit_bias"] = json!({"2": -100}); // no EOS: it would run for minutes
    let mut conn = send(addr, "POST", "/v1/chat/completions", &body.to_string(), &[]);
    let (status, _) = read_head(&mut conn);
    assert_eq!(status, 200);
    for _ in 0..5 {
        assert!(next_chunk(&mut conn).is_some());
    }
    assert!(metric(addr, "smelt_kv_cache_blocks_used") > 0.0);
    drop(conn);
    let start = Instant::now();
    while metric(addr, "smelt_running_sequences") > 0.0
        || metric(addr, "smelt_kv_cache_blocks_used") > 0.0
    {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "sequence not freed after disconnect"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let cancelled = metric(addr, "smelt_requests_finished_total{model=\"SmolLM2-135M-Instruct.Q4_1.gguf\",reason=\"cancelled\"}");
    assert_eq!(cancelled, cancelled_before + 1.0);
}

#[test]
fn bad_requests_get_openai_errors_and_the_server_keeps_serving() {
    let cfg = ServerConfig {
        body_limit: 64 << 10,
        api_key: Some("sekret".into()),
        ..Default::default()
    };
    let (addr, _handle) = start(engine(&gguf_spec()), cfg);
    let auth = [("Authorization", "Bearer sekret")];
    let call = |path: &str, body: &str| http::request(addr, "POST", path, body, &auth);
    let long_prompt = "word ".repeat(20000); // 100 KB, over the 64 KiB limit
    let cases: Vec<(&str, String, u16, &str)> = vec![
        (
            "/v1/chat/completions",
            "{not json".into(),
            400,
            "invalid_json",
        ),
        ("/v1/chat/completions", "[1, 2]".into(), 400, ""),
        (
            "/v1/chat/completions",
            json!({"messages": "hi"}).to_string(),
            422,
            "invalid_type",
        ),
        (
            "/v1/chat/completions",
            json!({"messages": [{"role": "user", "content": "hi"}], "temperature": "hot"})
                .to_string(),
            422,
            "invalid_type",
        ),
        (
            "/v1/chat/completions",
            json!({"messages": []}).to_string(),
            400,
            "",
        ),
        (
            "/v1/chat/completions",
            json!({"messages": [{"role": "wizard", "content": "hi"}]}).to_string(),
            400,
            "",
        ),
        (
            "/v1/chat/completions",
            json!({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 0}).to_string(),
            400,
            "",
        ),
        (
            "/v1/chat/completions",
            json!({"messages": [{"role": "user", "content": "hi"}], "max_tokens": -5}).to_string(),
            400,
            "",
        ),
        (
            "/v1/chat/completions",
            json!({"messages": [{"role": "user", "content": "hi"}], "model": "gpt-4"}).to_string(),
            404,
            "model_not_found",
        ),
        (
            "/v1/chat/completions",
            json!({"messages": [{"role": "user", "content": long_prompt}]}).to_string(),
            413,
            "",
        ),
        (
            "/v1/completions",
            json!({"prompt": "word ".repeat(20000)}).to_string(),
            413,
            "",
        ),
        (
            "/v1/completions",
            json!({"prompt": [999999]}).to_string(),
            400,
            "",
        ),
        (
            "/v1/completions",
            json!({"prompt": "hi", "top_p": 0}).to_string(),
            400,
            "",
        ),
        (
            "/v1/completions",
            json!({"prompt": "hi", "logprobs": 9}).to_string(),
            400,
            "",
        ),
        (
            "/v1/re_isq",
            json!({"ggml_type": "Q9_Z"}).to_string(),
            400,
            "invalid_isq_type",
        ),
        ("/v1/nothing", "{}".into(), 404, ""),
    ];
    for (path, body, status, code) in cases {
        let r = call(path, &body);
        assert_eq!(r.status, status, "{path} {body:.80}: {}", r.body);
        let e = r.json();
        assert!(
            e["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{}",
            r.body
        );
        assert!(e["error"]["type"].is_string());
        if !code.is_empty() {
            assert_eq!(e["error"]["code"], code, "{}", r.body);
        }
    }
    // Over the context window (under the body limit): 400 context_length_exceeded.
    let cfg = ServerConfig::default();
    let (addr2, _h2) = start(engine(&gguf_spec()), cfg);
    let r = http::post(
        addr2,
        "/v1/completions",
        &json!({"prompt": "word ".repeat(9000), "max_tokens": 4}),
    );
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(r.json()["error"]["code"], "context_length_exceeded");
    // Authentication: /health and /metrics are open (probes, scrapers), everything else
    // needs the key.
    assert_eq!(http::get(addr, "/health").status, 200);
    let m = http::get(addr, "/metrics");
    assert_eq!(m.status, 200);
    assert!(m.body.contains("vllm:num_requests_waiting"), "{}", m.body);
    assert_eq!(http::get(addr, "/openapi.json").status, 401);
    let r = http::get(addr, "/v1/models");
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["error"]["code"], "invalid_api_key");
    let r = http::request(
        addr,
        "GET",
        "/v1/models",
        "",
        &[("Authorization", "Bearer wrong")],
    );
    assert_eq!(r.status, 401);
    // Still serving: a normal request after all of that.
    let r = call(
        "/v1/completions",
        &json!({"prompt": "The capital of France is", "max_tokens": 3, "temperature": 0})
            .to_string(),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let v = r.json();
    assert_eq!(v["usage"]["completion_tokens"], 3);
    assert_eq!(v["choices"][0]["finish_reason"], "length");
    let r = http::request(addr, "GET", "/openapi.json", "", &auth);
    let spec = r.json();
    for path in [
        "/v1/chat/completions",
        "/v1/completions",
        "/v1/models",
        "/health",
        "/metrics",
        "/v1/re_isq",
    ] {
        assert!(spec["paths"][path].is_object(), "openapi lacks {path}");
    }
}

/// A KV budget of one context (64 tokens = 4 blocks on the tiny model) for six sequences
/// of 40 tokens: they queue and get preempted, none fails, each gets its solo output.
#[test]
fn a_full_kv_cache_queues_and_preempts_without_failing() {
    let tiny = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny/llama3");
    let spec = smelt::loaders::ModelSpec::Plain {
        model_id: tiny.to_string_lossy().into_owned(),
        revision: "main".into(),
    };
    let cfg = SchedulerConfig {
        max_seqs: 6,
        kv_cache_bytes: 0,
        max_queue: 100,
    };
    let handle = SchedulerHandle::start(engine(&spec), cfg).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let request = |i: u32| SeqRequest {
        prompt_tokens: (1..=10).map(|t| (t * 7 + i * 13) % 250 + 1).collect(),
        max_tokens: 30,
        sampling: smelt::engine::sampling::SamplingParams {
            // EOS (id 0) would end some sequences early; keep them all long.
            logit_bias: [(0u32, -100.0f32)].into_iter().collect(),
            ..Default::default()
        },
        stop: vec![],
        logprobs: None,
        constraint: None,
    };
    let run = |rxs: Vec<tokio::sync::mpsc::UnboundedReceiver<SeqEvent>>| {
        rt.block_on(async {
            let mut outs = Vec::new();
            for mut rx in rxs {
                let mut text = String::new();
                loop {
                    match rx.recv().await.expect("event") {
                        SeqEvent::Text { text: t, .. } => text.push_str(&t),
                        SeqEvent::Done {
                            completion_tokens, ..
                        } => {
                            assert_eq!(completion_tokens, 30);
                            break;
                        }
                        SeqEvent::Error(e) => panic!("sequence failed: {e}"),
                    }
                }
                outs.push(text);
            }
            outs
        })
    };
    let together = run((0..6).map(|i| handle.submit(request(i)).unwrap()).collect());
    assert!(
        handle
            .metrics
            .preemptions
            .load(std::sync::atomic::Ordering::Relaxed)
            > 0,
        "the budget should have forced preemption"
    );
    for i in 0..6 {
        let alone = run(vec![handle.submit(request(i)).unwrap()]);
        assert_eq!(together[i as usize], alone[0], "sequence {i}");
    }
}

fn completion_text(addr: SocketAddr, prompt: &str, n: usize) -> String {
    let r = http::post(
        addr,
        "/v1/completions",
        &json!({"prompt": prompt, "max_tokens": n, "temperature": 0, "logit_bias": {"2": -100}}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()["choices"][0]["text"].as_str().unwrap().to_string()
}

/// `ignore_eos` (vLLM's and llama-server's extension): with the EOS token forced by
/// `logit_bias`, a request ends at once without it and runs to `max_tokens` with it.
#[test]
fn ignore_eos_generates_max_tokens() {
    let (addr, _h) = start(engine(&gguf_spec()), ServerConfig::default());
    let ask = |ignore: bool| {
        let body = json!({"prompt": "Once upon a time", "max_tokens": 8, "temperature": 0,
            "logit_bias": {"2": 100}, "ignore_eos": ignore});
        let r = http::post(addr, "/v1/completions", &body);
        assert_eq!(r.status, 200, "{}", r.body);
        let j = r.json();
        (
            j["usage"]["completion_tokens"].as_u64().unwrap(),
            j["choices"][0]["finish_reason"]
                .as_str()
                .unwrap()
                .to_string(),
        )
    };
    assert_eq!(ask(false), (0, "stop".to_string()));
    assert_eq!(ask(true), (8, "length".to_string()));
    let r = http::post(
        addr,
        "/v1/completions",
        &json!({"prompt": "x", "max_tokens": 2, "ignore_eos": "yes"}),
    );
    assert_eq!(r.status, 422, "{}", r.body);
    assert_eq!(r.json()["error"]["param"], "ignore_eos");
}

/// POST /v1/re_isq while a stream runs: the stream finishes first (on the old weights),
/// then the model answers as one loaded with that ISQ type; a bad type changes nothing.
#[test]
fn re_isq_over_http_waits_for_in_flight_requests() {
    let (addr, _h) = start(engine(&gguf_spec()), ServerConfig::default());
    let prompt = "The history of the Roman Empire";
    let before = completion_text(addr, prompt, 24);
    let r = http::post(addr, "/v1/re_isq", &json!({"ggml_type": "Q2_K_XL"}));
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(
        completion_text(addr, prompt, 24),
        before,
        "a failed re-ISQ changed the model"
    );

    let mut body = chat_body("Tell me a long story.", 60, true);
    body["logit_bias"] = json!({"2": -100});
    let mut conn = send(addr, "POST", "/v1/chat/completions", &body.to_string(), &[]);
    assert_eq!(read_head(&mut conn).0, 200);
    assert!(next_chunk(&mut conn).is_some());
    let reisq = std::thread::spawn(move || {
        let r = http::post(addr, "/re_isq", &json!({"ggml_type": "q8_0"}));
        (r, Instant::now())
    });
    let mut rest = String::new();
    while let Some(c) = next_chunk(&mut conn) {
        rest.push_str(&c);
    }
    let stream_done = Instant::now();
    let (r, reisq_done) = reisq.join().unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["ggml_type"], "Q8_0");
    assert!(rest.contains("\"finish_reason\":\"length\""), "{rest}");
    assert!(
        reisq_done >= stream_done,
        "re-ISQ did not wait for the running stream"
    );

    let after = completion_text(addr, prompt, 24);
    let direct = {
        let loaded = smelt::load(
            &gguf_spec(),
            &smelt::loaders::LoadOptions {
                isq: Some(smelt::quant::IsqType::Q8_0),
                ..Default::default()
            },
        )
        .unwrap();
        let (addr2, _h2) = start(Engine::new(loaded).unwrap(), ServerConfig::default());
        completion_text(addr2, prompt, 24)
    };
    assert_eq!(
        after, direct,
        "re-ISQ'd model differs from one loaded with --isq Q8_0"
    );
}

#[test]
fn a_full_queue_answers_429() {
    let cfg = ServerConfig {
        scheduler: SchedulerConfig {
            max_queue: 0,
            ..Default::default()
        },
        ..Default::default()
    };
    let (addr, _h) = start(engine(&gguf_spec()), cfg);
    let r = http::post(
        addr,
        "/v1/completions",
        &json!({"prompt": "Hi", "max_tokens": 2}),
    );
    assert_eq!(r.status, 429, "{}", r.body);
    assert_eq!(r.json()["error"]["type"], "rate_limit_error");
    assert_eq!(http::get(addr, "/health").status, 200);
}
