//! Every dense family against references smelt did not write: tiny random-weight
//! checkpoints made by transformers (scripts/make-family-fixtures.py) with their
//! transformers logits, the same checkpoints converted to GGUF by llama.cpp's
//! convert_hf_to_gguf.py, and llama-perplexity's perplexity on those GGUFs
//! (f32 KV cache).

use smelt::engine::Engine;
use smelt::loaders::{LoadOptions, ModelSpec};
use smelt::quant::IsqType;
use std::path::PathBuf;

fn dir() -> PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/families")
}

fn reference() -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(dir().join("reference.json")).unwrap()).unwrap()
}

fn cases() -> Vec<String> {
    let r = reference();
    r["cases"].as_object().unwrap().keys().cloned().collect()
}

fn plain(case: &str) -> ModelSpec {
    ModelSpec::Plain {
        model_id: dir().join(case).to_string_lossy().into_owned(),
        revision: "main".into(),
    }
}

fn gguf(case: &str) -> Option<ModelSpec> {
    let p = dir().join(case).join("model.gguf");
    p.exists().then(|| ModelSpec::Gguf {
        model_id: None,
        file: p.to_string_lossy().into_owned(),
        tokenizer_json: None,
    })
}

fn load(spec: &ModelSpec, opts: &LoadOptions) -> Engine {
    Engine::new(smelt::load(spec, opts).unwrap()).unwrap()
}

/// transformers' logits for the case's prompt, (tokens, vocab).
fn expected(case: &str) -> (Vec<u32>, Vec<Vec<f32>>) {
    let r = reference();
    let tokens: Vec<u32> = serde_json::from_value(r["cases"][case]["tokens"].clone()).unwrap();
    let bytes = std::fs::read(dir().join(case).join("logits.f32")).unwrap();
    let flat: Vec<f32> = bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect();
    let vocab = flat.len() / tokens.len();
    (tokens, flat.chunks(vocab).map(|r| r.to_vec()).collect())
}

fn logits(engine: &Engine, tokens: &[u32]) -> Vec<Vec<f32>> {
    let mut s = engine.new_session();
    engine
        .model
        .forward(tokens, &mut s.cache, 0)
        .unwrap()
        .to_vec2()
        .unwrap()
}

fn argmax(v: &[f32]) -> usize {
    (0..v.len()).fold(0, |b, i| if v[i] > v[b] { i } else { b })
}

/// Largest |difference| relative to the largest |logit|, and rows whose argmax differs.
fn compare(got: &[Vec<f32>], want: &[Vec<f32>]) -> (f32, usize) {
    assert_eq!(got.len(), want.len());
    let scale = want.iter().flatten().fold(1f32, |m, v| m.max(v.abs()));
    let mut err = 0f32;
    let mut flips = 0;
    for (g, w) in got.iter().zip(want) {
        assert_eq!(g.len(), w.len());
        for (a, b) in g.iter().zip(w) {
            err = err.max((a - b).abs() / scale);
        }
        flips += (argmax(g) != argmax(w)) as usize;
    }
    (err, flips)
}

/// Logits agree with transformers' within 1e-4 of the largest logit, argmax equal on
/// every row, from config.json + safetensors and from llama.cpp's GGUF.
#[test]
fn logits_match_transformers_from_both_loaders() {
    for case in cases() {
        let (tokens, want) = expected(&case);
        assert!(tokens.len() >= 64);
        let mut specs = vec![("plain", plain(&case))];
        // A GGUF that runs with llama.cpp's semantics (Phi-3.5-MoE) is checked by its
        // perplexity against llama.cpp instead.
        let llama_semantics = reference()["cases"][&case]["gguf_semantics"] == "llama.cpp";
        specs.extend(
            gguf(&case)
                .filter(|_| !llama_semantics)
                .map(|g| ("gguf", g)),
        );
        for (what, spec) in specs {
            let engine = load(&spec, &LoadOptions::default());
            let (err, flips) = compare(&logits(&engine, &tokens), &want);
            eprintln!("{case} {what}: max relative error {err:.2e}, {flips} argmax flips");
            assert!(err < 1e-4, "{case} {what}: logits off by {err:.2e}");
            assert_eq!(flips, 0, "{case} {what}: argmax differs");
            // Token by token through the KV cache gives the same last row — except under
            // dynamic NTK and LongRoPE, whose frequencies depend on each pass's length (as
            // in transformers' own generation), so cached keys were rotated differently.
            use smelt::models::rope::RopeScaling;
            let by_length = matches!(
                engine.model.config().rope.scaling,
                RopeScaling::Dynamic { .. } | RopeScaling::LongRope { .. }
            );
            if by_length {
                continue;
            }
            let mut s = engine.new_session();
            let mut last = Vec::new();
            for &t in &tokens {
                last = smelt::models::last_logits_vec(
                    &engine.model.forward(&[t], &mut s.cache, 0).unwrap(),
                )
                .unwrap();
            }
            let (err, _) = compare(&[last], &want[want.len() - 1..]);
            assert!(err < 1e-4, "{case} {what} one token at a time: {err:.2e}");
        }
    }
}

/// smelt's perplexity on llama.cpp's GGUF equals llama-perplexity's (f32 KV cache, no
/// flash attention) within 0.05 %: a tenth of the 0.5 %, since both compute in f32
/// and agree to about 1e-6.
#[test]
fn gguf_perplexity_matches_llama_cpp() {
    let r = reference();
    let text = std::fs::read_to_string(dir().join(r["ppl_text"].as_str().unwrap())).unwrap();
    let ctx = r["ppl_ctx"].as_u64().unwrap() as usize;
    for case in cases() {
        let (Some(spec), Some(want)) =
            (gguf(&case), r["cases"][&case]["llama_perplexity"].as_f64())
        else {
            continue;
        };
        let engine = load(&spec, &LoadOptions::default());
        let got = smelt::perplexity::perplexity(&engine, &text, ctx, None)
            .unwrap()
            .ppl;
        let ratio = got / want;
        eprintln!("{case}: smelt {got:.4}, llama.cpp {want:.4}, ratio {ratio:.5}");
        assert!((ratio - 1.0).abs() < 5e-4, "{case}: {got} vs {want}");
    }
}

/// Windowed layers keep only their window in the paged cache: after N tokens a
/// sliding layer holds at most window/16 + 2 blocks, a global one all N tokens'.
#[test]
fn sliding_layers_hold_only_their_window() {
    for case in ["gemma3", "mistral"] {
        let engine = load(&plain(case), &LoadOptions::default());
        let cfg = engine.model.config().clone();
        let (tokens, _) = expected(case);
        let mut s = engine.new_session();
        engine
            .model
            .forward(&tokens[..40], &mut s.cache, 0)
            .unwrap();
        for &t in &tokens[40..] {
            engine.model.forward(&[t], &mut s.cache, 0).unwrap();
        }
        let n = tokens.len();
        let mut expected_total = 0;
        for (layer, kind) in cfg.layers.iter().enumerate() {
            let held = s.cache.layer_blocks(layer);
            match kind.window {
                Some(w) => {
                    assert!(w < n, "{case}: the window must be shorter than the prompt");
                    assert!(held <= w / 16 + 2, "{case} layer {layer}: {held} blocks");
                }
                None => assert_eq!(held, n.div_ceil(16), "{case} layer {layer}"),
            }
            expected_total += held;
        }
        assert!(cfg.layers.iter().any(|l| l.window.is_some()));
        assert_eq!(s.cache.num_blocks(), expected_total);
        assert!(
            s.cache.num_blocks() < cfg.num_hidden_layers * n.div_ceil(16),
            "{case}: windowed layers should hold fewer blocks"
        );
    }
}

/// Two sequences batched give each one's solo logits bit for bit (windows, soft-caps,
/// fused projections and NoPE layers included).
#[test]
fn batched_equals_solo_on_every_family() {
    for case in cases() {
        let engine = load(&plain(&case), &LoadOptions::default());
        let (tokens, _) = expected(&case);
        let (a, b) = (&tokens[..50], &tokens[10..40]);
        let solo_a = logits(&engine, a);
        let solo_b = logits(&engine, b);
        let (mut ca, mut cb) = (engine.new_session(), engine.new_session());
        let mut items = [
            smelt::models::BatchItem {
                tokens: a,
                cache: &mut ca.cache,
                logits_from: 0,
            },
            smelt::models::BatchItem {
                tokens: b,
                cache: &mut cb.cache,
                logits_from: 0,
            },
        ];
        let out = engine.model.forward_batch(&mut items).unwrap();
        assert_eq!(out[0].to_vec2::<f32>().unwrap(), solo_a, "{case}");
        assert_eq!(out[1].to_vec2::<f32>().unwrap(), solo_b, "{case}");
    }
}

/// ISQ reaches every linear of every family (fused ones as a whole) and stays close to
/// the f32 model; a UQFF file of it loads back to the same logits.
#[test]
fn isq_and_uqff_on_every_family() {
    let tmp = std::env::temp_dir().join(format!("smelt-families-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    for case in cases() {
        let (tokens, want) = expected(&case);
        let opts = LoadOptions {
            isq: Some("Q8_0".parse().unwrap()),
            ..Default::default()
        };
        let loaded = smelt::load(&plain(&case), &opts).unwrap();
        // Every linear whose rows hold whole Q8_0 blocks is quantized (48-wide rows of
        // the head_dim != hidden/heads fixtures stay dense, as llama.cpp keeps them).
        let named = loaded.model.named_linears();
        for (name, lin) in &named {
            let want = if lin.shape().1 % 32 == 0 {
                "Q8_0"
            } else {
                "f32"
            };
            assert_eq!(lin.storage_name(), want, "{case}: {name} {:?}", lin.shape());
        }
        assert!(
            named.iter().any(|(_, l)| l.storage_name() == "Q8_0"),
            "{case}"
        );
        let names: Vec<String> = named.into_iter().map(|(n, _)| n).collect();
        if case == "phi3" {
            assert!(names.iter().any(|n| n.ends_with("self_attn.qkv_proj")));
            assert!(names.iter().any(|n| n.ends_with("mlp.gate_up_proj")));
        }
        let path = tmp.join(format!("{case}.uqff"));
        smelt::quant::uqff::write(loaded.model.as_ref(), &loaded.name, &path, None).unwrap();
        let engine = Engine::new(loaded).unwrap();
        let q8 = logits(&engine, &tokens);
        let (err, _) = compare(&q8, &want);
        eprintln!("{case} Q8_0: max relative error {err:.2e}");
        // These random weights amplify rounding (peaked logits, and in MoE models a
        // flipped expert choice): ask that most greedy choices survive 8 bits.
        let agree = q8
            .iter()
            .zip(&want)
            .filter(|(g, w)| argmax(g) == argmax(w))
            .count();
        assert!(
            agree * 10 >= q8.len() * 7,
            "{case}: Q8_0 keeps {agree} argmaxes"
        );
        let back = load(
            &plain(&case),
            &LoadOptions {
                from_uqff: Some(path),
                ..Default::default()
            },
        );
        assert_eq!(logits(&back, &tokens), q8, "{case}: UQFF round trip");
    }
    let _ = std::fs::remove_dir_all(&tmp);
}

/// Bad configs are errors that name what is wrong.
#[test]
fn bad_family_configs_are_clear_errors() {
    use smelt::models::ModelConfig;
    let base = std::fs::read_to_string(dir().join("gemma2/config.json")).unwrap();
    let mut v: serde_json::Value = serde_json::from_str(&base).unwrap();
    v["model_type"] = "mamba".into();
    let e = ModelConfig::from_hf_json(&v.to_string())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("mamba") && e.contains("gemma3_text") && e.contains("phi3"),
        "{e}"
    );

    let mut v: serde_json::Value = serde_json::from_str(&base).unwrap();
    v.as_object_mut().unwrap().remove("intermediate_size");
    let e = format!(
        "{:#}",
        ModelConfig::from_hf_json(&v.to_string()).unwrap_err()
    );
    assert!(e.contains("intermediate_size"), "{e}");

    let phi = std::fs::read_to_string(dir().join("phi3/config.json")).unwrap();
    let mut v: serde_json::Value = serde_json::from_str(&phi).unwrap();
    v["rope_parameters"]["rope_type"] = "wobbly".into();
    let e = format!(
        "{:#}",
        ModelConfig::from_hf_json(&v.to_string()).unwrap_err()
    );
    assert!(e.contains("wobbly") && e.contains("rope_parameters"), "{e}");

    let mut v: serde_json::Value = serde_json::from_str(&phi).unwrap();
    v["rope_parameters"]["short_factor"] = serde_json::json!([1.0]);
    let e = format!(
        "{:#}",
        ModelConfig::from_hf_json(&v.to_string()).unwrap_err()
    );
    assert!(e.contains("short_factor"), "{e}");

    let mut v: serde_json::Value = serde_json::from_str(&base).unwrap();
    v["layer_types"] = serde_json::json!(["sliding_attention"]);
    let e = format!(
        "{:#}",
        ModelConfig::from_hf_json(&v.to_string()).unwrap_err()
    );
    assert!(e.contains("layer_types"), "{e}");
}

/// Every `--isq` type loads and runs on every family (finite logits; 8-bit types keep
/// most argmaxes), and re-ISQ to a type and back to the load dtype restores the f32
/// model bit for bit.
#[test]
fn every_isq_type_and_re_isq_on_every_family() {
    let types = [
        "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q8_1", "Q2K", "Q3K", "Q4K", "Q5K", "Q6K", "Q8K",
        "HQQ4", "HQQ8", "FP8", "AFQ2", "AFQ3", "AFQ4", "AFQ6", "AFQ8", "MXFP4",
    ];
    for case in cases() {
        let (tokens, want) = expected(&case);
        let tokens = &tokens[..24];
        let want = &want[..24];
        let mut engine = load(&plain(&case), &LoadOptions::default());
        let dense = logits(&engine, tokens);
        for name in types {
            let ty: IsqType = name.parse().unwrap();
            engine.re_isq(Some(ty)).unwrap();
            let got = logits(&engine, tokens);
            assert!(
                got.iter().flatten().all(|v| v.is_finite()),
                "{case} {name}: non-finite logits"
            );
            // 8-bit integer codes (FP8 keeps only 3 mantissa bits: finite is all it promises).
            if name != "FP8" && (name.ends_with('8') || name == "Q8_0") {
                let agree = got
                    .iter()
                    .zip(want)
                    .filter(|(g, w)| argmax(g) == argmax(w))
                    .count();
                assert!(
                    agree * 10 >= tokens.len() * 7,
                    "{case} {name}: {agree}/24 argmax"
                );
            }
        }
        engine.re_isq(None).unwrap();
        assert_eq!(
            logits(&engine, tokens),
            dense,
            "{case}: back to the load dtype"
        );
    }
}

/// Topology rules by Hugging Face names: a fused projection is addressed as a whole.
#[test]
fn topology_addresses_fused_projections_as_a_whole() {
    let topo = smelt::quant::Topology::parse(
        "'/self_attn\\.qkv_proj$/':\n  isq: Q8_0\n'/mlp\\.gate_up_proj$/':\n  isq: Q4_0\n",
    )
    .unwrap();
    let opts = LoadOptions {
        topology: Some(topo),
        ..Default::default()
    };
    let loaded = smelt::load(&plain("phi3"), &opts).unwrap();
    for (name, storage) in loaded.model.linear_storage_by_name() {
        let want = if name.ends_with("qkv_proj") {
            "Q8_0"
        } else if name.ends_with("gate_up_proj") {
            "Q4_0"
        } else {
            "f32"
        };
        assert_eq!(storage, want, "{name}");
    }
}

/// An imatrix collected on a family (fused and q/k-normed layers included) names every
/// linear and weights ISQ.
#[test]
fn imatrix_collection_and_use_on_families() {
    let text = dir().join("ppl.txt");
    for case in ["phi3", "gemma3", "olmo2"] {
        let mut engine = load(&plain(case), &LoadOptions::default());
        let names: Vec<String> = engine
            .model
            .named_linears()
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        let im = smelt::calibrate::collect(&mut engine, &text, 32).unwrap();
        for n in &names {
            assert!(
                im.for_weight(n).is_some(),
                "{case}: no imatrix entry for {n}"
            );
        }
        let opts = LoadOptions {
            isq: Some("Q4_0".parse().unwrap()),
            imatrix: Some(std::sync::Arc::new(im)),
            ..Default::default()
        };
        let weighted = load(&plain(case), &opts);
        let (tokens, _) = expected(case);
        assert!(logits(&weighted, &tokens[..16])
            .iter()
            .flatten()
            .all(|v| v.is_finite()));
    }
}

/// A GGUF with an unknown architecture or a missing tensor is an error naming it.
#[test]
fn bad_family_ggufs_are_clear_errors() {
    let tmp = std::env::temp_dir().join(format!("smelt-families-gguf-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    let bytes = std::fs::read(dir().join("gemma3/model.gguf")).unwrap();
    let replace = |from: &[u8], to: &[u8]| -> Vec<u8> {
        let mut out = bytes.clone();
        let mut i = 0;
        while let Some(at) = out[i..].windows(from.len()).position(|w| w == from) {
            out[i + at..i + at + from.len()].copy_from_slice(to);
            i += at + from.len();
        }
        out
    };
    let load_err = |name: &str, data: Vec<u8>| -> String {
        let p = tmp.join(name);
        std::fs::write(&p, data).unwrap();
        let spec = ModelSpec::Gguf {
            model_id: None,
            file: p.to_string_lossy().into_owned(),
            tokenizer_json: None,
        };
        match smelt::load(&spec, &LoadOptions::default()) {
            Ok(_) => panic!("{name} loaded"),
            Err(e) => format!("{e:#}"),
        }
    };
    let e = load_err("arch.gguf", replace(b"gemma3", b"gemmaz"));
    assert!(e.contains("gemmaz") && e.contains("supported"), "{e}");
    let e = load_err(
        "tensor.gguf",
        replace(b"blk.1.attn_q_norm.weight", b"blk.1.attn_q_nxrm.weight"),
    );
    assert!(e.contains("blk.1.attn_q_norm.weight"), "{e}");
    let _ = std::fs::remove_dir_all(&tmp);
}

/// Chat templates from tokenizer_config.json and from GGUF metadata render as
/// transformers renders them; Gemma 2's refusal of a system message is an error carrying
/// the template's own message, Gemma 3 folds it into the first user turn.
#[test]
fn chat_templates_render_as_transformers_does() {
    let r = reference();
    for case in cases() {
        let Some(chats) = r["cases"][&case]["chats"].as_array() else {
            continue;
        };
        let mut specs = vec![("plain", plain(&case))];
        specs.extend(gguf(&case).map(|g| ("gguf", g)));
        for (what, spec) in specs {
            let engine = load(&spec, &LoadOptions::default());
            for chat in chats {
                let msgs: Vec<smelt::engine::chat_template::ChatMessage> = chat["messages"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|m| {
                        smelt::engine::chat_template::ChatMessage::new(
                            m["role"].as_str().unwrap(),
                            m["content"].as_str().unwrap(),
                        )
                    })
                    .collect();
                match (chat["rendered"].as_str(), engine.render_chat(&msgs)) {
                    (Some(want), Ok(got)) => assert_eq!(got, want, "{case} {what}"),
                    (None, Err(e)) => {
                        let want = chat["error"].as_str().unwrap();
                        assert!(format!("{e:#}").contains(want), "{case} {what}: {e:#}");
                    }
                    (want, got) => panic!("{case} {what}: expected {want:?}, got {got:?}"),
                }
            }
        }
    }
}

/// `--isq-organization moqe` on the MoE families quantizes exactly the expert linears
/// (router, attention and dense layers keep f32); a topology regex reaches one expert
/// kind, and moqe on a dense family is an error.
#[test]
fn moqe_and_expert_topology_on_moe_families() {
    // Shared experts (DeepSeek) are not experts here: every token runs them, as it runs
    // attention, so moqe keeps them at the load dtype with the rest.
    for case in [
        "qwen3_moe",
        "qwen3_moe_dense",
        "deepseek_v2",
        "deepseek_v3",
        "phimoe",
        "gpt_oss",
    ] {
        let opts = LoadOptions {
            isq: Some("Q8_0".parse().unwrap()),
            organization: smelt::quant::IsqOrganization::Moqe,
            ..Default::default()
        };
        let loaded = smelt::load(&plain(case), &opts).unwrap();
        let mut experts = 0;
        for (name, storage) in loaded.model.linear_storage_by_name() {
            let expert = name.contains(".experts.");
            experts += expert as usize;
            assert_eq!(
                storage,
                if expert { "Q8_0" } else { "f32" },
                "{case} {name}"
            );
        }
        assert!(experts > 0);
        let topo = smelt::quant::Topology::parse("'/experts\\.\\d+\\.down_proj/':\n  isq: Q4_0\n")
            .unwrap();
        let opts = LoadOptions {
            topology: Some(topo),
            ..Default::default()
        };
        let loaded = smelt::load(&plain(case), &opts).unwrap();
        for (name, storage) in loaded.model.linear_storage_by_name() {
            let want = if name.contains(".experts.") && name.ends_with("down_proj") {
                "Q4_0"
            } else {
                "f32"
            };
            assert_eq!(storage, want, "{case} {name}");
        }
    }
    let opts = LoadOptions {
        isq: Some("Q8_0".parse().unwrap()),
        organization: smelt::quant::IsqOrganization::Moqe,
        ..Default::default()
    };
    let e = smelt::load(&plain("qwen3"), &opts)
        .err()
        .expect("moqe on a dense model");
    assert!(format!("{e:#}").contains("moqe"), "{e:#}");
}

/// Latent attention caches one row per token and layer — the normalised latent and the
/// roped key part — instead of full keys and values; the load log says how many bytes.
#[test]
fn latent_attention_caches_the_latent_only() {
    for case in ["deepseek_v2", "deepseek_v3"] {
        let engine = load(&plain(case), &LoadOptions::default());
        let c = engine.model.config().clone();
        let m = c.mla.unwrap();
        let row = m.kv_lora_rank + m.qk_rope_head_dim;
        assert_eq!(c.kv_bytes_per_token(), c.num_hidden_layers * row * 4);
        let full = c.num_hidden_layers * 2 * c.num_attention_heads * c.head_dim * 4;
        assert!(
            c.kv_bytes_per_token() * 3 < full,
            "{case}: latent cache not smaller"
        );
        let (tokens, _) = expected(case);
        let mut s = engine.new_session();
        engine.model.forward(&tokens, &mut s.cache, 0).unwrap();
        let blocks = c.num_hidden_layers * tokens.len().div_ceil(16);
        assert_eq!(s.cache.size_in_bytes(), blocks * 16 * row * 4, "{case}");
    }
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_smelt"))
        .args(["--prompt", "The", "--max-tokens", "1", "plain", "-m"])
        .arg(dir().join("deepseek_v3"))
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    assert!(
        log.contains("KV cache: 640 bytes per token (latent"),
        "{log}"
    );
}

/// A GPT-OSS checkpoint with MXFP4 experts (as released) keeps them as stored:
/// every expert linear is MXFP4, the rest dense, and the logits equal transformers' own
/// loading of that checkpoint (`logits_match_transformers_from_both_loaders` runs it).
#[test]
fn mxfp4_gpt_oss_experts_load_as_stored() {
    let loaded = smelt::load(&plain("gpt_oss_mxfp4"), &LoadOptions::default()).unwrap();
    let mut experts = 0;
    for (name, storage) in loaded.model.linear_storage_by_name() {
        let expert = name.contains(".experts.");
        experts += expert as usize;
        assert_eq!(storage, if expert { "MXFP4" } else { "f32" }, "{name}");
    }
    assert_eq!(experts, 4 * 4 * 2);
    let engine = Engine::new(loaded).unwrap();
    let (tokens, want) = expected("gpt_oss_mxfp4");
    let (err, flips) = compare(&logits(&engine, &tokens), &want);
    assert!(err < 1e-4 && flips == 0, "{err:.2e}, {flips} flips");
    // llama.cpp's converter keeps them MXFP4 in the GGUF (split into gate and up).
    let g = smelt::load(&gguf("gpt_oss_mxfp4").unwrap(), &LoadOptions::default()).unwrap();
    for (name, storage) in g.model.linear_storage_by_name() {
        let expert = name.contains(".experts.");
        assert_eq!(storage, if expert { "MXFP4" } else { "F32" }, "GGUF {name}");
    }
}
