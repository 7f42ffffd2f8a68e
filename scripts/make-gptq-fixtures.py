"""A GPTQ-layout checkpoint of the tiny llama3 fixture, with act-order.

Packs round-to-nearest 4-bit codes of every attention/MLP linear into the GPTQ tensors as
transformers/optimum/AutoGPTQ lay them out (documented in ../shared/FORMATS.md):
`qweight` int32 [K/8, N] packed along the input dim (lowest k in the low bits), `qzeros`
int32 [K/gs, N/8] packed along N and stored as zero − 1 (the classic v1 format),
`scales` float16 [K/gs, N], `g_idx` int32 [K] — here a shuffled act-order assignment so
groups are not contiguous. config.json gets `quantization_config: {quant_method: gptq,
bits: 4, group_size: 32, desc_act: true, sym: false}`. The reference is the documented
dequantization W[n, k] = scale[g(k), n] · (q[k, n] − (qzeros[g(k), n] + 1)) in f32,
written as a plain checkpoint in tests/fixtures/tiny/llama3-gptq4-dequant/.

Usage: python scripts/make-gptq-fixtures.py   (numpy + safetensors; the test fixtures)
       python scripts/make-gptq-fixtures.py SRC_DIR OUT_DIR [GROUP]
         (any plain single-file llama checkpoint → a GPTQ-layout one, no reference copy)
"""
import sys
import json
import shutil
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file, save_file

root = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "tiny"
if len(sys.argv) > 2:
    src, out_q, out_d = Path(sys.argv[1]), Path(sys.argv[2]), None
    GS = int(sys.argv[3]) if len(sys.argv) > 3 else 64
else:
    src, out_q, out_d = root / "llama3", root / "llama3-gptq4", root / "llama3-gptq4-dequant"
    GS = 32
BITS, PF = 4, 8
LINEARS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
rng = np.random.RandomState(11)

weights = load_file(src / "model.safetensors")
quant, dequant = {}, {}
for name, w in weights.items():
    base = name[: -len(".weight")] if name.endswith(".weight") else None
    if not (base and base.split(".")[-1] in LINEARS):
        quant[name] = w
        dequant[name] = w
        continue
    n, k = w.shape  # (out, in); GPTQ works on W^T: (K, N)
    groups = k // GS
    g_idx = np.repeat(np.arange(groups), GS)
    rng.shuffle(g_idx)  # act-order: each group's columns scattered over the row
    q = np.zeros((k, n), np.uint32)
    scales = np.zeros((groups, n), np.float16)
    zeros = np.zeros((groups, n), np.uint32)
    for g in range(groups):
        cols = np.where(g_idx == g)[0]
        block = w[:, cols].T  # (GS, N)
        lo, hi = block.min(0), block.max(0)
        s = np.maximum(hi - lo, 1e-8) / 15.0
        # z ≥ 1: the v1 format stores z − 1, and z = 0 would wrap (AutoGPTQ's known quirk).
        z = np.clip(np.round(-lo / s), 1, 15)
        scales[g] = s.astype(np.float16)
        s16 = scales[g].astype(np.float32)
        zeros[g] = z.astype(np.uint32)
        q[cols] = np.clip(np.round(block / s16 + z), 0, 15).astype(np.uint32)
    qweight = np.zeros((k // PF, n), np.uint32)
    for j in range(PF):
        qweight |= q[j::PF] << (BITS * j)
    stored = zeros - 1  # v1: zero − 1
    qzeros = np.zeros((groups, n // PF), np.uint32)
    for j in range(PF):
        qzeros |= stored[:, j::PF] << (BITS * j)
    quant[base + ".qweight"] = qweight.view(np.int32)
    quant[base + ".qzeros"] = qzeros.view(np.int32)
    quant[base + ".scales"] = scales
    quant[base + ".g_idx"] = g_idx.astype(np.int32)
    deq = scales.astype(np.float32)[g_idx] * (q.astype(np.float32) - (stored[g_idx] + 1).astype(np.float32))
    dequant[name] = deq.T.copy()  # back to (out, in)

for d in (out_q, out_d):
    if d is None:
        continue
    d.mkdir(parents=True, exist_ok=True)
    for f in ("tokenizer.json", "tokenizer_config.json", "generation_config.json"):
        if (src / f).exists():
            shutil.copy(src / f, d / f)
cfg = json.loads((src / "config.json").read_text())
if out_d is not None:
    (out_d / "config.json").write_text(json.dumps(cfg, indent=1))
cfg["quantization_config"] = {"quant_method": "gptq", "bits": BITS, "group_size": GS,
                              "desc_act": True, "sym": False}
(out_q / "config.json").write_text(json.dumps(cfg, indent=1))
save_file({k: np.ascontiguousarray(v) for k, v in quant.items()}, out_q / "model.safetensors")
if out_d is not None:
    save_file({k: np.ascontiguousarray(v) for k, v in dequant.items()}, out_d / "model.safetensors")
print("wrote", out_q, out_d)
