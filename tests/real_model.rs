//! End-to-end checks on the real test model against references smelt did not produce:
//! llama.cpp (greedy text, token ids, perplexity) and transformers (tokenizer.json ids,
//! chat template rendering). See tests/fixtures/reference.json for provenance.

mod common;

use common::*;
use smelt::engine::chat_template::{ChatMessage, ChatTemplate};
use smelt::engine::sampling::SamplingParams;
use smelt::engine::GenerateRequest;
use smelt::loaders::gguf_file::GgufFile;
use std::sync::atomic::AtomicBool;

#[test]
fn greedy_continuation_matches_llama_cpp() {
    let reference = reference();
    let g = &reference["greedy"];
    let engine = engine(&gguf_spec());
    let req = GenerateRequest {
        prompt_tokens: engine
            .tokenize(g["prompt"].as_str().unwrap(), true)
            .unwrap(),
        max_tokens: g["max_tokens"].as_u64().unwrap() as usize,
        sampling: SamplingParams::default(),
        stop: vec![],
    };
    let mut session = engine.new_session();
    let mut streamed = String::new();
    let out = engine
        .generate(
            &mut session,
            &req,
            &mut |s| streamed.push_str(s),
            &AtomicBool::new(false),
        )
        .unwrap();
    assert_eq!(out.tokens.len(), req.max_tokens);
    assert_eq!(out.text, g["continuation"].as_str().unwrap());
    assert_eq!(
        streamed, out.text,
        "streamed pieces must add up to the text"
    );
}

/// KL(p‖q) between the softmax distributions of two logit rows, and the top-1 margin of p.
fn kl_and_margin(p: &[f32], q: &[f32]) -> (f64, f32) {
    let lp = smelt::engine::sampling::log_softmax(p);
    let lq = smelt::engine::sampling::log_softmax(q);
    let kl = lp
        .iter()
        .zip(&lq)
        .map(|(&a, &b)| (a as f64).exp() * (a - b) as f64)
        .sum();
    let mut sorted = p.to_vec();
    sorted.sort_by(|a, b| b.total_cmp(a));
    (kl, sorted[0] - sorted[1])
}

/// Two logit rows agree when their next-token distributions are close (KL < `max_kl`)
/// and they pick the same token wherever the choice is not a near tie (margin ≥ 0.5).
fn assert_rows_agree(a: &[f32], b: &[f32], max_kl: f64, what: &str) -> f64 {
    let (kl, margin) = kl_and_margin(a, b);
    assert!(kl < max_kl, "{what}: KL = {kl}");
    if margin >= 0.5 {
        assert_eq!(
            smelt::engine::sampling::argmax(a),
            smelt::engine::sampling::argmax(b),
            "{what}: argmax differs with margin {margin}"
        );
    }
    kl
}

#[test]
fn plain_and_gguf_agree_on_next_token_logits() {
    // The plain copy holds the GGUF's weights dequantized to f32, so the two loads differ
    // only in arithmetic: the GGUF decode path multiplies Q4_1/Q8_0 blocks by
    // Q8_1-quantized activations as llama.cpp does; over 30 layers that noise reaches a
    // KL of about 0.04 nats on this small model (measured), so the bound is 0.1. A wrong
    // tensor name, transpose or rope permutation gives KL divergences of several nats.
    let plain = engine(&plain_spec());
    let gguf = engine(&gguf_spec());
    let tokens = plain
        .tokenize("The quick brown fox jumps over the lazy dog because", true)
        .unwrap();
    let (mut sp, mut sg) = (plain.new_session(), gguf.new_session());
    let mut worst = 0f64;
    for (i, &t) in tokens.iter().enumerate() {
        let lp =
            smelt::models::last_logits_vec(&plain.model.forward(&[t], &mut sp.cache, 0).unwrap())
                .unwrap();
        let lg =
            smelt::models::last_logits_vec(&gguf.model.forward(&[t], &mut sg.cache, 0).unwrap())
                .unwrap();
        worst = worst.max(assert_rows_agree(&lp, &lg, 0.1, &format!("position {i}")));
    }
    eprintln!("plain vs gguf: worst KL = {worst:.5}");
}

#[test]
fn prompt_batch_and_token_by_token_agree() {
    // The prompt path (one batch, causal mask) and the decode path (one token at a time
    // against the KV cache) must compute the same function: on f32 weights both are f32
    // arithmetic, so the bound is tight.
    let engine = engine(&plain_spec());
    let text = "In the beginning the Universe was created. This has made a lot of people very angry and been widely regarded as a bad move. Many races believe that it was created by some sort of god, though the Jatravartid people of Viltvodle VI believe that the entire Universe was in fact sneezed out of the nose of a being called the Great Green Arkleseizure.";
    let tokens = engine.tokenize(text, true).unwrap();
    let mut s1 = engine.new_session();
    let batch = engine.model.forward(&tokens, &mut s1.cache, 0).unwrap();
    let batch: Vec<Vec<f32>> = batch.to_vec2().unwrap();
    let mut s2 = engine.new_session();
    for (i, &t) in tokens.iter().enumerate() {
        let row =
            smelt::models::last_logits_vec(&engine.model.forward(&[t], &mut s2.cache, 0).unwrap())
                .unwrap();
        assert_rows_agree(&batch[i], &row, 1e-4, &format!("position {i}"));
    }
}

#[test]
fn gguf_perplexity_within_one_percent_of_llama_cpp() {
    // llama-perplexity -c 512 on GPL-3 with the shipped Q4_1 GGUF: 18.3459 (REFERENCE.md).
    const LLAMA_CPP_PPL: f64 = 18.3459;
    let engine = engine(&gguf_spec());
    let text = std::fs::read_to_string("/usr/share/common-licenses/GPL-3").unwrap();
    let r = smelt::perplexity::perplexity(&engine, &text, 512, None).unwrap();
    assert_eq!(r.chunks, 14, "llama.cpp scores 14 chunks of this text");
    assert_eq!(r.scored_tokens, 14 * 255);
    let rel = (r.ppl - LLAMA_CPP_PPL).abs() / LLAMA_CPP_PPL;
    eprintln!(
        "PPL {:.4} ± {:.4} vs llama.cpp {LLAMA_CPP_PPL} ({:.3} %)",
        r.ppl,
        r.ppl_err,
        rel * 100.0
    );
    assert!(
        rel < 0.01,
        "PPL {} is {:.2} % from llama.cpp's {LLAMA_CPP_PPL}",
        r.ppl,
        rel * 100.0
    );
}

#[test]
fn gguf_metadata_tokenizer_matches_tokenizer_json_and_llama_cpp() {
    let reference = reference();
    let gguf = GgufFile::open(&gguf_path()).unwrap();
    let from_gguf = smelt::loaders::gguf_tokenizer::tokenizer_from_gguf(&gguf).unwrap();
    let from_json =
        tokenizers::Tokenizer::from_file(plain_snapshot().join("tokenizer.json")).unwrap();
    for case in reference["tokenizer"].as_array().unwrap() {
        let text = case["text"].as_str().unwrap();
        let expected: Vec<u32> = serde_json::from_value(case["llama_cpp_ids"].clone()).unwrap();
        let hf: Vec<u32> = serde_json::from_value(case["transformers_ids"].clone()).unwrap();
        assert_eq!(expected, hf, "the references disagree on {text:?}");
        let a = from_gguf
            .encode_fast(text, true)
            .unwrap()
            .get_ids()
            .to_vec();
        let b = from_json
            .encode_fast(text, true)
            .unwrap()
            .get_ids()
            .to_vec();
        assert_eq!(a, expected, "GGUF-metadata tokenizer on {text:?}");
        assert_eq!(b, expected, "tokenizer.json on {text:?}");
        assert_eq!(
            from_gguf.decode(&a, false).unwrap(),
            text,
            "round trip of {text:?}"
        );
    }
}

#[test]
fn chat_template_renders_as_transformers() {
    let reference = reference();
    let gguf = GgufFile::open(&gguf_path()).unwrap();
    let from_gguf = smelt::loaders::gguf_tokenizer::assets_from_gguf(&gguf).unwrap();
    let tcfg: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(plain_snapshot().join("tokenizer_config.json")).unwrap(),
    )
    .unwrap();
    let templates = [
        ChatTemplate::new(
            from_gguf.chat_template.as_deref().unwrap(),
            from_gguf.bos_token.as_deref(),
            from_gguf.eos_token.as_deref(),
        )
        .unwrap(),
        ChatTemplate::new(
            tcfg["chat_template"].as_str().unwrap(),
            tcfg["bos_token"].as_str(),
            tcfg["eos_token"].as_str(),
        )
        .unwrap(),
    ];
    for case in reference["chat_template"].as_array().unwrap() {
        let messages: Vec<ChatMessage> = serde_json::from_value(case["messages"].clone()).unwrap();
        let add = case["add_generation_prompt"].as_bool().unwrap();
        for t in &templates {
            assert_eq!(
                t.render(&messages, add).unwrap(),
                case["rendered"].as_str().unwrap()
            );
        }
    }
}

#[test]
fn context_overflow_is_an_error_not_a_crash() {
    let engine = engine(&gguf_spec());
    let ctx = engine.context_length();
    let req = GenerateRequest {
        prompt_tokens: vec![42; ctx + 5],
        max_tokens: 4,
        sampling: SamplingParams::default(),
        stop: vec![],
    };
    let mut s = engine.new_session();
    let err = engine
        .generate(&mut s, &req, &mut |_| {}, &AtomicBool::new(false))
        .unwrap_err();
    assert!(err.to_string().contains("context"), "{err}");
    // The engine still works afterwards.
    let ok = GenerateRequest {
        prompt_tokens: vec![42, 43],
        ..req
    };
    engine
        .generate(&mut s, &ok, &mut |_| {}, &AtomicBool::new(false))
        .unwrap();
}

#[test]
fn stop_strings_and_max_tokens() {
    let engine = engine(&gguf_spec());
    let prompt = engine
        .tokenize("The GNU General Public License is", true)
        .unwrap();
    let mut s = engine.new_session();
    let req = GenerateRequest {
        prompt_tokens: prompt.clone(),
        max_tokens: 40,
        sampling: SamplingParams::default(),
        stop: vec!["organization".into()],
    };
    let g = engine
        .generate(&mut s, &req, &mut |_| {}, &AtomicBool::new(false))
        .unwrap();
    assert_eq!(g.text, " a non-profit ");
    assert_eq!(g.finish_reason, smelt::engine::FinishReason::Stop);
    let req = GenerateRequest {
        stop: vec![],
        max_tokens: 3,
        ..req
    };
    let g = engine
        .generate(&mut s, &req, &mut |_| {}, &AtomicBool::new(false))
        .unwrap();
    assert_eq!(g.tokens.len(), 3);
    assert_eq!(g.finish_reason, smelt::engine::FinishReason::Length);
}

/// Continuous batching's promise at the model level: several prompts long enough for the
/// GEMM path (sharing one call) plus short rows, in one forward, give bit-identical
/// logits to each sequence run alone.
#[test]
fn batched_forward_is_bit_identical_to_solo_runs() {
    use smelt::models::BatchItem;
    let engine = engine(&gguf_spec());
    let model = engine.model.as_ref();
    let prompts: Vec<Vec<u32>> = [40usize, 5, 57, 33, 1]
        .iter()
        .enumerate()
        .map(|(s, &n)| {
            (0..n as u32)
                .map(|i| 100 + (i * 37 + s as u32 * 101) % 20000)
                .collect()
        })
        .collect();
    let solo: Vec<Vec<f32>> = prompts
        .iter()
        .map(|p| {
            let mut c = model.new_cache();
            model
                .forward(p, &mut c, 0)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap()
        })
        .collect();
    let mut caches: Vec<_> = prompts.iter().map(|_| model.new_cache()).collect();
    let mut items: Vec<BatchItem> = prompts
        .iter()
        .zip(caches.iter_mut())
        .map(|(p, cache)| BatchItem {
            tokens: p,
            cache,
            logits_from: 0,
        })
        .collect();
    let batched = model.forward_batch(&mut items).unwrap();
    for (i, (b, s)) in batched.iter().zip(&solo).enumerate() {
        let b: Vec<f32> = b.flatten_all().unwrap().to_vec1().unwrap();
        assert!(
            b == *s,
            "sequence {i} ({} tokens) differs when batched",
            prompts[i].len()
        );
    }
}
