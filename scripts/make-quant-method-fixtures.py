#!/usr/bin/env python3
"""Reference quantizations for smelt's HQQ, FP8 and AFQ ISQ methods (tests/quant_methods.rs).

References, all run on the CPU from their PyPI packages:
- AFQ: `mlx` (pip `mlx[cpu]`) `mx.quantize` / `mx.dequantize`, group 64, bits 2/3/4/6/8.
- FP8: `ml_dtypes.float8_e4m3fn` (round to nearest even), per-row scale absmax/448.
- HQQ: `hqq` (needs torch) `Quantizer.quantize(..., axis=0, group_size=64, optimize=True)`
  and `Quantizer.dequantize` in f32, bits 4/8.

Writes tests/fixtures/quant_methods/ (little-endian raw arrays, a few KB each):
  input.f32            16 x 128 weight (zero, constant, outlier, tiny, ramp rows)
  input_tall.f32       40 x 64 weight (HQQ: groups wrap around inside rows)
  afq{b}.u32 .scales.f32 .biases.f32             of input, bits b (MLX's packed weight)
  afq4.deq.f32                                      mx.dequantize of the AFQ4 parts
  fp8.codes.u8 fp8.scales.f32                       of input
  fp8_probe.f32 fp8_probe.codes.u8                  conversion probes (ties, subnormals)
  hqq{b}[_tall].codes.u8 .scale.f32 .zero.f32 .deq.f32
      codes in the weight's row-major order; scale/zero one per group, group g being
      column g of hqq's (64, numel/64) view; deq = Quantizer.dequantize in f32
  meta.json            shapes and package versions

Usage: python scripts/make-quant-method-fixtures.py   (in a venv with the packages:
  pip install numpy ml_dtypes 'mlx[cpu]' torch hqq termcolor)
"""
import json
import os

import ml_dtypes
import mlx.core as mx
import numpy as np
import torch
import hqq
from hqq.core.quantize import Quantizer

OUT = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "quant_methods")
GROUP = 64


def weight(rows, cols, seed):
    rng = np.random.RandomState(seed)
    w = rng.standard_normal((rows, cols)).astype(np.float32) * 0.05
    w[0] = 0.0                                   # an all-zero row
    w[1] = 0.3                                   # a constant row
    w[2, ::37] = 2.5                             # outliers
    w[3] *= 1e-4                                 # tiny values
    w[4] = np.linspace(-1, 1, cols, dtype=np.float32)
    w[5] = np.abs(w[5])                          # all positive: |max| > |min|
    w[6] = -np.abs(w[6])                         # all negative
    w[7, :GROUP] = -0.2                          # one constant group, one random
    w[8] *= 60                                   # large: HQQ errors past its shrink floor
    return w


def save(name, arr):
    np.ascontiguousarray(arr).tofile(os.path.join(OUT, name))


def afq(w, meta):
    for bits in (2, 3, 4, 6, 8):
        q, s, b = mx.quantize(mx.array(w), group_size=GROUP, bits=bits)
        d = np.array(mx.dequantize(q, s, b, group_size=GROUP, bits=bits), dtype=np.float32)
        s, b = np.array(s, dtype=np.float32), np.array(b, dtype=np.float32)
        save(f"afq{bits}.u32", np.array(q, dtype=np.uint32))
        save(f"afq{bits}.scales.f32", s)
        save(f"afq{bits}.biases.f32", b)
        if bits == 4:   # one dequantized output is enough to pin w = scale*q + bias
            save(f"afq{bits}.deq.f32", d)
    meta["afq"] = f"mlx {mx.__version__} mx.quantize/dequantize, group {GROUP}"


def fp8(w, meta):
    absmax = np.abs(w).max(axis=1)
    scale = np.where(absmax > 0, absmax / np.float32(448.0), np.float32(1.0)).astype(np.float32)
    codes = (w / scale[:, None]).astype(ml_dtypes.float8_e4m3fn).view(np.uint8)
    save("fp8.codes.u8", codes)
    save("fp8.scales.f32", scale)
    # Probes: every representable value, every midpoint between neighbours (ties), points
    # just either side of them, subnormals, and random values within +-464.
    vals = np.arange(256, dtype=np.uint8).view(ml_dtypes.float8_e4m3fn).astype(np.float32)
    pos = np.unique(vals[np.isfinite(vals) & (vals >= 0)])
    mids = (pos[:-1] + pos[1:]) / 2
    probe = np.concatenate([
        pos, mids, np.nextafter(mids, 0, dtype=np.float32),
        np.nextafter(mids, 1000, dtype=np.float32),
        np.random.RandomState(5).uniform(-460, 460, 512).astype(np.float32),
        np.random.RandomState(6).uniform(-2**-5, 2**-5, 256).astype(np.float32),
    ]).astype(np.float32)
    probe = np.concatenate([probe, -probe])
    save("fp8_probe.f32", probe)
    save("fp8_probe.codes.u8", probe.astype(ml_dtypes.float8_e4m3fn).view(np.uint8))
    meta["fp8"] = f"ml_dtypes {ml_dtypes.__version__} float8_e4m3fn, scale absmax/448 per row"


def hqq_ref(w, suffix, meta):
    for axis, tag in ((0, ""), (1, "_axis1")):
        for bits in (4, 8):
            t = torch.from_numpy(w)
            wq, m = Quantizer.quantize(t, nbits=bits, group_size=GROUP, axis=axis,
                                       optimize=True, bitpack=False, device="cpu")
            # axis 0: the (64, L) view of the flat weight; axis 1: the (L, 64) view. Either
            # way reshape(-1) gives codes in the weight's order for axis 1 and hqq's view
            # order for axis 0, and one scale / zero per group.
            codes = wq.to(torch.uint8).numpy().reshape(-1)
            scale = m["scale"].float().numpy().reshape(-1)
            zero = m["zero"].float().numpy().reshape(-1)
            # The package's own dequantize (packed, as a model would hold it), in f32.
            wq_p, m_p = Quantizer.quantize(t, nbits=bits, group_size=GROUP, axis=axis,
                                           optimize=True, bitpack=True, device="cpu")
            m_p["compute_dtype"] = torch.float32
            deq = Quantizer.dequantize(wq_p, m_p).float().numpy()
            save(f"hqq{bits}{tag}{suffix}.codes.u8", codes)
            save(f"hqq{bits}{tag}{suffix}.scale.f32", scale)
            save(f"hqq{bits}{tag}{suffix}.zero.f32", zero)
            save(f"hqq{bits}{tag}{suffix}.deq.f32", deq)
    meta["hqq"] = (f"hqq {getattr(hqq, '__version__', '0.2.8')} on torch {torch.__version__} CPU: "
                   "Quantizer.quantize(axis=0 and axis=1 (files hqq*_axis1*), group_size=64, "
                   "optimize=True) (legacy proximal optimiser, 20 iterations, early stop), "
                   "Quantizer.dequantize in f32")


def main():
    os.makedirs(OUT, exist_ok=True)
    meta = {"input": [16, 128], "input_tall": [40, 64], "group_size": GROUP}
    w = weight(16, 128, 1234)
    tall = weight(40, 64, 99)
    save("input.f32", w)
    save("input_tall.f32", tall)
    afq(w, meta)
    fp8(w, meta)
    hqq_ref(w, "", meta)
    hqq_ref(tall, "_tall", meta)
    with open(os.path.join(OUT, "meta.json"), "w") as f:
        json.dump(meta, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
