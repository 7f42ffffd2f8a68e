//! The binary as a user meets it: scripted REPL, one-shot completion, and clear one-line
//! errors (never a panic) for bad input.

mod common;

use common::*;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

fn smelt(args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_smelt"))
        .args(args)
        .env("HF_HUB_OFFLINE", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    if let Some(s) = stdin {
        input.write_all(s.as_bytes()).unwrap();
    }
    drop(input);
    child.wait_with_output().unwrap()
}

/// A failed run: non-zero exit, one `error:` line, no panic.
fn assert_clean_error(out: &Output, needle: &str) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!out.status.success(), "expected failure, stderr: {stderr}");
    assert!(!stderr.contains("panicked"), "panic: {stderr}");
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error")).collect();
    assert_eq!(errors.len(), 1, "want exactly one error line in: {stderr}");
    assert!(
        errors[0].to_lowercase().contains(&needle.to_lowercase()),
        "error line {:?} should mention {needle:?}",
        errors[0]
    );
    errors[0].to_string()
}

fn gguf() -> String {
    gguf_path().to_string_lossy().into_owned()
}

#[test]
fn one_shot_completion_prints_reference_text() {
    let r = reference();
    let out = smelt(
        &[
            "--log",
            "error",
            "--temperature",
            "0",
            "--max-tokens",
            "40",
            "--prompt",
            r["greedy"]["prompt"].as_str().unwrap(),
            "gguf",
            "-f",
            &gguf(),
        ],
        None,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(
        stdout.trim_end_matches('\n'),
        r["greedy"]["continuation"].as_str().unwrap()
    );
}

#[test]
fn scripted_repl_answers_each_line_and_keeps_history() {
    let script = "What is the capital of France? Answer in one sentence.\n\\help\nAnd what about Italy? Answer in one sentence.\n\\clear\n\\system You are a pirate.\nHello!\n\\exit\nnever read\n";
    let out = smelt(
        &[
            "--log",
            "smelt=debug",
            "--temperature",
            "0",
            "--max-tokens",
            "24",
            "-i",
            "gguf",
            "-f",
            &gguf(),
        ],
        Some(script),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stdout.contains("Paris"), "first reply: {stdout}");
    assert!(
        stderr.contains("\\system TEXT"),
        "help goes to stderr: {stderr}"
    );
    // One prompt per user turn (\\exit stops before the last line): (tokens, reused).
    let prompts: Vec<(usize, usize)> = stderr
        .lines()
        .filter_map(|l| {
            let rest = l.split("prompt: ").nth(1)?;
            let mut nums = rest
                .split(|c: char| !c.is_ascii_digit())
                .filter(|s| !s.is_empty());
            Some((nums.next()?.parse().ok()?, nums.next()?.parse().ok()?))
        })
        .collect();
    assert_eq!(prompts.len(), 3, "{stderr}");
    // Turn 2 carries turn 1, question and reply, and reuses its cached tokens…
    assert!(
        prompts[1].0 > prompts[0].0 + 10 && prompts[1].1 >= prompts[0].0,
        "{prompts:?}"
    );
    // …and after \\clear and \\system the conversation starts afresh.
    assert_eq!(prompts[2].1, 0, "{prompts:?}");
    assert!(stdout.lines().count() >= 3, "{stdout}");
}

#[test]
fn missing_model_names_both_places_looked_at() {
    let out = smelt(
        &["--prompt", "hi", "plain", "-m", "no-such-org/no-such-model"],
        None,
    );
    let line = assert_clean_error(&out, "not found");
    assert!(
        line.contains("local directory") && line.contains("Hugging Face cache"),
        "{line}"
    );
    assert!(
        line.contains("models--no-such-org--no-such-model"),
        "{line}"
    );
}

fn write_tmp(name: &str, bytes: &[u8]) -> String {
    let dir = std::env::temp_dir().join(format!("smelt-cli-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p.to_string_lossy().into_owned()
}

#[test]
fn truncated_and_corrupt_gguf_are_clear_errors() {
    let full = std::fs::read(gguf_path()).unwrap();
    let truncated = write_tmp("truncated.gguf", &full[..full.len() / 2]);
    assert_clean_error(
        &smelt(&["--prompt", "hi", "gguf", "-f", &truncated], None),
        "truncated",
    );
    let header_only = write_tmp("header.gguf", &full[..1000]);
    assert_clean_error(
        &smelt(&["--prompt", "hi", "gguf", "-f", &header_only], None),
        "truncated",
    );
    let mut bad_magic = full[..4096].to_vec();
    bad_magic[0] = b'X';
    let bad_magic = write_tmp("magic.gguf", &bad_magic);
    assert_clean_error(
        &smelt(&["--prompt", "hi", "gguf", "-f", &bad_magic], None),
        "not a GGUF file",
    );
    // A key length of 2^62 must not turn into an allocation.
    let mut huge = full[..4096].to_vec();
    huge[24..32].copy_from_slice(&(1u64 << 62).to_le_bytes());
    let huge = write_tmp("huge.gguf", &huge);
    assert_clean_error(
        &smelt(&["--prompt", "hi", "gguf", "-f", &huge], None),
        "corrupt",
    );
    assert_clean_error(
        &smelt(
            &["--prompt", "hi", "gguf", "-f", "/nonexistent/x.gguf"],
            None,
        ),
        "not found",
    );
}

fn copy_plain_to(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    for f in [
        "config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "generation_config.json",
    ] {
        std::fs::copy(plain_snapshot().join(f), dir.join(f)).unwrap();
    }
}

#[test]
fn truncated_safetensors_and_wrong_architecture_are_clear_errors() {
    let base = std::env::temp_dir().join(format!("smelt-cli-plain-{}", std::process::id()));
    let trunc = base.join("truncated");
    copy_plain_to(&trunc);
    let weights = std::fs::read(plain_snapshot().join("model.safetensors")).unwrap();
    std::fs::write(
        trunc.join("model.safetensors"),
        &weights[..weights.len() / 3],
    )
    .unwrap();
    assert_clean_error(
        &smelt(
            &["--prompt", "hi", "plain", "-m", trunc.to_str().unwrap()],
            None,
        ),
        "safetensors",
    );

    let wrong = base.join("wrong-arch");
    copy_plain_to(&wrong);
    let cfg = std::fs::read_to_string(wrong.join("config.json"))
        .unwrap()
        .replace("\"llama\"", "\"gpt_neox\"");
    std::fs::write(wrong.join("config.json"), cfg).unwrap();
    let line = assert_clean_error(
        &smelt(
            &["--prompt", "hi", "plain", "-m", wrong.to_str().unwrap()],
            None,
        ),
        "unsupported architecture",
    );
    assert!(line.contains("qwen2") && line.contains("llama"), "{line}");
    std::fs::remove_dir_all(&base).ok();
}

#[test]
fn bad_flag_values_are_rejected() {
    let g = gguf();
    for (args, needle) in [
        (vec!["--isq", "Q7", "gguf", "-f", &g], "unknown ISQ type"),
        (vec!["--isq", "7", "gguf", "-f", &g], "no ISQ type"),
        (vec!["plain", "-m", "x", "--dtype", "f64"], "unknown dtype"),
        (
            vec!["--temperature", "-1", "--prompt", "hi", "gguf", "-f", &g],
            "temperature",
        ),
        (
            vec!["--top-p", "0", "--prompt", "hi", "gguf", "-f", &g],
            "top_p",
        ),
        (vec!["--threads", "0", "gguf", "-f", &g], "threads"),
        (
            vec!["--topology", "/nonexistent.yml", "gguf", "-f", &g],
            "cannot read topology file",
        ),
        (
            vec!["perplexity", "--file", "/nonexistent", "gguf", "-f", &g],
            "cannot read",
        ),
        (
            vec![
                "perplexity",
                "--file",
                "/usr/share/common-licenses/GPL-3",
                "--ctx",
                "100000",
                "gguf",
                "-f",
                &g,
            ],
            "exceeds",
        ),
    ] {
        let out = smelt(&args, None);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} should fail");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert!(
            stderr.to_lowercase().contains(&needle.to_lowercase()),
            "{args:?}: {stderr}"
        );
    }
}

#[test]
fn prompt_over_context_is_a_clear_error() {
    let long = "word ".repeat(9000);
    let out = smelt(&["--prompt", &long, "gguf", "-f", &gguf()], None);
    assert_clean_error(&out, "context");
}

#[test]
fn isq_load_peak_memory_stays_near_the_quantized_size() {
    // Q4K ISQ of the f32 checkpoint (540 MB on disk): tensors stream from the map one at a
    // time and their pages are released, so the process never holds the f32 model.
    let out = smelt(
        &[
            "--log", "error", "--isq", "Q4K", "bench", "-p", "8", "-n", "2", "-r", "1", "--json",
            "plain", "-m", PLAIN_ID,
        ],
        None,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = String::from_utf8(out.stdout).unwrap();
    let row: serde_json::Value = serde_json::from_str(line.lines().next().unwrap()).unwrap();
    let (weights, rss) = (
        row["size_mib"].as_f64().unwrap(),
        row["peak_rss_mib"].as_f64().unwrap(),
    );
    // Runtime overhead (binary, tokenizer, tables) measured at about 80 MiB; the largest
    // tensor in flight is a few MiB. The f32 model alone would be 513 MiB.
    eprintln!("ISQ Q4K: weights {weights:.0} MiB, peak RSS {rss:.0} MiB");
    assert!(
        rss < weights + 150.0,
        "peak RSS {rss} MiB for {weights} MiB of weights"
    );
}

#[test]
fn seeded_sampling_is_reproducible() {
    let run = |seed: &str| {
        let out = smelt(
            &[
                "--log",
                "error",
                "--temperature",
                "1.0",
                "--top-k",
                "0",
                "--top-p",
                "1",
                "--min-p",
                "0",
                "--seed",
                seed,
                "--max-tokens",
                "24",
                "--prompt",
                "Once upon a time",
                "gguf",
                "-f",
                &gguf(),
            ],
            None,
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let (a, b, c) = (run("7"), run("7"), run("8"));
    assert_eq!(a, b, "same seed, same text");
    assert_ne!(a, c, "another seed should sample another text");
}
