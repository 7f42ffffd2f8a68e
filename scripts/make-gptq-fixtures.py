"""GPTQ checkpoints of the tiny llama3 fixture, packed by AutoGPTQ itself.

Every attention/MLP linear is quantized round-to-nearest (per group min/max, or symmetric
with zero 2^(bits−1) as AutoGPTQ's quantizer does) and the codes are packed by AutoGPTQ
0.7.1's `QuantLinear.pack` (scripts/reference_packers.py fetches it from PyPI), which
writes the tensors transformers/optimum load: `qweight` int32 [K·bits/32, N] (a bit
stream along the input dim; 3-bit codes straddle words), `qzeros` int32
[groups, N·bits/32] stored as zero − 1, `scales` float16 [groups, N], `g_idx` int32 [K].
Act-order fixtures get a shuffled `g_idx`, so groups are not contiguous. AutoGPTQ packs
zeros 32 outputs at a time, so the tiny model's 16-wide k/v layers stay dense.
The reference is AutoGPTQ's own dequantization (its torch forward, used without the CUDA
extension, applied to the identity), written as a plain f32 checkpoint beside each
fixture (`-dequant`).

Fixtures (tests/fixtures/tiny/): llama3-gptq4 (4-bit, group 32, act-order, asymmetric),
llama3-gptq3 (3-bit, one group per row, symmetric), llama3-gptq8 (8-bit, group 32,
act-order, symmetric), llama3-gptq2 (2-bit, group 32, asymmetric).

Usage: python scripts/make-gptq-fixtures.py    (torch + safetensors; the test fixtures)
       python scripts/make-gptq-fixtures.py SRC_DIR OUT_DIR [GROUP [BITS]]
         (any plain single-file checkpoint → an asymmetric GPTQ one, no reference copy)
"""
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

sys.path.insert(0, str(Path(__file__).resolve().parent))
from reference_packers import gptq_quant_linear  # noqa: E402
from checkpoint_io import LINEARS, write_pair  # noqa: E402

QuantLinear = gptq_quant_linear()


def rtn(w, g_idx, groups, bits, sym):
    """Per-group scales and zeros [N, groups] (scales f16-exact) and the quantized weight."""
    maxq = 2**bits - 1
    n, _ = w.shape
    scales = torch.zeros(n, groups)
    zeros = torch.zeros(n, groups)
    w_hat = torch.zeros_like(w)
    for g in range(groups):
        cols = (g_idx == g).nonzero().flatten()
        blk = w[:, cols]
        lo = blk.min(1).values.clamp(max=0)
        hi = blk.max(1).values.clamp(min=0)
        if sym:
            amax = torch.maximum(-lo, hi)
            s = (2 * amax / maxq).clamp(min=1e-8)
            z = torch.full_like(s, (maxq + 1) / 2)
        else:
            s = ((hi - lo) / maxq).clamp(min=1e-8)
            # z ≥ 1: the v1 format stores z − 1 and z = 0 would wrap.
            z = torch.round(-lo / s).clamp(1, maxq)
        s = s.half().float()
        q = torch.clamp(torch.round(blk / s[:, None]) + z[:, None], 0, maxq)
        w_hat[:, cols] = s[:, None] * (q - z[:, None])
        scales[:, g], zeros[:, g] = s, z
    return scales, zeros, w_hat


def convert(src, out_q, out_d, bits, group, act_order, sym, seed=11):
    gen = torch.Generator().manual_seed(seed)
    weights = load_file(src / "model.safetensors")
    quant, dequant = {}, {}
    for name, w in weights.items():
        base = name[: -len(".weight")] if name.endswith(".weight") else None
        # AutoGPTQ packs zeros 32 outputs at a time: narrower layers stay dense.
        if not (base and base.split(".")[-1] in LINEARS) or w.shape[0] % 32:
            quant[name] = w
            dequant[name] = w.float()
            continue
        w = w.float()
        n, k = w.shape
        gs = k if group == -1 else group
        groups = k // gs
        g_idx = torch.arange(k) // gs
        if act_order:
            g_idx = g_idx[torch.randperm(k, generator=gen)]
        scales, zeros, w_hat = rtn(w, g_idx, groups, bits, sym)
        lin = torch.nn.Linear(k, n, bias=False)
        lin.weight.data = w_hat
        ql = QuantLinear(bits, gs, k, n, False)
        ql.pack(lin, scales, zeros, g_idx.int())
        quant[base + ".qweight"] = ql.qweight.contiguous()
        quant[base + ".qzeros"] = ql.qzeros.contiguous()
        quant[base + ".scales"] = ql.scales.half().contiguous()
        quant[base + ".g_idx"] = ql.g_idx.int().contiguous()
        if out_d is not None:
            with torch.no_grad():
                dequant[name] = ql(torch.eye(k)).T.contiguous()
    write_pair(src, out_q, out_d, quant, dequant,
               {"quant_method": "gptq", "bits": bits, "group_size": group,
                "desc_act": act_order, "sym": sym},
               lambda t, path, meta: save_file(t, path, metadata=meta))


if __name__ == "__main__":
    if len(sys.argv) > 2:
        group = int(sys.argv[3]) if len(sys.argv) > 3 else 64
        bits = int(sys.argv[4]) if len(sys.argv) > 4 else 4
        convert(Path(sys.argv[1]), Path(sys.argv[2]), None, bits, group, False, False)
    else:
        root = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "tiny"
        for name, bits, group, act, sym in (("gptq4", 4, 32, True, False),
                                            ("gptq3", 3, -1, False, True),
                                            ("gptq8", 8, 32, True, True),
                                            ("gptq2", 2, 32, False, False)):
            convert(root / "llama3", root / f"llama3-{name}", root / f"llama3-{name}-dequant",
                    bits, group, act, sym)
