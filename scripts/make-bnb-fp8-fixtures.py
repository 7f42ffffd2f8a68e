"""bitsandbytes and blockwise-FP8 checkpoints of the tiny llama3 fixture.

bitsandbytes (pip `bitsandbytes`, 0.50.2, its CPU backend) quantizes every attention/MLP
linear and the tensors are written as transformers saves a bnb model
(`Linear4bit`/`Int8Params` state dicts, see ../shared/FORMATS.md):
- 4-bit: `weight` u8 [(n+1)/2, 1] (two codes a byte, first element in the high nibble),
  then `QuantState.as_dict(packed=True)` under `weight.`: `absmax`, `quant_map`,
  nested `nested_absmax` / `nested_quant_map`, and `quant_state.bitsandbytes__nf4|fp4`
  (JSON bytes). nf4 is written nested (compress_statistics), fp4 not.
- int8 (LLM.int8): `weight` i8 [out, in] and `SCB` f32 [out] from
  `int8_vectorwise_quant`, plus `weight_format` (u8 0, row-major).
The reference for each is what bitsandbytes itself dequantizes (`dequantize_4bit`,
`int8_vectorwise_dequant`), written as a plain f32 checkpoint beside it (`-dequant`).

Blockwise FP8 follows transformers' fine-grained FP8 quantizer (`quant_method: fp8`,
`weight_block_size`): per [bo, bi] block scale = absmax / 448, codes = torch's
float8_e4m3fn cast of w / scale (clamped to ±448), `weight_scale_inv` = scale f32
[ceil(out/bo), ceil(in/bi)]. The fixture uses [24, 24] blocks so edge blocks are partial;
a second one (`fp8-tensor`) has no block size and one scalar scale per tensor. Reference:
torch's float8 → f32 times the expanded scales.

Usage: python scripts/make-bnb-fp8-fixtures.py              (the test fixtures)
       python scripts/make-bnb-fp8-fixtures.py SRC_DIR OUT_DIR METHOD
         METHOD: nf4 | fp4 | int8 | fp8-block (any plain single-file checkpoint, e.g. the
         test model's HF snapshot; blocks of 64 for 4-bit, [128, 128] for FP8; no
         reference copy)
"""
import sys
from pathlib import Path

import torch
import bitsandbytes.functional as F
from safetensors.torch import load_file, save_file

sys.path.insert(0, str(Path(__file__).resolve().parent))
from checkpoint_io import LINEARS, write_pair  # noqa: E402

E4M3_MAX = 448.0


def quantize_4bit(w, kind, blocksize):
    q, state = F.quantize_4bit(w, blocksize=blocksize, quant_type=kind,
                               compress_statistics=(kind == "nf4"))
    out = {"weight": q}
    for k, v in state.as_dict(packed=True).items():
        out["weight." + k] = v
    return out, F.dequantize_4bit(q, state).float()


def quantize_int8(w):
    cb, scb, _ = F.int8_vectorwise_quant(w.half())
    out = {"weight": cb, "SCB": scb, "weight_format": torch.tensor([0], dtype=torch.uint8)}
    return out, F.int8_vectorwise_dequant(cb, scb).float()


def quantize_fp8(w, block):
    rows, cols = w.shape
    bo, bi = block if block else (rows, cols)
    nr, nc = -(-rows // bo), -(-cols // bi)
    codes = torch.empty(rows, cols, dtype=torch.float8_e4m3fn)
    scale = torch.empty(nr, nc, dtype=torch.float32)
    for r in range(nr):
        for c in range(nc):
            blk = w[r * bo:(r + 1) * bo, c * bi:(c + 1) * bi]
            s = (blk.abs().max() / E4M3_MAX).clamp(min=1e-12)
            scale[r, c] = s
            codes[r * bo:(r + 1) * bo, c * bi:(c + 1) * bi] = \
                (blk / s).clamp(-E4M3_MAX, E4M3_MAX).to(torch.float8_e4m3fn)
    expanded = scale.repeat_interleave(bo, 0)[:rows].repeat_interleave(bi, 1)[:, :cols]
    deq = codes.float() * expanded
    if block:
        return {"weight": codes, "weight_scale_inv": scale}, deq
    return {"weight": codes, "weight_scale_inv": scale.reshape(())}, deq


def config_for(method, block):
    if method in ("nf4", "fp4"):
        return {"quant_method": "bitsandbytes", "load_in_4bit": True, "load_in_8bit": False,
                "bnb_4bit_quant_type": method, "bnb_4bit_use_double_quant": method == "nf4",
                "bnb_4bit_compute_dtype": "float32", "llm_int8_skip_modules": ["lm_head"]}
    if method == "int8":
        return {"quant_method": "bitsandbytes", "load_in_8bit": True, "load_in_4bit": False,
                "llm_int8_threshold": 6.0}
    cfg = {"quant_method": "fp8", "fmt": "e4m3", "activation_scheme": "dynamic",
           "modules_to_not_convert": ["lm_head"]}
    if block:
        cfg["weight_block_size"] = list(block)
    return cfg


def convert(src, out_q, out_d, method, blocksize, block):
    weights = load_file(src / "model.safetensors")
    quant, dequant = {}, {}
    for name, w in weights.items():
        base = name[: -len(".weight")] if name.endswith(".weight") else None
        if not (base and base.split(".")[-1] in LINEARS):
            quant[name] = w
            dequant[name] = w.float()
            continue
        w32 = w.float()
        if method in ("nf4", "fp4"):
            parts, deq = quantize_4bit(w32, method, blocksize)
        elif method == "int8":
            parts, deq = quantize_int8(w32)
        else:
            parts, deq = quantize_fp8(w32, block)
        for k, v in parts.items():
            quant[f"{base}.{k}"] = v.contiguous()
        dequant[name] = deq.contiguous()
    write_pair(src, out_q, out_d, quant, dequant, config_for(method, block),
               lambda t, path, meta: save_file(t, path, metadata=meta))


if __name__ == "__main__":
    if len(sys.argv) > 3:
        method = sys.argv[3]
        assert method in ("nf4", "fp4", "int8", "fp8-block"), method
        convert(Path(sys.argv[1]), Path(sys.argv[2]), None, method, 64, (128, 128))
    else:
        root = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "tiny"
        src = root / "llama3"
        for name, method, block in (("bnb-nf4", "nf4", None), ("bnb-fp4", "fp4", None),
                                    ("bnb-int8", "int8", None),
                                    ("fp8-block", "fp8", (24, 24)),
                                    ("fp8-tensor", "fp8", None)):
            # 4-bit blocks of 32 so the 32-wide rows of the tiny model hold whole blocks
            # and the 16-row k/v layers still have two.
            convert(src, root / f"llama3-{name}", root / f"llama3-{name}-dequant",
                    method, 32, block)
