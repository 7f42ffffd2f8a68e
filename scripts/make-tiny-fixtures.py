#!/usr/bin/env python3
"""Write tiny deterministic checkpoints (plain HF layout and GGUF) for architectures the
real test model does not cover, plus their logits from an independent numpy forward pass.

Each case gets tests/fixtures/tiny/<case>/ with model.safetensors, config.json,
tokenizer.json, tokenizer_config.json and model.gguf (f32 tensors, Q/K rows permuted as
llama.cpp's converter does for llama), and an entry in tests/fixtures/tiny/logits.json.
Needs numpy and gguf (the venv made by scripts/fetch-test-models.sh has both).
"""
import json
import os
import struct

import numpy as np
import gguf

OUT = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "tiny")
TOKENS = [3, 17, 42, 99, 200, 7, 64, 128, 255, 1]

CASES = {
    # Llama 3 shape: GQA, llama3 rope scaling, untied head, explicit head_dim.
    "llama3": dict(model_type="llama", arch="LlamaForCausalLM", hidden_size=32, intermediate_size=64,
                   num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=8,
                   rope_theta=500000.0, rms_norm_eps=1e-5, tie_word_embeddings=False,
                   rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                 "high_freq_factor": 4.0, "original_max_position_embeddings": 8}),
    # Qwen2: q/k/v biases, large theta, untied head.
    "qwen2": dict(model_type="qwen2", arch="Qwen2ForCausalLM", hidden_size=32, intermediate_size=64,
                  num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                  rope_theta=1000000.0, rms_norm_eps=1e-6, tie_word_embeddings=False, rope_scaling=None),
    # Tied embeddings, no GQA.
    "llama_tied": dict(model_type="llama", arch="LlamaForCausalLM", hidden_size=32, intermediate_size=48,
                       num_hidden_layers=3, num_attention_heads=2, num_key_value_heads=2,
                       rope_theta=10000.0, rms_norm_eps=1e-5, tie_word_embeddings=True, rope_scaling=None),
}
VOCAB = 256
MAX_POS = 64


class Lcg:
    """A generator both numpy and Rust could reproduce exactly, so weights are portable."""

    def __init__(self, seed):
        self.state = seed & 0xFFFFFFFF

    def take(self, shape, scale):
        n = int(np.prod(shape))
        out = np.empty(n, dtype=np.float32)
        for i in range(n):
            self.state = (1664525 * self.state + 1013904223) & 0xFFFFFFFF
            out[i] = ((self.state >> 8) / float(1 << 24) - 0.5) * scale
        return out.reshape(shape)


def make_weights(c, seed):
    rng = Lcg(seed)
    h, i_sz, nh, nkv = c["hidden_size"], c["intermediate_size"], c["num_attention_heads"], c["num_key_value_heads"]
    hd = c.get("head_dim", h // nh)
    bias = c["model_type"] == "qwen2"
    w = {"model.embed_tokens.weight": rng.take((VOCAB, h), 1.0)}
    for l in range(c["num_hidden_layers"]):
        p = f"model.layers.{l}."
        w[p + "input_layernorm.weight"] = 1.0 + rng.take((h,), 0.2)
        w[p + "post_attention_layernorm.weight"] = 1.0 + rng.take((h,), 0.2)
        w[p + "self_attn.q_proj.weight"] = rng.take((nh * hd, h), 0.6)
        w[p + "self_attn.k_proj.weight"] = rng.take((nkv * hd, h), 0.6)
        w[p + "self_attn.v_proj.weight"] = rng.take((nkv * hd, h), 0.6)
        w[p + "self_attn.o_proj.weight"] = rng.take((h, nh * hd), 0.6)
        if bias:
            w[p + "self_attn.q_proj.bias"] = rng.take((nh * hd,), 0.5)
            w[p + "self_attn.k_proj.bias"] = rng.take((nkv * hd,), 0.5)
            w[p + "self_attn.v_proj.bias"] = rng.take((nkv * hd,), 0.5)
        w[p + "mlp.gate_proj.weight"] = rng.take((i_sz, h), 0.6)
        w[p + "mlp.up_proj.weight"] = rng.take((i_sz, h), 0.6)
        w[p + "mlp.down_proj.weight"] = rng.take((h, i_sz), 0.6)
    w["model.norm.weight"] = 1.0 + rng.take((h,), 0.2)
    if not c["tie_word_embeddings"]:
        w["lm_head.weight"] = rng.take((VOCAB, h), 1.0)
    return w


def inv_freqs(c):
    hd = c.get("head_dim", c["hidden_size"] // c["num_attention_heads"])
    inv = 1.0 / (c["rope_theta"] ** (np.arange(0, hd, 2, dtype=np.float64) / hd))
    s = c["rope_scaling"]
    if s:  # transformers' _compute_llama3_parameters
        old = s["original_max_position_embeddings"]
        low_wl, high_wl = old / s["low_freq_factor"], old / s["high_freq_factor"]
        wl = 2 * np.pi / inv
        scaled = np.where(wl > low_wl, inv / s["factor"], inv)
        smooth = (old / wl - s["low_freq_factor"]) / (s["high_freq_factor"] - s["low_freq_factor"])
        smoothed = (1 - smooth) * scaled / s["factor"] + smooth * scaled
        medium = (wl >= high_wl) & (wl <= low_wl)
        inv = np.where(medium, smoothed, scaled)
    return inv


def forward(c, w, tokens):
    h, nh, nkv = c["hidden_size"], c["num_attention_heads"], c["num_key_value_heads"]
    hd = c.get("head_dim", h // nh)
    eps = c["rms_norm_eps"]
    x = w["model.embed_tokens.weight"][tokens].astype(np.float64)
    T = len(tokens)
    ang = np.outer(np.arange(T), inv_freqs(c))
    cos, sin = np.cos(np.concatenate([ang, ang], -1)), np.sin(np.concatenate([ang, ang], -1))

    def norm(v, g):
        return v / np.sqrt((v * v).mean(-1, keepdims=True) + eps) * g

    def rope(v):  # v: (heads, T, hd), rotate-half
        rot = np.concatenate([-v[..., hd // 2:], v[..., : hd // 2]], -1)
        return v * cos + rot * sin

    def lin(name, v, bias=False):
        y = v @ w[name + ".weight"].T.astype(np.float64)
        if bias and name + ".bias" in w:
            y = y + w[name + ".bias"]
        return y

    mask = np.triu(np.full((T, T), -np.inf), 1)
    for l in range(c["num_hidden_layers"]):
        p = f"model.layers.{l}."
        a = norm(x, w[p + "input_layernorm.weight"])
        q = lin(p + "self_attn.q_proj", a, True).reshape(T, nh, hd).transpose(1, 0, 2)
        k = lin(p + "self_attn.k_proj", a, True).reshape(T, nkv, hd).transpose(1, 0, 2)
        v = lin(p + "self_attn.v_proj", a, True).reshape(T, nkv, hd).transpose(1, 0, 2)
        q, k = rope(q), rope(k)
        rep = nh // nkv
        k, v = np.repeat(k, rep, 0), np.repeat(v, rep, 0)
        s = q @ k.transpose(0, 2, 1) / np.sqrt(hd) + mask
        s = np.exp(s - s.max(-1, keepdims=True))
        s /= s.sum(-1, keepdims=True)
        o = (s @ v).transpose(1, 0, 2).reshape(T, nh * hd)
        x = x + lin(p + "self_attn.o_proj", o)
        m = norm(x, w[p + "post_attention_layernorm.weight"])
        g = lin(p + "mlp.gate_proj", m)
        x = x + lin(p + "mlp.down_proj", g / (1 + np.exp(-g)) * lin(p + "mlp.up_proj", m))
    x = norm(x, w["model.norm.weight"])
    head = w.get("lm_head.weight", w["model.embed_tokens.weight"])
    return x @ head.T.astype(np.float64)


def write_safetensors(path, tensors):
    header, offset, blobs = {}, 0, []
    for name in sorted(tensors):
        a = np.ascontiguousarray(tensors[name], dtype=np.float32)
        header[name] = {"dtype": "F32", "shape": list(a.shape), "data_offsets": [offset, offset + a.nbytes]}
        offset += a.nbytes
        blobs.append(a.tobytes())
    meta = json.dumps(header, separators=(",", ":")).encode()
    meta += b" " * ((8 - len(meta) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(meta)) + meta + b"".join(blobs))


def byte_level_alphabet():
    # GPT-2's bytes_to_unicode: printable bytes map to themselves, the rest above 255.
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    table = dict(zip(bs, cs))
    return [chr(table[b]) for b in range(256)]


def write_plain(d, c, w):
    write_safetensors(os.path.join(d, "model.safetensors"), w)
    cfg = {k: v for k, v in c.items() if k != "arch"}
    cfg.update(architectures=[c["arch"]], vocab_size=VOCAB, max_position_embeddings=MAX_POS,
               hidden_act="silu", bos_token_id=None, eos_token_id=0)
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(cfg, f, indent=1)
    vocab = byte_level_alphabet()
    bl = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}
    tok = {"version": "1.0", "truncation": None, "padding": None, "added_tokens": [], "normalizer": None,
           "pre_tokenizer": bl, "post_processor": bl, "decoder": bl,
           "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                     "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                     "vocab": {t: i for i, t in enumerate(vocab)}, "merges": []}}
    with open(os.path.join(d, "tokenizer.json"), "w") as f:
        json.dump(tok, f, ensure_ascii=False)
    with open(os.path.join(d, "tokenizer_config.json"), "w") as f:
        json.dump({"eos_token": vocab[0], "chat_template": "{% for m in messages %}{{ m['content'] }}{% endfor %}"}, f)
    return vocab


def permute(wt, n_head):  # llama.cpp's convert_hf_to_gguf LlamaModel.permute
    return wt.reshape(n_head, 2, wt.shape[0] // n_head // 2, *wt.shape[1:]).swapaxes(1, 2).reshape(wt.shape)


GGUF_NAMES = {"self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
              "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
              "mlp.down_proj": "ffn_down", "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm"}


def write_gguf(path, c, w, vocab):
    arch = c["model_type"]
    hd = c.get("head_dim", c["hidden_size"] // c["num_attention_heads"])
    g = gguf.GGUFWriter(path, arch)
    g.add_context_length(MAX_POS)
    g.add_embedding_length(c["hidden_size"])
    g.add_block_count(c["num_hidden_layers"])
    g.add_feed_forward_length(c["intermediate_size"])
    g.add_head_count(c["num_attention_heads"])
    g.add_head_count_kv(c["num_key_value_heads"])
    g.add_key_length(hd)
    g.add_value_length(hd)
    g.add_rope_freq_base(c["rope_theta"])
    g.add_layer_norm_rms_eps(c["rms_norm_eps"])
    g.add_tokenizer_model("gpt2")
    g.add_tokenizer_pre("default")
    g.add_token_list(vocab)
    g.add_token_types([1] * len(vocab))
    g.add_token_merges([])
    g.add_eos_token_id(0)
    s = c["rope_scaling"]
    if s:  # llama.cpp stores llama3 scaling as per-dimension frequency divisors
        base = 1.0 / (c["rope_theta"] ** (np.arange(0, hd, 2, dtype=np.float64) / hd))
        g.add_tensor("rope_freqs.weight", (base / inv_freqs(c)).astype(np.float32))
    for name, t in w.items():
        if name == "model.embed_tokens.weight":
            gname = "token_embd.weight"
        elif name == "model.norm.weight":
            gname = "output_norm.weight"
        elif name == "lm_head.weight":
            gname = "output.weight"
        else:
            _, _, layer, rest = name.split(".", 3)
            module, suffix = rest.rsplit(".", 1)
            gname = f"blk.{layer}.{GGUF_NAMES[module]}.{suffix}"
            if arch == "llama" and module == "self_attn.q_proj":
                t = permute(t, c["num_attention_heads"])
            if arch == "llama" and module == "self_attn.k_proj":
                t = permute(t, c["num_key_value_heads"])
        g.add_tensor(gname, np.ascontiguousarray(t, dtype=np.float32))
    g.write_header_to_file()
    g.write_kv_data_to_file()
    g.write_tensors_to_file()
    g.close()


def main():
    logits = {}
    for seed, (case, c) in enumerate(CASES.items()):
        d = os.path.join(OUT, case)
        os.makedirs(d, exist_ok=True)
        w = make_weights(c, seed + 1)
        vocab = write_plain(d, c, w)
        write_gguf(os.path.join(d, "model.gguf"), c, w, vocab)
        logits[case] = {"tokens": TOKENS, "logits": np.round(forward(c, w, TOKENS), 5).tolist()}
    with open(os.path.join(OUT, "logits.json"), "w") as f:
        json.dump({"provenance": "scripts/make-tiny-fixtures.py: numpy float64 forward pass, written independently of smelt",
                   "cases": logits}, f)
    print("wrote", os.path.normpath(OUT))


if __name__ == "__main__":
    main()
