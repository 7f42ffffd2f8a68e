"""An MLX-quantized checkpoint of the tiny llama3 fixture, made by MLX itself.

mlx (pip `mlx[cpu]`, 0.32.4) quantizes every attention/MLP linear of
tests/fixtures/tiny/llama3 with `mx.quantize(w, group_size=32, bits=4)` (the hidden size is
32) and writes tests/fixtures/tiny/llama3-mlx4/ as mlx-lm lays a model out: `<name>.weight`
(uint32 packed codes), `<name>.scales`, `<name>.biases` (float16), config.json with
`"quantization": {"group_size": 32, "bits": 4}`. As the reference, the weights
`mx.dequantize` gives back (in f32) are written as a plain f32 checkpoint in
tests/fixtures/tiny/llama3-mlx4-dequant/. Embeddings, norms and the head stay f32.
llama3-mlx-mixed has per-module overrides in its `quantization` map (one module 8-bit
in groups of 64, one `false`), as mlx-lm's mixed recipes write them.

Usage: python scripts/make-mlx-fixtures.py                      (the test fixtures)
       python scripts/make-mlx-fixtures.py SRC_DIR OUT_DIR [GROUP BITS]
         (any plain single-file checkpoint, e.g. the test model's HF snapshot → an MLX
         checkpoint; the dequantized reference is then skipped)
"""
import sys
from pathlib import Path

import mlx.core as mx
import numpy as np
from safetensors.numpy import load_file, save_file

sys.path.insert(0, str(Path(__file__).resolve().parent))
from checkpoint_io import LINEARS, write_pair  # noqa: E402



def convert(src, out_q, out_d, group, bits, overrides=None):
    """`overrides`: module → {"group_size", "bits"} or False (left unquantized), written
    into config.json's `quantization` map as mlx-lm's mixed quantization does."""
    overrides = overrides or {}
    weights = load_file(src / "model.safetensors")
    quant, dequant = {}, {}
    for name, w in weights.items():
        base = name[: -len(".weight")] if name.endswith(".weight") else None
        own = overrides.get(base, {"group_size": group, "bits": bits})
        if base and base.split(".")[-1] in LINEARS and own is not False:
            gs, b = own["group_size"], own["bits"]
            wq, scales, biases = mx.quantize(mx.array(w.astype(np.float16)), group_size=gs, bits=b)
            quant[name] = np.array(wq)
            quant[base + ".scales"] = np.array(scales)
            quant[base + ".biases"] = np.array(biases)
            # Dequantized in f32 (from the stored f16 scales and biases), so the reference
            # is not rounded to f16 a second time.
            dequant[name] = np.array(mx.dequantize(wq, scales.astype(mx.float32),
                                                   biases.astype(mx.float32),
                                                   group_size=gs, bits=b))
        else:
            quant[name] = w
            dequant[name] = w
    write_pair(src, out_q, out_d, quant, dequant,
               {"group_size": group, "bits": bits, **overrides},
               lambda t, path, meta: save_file(t, path, metadata=meta),
               key="quantization", metadata={"format": "mlx"})


root = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "tiny"
if len(sys.argv) > 2:
    group, bits = (int(sys.argv[3]), int(sys.argv[4])) if len(sys.argv) > 4 else (64, 4)
    convert(Path(sys.argv[1]), Path(sys.argv[2]), None, group, bits)
else:
    convert(root / "llama3", root / "llama3-mlx4", root / "llama3-mlx4-dequant", 32, 4)
    # Mixed: one module at 8 bits in groups of 64, one left unquantized.
    convert(root / "llama3", root / "llama3-mlx-mixed", root / "llama3-mlx-mixed-dequant", 32, 4,
            {"model.layers.0.mlp.down_proj": {"group_size": 64, "bits": 8},
             "model.layers.1.self_attn.q_proj": False})
