"""An AWQ (GEMM, 4-bit) checkpoint of the tiny llama3 fixture, packed by AutoAWQ itself.

Every attention/MLP linear is quantized round-to-nearest per group (min/max, zero point)
and packed by AutoAWQ 0.2.9's `WQLinear_GEMM.from_linear` (scripts/reference_packers.py
fetches it from PyPI): `qweight` int32 [K, N/8] packed along the output dim with the eight
columns of a word interleaved [0, 2, 4, 6, 1, 3, 5, 7], `qzeros` int32 [K/gs, N/8] packed
the same way (no offset), `scales` float16 [K/gs, N]. config.json gets
`quantization_config: {quant_method: awq, bits: 4, group_size: 32, zero_point: true,
version: gemm}`. AutoAWQ packs 32 outputs at a time, so the tiny model's 16-wide k/v
layers stay dense. The reference is AutoAWQ's own `dequantize_gemm` (with the f16 scales
widened to f32), written as a plain f32 checkpoint in tests/fixtures/tiny/llama3-awq4-dequant/.

Usage: python scripts/make-awq-fixtures.py    (torch + safetensors; the test fixtures)
       python scripts/make-awq-fixtures.py SRC_DIR OUT_DIR [GROUP]
         (any plain single-file checkpoint → an AWQ one, no reference copy)
"""
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

sys.path.insert(0, str(Path(__file__).resolve().parent))
from reference_packers import awq_gemm  # noqa: E402
from checkpoint_io import LINEARS, write_pair  # noqa: E402

WQLinear_GEMM, dequantize_gemm = awq_gemm()


def rtn(w, gs):
    """Scales (f16-exact) and zeros [groups, N], and the quantized weight [N, K]."""
    n, k = w.shape
    g = w.reshape(n, k // gs, gs)
    lo, hi = g.min(2).values, g.max(2).values
    s = ((hi - lo).clamp(min=1e-8) / 15).half().float()
    z = torch.round(-lo / s).clamp(0, 15)
    q = torch.clamp(torch.round(g / s[..., None]) + z[..., None], 0, 15)
    w_hat = (s[..., None] * (q - z[..., None])).reshape(n, k)
    return s.T.contiguous(), z.T.contiguous(), w_hat


def convert(src, out_q, out_d, gs):
    weights = load_file(src / "model.safetensors")
    quant, dequant = {}, {}
    for name, w in weights.items():
        base = name[: -len(".weight")] if name.endswith(".weight") else None
        # AutoAWQ packs 32 outputs at a time: narrower layers stay dense.
        if not (base and base.split(".")[-1] in LINEARS) or w.shape[0] % 32:
            quant[name] = w
            dequant[name] = w.float()
            continue
        w = w.float()
        n, k = w.shape
        scales, zeros, w_hat = rtn(w, gs)
        lin = torch.nn.Linear(k, n, bias=False)
        lin.weight.data = w_hat
        q = WQLinear_GEMM.from_linear(lin, 4, gs, scales=scales, zeros=zeros)
        quant[base + ".qweight"] = q.qweight.contiguous()
        quant[base + ".qzeros"] = q.qzeros.contiguous()
        quant[base + ".scales"] = q.scales.half().contiguous()
        if out_d is not None:
            deq = dequantize_gemm(q.qweight, q.qzeros, q.scales.float(), 4, gs)
            dequant[name] = deq.T.contiguous()
    write_pair(src, out_q, out_d, quant, dequant,
               {"quant_method": "awq", "bits": 4, "group_size": gs, "zero_point": True,
                "version": "gemm"},
               lambda t, path, meta: save_file(t, path, metadata=meta))


if __name__ == "__main__":
    if len(sys.argv) > 2:
        convert(Path(sys.argv[1]), Path(sys.argv[2]), None,
                int(sys.argv[3]) if len(sys.argv) > 3 else 64)
    else:
        root = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "tiny"
        convert(root / "llama3", root / "llama3-awq4", root / "llama3-awq4-dequant", 32)
