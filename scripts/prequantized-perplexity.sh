#!/usr/bin/env bash
# End-to-end check of the prequantized loaders on real weights: turns the plain test model
# (HuggingFaceTB/SmolLM2-135M-Instruct from the local HF cache, made by
# fetch-test-models.sh) into GPTQ-4bit, GPTQ-3bit, AWQ-4bit, MLX-4bit, bitsandbytes NF4 and
# LLM.int8, and blockwise FP8 checkpoints with the reference packers (AutoGPTQ, AutoAWQ,
# MLX, bitsandbytes, torch float8: scripts/make-*-fixtures.py in SRC OUT mode), loads each
# with smelt, measures perplexity on GPL-3 (--ctx 512) and fails when one lands outside
# its stated bound relative to the plain model's.
#
# Bounds (perplexity ÷ plain f32's): 8-bit formats (int8, FP8) ≤ 1.03; 4-bit ≤ 1.40 (the
# packers are given round-to-nearest codes, not GPTQ/AWQ-optimised ones, on a 135M model
# that quantizes badly: smelt's own AFQ4 ISQ is 1.27); 3-bit ≤ 3.5 (own AFQ3 ISQ: 3.07).
#
# Needs the helper venv with torch, bitsandbytes, mlx, transformers and accelerate
# (pip install torch bitsandbytes "mlx[cpu]" transformers accelerate into it).
# Usage: scripts/prequantized-perplexity.sh [FORMAT ...]   (default: all)
# Env: SMELT (a built smelt binary; default target/release via cargo build), TEXT.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
CACHE="${SMELT_TEST_MODELS:-$HOME/.cache/smelt-test-models}"
PY="$CACHE/venv/bin/python"
OUT="$CACHE/prequantized"
TEXT="${TEXT:-/usr/share/common-licenses/GPL-3}"
HUB="${HF_HUB_CACHE:-${HF_HOME:-$HOME/.cache/huggingface}/hub}"
SRC="$(ls -d "$HUB"/models--HuggingFaceTB--SmolLM2-135M-Instruct/snapshots/*/ | head -1)"
[ -f "$SRC/model.safetensors" ] || { echo "no plain test model in $HUB: run scripts/fetch-test-models.sh" >&2; exit 1; }
"$PY" -c "import torch, bitsandbytes, mlx.core, transformers, accelerate" 2>/dev/null || {
  echo "the helper venv $CACHE/venv lacks torch/bitsandbytes/mlx/transformers/accelerate" >&2; exit 1; }
if [ -z "${SMELT:-}" ]; then
  cargo build --release --quiet
  SMELT="${CARGO_TARGET_DIR:-target}/release/smelt"
fi
FORMATS=("$@")
[ ${#FORMATS[@]} -gt 0 ] || FORMATS=(gptq4 gptq3 awq4 mlx4 bnb-nf4 bnb-int8 fp8-block)

make_checkpoint() { # FORMAT DIR
  case "$1" in
    gptq4) "$PY" scripts/make-gptq-fixtures.py "$SRC" "$2" 64 4 ;;
    gptq3) "$PY" scripts/make-gptq-fixtures.py "$SRC" "$2" 64 3 ;;
    awq4) "$PY" scripts/make-awq-fixtures.py "$SRC" "$2" 64 ;;
    mlx4) "$PY" scripts/make-mlx-fixtures.py "$SRC" "$2" 64 4 ;;
    bnb-nf4) "$PY" scripts/make-bnb-fp8-fixtures.py "$SRC" "$2" nf4 ;;
    bnb-int8) "$PY" scripts/make-bnb-fp8-fixtures.py "$SRC" "$2" int8 ;;
    fp8-block) "$PY" scripts/make-bnb-fp8-fixtures.py "$SRC" "$2" fp8-block ;;
    *) echo "unknown format $1" >&2; exit 2 ;;
  esac
}
bound() { case "$1" in bnb-int8|fp8-block) echo 1.03 ;; gptq3) echo 3.5 ;; *) echo 1.40 ;; esac; }
# Runs smelt's perplexity on checkpoint $1; sets PPL and LAYERS (the load log's storage).
run_ppl() {
  local log
  log="$("$SMELT" perplexity --file "$TEXT" --ctx 512 plain -m "$1" 2>&1)" || { echo "$log" >&2; return 1; }
  PPL="$(echo "$log" | sed -n 's/^Final estimate: PPL = \([0-9.]*\).*/\1/p')"
  LAYERS="$(echo "$log" | sed -n 's/.*linears \(.*\)$/\1/p' | head -1 | sed 's/\x1b\[[0-9;]*m//g')"
}

run_ppl "$SRC"
base="$PPL"
echo "| checkpoint | perplexity | ÷ plain | bound | layers |"
echo "|---|---|---|---|---|"
echo "| plain f32 | $base | 1.000 | | |"
fail=0
for f in "${FORMATS[@]}"; do
  dir="$OUT/$f"
  [ -f "$dir/model.safetensors" ] || make_checkpoint "$f" "$dir" >/dev/null 2>&1
  run_ppl "$dir"
  p="$PPL"
  r="$(awk -v p="$p" -v b="$base" 'BEGIN { printf "%.3f", p / b }')"
  ok="$(awk -v r="$r" -v m="$(bound "$f")" 'BEGIN { print (r <= m) ? "ok" : "OVER" }')"
  echo "| $f | $p | $r | ≤ $(bound "$f") $ok | $LAYERS |"
  [ "$ok" = ok ] || fail=1
done
exit $fail
