//! The fronts on the new families: the HTTP server (concurrent greedy completions equal
//! their solo runs, past the sliding window and LongRoPE's switch), the scripted REPL,
//! `--prompt`, `perplexity` and `bench`, on the tiny transformers-made checkpoints of
//! tests/fixtures/families.

mod common;

use common::http;
use serde_json::json;
use smelt::engine::Engine;
use smelt::loaders::{LoadOptions, ModelSpec};
use smelt::server::ServerConfig;
use std::net::SocketAddr;
use std::process::{Command, Stdio};

fn dir(case: &str) -> String {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/families")
        .join(case)
        .to_string_lossy()
        .into_owned()
}

fn start(engine: Engine) -> SocketAddr {
    common::start_server(engine, ServerConfig::default()).0
}

fn complete(addr: SocketAddr, prompt: &str) -> String {
    let body =
        json!({"prompt": prompt, "max_tokens": 40, "temperature": 0, "logit_bias": {"2": -100}});
    let r = http::post(addr, "/v1/completions", &body);
    assert_eq!(r.status, 200, "{}", r.body);
    let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(v["usage"]["completion_tokens"], 40, "{v}");
    v["choices"][0]["text"].as_str().unwrap().to_string()
}

const PROMPTS: [&str; 6] = [
    "The GNU General Public License",
    "Everyone is permitted to copy and distribute",
    "Preamble",
    "the freedom to share and change all versions of a program",
    "We, the Free Software Foundation,",
    "To protect your rights, we need to prevent others",
];

/// Gemma 3 (window 24, local rope), Phi-3 (fused, LongRoPE past 16 tokens, window 40),
/// SmolLM3 (NoPE layers): six concurrent greedy completions of 40 tokens give exactly
/// their one-at-a-time outputs.
#[test]
fn concurrent_completions_equal_solo_runs() {
    for case in ["gemma3", "phi3", "smollm3"] {
        let spec = ModelSpec::Plain {
            model_id: dir(case),
            revision: "main".into(),
        };
        let engine = Engine::new(smelt::load(&spec, &LoadOptions::default()).unwrap()).unwrap();
        let addr = start(engine);
        let threads: Vec<_> = PROMPTS
            .iter()
            .map(|p| {
                let p = p.to_string();
                std::thread::spawn(move || complete(addr, &p))
            })
            .collect();
        let together: Vec<String> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        for (p, got) in PROMPTS.iter().zip(&together) {
            assert_eq!(got, &complete(addr, p), "{case} {p:?}");
        }
    }
}

fn smelt(args: &[&str], stdin: &str) -> (bool, String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_smelt"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The REPL (scripted, Gemma 3's chat template), `--prompt`, `perplexity` and `bench`
/// run on the families from both loaders.
#[test]
fn cli_fronts_run_on_families() {
    let g3 = dir("gemma3");
    let (ok, _, err) = smelt(
        &[
            "-i",
            "--max-tokens",
            "8",
            "--temperature",
            "0",
            "plain",
            "-m",
            &g3,
        ],
        "Hi!\nAnd again?\n",
    );
    assert!(ok, "{err}");
    let phi = format!("{}/model.gguf", dir("phi3"));
    let (ok, _, err) = smelt(
        &[
            "--prompt",
            "The GNU",
            "--max-tokens",
            "8",
            "gguf",
            "-f",
            &phi,
        ],
        "",
    );
    assert!(ok, "{err}");
    let text = format!("{}/../ppl.txt", dir("olmo2"));
    let (ok, out, err) = smelt(
        &[
            "perplexity",
            "--file",
            &text,
            "--ctx",
            "32",
            "plain",
            "-m",
            &dir("olmo2"),
        ],
        "",
    );
    assert!(ok && (out + &err).contains("Final estimate"), "{err}");
    let (ok, out, err) = smelt(
        &[
            "bench",
            "-p",
            "16",
            "-n",
            "4",
            "-r",
            "1",
            "--isq",
            "Q8_0",
            "plain",
            "-m",
            &dir("granite"),
        ],
        "",
    );
    assert!(ok, "{err}\n{out}");
}
