"""Cut llama.cpp's imatrix files for the test model down to small test fixtures.

Input: the two files llama.cpp 3aa0ce9 made with
    llama-imatrix -m smollm2-f32.gguf -f /usr/share/common-licenses/GPL-3 -c 512 -t 2 -o imatrix-gpl3.gguf
    llama-imatrix ... --output-format dat -o imatrix-gpl3.dat
(provided in ../shared/fixtures/imatrix/). Output: tests/fixtures/imatrix/llama-cpp-gpl3-l0-2.{dat,gguf}
holding only layers 0-2, in the same two formats (legacy .dat keeps its ncall and the
trailer; the GGUF keeps in_sum2/counts and the imatrix.* metadata).

Usage: python scripts/make-imatrix-fixtures.py SHARED_IMATRIX_DIR  (needs the gguf package)
"""
import struct
import sys
from pathlib import Path

import gguf
import numpy as np

src = Path(sys.argv[1])
out = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "imatrix"
out.mkdir(parents=True, exist_ok=True)
keep = lambda name: name.startswith(("blk.0.", "blk.1.", "blk.2."))

b = (src / "imatrix-gpl3.dat").read_bytes()
o = 0
(n,) = struct.unpack_from("<i", b, o); o += 4
entries = []
for _ in range(n):
    (l,) = struct.unpack_from("<i", b, o); o += 4
    name = b[o:o + l]; o += l
    ncall, nval = struct.unpack_from("<ii", b, o); o += 8
    vals = b[o:o + 4 * nval]; o += 4 * nval
    if keep(name.decode()):
        entries.append((name, ncall, nval, vals))
trailer = b[o:]
with open(out / "llama-cpp-gpl3-l0-2.dat", "wb") as f:
    f.write(struct.pack("<i", len(entries)))
    for name, ncall, nval, vals in entries:
        f.write(struct.pack("<i", len(name)) + name + struct.pack("<ii", ncall, nval) + vals)
    f.write(trailer)

r = gguf.GGUFReader(src / "imatrix-gpl3.gguf")
w = gguf.GGUFWriter(out / "llama-cpp-gpl3-l0-2.gguf", arch=None)
w.add_type("imatrix")
w.add_array("imatrix.datasets", list(r.fields["imatrix.datasets"].contents()))
w.add_uint32("imatrix.chunk_count", int(r.fields["imatrix.chunk_count"].contents()))
w.add_uint32("imatrix.chunk_size", int(r.fields["imatrix.chunk_size"].contents()))
for t in r.tensors:
    if keep(t.name):
        w.add_tensor(t.name, np.array(t.data, dtype=np.float32).reshape(list(reversed(t.shape.tolist()))))
w.write_header_to_file()
w.write_kv_data_to_file()
w.write_tensors_to_file()
w.close()
print("wrote", *(p.name for p in out.iterdir()))
