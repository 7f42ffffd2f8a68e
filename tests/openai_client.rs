//! The real `openai` Python client (installed by scripts/fetch-test-models.sh into the
//! helper venv) against `smelt --port` on loopback: chat and completions, streaming,
//! seeds, logprobs, errors (tests/openai_client.py). Then graceful shutdown: SIGTERM while
//! a stream runs lets it finish with `[DONE]`, and the process exits cleanly.

mod common;

use common::http::{self, next_chunk, read_head, send};
use common::*;
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

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
    let key = "test-key-123";
    let port = free_port();
    let (mut server, addr) = start_server(port, key);
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/openai_client.py");
    let out = Command::new(venv_python())
        .args([script, &format!("http://{addr}/v1"), key])
        .output()
        .expect("run python");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "openai client checks failed:\n{stdout}\n{stderr}"
    );
    assert!(
        stdout.contains("all openai-client checks passed"),
        "{stdout}"
    );

    // SIGTERM during a stream: the stream still ends properly, then the process exits 0.
    let body = serde_json::json!({
        "messages": [{"role": "user", "content": "Write a long story."}],
        "max_tokens": 40, "temperature": 0, "stream": true,
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
