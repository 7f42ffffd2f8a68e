//! `--q8-activations`: block-quantized layers multiply prompts with 8-bit activations
//! (q8_0 for 32-blocks, q8_K-style one scale per 256 for K-quants) as llama.cpp's CPU
//! backend does, so an ISQ'd model's perplexity matches llama.cpp's for the same blocks.
//! Q2K is the type whose default (f32 prompt) figure sits furthest from llama.cpp's
//! (88.72 vs 90.2801, −1.7 %). Own process: the switch is global.

mod common;

use common::*;
use smelt::loaders::LoadOptions;
use smelt::quant::IsqType;

#[test]
fn q2k_perplexity_matches_llama_cpp_within_half_a_percent() {
    smelt::quant::kernels::set_q8_activations(true);
    let opts = LoadOptions {
        isq: Some(IsqType::Q2K),
        ..Default::default()
    };
    let engine = smelt::engine::Engine::new(smelt::load(&plain_spec(), &opts).unwrap()).unwrap();
    let text = std::fs::read_to_string("/usr/share/common-licenses/GPL-3").unwrap();
    let ppl = smelt::perplexity::perplexity(&engine, &text, 512, None)
        .unwrap()
        .ppl;
    // llama-quantize --pure --token-embedding-type f32 --output-tensor-type f32 … Q2_K,
    // llama-perplexity -c 512 (../shared/REFERENCE.md).
    let llama_cpp = 90.2801;
    let delta = ppl / llama_cpp - 1.0;
    eprintln!(
        "Q2K with q8 activations: {ppl:.4} (llama.cpp {llama_cpp}, {:+.2} %)",
        100.0 * delta
    );
    assert!(delta.abs() < 0.005, "{ppl} vs {llama_cpp}");
}
