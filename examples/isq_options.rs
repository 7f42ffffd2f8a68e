//! The builder's ISQ options and runtime re-ISQ, on SmolLM2 (fetched by
//! scripts/fetch-test-models.sh): a per-layer topology (Q8_0 for the first layers, Q4K
//! elsewhere), the quantized layers written to UQFF and loaded back from it, then the
//! loaded model re-quantized in place. `cargo run --release --example isq_options`.
//! `with_imatrix` / `with_calibration_file` weight ISQ by an importance matrix, and
//! `with_isq_organization(IsqOrganization::Moqe)` quantizes only an MoE model's experts.

use smelt::engine::chat_template::ChatMessage;
use smelt::engine::sampling::SamplingParams;
use smelt::engine::{Engine, GenerateRequest};
use smelt::quant::IsqOrganization;
use smelt::{IsqType, ModelBuilder};
use std::sync::atomic::AtomicBool;

const MODEL: &str = "HuggingFaceTB/SmolLM2-135M-Instruct";

fn answer(engine: &Engine) -> anyhow::Result<String> {
    let prompt = engine.chat_tokens(&[ChatMessage::new("user", "Name a color.")])?;
    let request = GenerateRequest {
        prompt_tokens: prompt,
        max_tokens: 12,
        sampling: SamplingParams::default(),
        stop: vec![],
    };
    let out = engine.generate(
        &mut engine.new_session(),
        &request,
        &mut |_| {},
        &AtomicBool::new(false),
    )?;
    Ok(out.text)
}

fn main() -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join("smelt-isq-options");
    std::fs::create_dir_all(&dir)?;
    let topology = dir.join("topology.yml");
    std::fs::write(&topology, "0-8:\n  isq: Q8_0\n")?;
    let uqff = dir.join("model.uqff");

    let engine = ModelBuilder::new(MODEL)
        .with_isq(IsqType::Q4K)
        .with_isq_organization(IsqOrganization::Default)
        .with_topology(&topology)
        .with_write_uqff(&uqff)
        .build()?;
    println!("topology Q8_0/Q4K: {}", answer(&engine)?);

    let mut reloaded = ModelBuilder::new(MODEL).with_from_uqff(&uqff).build()?;
    println!("from UQFF:          {}", answer(&reloaded)?);

    reloaded.re_isq(Some(IsqType::Q8_0))?;
    println!("re-ISQ to Q8_0:     {}", answer(&reloaded)?);
    reloaded.re_isq(None)?;
    println!("back to f32:        {}", answer(&reloaded)?);
    Ok(())
}
