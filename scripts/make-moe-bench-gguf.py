#!/usr/bin/env python3
"""A random Qwen3-MoE of benchmark size (hidden 1024, 8 layers, 8 experts of 512, top 4;
about 120 M parameters) made by transformers, converted by llama.cpp's converter and
quantized by llama-quantize to Q4_K_M, for `scripts/bench-vs-llama-cpp.sh`. Writes
~/.cache/smelt/bench/qwen3moe-bench.Q4_K_M.gguf (prints its path). Random weights: for
speed only. Same needs as make-family-fixtures.py.
"""
import importlib.util
import os
import subprocess
import tempfile

import torch
import transformers

HERE = os.path.dirname(os.path.abspath(__file__))
spec = importlib.util.spec_from_file_location("fixtures", os.path.join(HERE, "make-family-fixtures.py"))
fx = importlib.util.module_from_spec(spec)
spec.loader.exec_module(fx)

OUT = os.path.expanduser("~/.cache/smelt/bench")


def main():
    os.makedirs(OUT, exist_ok=True)
    final = os.path.join(OUT, "qwen3moe-bench.Q4_K_M.gguf")
    if os.path.exists(final):
        print(final)
        return
    with tempfile.TemporaryDirectory() as tmp:
        sp = fx.train_tokenizer(tmp)
        d = os.path.join(tmp, "model")
        os.makedirs(d)
        cfg = transformers.Qwen3MoeConfig(
            vocab_size=fx.VOCAB, hidden_size=1024, intermediate_size=2048, moe_intermediate_size=512,
            num_hidden_layers=8, num_attention_heads=16, num_key_value_heads=4, head_dim=64,
            num_experts=8, num_experts_per_tok=4, norm_topk_prob=True, max_position_embeddings=4096,
            bos_token_id=1, eos_token_id=2, tie_word_embeddings=False)
        torch.manual_seed(0)
        model = transformers.AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
        fx.peaked_weights(model, "qwen3_moe", 7)
        model.save_pretrained(d)
        tok = transformers.LlamaTokenizer.from_pretrained(tmp, legacy=False, add_bos_token=True)
        tok.save_pretrained(d)
        with open(sp, "rb") as a, open(os.path.join(d, "tokenizer.model"), "wb") as b:
            b.write(a.read())
        f32 = os.path.join(tmp, "f32.gguf")
        fx.convert(d, f32)
        quantize = os.path.join(fx.LLAMA, "build", "bin", "llama-quantize")
        subprocess.run([quantize, f32, final, "Q4_K_M"], check=True, capture_output=True)
    print(final)


if __name__ == "__main__":
    main()
