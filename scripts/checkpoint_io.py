"""Writing a prequantized fixture and its dequantized twin, shared by the make-*-fixtures
scripts: both directories get the source's tokenizer files; the quantized one gets
config.json with the format's quantization entry, the twin the plain config."""
import json
import shutil

LINEARS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def write_pair(src, out_q, out_d, quant, dequant, qconfig, save, key="quantization_config",
               metadata=None):
    """Writes `quant` to out_q (config.json gets `key: qconfig`) and, unless out_d is
    None, `dequant` to out_d; `save(tensors, path, metadata)` is the safetensors writer
    (torch or numpy)."""
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
        save(dequant, out_d / "model.safetensors", None)
    cfg[key] = qconfig
    (out_q / "config.json").write_text(json.dumps(cfg, indent=1))
    save(quant, out_q / "model.safetensors", metadata)
    print("wrote", out_q, out_d or "")
