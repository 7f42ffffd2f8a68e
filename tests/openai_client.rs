//! The real `openai` Python client (installed by scripts/fetch-test-models.sh into the
//! helper venv) against `smelt --port` on loopback: chat and completions, streaming,
//! seeds, logprobs, errors (tests/openai_client.py); tool calls, structured output,
//! embeddings and tokenize, validated with `jsonschema` (tests/openai_tools.py). Then graceful shutdown: SIGTERM while
//! a stream runs lets it finish with `[DONE]`, and the process exits cleanly.

mod common;

use common::http::{self, next_chunk, read_head, send};
use common::*;
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The two tests each start a server on a port found free a moment before; run at once,
/// one could bind the port the other just probed, so they take turns.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn venv_python() -> PathBuf {
    let dir = std::env::var("SMELT_TEST_MODELS")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/smelt-test-models")
        });
    let py = dir.join("venv/bin/python");
    assert!(
        py.is_file(),
        "{} missing: run scripts/fetch-test-models.sh",
        py.display()
    );
    py
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_server(port: u16, key: &str) -> (Server, SocketAddr) {
    let child = Command::new(env!("CARGO_BIN_EXE_smelt"))
        .args([
            "--port",
            &port.to_string(),
            "--api-key",
            key,
            "--log",
            "warn",
            "gguf",
            "-f",
        ])
        .arg(gguf_path())
        .stdout(Stdio::null())
        .spawn()
        .expect("start smelt");
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let server = Server(child);
    let start = Instant::now();
    loop {
        if std::net::TcpStream::connect(addr).is_ok() && http::get(addr, "/health").status == 200 {
            return (server, addr);
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "server did not come up"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn openai_python_client_then_graceful_shutdown() {
    let _turn = serial();
    let key = "test-key-123";
    let port = free_port();
    let (mut server, addr) = start_server(port, key);
    for (script, done) in [
        ("openai_client.py", "all openai-client checks passed"),
        (
            "openai_tools.py",
            "all tool and structured-output checks passed",
        ),
    ] {
        let path = format!("{}/tests/{script}", env!("CARGO_MANIFEST_DIR"));
        let out = Command::new(venv_python())
            .args([&path, &format!("http://{addr}/v1"), key])
            .output()
            .expect("run python");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "{script} checks failed:\n{stdout}\n{stderr}"
        );
        assert!(stdout.contains(done), "{stdout}");
    }

    // SIGTERM during a stream: the stream still ends properly, then the process exits 0.
    let body = serde_json::json!({
        "messages": [{"role": "user", "content": "Write a long story."}],
        "max_tokens": 160, "temperature": 0, "stream": true,
        "logit_bias": {"2": -100},
    });
    let auth = format!("Bearer {key}");
    let mut conn = send(
        addr,
        "POST",
        "/v1/chat/completions",
        &body.to_string(),
        &[("Authorization", &auth)],
    );
    assert_eq!(read_head(&mut conn).0, 200);
    let mut seen = String::new();
    for _ in 0..3 {
        seen.push_str(&next_chunk(&mut conn).expect("chunk"));
    }
    let pid = server.0.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    // Draining: still listening, /health 503 so load balancers move on, new work refused.
    // The signal is delivered asynchronously, so wait (boundedly) for the drain to start.
    let drain_start = Instant::now();
    let h = loop {
        let h = http::get(addr, "/health");
        if h.status != 200 || drain_start.elapsed() > Duration::from_secs(10) {
            break h;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(h.status, 503, "{}", h.body);
    assert!(h.body.contains("draining"), "{}", h.body);
    let refused = http::request(
        addr,
        "POST",
        "/v1/completions",
        r#"{"prompt": "x", "max_tokens": 2}"#,
        &[("Authorization", &auth)],
    );
    assert_eq!(refused.status, 503, "{}", refused.body);
    while let Some(c) = next_chunk(&mut conn) {
        seen.push_str(&c);
    }
    assert!(
        seen.contains("\"finish_reason\":\"length\""),
        "stream cut short: {seen}"
    );
    assert!(seen.trim_end().ends_with("data: [DONE]"), "{seen}");
    let start = Instant::now();
    let status = loop {
        if let Some(s) = server.0.try_wait().unwrap() {
            break s;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "server did not exit after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "exit status {status}");
    assert!(
        std::net::TcpStream::connect(addr).is_err(),
        "still accepting after shutdown"
    );
}

/// The port is open before the model is: `/health` and the API answer 503 while it
/// loads (here slowed by ISQ), then 200; the metrics carry vLLM's gauges for the
/// inference gateway.
#[test]
fn health_is_503_while_loading_then_vllm_gauges() {
    let _turn = serial();
    let port = free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_smelt"))
        .args([
            "--port",
            &port.to_string(),
            "--log",
            "warn",
            "--isq",
            "Q2K",
            "gguf",
            "-f",
        ])
        .arg(gguf_path())
        .stdout(Stdio::null())
        .spawn()
        .expect("start smelt");
    let _server = Server(child);
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let start = Instant::now();
    let (mut loading, mut api_loading) = (0, false);
    loop {
        assert!(start.elapsed() < Duration::from_secs(120), "never healthy");
        if std::net::TcpStream::connect(addr).is_err() {
            std::thread::sleep(Duration::from_millis(5));
            continue;
        }
        let r = http::get(addr, "/health");
        if r.status == 200 {
            break;
        }
        assert_eq!(r.status, 503, "{}", r.body);
        assert!(r.body.contains("loading"), "{}", r.body);
        loading += 1;
        if !api_loading {
            let c = http::request(addr, "POST", "/v1/chat/completions", "{}", &[]);
            // The reply may come after loading finished; while loading it is a 503.
            api_loading = c.status == 503 && c.body.contains("still loading");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(loading > 0, "/health was never 503 before the model loaded");
    assert!(api_loading, "the API did not answer 503 while loading");
    let m = http::get(addr, "/metrics").body;
    for name in [
        "vllm:num_requests_running{",
        "vllm:num_requests_waiting{",
        "vllm:kv_cache_usage_perc{",
        "vllm:cache_config_info{",
    ] {
        assert!(m.contains(name), "{name} missing:\n{m}");
    }
    assert!(m.contains("block_size=\"16\"") && m.contains("num_gpu_blocks=\""));
}
