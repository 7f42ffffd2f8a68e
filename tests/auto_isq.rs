//! `--isq auto --max-memory SIZE` on the plain test model: the mix fits the budget, its
//! topology file loads the same model again, it beats the uniform types of its size on
//! held-out text, and bad budgets are clear errors.

mod common;

use smelt::quant::auto::IsqChoice;
use smelt::ModelBuilder;
use std::path::PathBuf;
use std::process::Command;

const MIB: u64 = 1 << 20;

fn builder() -> ModelBuilder {
    ModelBuilder::from_spec(common::plain_spec())
}

fn tmp(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("smelt-auto-{}-{name}", std::process::id()))
}

/// Greedy logits of a fixed prompt, for comparing two loads bit for bit.
fn logits(engine: &smelt::engine::Engine) -> Vec<f32> {
    let ids = engine
        .tokenize("The GNU General Public License is", true)
        .unwrap();
    let mut cache = engine.model.new_cache();
    let out = engine.model.forward(&ids, &mut cache, 0).unwrap();
    out.flatten_all().unwrap().to_vec1().unwrap()
}

#[test]
fn the_mix_fits_the_budget_and_its_topology_loads_the_same_model() {
    let topo = tmp("mix.yml");
    let budget = 85 * MIB;
    let auto = builder()
        .with_auto_isq(budget)
        .with_write_topology(&topo)
        .build()
        .unwrap();
    let bytes = auto.model.weights_size_in_bytes() as u64;
    assert!(bytes <= budget, "{bytes} > {budget}");
    // Little of the budget is left unspent.
    assert!(bytes > budget - 2 * MIB, "{bytes} of {budget}");
    let text = std::fs::read_to_string(&topo).unwrap();
    assert!(text.contains("model.embed_tokens:") && text.contains("lm_head:"));
    assert!(text.contains("model.layers.29.mlp.down_proj:"));
    let again = builder().with_topology(&topo).build().unwrap();
    assert_eq!(again.model.weights_size_in_bytes() as u64, bytes);
    assert_eq!(
        auto.model.linear_storage_by_name(),
        again.model.linear_storage_by_name()
    );
    assert_eq!(logits(&auto), logits(&again), "bit for bit");
    // More budget, less predicted loss: the mix moves up.
    let roomy = builder().with_auto_isq(120 * MIB).build().unwrap();
    assert!(roomy.model.weights_size_in_bytes() as u64 > budget);
    std::fs::remove_file(&topo).ok();
}

#[test]
fn a_gguf_takes_a_mix_too() {
    let topo = tmp("gguf.yml");
    let budget = 80 * MIB;
    let gguf = || ModelBuilder::from_spec(common::gguf_spec());
    let auto = gguf()
        .with_auto_isq(budget)
        .with_write_topology(&topo)
        .build()
        .unwrap();
    let bytes = auto.model.weights_size_in_bytes() as u64;
    assert!(bytes <= budget && bytes > budget - 2 * MIB, "{bytes}");
    // The file's own Q4_1 blocks are kept where the mix keeps Q4_1 (error 0).
    let again = gguf().with_topology(&topo).build().unwrap();
    assert_eq!(logits(&auto), logits(&again));
    std::fs::remove_file(&topo).ok();
}

/// Perplexity of a held-out text the measurement never saw.
fn ppl(engine: &smelt::engine::Engine) -> f64 {
    let text = std::fs::read_to_string("/usr/share/common-licenses/Apache-2.0").unwrap();
    smelt::perplexity::perplexity(engine, &text, 256, Some(6))
        .unwrap()
        .ppl
}

#[test]
fn the_mix_beats_uniform_types_of_its_size() {
    // Uniform Q4_0 on every weight, the embedding and the tied head included.
    let topo = tmp("q4_0.yml");
    std::fs::write(
        &topo,
        "model.embed_tokens:\n  isq: Q4_0\nlm_head:\n  isq: Q4_0\n",
    )
    .unwrap();
    let uniform = builder()
        .with_isq(smelt::IsqType::Q4_0)
        .with_topology(&topo)
        .build()
        .unwrap();
    let size = uniform.model.weights_size_in_bytes() as u64;
    let auto = builder().with_auto_isq(size).build().unwrap();
    assert!(auto.model.weights_size_in_bytes() as u64 <= size);
    let (u, a) = (ppl(&uniform), ppl(&auto));
    eprintln!("uniform Q4_0 {size} bytes: ppl {u:.4}; auto: ppl {a:.4}");
    assert!(a < u, "auto {a} vs uniform Q4_0 {u}");
    std::fs::remove_file(&topo).ok();
}

#[test]
fn budgets_and_flags_are_checked() {
    let err = format!(
        "{:#}",
        builder()
            .with_auto_isq(MIB)
            .build()
            .err()
            .expect("too small")
    );
    assert!(
        err.contains("smallest possible mix") && err.contains("MiB ("),
        "{err}"
    );
    let err = format!(
        "{:#}",
        builder()
            .with_write_topology(tmp("never.yml"))
            .build()
            .err()
            .expect("needs auto")
    );
    assert!(err.contains("--isq auto"), "{err}");
    assert!(IsqChoice::parse(Some("Q4K"), Some("1GB")).is_err());
    // The CLI refuses --max-memory without --isq auto, and auto without a budget.
    let g = common::gguf_path();
    for (args, needle) in [
        (vec!["--max-memory", "1GB", "gguf", "-f"], "--isq auto"),
        (vec!["--isq", "auto", "gguf", "-f"], "--max-memory SIZE"),
        (
            vec!["--isq", "auto", "--max-memory", "2 bananas", "gguf", "-f"],
            "unknown size unit",
        ),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_smelt"))
            .args(["--prompt", "hi"])
            .args(&args)
            .arg(&g)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?}");
        assert!(text.contains(needle), "{args:?}: {text}");
    }
}
