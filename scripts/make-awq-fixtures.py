"""An AWQ-layout (GEMM, 4-bit) checkpoint of the tiny llama3 fixture.

Packs round-to-nearest 4-bit codes of every attention/MLP linear as AutoAWQ's GEMM
layout documents (../shared/FORMATS.md): `qweight` int32 [K, N/8] packed along the
output dim with the eight columns of a word interleaved [0, 2, 4, 6, 1, 3, 5, 7],
`qzeros` int32 [K/gs, N/8] packed the same way (no offset), `scales` float16 [K/gs, N].
config.json gets `quantization_config: {quant_method: awq, bits: 4, group_size: 32,
zero_point: true, version: gemm}`. The reference is the documented dequantization
W[n, k] = scale[k/gs, n] · (q[k, n] − zero[k/gs, n]) in f32, written as a plain checkpoint
in tests/fixtures/tiny/llama3-awq4-dequant/.

Usage: python scripts/make-awq-fixtures.py   (numpy + safetensors; the test fixtures)
       python scripts/make-awq-fixtures.py SRC_DIR OUT_DIR [GROUP]
         (any plain single-file llama checkpoint → an AWQ-layout one, no reference copy)
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
    src, out_q, out_d = root / "llama3", root / "llama3-awq4", root / "llama3-awq4-dequant"
    GS = 32
ORDER = [0, 2, 4, 6, 1, 3, 5, 7]
LINEARS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def pack_interleaved(m):
    """(R, N) 4-bit values → (R, N/8) int32, nibble i of word j = column 8j + ORDER[i]."""
    r, n = m.shape
    out = np.zeros((r, n // 8), np.uint32)
    for i, col in enumerate(ORDER):
        out |= m[:, col::8].astype(np.uint32) << (4 * i)
    return out.view(np.int32)


weights = load_file(src / "model.safetensors")
quant, dequant = {}, {}
for name, w in weights.items():
    base = name[: -len(".weight")] if name.endswith(".weight") else None
    if not (base and base.split(".")[-1] in LINEARS):
        quant[name] = w
        dequant[name] = w
        continue
    wt = w.T  # (K, N)
    k, n = wt.shape
    groups = k // GS
    g = wt.reshape(groups, GS, n)
    lo, hi = g.min(1), g.max(1)
    scales = (np.maximum(hi - lo, 1e-8) / 15.0).astype(np.float16)
    s = scales.astype(np.float32)
    zeros = np.clip(np.round(-lo / s), 0, 15).astype(np.uint32)
    q = np.clip(np.round(g / s[:, None, :] + zeros[:, None, :]), 0, 15).astype(np.uint32).reshape(k, n)
    quant[base + ".qweight"] = pack_interleaved(q)
    quant[base + ".qzeros"] = pack_interleaved(zeros)
    quant[base + ".scales"] = scales
    deq = np.repeat(s, GS, 0) * (q.astype(np.float32) - np.repeat(zeros, GS, 0).astype(np.float32))
    dequant[name] = deq.T.copy()

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
cfg["quantization_config"] = {"quant_method": "awq", "bits": 4, "group_size": GS,
                              "zero_point": True, "version": "gemm"}
(out_q / "config.json").write_text(json.dumps(cfg, indent=1))
# safetensors.numpy writes the raw buffer: make every array C-contiguous first
# (reductions such as min(axis=1) return Fortran-ordered results).
save_file({k: np.ascontiguousarray(v) for k, v in quant.items()}, out_q / "model.safetensors")
if out_d is not None:
    save_file({k: np.ascontiguousarray(v) for k, v in dequant.items()}, out_d / "model.safetensors")
print("wrote", out_q, out_d)
