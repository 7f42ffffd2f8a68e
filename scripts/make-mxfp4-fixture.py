#!/usr/bin/env python3
"""MXFP4 reference bytes of tests/fixtures/quant/input.f32 (the weight the other ISQ
byte-exactness fixtures use), by ggml's reference quantizer as gguf-py implements it
(`gguf.quants.MXFP4`, from the llama.cpp sources of the llama-cpp-python==0.3.36 sdist:
the PyPI `gguf` 0.19 predates MXFP4). Writes tests/fixtures/quant/MXFP4.bin.
Usage: LLAMA_CPP_DIR=~/.cache/smelt/llama.cpp python3 scripts/make-mxfp4-fixture.py
"""
import json
import os
import sys

import numpy as np

LLAMA = os.path.join(os.environ.get("LLAMA_CPP_DIR", os.path.expanduser("~/.cache/smelt/llama.cpp")),
                     "src", "vendor", "llama.cpp")
sys.path.insert(0, os.path.join(LLAMA, "gguf-py"))
from gguf import GGMLQuantizationType as T  # noqa: E402
from gguf.quants import quantize  # noqa: E402

OUT = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "quant")


def main():
    meta = json.load(open(os.path.join(OUT, "meta.json")))
    w = np.fromfile(os.path.join(OUT, "input.f32"), dtype="<f4").reshape(meta["rows"], meta["cols"])
    quantize(w, T.MXFP4).tofile(os.path.join(OUT, "MXFP4.bin"))


if __name__ == "__main__":
    main()
