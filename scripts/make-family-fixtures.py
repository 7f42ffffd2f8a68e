#!/usr/bin/env python3
"""Tiny random-weight checkpoints of every dense model family, made by transformers
itself, with their reference logits and llama.cpp's GGUF and perplexity of them.

For each case in CASES this writes tests/fixtures/families/<case>/:
  config.json, model.safetensors (f32), tokenizer.model / tokenizer.json /
  tokenizer_config.json  -- the checkpoint, saved by transformers' save_pretrained;
  model.gguf             -- converted by llama.cpp's own convert_hf_to_gguf.py --outtype f32
                            (cases with gguf=True; a GGUF cannot carry Mistral's window);
  logits.f32             -- transformers' logits (eager attention, f32) for PROMPT, row-major
                            (tokens x vocab), little-endian f32;
and tests/fixtures/families/reference.json with the prompt, shapes and, where llama.cpp is
built, `llama-perplexity -ctk f32 -ctv f32 -fa off` on the GGUF over PPL_TEXT (llama.cpp's
CPU flash attention rounds V to f16 even from an f32 cache: with peaked weights that alone
moves perplexity by up to 0.3 %).

Every feature of a family is switched on at small scale (windows shorter than the prompt,
soft-caps, LongRoPE with partial rotary, NoPE layers, multipliers != 1, q/k norms, YaRN,
dynamic NTK) and the weights are drawn large enough that outputs are peaked.

Needs: pip install torch transformers safetensors sentencepiece numpy, and the llama.cpp
sources of the llama-cpp-python==0.3.36 sdist (scripts/build-llama-cpp.sh fetches them and
builds llama-perplexity). Usage: LLAMA_CPP_DIR=... python3 scripts/make-family-fixtures.py
"""
import io
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile

import numpy as np
import sentencepiece as spm
import torch
import transformers

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "tests", "fixtures", "families")
LLAMA = os.path.join(os.environ.get("LLAMA_CPP_DIR", os.path.expanduser("~/.cache/smelt/llama.cpp")),
                     "src", "vendor", "llama.cpp")
CORPUS = "/usr/share/common-licenses/GPL-3"
VOCAB = 384
PROMPT_TOKENS = 80
# Perplexity text: the start of the corpus, small enough for a quick test.
PPL_CHARS = 6000
PPL_CTX = 32

COMMON = dict(vocab_size=VOCAB, hidden_size=64, intermediate_size=96, num_hidden_layers=4,
              num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=256,
              rms_norm_eps=1e-6, bos_token_id=1, eos_token_id=2, pad_token_id=None, tie_word_embeddings=False)

CASES = {
    # Per-head q/k norm, head_dim 16 != 48/4, YaRN.
    "qwen3": dict(cls="Qwen3Config", gguf=True, cfg=dict(hidden_size=48,
        rope_parameters={"rope_type": "yarn", "rope_theta": 1000000.0, "factor": 4.0,
                         "original_max_position_embeddings": 64})),
    # Sandwich norms, (1 + w), GeGLU, soft-caps, window 24 on even layers.
    "gemma2": dict(cls="Gemma2Config", gguf=True, cfg=dict(
        hidden_size=48, query_pre_attn_scalar=16, attn_logit_softcapping=6.0, final_logit_softcapping=3.0,
        sliding_window=24, tie_word_embeddings=True, hidden_activation="gelu_pytorch_tanh")),
    # Five local layers, one global; global linear scaling; local base 10 000.
    "gemma3": dict(cls="Gemma3TextConfig", gguf=True, cfg=dict(
        hidden_size=48, num_hidden_layers=6, query_pre_attn_scalar=16, sliding_window=24, tie_word_embeddings=True,
        layer_types=["sliding_attention"] * 5 + ["full_attention"],
        rope_parameters={"full_attention": {"rope_type": "linear", "factor": 8.0, "rope_theta": 1000000.0},
                         "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0}})),
    # Fused projections, LongRoPE (long factors past 16 tokens), 3/4 rotary, window 40.
    "phi3": dict(cls="Phi3Config", gguf=True, cfg=dict(
        head_dim=None, sliding_window=40, max_position_embeddings=128,
        original_max_position_embeddings=16,
        rope_parameters={"rope_type": "longrope", "rope_theta": 10000.0, "partial_rotary_factor": 0.75,
                         "original_max_position_embeddings": 16,
                         "short_factor": [1.0, 1.1, 1.3, 1.6, 2.0, 2.5],
                         "long_factor": [1.5, 2.0, 3.0, 4.5, 6.0, 8.0]})),
    # Every fourth layer without RoPE.
    "smollm3": dict(cls="SmolLM3Config", gguf=True, cfg=dict(no_rope_layers=[1, 1, 1, 0],
                                                            rope_parameters={"rope_type": "default", "rope_theta": 2000000.0})),
    # The four multipliers.
    "granite": dict(cls="GraniteConfig", gguf=True, cfg=dict(
        embedding_multiplier=3.0, residual_multiplier=0.5, attention_multiplier=0.1, logits_scaling=2.0)),
    # Norms after attention and MLP only, q/k norm over the whole projection.
    "olmo2": dict(cls="Olmo2Config", gguf=True, cfg=dict()),
    # Mistral with a window of 24 on every layer and dynamic NTK past 64 positions.
    "mistral": dict(cls="MistralConfig", gguf=False, cfg=dict(
        sliding_window=24, max_position_embeddings=64,
        rope_parameters={"rope_type": "dynamic", "factor": 2.0, "rope_theta": 10000.0})),
    # Mixture of experts: 4 experts, top 2 renormalised (llama.cpp always renormalises).
    "qwen3_moe": dict(cls="Qwen3MoeConfig", gguf=True, cfg=dict(
        num_experts=4, num_experts_per_tok=2, moe_intermediate_size=32, norm_topk_prob=True,
        decoder_sparse_step=1, mlp_only_layers=[])),
    # Qwen3-MoE with a dense layer and top-k weights left unnormalised (config.json only:
    # llama.cpp's qwen3moe has neither).
    "qwen3_moe_dense": dict(cls="Qwen3MoeConfig", gguf=False, cfg=dict(
        num_experts=4, num_experts_per_tok=2, moe_intermediate_size=32, norm_topk_prob=False,
        decoder_sparse_step=1, mlp_only_layers=[1])),
    # Latent attention without a q bottleneck, v_head_dim != q/k head, YaRN with mscale,
    # shared expert, a dense first layer, group-limited greedy routing.
    # (llama.cpp cannot run it: it wants q_lora_rank but for the "Lite" layer counts, and
    # ranks expert groups differently; its GGUF is checked against transformers' logits.)
    "deepseek_v2": dict(cls="DeepseekV2Config", gguf=True, ppl=False, cfg=dict(
        head_dim=None, q_lora_rank=None, kv_lora_rank=32, qk_nope_head_dim=16, qk_rope_head_dim=8,
        v_head_dim=12, n_routed_experts=4, num_experts_per_tok=2, moe_intermediate_size=32,
        n_shared_experts=1, first_k_dense_replace=1, topk_method="group_limited_greedy", n_group=2,
        topk_group=1, routed_scaling_factor=1.5, num_key_value_heads=4,
        rope_parameters={"rope_type": "yarn", "rope_theta": 10000.0, "factor": 4.0,
                         "original_max_position_embeddings": 64, "mscale": 0.707, "mscale_all_dim": 0.707,
                         "beta_fast": 32, "beta_slow": 1})),
    # V3: q bottleneck, sigmoid routing with a correction bias, two groups of experts.
    "deepseek_v3": dict(cls="DeepseekV3Config", gguf=True, cfg=dict(
        scoring_func="sigmoid", topk_method="noaux_tc",
        head_dim=None, q_lora_rank=24, kv_lora_rank=32, qk_nope_head_dim=16, qk_rope_head_dim=8,
        v_head_dim=12, n_routed_experts=4, num_experts_per_tok=2, moe_intermediate_size=32,
        n_shared_experts=1, first_k_dense_replace=1, n_group=2, topk_group=1, norm_topk_prob=True,
        routed_scaling_factor=2.5, num_key_value_heads=4,
        rope_parameters={"rope_type": "yarn", "rope_theta": 10000.0, "factor": 4.0,
                         "original_max_position_embeddings": 64, "mscale": 1.0, "mscale_all_dim": 1.0,
                         "beta_fast": 32, "beta_slow": 1})),
    # Sparsemixer top-2, LayerNorm with bias, attention and head biases, LongRoPE, window
    # (config.json only: llama.cpp runs Phi-3.5-MoE through its Phi-3 graph).
    # Its GGUF runs as llama.cpp runs it (RMSNorm + bias, softmax top-2): checked by
    # perplexity against llama.cpp, not by logits against transformers.
    "phimoe": dict(cls="PhimoeConfig", gguf=True, gguf_semantics="llama.cpp", cfg=dict(
        head_dim=None, intermediate_size=32, num_local_experts=4, num_experts_per_tok=2,
        attention_bias=True, lm_head_bias=True, router_jitter_noise=0.01, sliding_window=40,
        # Original length above the prompt: transformers 5.24's Phi-3.5-MoE rotary always
        # takes the short factors (its forward recomputes them without the length), so
        # only the short regime is comparable. 256 and above: llama.cpp picks the factors
        # by its context size, at least 256, so its perplexity takes the short ones too.
        max_position_embeddings=1024, original_max_position_embeddings=256,
        rope_parameters={"rope_type": "longrope", "rope_theta": 10000.0, "original_max_position_embeddings": 256,
                         "short_mscale": 1.1, "long_mscale": 1.3,
                         "short_factor": [1.0, 1.1, 1.2, 1.4, 1.6, 2.0, 2.5, 3.0],
                         "long_factor": [1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.5, 8.0]})),
    # Attention sinks, alternating sliding (24) and full layers, biased router and experts
    # stacked (experts, in, out) with interleaved gate/up and the clamped SwiGLU. Plain
    # rope: llama.cpp's converter drops transformers 5's `rope_parameters` YaRN for this
    # family, so a YaRN fixture's GGUF would be another model. (Its GGUF comes from the
    # dense f32 conversion here, and MXFP4 from the variant below.)
    "gpt_oss": dict(cls="GptOssConfig", gguf=True, cfg=dict(
        intermediate_size=32, num_local_experts=4, num_experts_per_tok=2, sliding_window=24,
        layer_types=["sliding_attention", "full_attention"] * 2, attention_bias=True,
        rope_parameters={"rope_type": "default", "rope_theta": 150000.0})),
    # Gemma 2 with query_pre_attn_scalar != head_dim (as Gemma 2 27B): config.json only,
    # since a GGUF carries no such key (llama.cpp derives the scale from the layer count).
    "gemma2_qpas": dict(cls="Gemma2Config", gguf=False, cfg=dict(
        hidden_size=48, query_pre_attn_scalar=40, attn_logit_softcapping=6.0, final_logit_softcapping=3.0,
        sliding_window=24, tie_word_embeddings=True, hidden_activation="gelu_pytorch_tanh")),
}


# Chat templates as the families' instruct checkpoints publish them in
# tokenizer_config.json (Gemma 2 refuses a system message, Gemma 3 folds it into the
# first user turn, Phi-3.5 has a system role).
TEMPLATES = {
    "gemma2": (
        "{{ bos_token }}{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}"
        "{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
        "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
        "{% if (message['role'] == 'assistant') %}{% set role = 'model' %}{% else %}{% set role = message['role'] %}{% endif %}"
        "{{ '<start_of_turn>' + role + '\n' + message['content'] | trim + '<end_of_turn>\n' }}{% endfor %}"
        "{% if add_generation_prompt %}{{'<start_of_turn>model\n'}}{% endif %}"),
    "gemma3": (
        "{{ bos_token }}\n{%- if messages[0]['role'] == 'system' -%}\n"
        "    {%- if messages[0]['content'] is string -%}\n"
        "        {%- set first_user_prefix = messages[0]['content'] + '\n\n' -%}\n"
        "    {%- else -%}\n"
        "        {%- set first_user_prefix = messages[0]['content'][0]['text'] + '\n\n' -%}\n"
        "    {%- endif -%}\n"
        "    {%- set loop_messages = messages[1:] -%}\n"
        "{%- else -%}\n"
        "    {%- set first_user_prefix = \"\" -%}\n"
        "    {%- set loop_messages = messages -%}\n"
        "{%- endif -%}\n"
        "{%- for message in loop_messages -%}\n"
        "    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}\n"
        "        {{ raise_exception(\"Conversation roles must alternate user/assistant/user/assistant/...\") }}\n"
        "    {%- endif -%}\n"
        "    {%- if (message['role'] == 'assistant') -%}\n"
        "        {%- set role = \"model\" -%}\n"
        "    {%- else -%}\n"
        "        {%- set role = message['role'] -%}\n"
        "    {%- endif -%}\n"
        "    {{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else \"\") }}\n"
        "    {%- if message['content'] is string -%}\n"
        "        {{ message['content'] | trim }}\n"
        "    {%- elif message['content'] is iterable -%}\n"
        "        {%- for item in message['content'] -%}\n"
        "            {%- if item['type'] == 'text' -%}\n"
        "                {{ item['text'] | trim }}\n"
        "            {%- endif -%}\n"
        "        {%- endfor -%}\n"
        "    {%- else -%}\n"
        "        {{ raise_exception(\"Invalid content type\") }}\n"
        "    {%- endif -%}\n"
        "    {{ '<end_of_turn>\n' }}\n"
        "{%- endfor -%}\n"
        "{%- if add_generation_prompt -%}\n"
        "    {{'<start_of_turn>model\n'}}\n"
        "{%- endif -%}\n"),
    "phi3": (
        "{% for message in messages %}{% if message['role'] == 'system' and message['content'] %}"
        "{{'<|system|>\n' + message['content'] + '<|end|>\n'}}{% elif message['role'] == 'user' %}"
        "{{'<|user|>\n' + message['content'] + '<|end|>\n'}}{% elif message['role'] == 'assistant' %}"
        "{{'<|assistant|>\n' + message['content'] + '<|end|>\n'}}{% endif %}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% else %}{{ eos_token }}{% endif %}"),
}

CHATS = [
    [{"role": "user", "content": "  Hi there!  "}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi!"},
     {"role": "assistant", "content": "Hello."}, {"role": "user", "content": "Again?"}],
]


def render_chats(tok):
    """transformers' own rendering of CHATS (with the generation prompt), or its error."""
    out = []
    for msgs in CHATS:
        try:
            out.append({"messages": msgs, "rendered": tok.apply_chat_template(
                msgs, tokenize=False, add_generation_prompt=True)})
        except Exception as e:  # the template's raise_exception
            out.append({"messages": msgs, "error": str(e)})
    return out


def train_tokenizer(directory):
    """A small SentencePiece BPE vocabulary (byte fallback) on the corpus."""
    model = io.BytesIO()
    with open(CORPUS, encoding="utf-8") as f:
        lines = [l.strip() for l in f if l.strip()]
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines), model_writer=model, vocab_size=VOCAB, model_type="bpe",
        byte_fallback=True, character_coverage=1.0, split_digits=True,
        unk_id=0, bos_id=1, eos_id=2, pad_id=-1, minloglevel=2,
        # llama.cpp's vocabulary loader looks this token up for models named phi3.
        user_defined_symbols=["<|endoftext|>"])
    path = os.path.join(directory, "tokenizer.model")
    with open(path, "wb") as f:
        f.write(model.getvalue())
    return path


def peaked_weights(model, family, seed):
    """Redraw every weight so activations and logits are far from uniform."""
    g = torch.Generator().manual_seed(seed)
    gemma = family.startswith("gemma")
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(".bias"):
                p.copy_(0.2 * torch.randn(p.shape, generator=g))
            elif name.endswith("sinks"):
                p.copy_(torch.randn(p.shape, generator=g))
            elif family == "gpt_oss" and p.dim() == 3:
                # GPT-OSS stacks experts as (experts, in, out).
                p.copy_(torch.randn(p.shape, generator=g) * (1.2 / math.sqrt(p.shape[1])))
            elif "norm" in name:
                base = 0.0 if gemma else 1.0
                p.copy_(base + 0.2 * torch.randn(p.shape, generator=g))
            elif "embed_tokens" in name:
                # Gemma scales embeddings by sqrt(hidden) and ties its head to them.
                std = 4.0 / math.sqrt(p.shape[1]) if gemma else 1.0
                p.copy_(torch.randn(p.shape, generator=g) * std)
            elif p.dim() >= 2:
                # Linears, and transformers 5's stacked expert weights (experts, out, in).
                gain = 5.0 if "lm_head" in name else 1.2
                p.copy_(torch.randn(p.shape, generator=g) * (gain / math.sqrt(p.shape[-1])))
            else:
                p.copy_(0.2 * torch.randn(p.shape, generator=g))
        # DeepSeek V3's router bias is a buffer: give it values that change choices.
        for name, b in model.named_buffers():
            if name.endswith("e_score_correction_bias"):
                b.copy_(0.3 * torch.randn(b.shape, generator=g))


def convert(directory, outfile):
    """llama.cpp's converter, run in-process so that families whose converter expects a
    BPE tokenizer.json read our SentencePiece model instead (the vocabulary is not
    what is under test: logits are compared on token ids)."""
    sys.path.insert(0, LLAMA)
    sys.path.insert(1, os.path.join(LLAMA, "gguf-py"))
    import convert_hf_to_gguf as conv  # noqa: E402
    from conversion import base  # noqa: E402

    original = base.TextModel.__init__

    def init(self, *a, **k):
        original(self, *a, **k)
        self.set_vocab = self._set_vocab_sentencepiece

    base.TextModel.__init__ = init
    # The converter knows Phi-3.5-MoE only by its checkpoints' class name spelling.
    cfg_path = os.path.join(directory, "config.json")
    cfg = json.load(open(cfg_path))
    if cfg.get("architectures") == ["PhimoeForCausalLM"]:
        tmp = tempfile.mkdtemp()
        for f in os.listdir(directory):
            if f != "config.json":
                os.symlink(os.path.join(os.path.abspath(directory), f), os.path.join(tmp, f))
        cfg["architectures"] = ["PhiMoEForCausalLM"]
        json.dump(cfg, open(os.path.join(tmp, "config.json"), "w"))
        directory = tmp
    argv = sys.argv
    sys.argv = ["convert_hf_to_gguf.py", directory, "--outfile", outfile, "--outtype", "f32"]
    try:
        conv.main()
    finally:
        sys.argv = argv
        base.TextModel.__init__ = original


def llama_perplexity(gguf_path, text_path):
    exe = os.path.join(LLAMA, "build", "bin", "llama-perplexity")
    if not os.path.exists(exe):
        print(f"(no {exe}: perplexity reference skipped)")
        return None
    # llama.cpp's log thread sometimes loses its last lines at exit: run again then.
    for _ in range(6):
        with tempfile.TemporaryFile("w+") as log:
            subprocess.run([exe, "-m", gguf_path, "-f", text_path, "-c", str(PPL_CTX), "-b", str(PPL_CTX),
                            "-ctk", "f32", "-ctv", "f32", "-fa", "off", "-t", "2"], stdout=log, stderr=log, check=True)
            log.seek(0)
            text = log.read()
        m = re.search(r"Final estimate: PPL = ([0-9.]+)", text)
        if m is not None:
            return float(m.group(1))
    raise RuntimeError(f"llama-perplexity printed no estimate for {gguf_path}:\n{text[-2000:]}")


def make_mxfp4_gpt_oss(prompt):
    """The gpt_oss fixture with its experts stored as GPT-OSS releases them: MXFP4
    `*_blocks` / `*_scales` (ggml's reference quantizer, repacked to the checkpoint's
    nibble order) and `quant_method: mxfp4`; the reference logits are transformers'
    own loading of that checkpoint (it dequantizes MXFP4 on the CPU)."""
    from safetensors.torch import load_file, save_file
    sys.path.insert(1, os.path.join(LLAMA, "gguf-py"))
    from gguf import GGMLQuantizationType as T
    from gguf.quants import quantize as gquant

    src, d = os.path.join(OUT, "gpt_oss"), os.path.join(OUT, "gpt_oss_mxfp4")
    os.makedirs(d, exist_ok=True)
    tensors = load_file(os.path.join(src, "model.safetensors"))
    out = {}
    for name, t in tensors.items():
        if name.endswith("mlp.experts.gate_up_proj") or name.endswith("mlp.experts.down_proj"):
            w = t.float().transpose(1, 2).contiguous().numpy()  # (experts, out, in)
            e, rows, cols = w.shape
            g = gquant(w.reshape(e * rows, cols), T.MXFP4).reshape(e, rows, cols // 32, 17)
            scales = g[..., 0]
            codes = np.zeros((e, rows, cols // 32, 32), dtype=np.uint8)
            codes[..., :16] = g[..., 1:] & 0x0F
            codes[..., 16:] = g[..., 1:] >> 4
            blocks = codes[..., 0::2] | (codes[..., 1::2] << 4)
            out[name + "_blocks"] = torch.from_numpy(np.ascontiguousarray(blocks))
            out[name + "_scales"] = torch.from_numpy(np.ascontiguousarray(scales))
        else:
            out[name] = t
    save_file(out, os.path.join(d, "model.safetensors"), metadata={"format": "pt"})
    cfg = json.load(open(os.path.join(src, "config.json")))
    cfg["quantization_config"] = {"quant_method": "mxfp4", "modules_to_not_convert": [
        "model.layers.*.self_attn", "model.layers.*.mlp.router", "model.embed_tokens", "lm_head"]}
    json.dump(cfg, open(os.path.join(d, "config.json"), "w"), indent=1)
    for f in ("tokenizer.json", "tokenizer_config.json", "tokenizer.model"):
        shutil.copy(os.path.join(src, f), os.path.join(d, f))
    model = transformers.AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32)
    model.eval()
    with torch.no_grad():
        logits = model(torch.tensor([prompt])).logits[0].float().numpy()
    logits.astype("<f4").tofile(os.path.join(d, "logits.f32"))
    print("gpt_oss_mxfp4", type(model.model.layers[0].mlp.experts).__name__)
    entry = {"config_class": "GptOssConfig", "tokens": prompt, "max_abs_logit": float(np.abs(logits).max())}
    # llama.cpp's converter keeps the MXFP4 blocks as GGUF MXFP4 tensors.
    gguf_path = os.path.join(d, "model.gguf")
    convert(d, gguf_path)
    # Informational only: llama.cpp's CPU MXFP4 product quantizes activations to q8_0,
    # about 1 % of perplexity away from the f32 arithmetic transformers and smelt use
    # (its dense gpt_oss GGUF agrees with smelt; tests/families.rs checks that one).
    entry["llama_perplexity_q8_activations"] = llama_perplexity(gguf_path, os.path.join(OUT, "ppl.txt"))
    return entry


def main():
    os.makedirs(OUT, exist_ok=True)
    ref = {"prompt_tokens": PROMPT_TOKENS, "vocab": VOCAB, "ppl_ctx": PPL_CTX,
           "ppl_text": "ppl.txt", "transformers": transformers.__version__, "cases": {}}
    with open(CORPUS, encoding="utf-8") as f:
        text = f.read()
    with open(os.path.join(OUT, "ppl.txt"), "w", encoding="utf-8") as f:
        f.write(text[:PPL_CHARS])
    with tempfile.TemporaryDirectory() as tmp:
        sp_path = train_tokenizer(tmp)
        sp = spm.SentencePieceProcessor(model_file=sp_path)
        prompt = [1] + sp.encode(text[20000:30000])[: PROMPT_TOKENS - 1]
        for seed, (case, spec) in enumerate(CASES.items()):
            d = os.path.join(OUT, case)
            os.makedirs(d, exist_ok=True)
            kw = dict(COMMON)
            kw.update(spec["cfg"])
            if kw.get("head_dim") is None:
                kw.pop("head_dim")
            cfg = getattr(transformers, spec["cls"])(**kw)
            cfg._attn_implementation = "eager"
            torch.manual_seed(seed)
            model = transformers.AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
            model.eval()
            peaked_weights(model, case, 1000 + seed)
            model.save_pretrained(d, safe_serialization=True)
            # From the directory holding tokenizer.model, so transformers converts it.
            tok = transformers.LlamaTokenizer.from_pretrained(tmp, legacy=False, add_bos_token=True)
            template = TEMPLATES.get(case)
            if template is not None:
                tok.chat_template = template
            tok.save_pretrained(d)
            # The converter reads the SentencePiece model itself.
            with open(sp_path, "rb") as src, open(os.path.join(d, "tokenizer.model"), "wb") as dst:
                dst.write(src.read())
            with torch.no_grad():
                logits = model(torch.tensor([prompt])).logits[0].float().numpy()
            logits.astype("<f4").tofile(os.path.join(d, "logits.f32"))
            p = torch.softmax(torch.tensor(logits), -1)
            entropy = float(-(p * p.clamp_min(1e-30).log()).sum(-1).mean())
            entry = {"config_class": spec["cls"], "tokens": prompt, "entropy_nats": entropy,
                     "max_abs_logit": float(np.abs(logits).max())}
            if template is not None:
                entry["chats"] = render_chats(tok)
            if spec.get("gguf_semantics"):
                entry["gguf_semantics"] = spec["gguf_semantics"]
            if spec["gguf"]:
                gguf_path = os.path.join(d, "model.gguf")
                convert(d, gguf_path)
                if spec.get("ppl", True):
                    entry["llama_perplexity"] = llama_perplexity(gguf_path, os.path.join(OUT, "ppl.txt"))
            ref["cases"][case] = entry
            print(case, entry["entropy_nats"], entry.get("llama_perplexity"))
        ref["cases"]["gpt_oss_mxfp4"] = make_mxfp4_gpt_oss(prompt)
    with open(os.path.join(OUT, "reference.json"), "w") as f:
        json.dump(ref, f, indent=1)


if __name__ == "__main__":
    main()
