#!/usr/bin/env python3
"""Reference quantizations of one f32 weight, for byte-exactness tests of smelt's ISQ.

- Q4_0, Q4_1, Q5_0, Q5_1, Q8_0: the `gguf` package's numpy quantizers (ggml's reference
  algorithms).
- Q2_K..Q6_K: llama.cpp's `llama-quantize --pure` (LLAMA_CPP_BIN, see
  scripts/build-llama-cpp.sh) on a one-layer llama GGUF holding the weight, rows of 256.

- Importance-weighted (imatrix) Q4_0, Q4_1, Q5_0, Q5_1, Q2_K, Q3_K, Q4_K: the same
  `llama-quantize --pure --imatrix imatrix.dat` with a legacy-format imatrix written here
  (positive per-column importances, imatrix.f32), giving <TYPE>.imatrix.bin.

Writes tests/fixtures/quant/: input.f32 (rows × cols little-endian f32), <TYPE>.bin (the
quantized bytes of that weight), imatrix.f32 and <TYPE>.imatrix.bin, and meta.json.
"""
import struct
import json
import os
import subprocess
import tempfile

import numpy as np
import gguf
from gguf import GGMLQuantizationType as T
from gguf.quants import quantize

OUT = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "quant")
ROWS, COLS = 64, 512
HIDDEN = COLS  # the weight is blk.0.ffn_down: (hidden, intermediate) with both = 512


def weight():
    rng = np.random.RandomState(1234)
    w = rng.standard_normal((ROWS, COLS)).astype(np.float32) * 0.05
    w[0] = 0.0                                  # an all-zero row
    w[1] = 0.3                                  # a constant row
    w[2, ::37] = 2.5                            # outliers
    w[3] *= 1e-4                                # tiny values
    w[4] = np.linspace(-1, 1, COLS, dtype=np.float32)
    return w


def one_layer_gguf(path, w):
    """A minimal llama GGUF whose ffn_down is `w` (other tensors small and random)."""
    rng = np.random.RandomState(7)
    g = gguf.GGUFWriter(path, "llama")
    g.add_context_length(64)
    g.add_embedding_length(ROWS)
    g.add_block_count(1)
    g.add_feed_forward_length(COLS)
    g.add_head_count(1)
    g.add_head_count_kv(1)
    g.add_rope_freq_base(10000.0)
    g.add_layer_norm_rms_eps(1e-5)
    g.add_tokenizer_model("gpt2")
    g.add_tokenizer_pre("default")
    vocab = [chr(0x100 + i) for i in range(256)]
    g.add_token_list(vocab)
    g.add_token_types([1] * len(vocab))
    g.add_eos_token_id(0)
    r = lambda *s: (rng.standard_normal(s) * 0.02).astype(np.float32)
    g.add_tensor("token_embd.weight", r(256, ROWS))
    g.add_tensor("output_norm.weight", np.ones(ROWS, np.float32))
    g.add_tensor("blk.0.attn_norm.weight", np.ones(ROWS, np.float32))
    g.add_tensor("blk.0.ffn_norm.weight", np.ones(ROWS, np.float32))
    for n in ("attn_q", "attn_k", "attn_v", "attn_output"):
        g.add_tensor(f"blk.0.{n}.weight", r(ROWS, ROWS))
    g.add_tensor("blk.0.ffn_gate.weight", r(COLS, ROWS))
    g.add_tensor("blk.0.ffn_up.weight", r(COLS, ROWS))
    g.add_tensor("blk.0.ffn_down.weight", w)
    g.write_header_to_file()
    g.write_kv_data_to_file()
    g.write_tensors_to_file()
    g.close()


def importances():
    rng = np.random.RandomState(99)
    im = np.exp(rng.standard_normal(COLS) * 1.5).astype(np.float32)  # spread over decades
    im[::50] = 0.0                                                   # columns never active
    return im


def write_imatrix_dat(path, entries):
    """llama.cpp's legacy imatrix: values are means × ncall (ncall = 1 here)."""
    with open(path, "wb") as f:
        f.write(struct.pack("<i", len(entries)))
        for name, values in entries.items():
            b = name.encode()
            f.write(struct.pack("<i", len(b)) + b + struct.pack("<ii", 1, len(values)))
            f.write(np.asarray(values, dtype="<f4").tobytes())
        f.write(struct.pack("<i", 1))
        f.write(struct.pack("<i", 4) + b"test")


def main():
    os.makedirs(OUT, exist_ok=True)
    w = weight()
    w.tofile(os.path.join(OUT, "input.f32"))
    meta = {"rows": ROWS, "cols": COLS, "types": {}}
    for t in (T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1, T.Q8_0):
        quantize(w, t).tofile(os.path.join(OUT, f"{t.name}.bin"))
        meta["types"][t.name] = "gguf==0.19.0 numpy quantize()"
    bin_dir = os.environ["LLAMA_CPP_BIN"]
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "f32.gguf")
        one_layer_gguf(src, w)
        for name in ("Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K"):
            dst = os.path.join(tmp, f"{name}.gguf")
            subprocess.run([os.path.join(bin_dir, "llama-quantize"), "--pure", "--token-embedding-type", "f32",
                            "--output-tensor-type", "f32", src, dst, name, "1"], check=True, capture_output=True)
            t = next(t for t in gguf.GGUFReader(dst).tensors if t.name == "blk.0.ffn_down.weight")
            assert T(t.tensor_type).name == name, (t.tensor_type, name)
            np.asarray(t.data).tofile(os.path.join(OUT, f"{name}.bin"))
            meta["types"][name] = "llama-quantize --pure (llama.cpp from llama-cpp-python 0.3.36 sdist)"
        im = importances()
        im.tofile(os.path.join(OUT, "imatrix.f32"))
        rng = np.random.RandomState(5)
        entries = {f"blk.0.{n}.weight": rng.uniform(0.5, 2.0, ROWS).astype(np.float32)
                   for n in ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up")}
        entries["blk.0.ffn_down.weight"] = im
        dat = os.path.join(tmp, "imatrix.dat")
        write_imatrix_dat(dat, entries)
        for name in ("Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K"):
            dst = os.path.join(tmp, f"{name}.imatrix.gguf")
            subprocess.run([os.path.join(bin_dir, "llama-quantize"), "--pure", "--imatrix", dat,
                            "--token-embedding-type", "f32", "--output-tensor-type", "f32",
                            src, dst, name, "1"], check=True, capture_output=True)
            t = next(t for t in gguf.GGUFReader(dst).tensors if t.name == "blk.0.ffn_down.weight")
            assert T(t.tensor_type).name == name, (t.tensor_type, name)
            np.asarray(t.data).tofile(os.path.join(OUT, f"{name}.imatrix.bin"))
            meta["types"][name + ".imatrix"] = "llama-quantize --pure --imatrix (llama.cpp from llama-cpp-python 0.3.36 sdist)"
    with open(os.path.join(OUT, "meta.json"), "w") as f:
        json.dump(meta, f, indent=1)
    print("wrote", os.path.normpath(OUT))


if __name__ == "__main__":
    main()
