#!/usr/bin/env bash
# Serving throughput side by side: `smelt --port` and llama.cpp's `llama-server -np 16` on
# the same GGUF and threads, driven by the same load generator (scripts/bench-serve.py:
# streaming chat completions of exactly N tokens each, at 1, 4 and 16 concurrent
# clients), alternating ROUNDS times. Prints every sample and the median ratios.
#
#   LLAMA_CPP_BIN=/path/to/llama.cpp/build/bin scripts/bench-serve-vs-llama-cpp.sh [GGUF] [THREADS] [ROUNDS]
# Env: N (tokens per request, 64), REQS (requests per client, 2), CONC (1,4,16).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
: "${LLAMA_CPP_BIN:?set LLAMA_CPP_BIN to a directory holding llama-server (scripts/build-llama-cpp.sh)}"
GGUF="${1:-$(bash scripts/fetch-test-models.sh)}"
THREADS="${2:-2}"
ROUNDS="${3:-3}"
N="${N:-64}"; REQS="${REQS:-2}"; CONC="${CONC:-1,4,16}"
PY="${SMELT_TEST_MODELS:-$HOME/.cache/smelt-test-models}/venv/bin/python"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/smelt/target}"
cargo build --release --quiet
SMELT="$CARGO_TARGET_DIR/release/smelt"
PORT=18765
out="$(mktemp)"
wait_up() { for _ in $(seq 300); do curl -sf "http://127.0.0.1:$PORT/health" >/dev/null && return 0; sleep 0.2; done; return 1; }
run() { # name, command...
  local name="$1"; shift
  "$@" >/dev/null 2>&1 &
  local pid=$!
  wait_up || { kill "$pid"; echo "$name did not start" >&2; exit 1; }
  "$PY" scripts/bench-serve.py --url "http://127.0.0.1:$PORT/v1" --concurrency "$CONC" \
    --requests "$REQS" --max-tokens "$N" --json | sed "s/^/$name $round /" >> "$out" ||
    { kill "$pid"; echo "the load generator failed against $name" >&2; exit 1; }
  kill -INT "$pid"; wait "$pid" 2>/dev/null || true
}
for round in $(seq "$ROUNDS"); do
  run smelt "$SMELT" --log error -t "$THREADS" --port "$PORT" --max-seqs 16 gguf -f "$GGUF"
  run llama "$LLAMA_CPP_BIN/llama-server" -m "$GGUF" -t "$THREADS" -np 16 -c 16384 --port "$PORT" --log-disable
done
"$PY" - "$out" <<'PY'
import json, statistics, sys
rows = {}
for line in open(sys.argv[1]):
    who, rnd, js = line.split(" ", 2)
    r = json.loads(js)
    rows.setdefault((who, r["concurrency"]), []).append(r)
print("| clients | smelt agg tok/s | llama.cpp agg tok/s | ratio (median) | smelt TTFT ms | llama.cpp TTFT ms |")
print("|---:|---:|---:|---:|---:|---:|")
for c in sorted({k[1] for k in rows}):
    s, l = rows[("smelt", c)], rows[("llama", c)]
    ratio = statistics.median(a["aggregate_tok_s"] / b["aggregate_tok_s"] for a, b in zip(s, l))
    med = lambda rs, k: statistics.median(r[k] for r in rs)
    print(f"| {c} | {med(s, 'aggregate_tok_s'):.1f} | {med(l, 'aggregate_tok_s'):.1f} | {ratio:.2f} | "
          f"{1000 * med(s, 'ttft_median_s'):.0f} | {1000 * med(l, 'ttft_median_s'):.0f} |")
PY
