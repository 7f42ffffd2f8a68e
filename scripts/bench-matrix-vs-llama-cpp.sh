#!/usr/bin/env bash
# The whole speed matrix of docs/PERFORMANCE.md against llama.cpp, one section after the
# other (never two at once: 2 cores), each section's output in OUT/NAME.log:
#   gguf-{1.5b,test}-{1,2}t     pp512 / tg128 on the 1.5 B Q4_K_M and the test GGUF
#   isq-{Q4K,Q8_0}-{1,2}t       plain test model + ISQ vs llama-quantize --pure files
#   avx2-{1.5b,test}-2t         SMELT_ISA=avx2 vs llama.cpp built without AVX-512
#   busy-{1.5b,test}-2t         the same as gguf-*-2t with `yes` keeping core 1 busy
#   serve-{test,1.5b}[-busy]    scripts/bench-serve-vs-llama-cpp.sh
#   ppl-1.5b, load-1.5b         perplexity wall time; load + one token, vs llama.cpp
# Usage: scripts/bench-matrix-vs-llama-cpp.sh OUT [SECTION…]   (default: every section)
# Env: ROUNDS (5), LLAMA_CPP_BIN / LLAMA_CPP_AVX2_BIN (default: scripts/build-llama-cpp.sh).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
OUT="${1:?usage: $0 OUT [SECTION…]}"; shift
mkdir -p "$OUT"
ROUNDS="${ROUNDS:-5}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/smelt/target}"
LLAMA_CPP_BIN="${LLAMA_CPP_BIN:-$(bash scripts/build-llama-cpp.sh)}"
export LLAMA_CPP_BIN
TEST_GGUF="$(bash scripts/fetch-test-models.sh)"
BIG="$(bash scripts/fetch-bench-model.sh)"
CACHE="$HOME/.cache/smelt/bench"
PLAIN="plain -m HuggingFaceTB/SmolLM2-135M-Instruct"
TEXT=/usr/share/common-licenses/GPL-3
PY="${SMELT_TEST_MODELS:-$HOME/.cache/smelt-test-models}/venv/bin/python"
cargo build --release --quiet
SMELT="$CARGO_TARGET_DIR/release/smelt"

same_type_file() { # TYPE → llama-quantize --pure file of the plain test model's weights
  local f="$CACHE/smol-$1.gguf"
  if [ ! -f "$f" ]; then
    [ -f "$CACHE/smol-f32.gguf" ] || "$PY" scripts/gguf-to-f32.py "$TEST_GGUF" "$CACHE/smol-f32.gguf"
    "$LLAMA_CPP_BIN/llama-quantize" --pure --token-embedding-type f32 --output-tensor-type f32 \
      "$CACHE/smol-f32.gguf" "$f" "$1" 2 >/dev/null 2>&1
  fi
  echo "$f"
}
busy_start() { taskset -c 1 yes >/dev/null & BUSY=$!; }
busy_stop() { kill "$BUSY"; wait "$BUSY" 2>/dev/null || true; }
host() { lscpu | grep -E '^Model name'; grep -m1 '^flags' /proc/cpuinfo | tr ' ' '\n' | grep -E 'avx|vnni|amx|fma|f16c' | tr '\n' ' '; echo; }

section() {
  local name="$1"
  echo "[bench-matrix] $name $(date -u +%H:%M:%S)" >&2
  { echo "# $name, $(date -u '+%F %H:%M UTC'), commit $(git rev-parse --short HEAD)"; host; } > "$OUT/$name.log"
  case "$name" in
    gguf-1.5b-2t) REPS=2 bash scripts/bench-vs-llama-cpp.sh "$BIG" 2 "$ROUNDS" ;;
    gguf-1.5b-1t) REPS=1 bash scripts/bench-vs-llama-cpp.sh "$BIG" 1 "$ROUNDS" ;;
    gguf-test-2t) bash scripts/bench-vs-llama-cpp.sh "$TEST_GGUF" 2 "$ROUNDS" ;;
    gguf-test-1t) REPS=2 bash scripts/bench-vs-llama-cpp.sh "$TEST_GGUF" 1 "$ROUNDS" ;;
    isq-Q4K-*|isq-Q8_0-*)
      local ty="${name#isq-}"; ty="${ty%-*}"; local t="${name##*-}"; t="${t%t}"
      local lty="$ty"; [ "$ty" = Q4K ] && lty=Q4_K
      SMELT_ARGS="--isq $ty" SMELT_LOADER="$PLAIN" REPS=2 \
        bash scripts/bench-vs-llama-cpp.sh "$(same_type_file "$lty")" "$t" "$ROUNDS" ;;
    avx2-1.5b-2t|avx2-test-2t)
      local f="$BIG"; [ "$name" = avx2-test-2t ] && f="$TEST_GGUF"
      SMELT_ISA=avx2 LLAMA_CPP_BIN="${LLAMA_CPP_AVX2_BIN:-$(LLAMA_CPP_VARIANT=avx2 bash scripts/build-llama-cpp.sh)}" \
        REPS=2 bash scripts/bench-vs-llama-cpp.sh "$f" 2 "$ROUNDS" ;;
    busy-1.5b-2t) busy_start; REPS=2 bash scripts/bench-vs-llama-cpp.sh "$BIG" 2 "$ROUNDS"; busy_stop ;;
    busy-test-2t) busy_start; bash scripts/bench-vs-llama-cpp.sh "$TEST_GGUF" 2 "$ROUNDS"; busy_stop ;;
    serve-test) bash scripts/bench-serve-vs-llama-cpp.sh "$TEST_GGUF" 2 3 ;;
    serve-test-busy) busy_start; bash scripts/bench-serve-vs-llama-cpp.sh "$TEST_GGUF" 2 3; busy_stop ;;
    serve-1.5b) N=32 bash scripts/bench-serve-vs-llama-cpp.sh "$BIG" 2 2 ;;
    ppl-1.5b)
      for round in 1 2; do
        /usr/bin/time -f "smelt perplexity wall %e s, peak RSS %M KiB" \
          "$SMELT" --log info -t 2 perplexity --file "$TEXT" gguf -f "$BIG" 2>&1 | grep -E "wall|PPL|perplexity|loaded" | tail -4
        /usr/bin/time -f "llama-perplexity wall %e s, peak RSS %M KiB" \
          "$LLAMA_CPP_BIN/llama-perplexity" -m "$BIG" -f "$TEXT" -c 512 -t 2 -fa off 2>&1 \
          | grep -E "wall|Final estimate|load time" | tail -3
      done ;;
    load-1.5b) # load + an 8-token prompt + 1 token, page cache warm, alternated
      for round in 1 2 3 4 5; do
        /usr/bin/time -f "smelt load+1 wall %e s, peak RSS %M KiB" "$SMELT" --log error -t 2 \
          --prompt "def fibonacci(n):" --max-tokens 1 --temperature 0 gguf -f "$BIG" 2>&1 | grep wall
        /usr/bin/time -f "llama-simple load+1 wall %e s, peak RSS %M KiB" \
          "$LLAMA_CPP_BIN/llama-simple" -m "$BIG" -n 1 "def fibonacci(n):" 2>&1 | grep -E "wall|load time"
      done ;;
    *) echo "unknown section $name" >&2; return 2 ;;
  esac >> "$OUT/$name.log" 2>&1
}

ALL=(gguf-1.5b-2t gguf-test-2t isq-Q4K-2t isq-Q8_0-2t gguf-1.5b-1t gguf-test-1t isq-Q4K-1t
  isq-Q8_0-1t avx2-1.5b-2t avx2-test-2t busy-1.5b-2t busy-test-2t ppl-1.5b load-1.5b serve-test
  serve-test-busy serve-1.5b)
[ $# -gt 0 ] || set -- "${ALL[@]}"
for s in "$@"; do section "$s" || echo "[bench-matrix] $s failed (see $OUT/$s.log)" >&2; done
