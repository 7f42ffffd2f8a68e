//! Load SmolLM2 (fetched by scripts/fetch-test-models.sh) quantized to Q4K in situ and
//! answer one chat turn: `cargo run --release --example isq_chat`.

use smelt::engine::chat_template::ChatMessage;
use smelt::engine::sampling::SamplingParams;
use smelt::engine::GenerateRequest;
use smelt::{IsqType, ModelBuilder};
use std::io::Write;
use std::sync::atomic::AtomicBool;

fn main() -> anyhow::Result<()> {
    let engine = ModelBuilder::new("HuggingFaceTB/SmolLM2-135M-Instruct")
        .with_isq(IsqType::Q4K)
        .build()?;
    let prompt = engine.chat_tokens(&[ChatMessage::new(
        "user",
        "What is the capital of France? Answer in one sentence.",
    )])?;
    let request = GenerateRequest {
        prompt_tokens: prompt,
        max_tokens: 64,
        sampling: SamplingParams::default(),
        stop: vec![],
    };
    let mut session = engine.new_session();
    let mut out = std::io::stdout();
    engine.generate(
        &mut session,
        &request,
        &mut |piece| {
            let _ = out.write_all(piece.as_bytes());
            let _ = out.flush();
        },
        &AtomicBool::new(false),
    )?;
    println!();
    Ok(())
}
