#!/usr/bin/env python3
"""Write an f32 copy of a GGUF (every tensor dequantized, metadata kept), the input
llama-quantize needs to make same-type files for side-by-side benchmarks and perplexity.
Usage: gguf-to-f32.py IN.gguf OUT.gguf   (needs `pip install gguf numpy`)"""
import sys

import numpy as np
from gguf import GGUFReader, GGUFWriter, GGMLQuantizationType, GGUFValueType
from gguf.quants import dequantize


def main():
    src, dst = sys.argv[1], sys.argv[2]
    r = GGUFReader(src)
    arch = r.fields["general.architecture"].contents()
    w = GGUFWriter(dst, arch)
    for key, f in r.fields.items():
        if key.startswith("GGUF.") or key in ("general.architecture", "general.file_type"):
            continue
        t = f.types[0]
        if t == GGUFValueType.ARRAY:
            w.add_key_value(key, f.contents(), t, sub_type=f.types[-1])
        else:
            w.add_key_value(key, f.contents(), t)
    w.add_file_type(0)
    for t in r.tensors:
        q = GGMLQuantizationType(t.tensor_type)
        a = np.array(t.data, dtype=np.float32) if q == GGMLQuantizationType.F32 else dequantize(t.data, q)
        w.add_tensor(t.name, a.reshape([int(d) for d in reversed(t.shape)]).astype(np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


if __name__ == "__main__":
    main()
