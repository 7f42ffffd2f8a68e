#!/usr/bin/env bash
# Side-by-side speed: `smelt bench` and llama.cpp's `llama-bench` on the same GGUF, same
# threads, alternating ROUNDS times (this machine class is noisy, so only ratios taken
# back to back mean anything). Prints every sample and the median ratio smelt / llama.cpp.
#
#   LLAMA_CPP_BIN=/path/to/llama.cpp/build/bin scripts/bench-vs-llama-cpp.sh [GGUF] [THREADS] [ROUNDS]
# Extra smelt flags (e.g. SMELT_ARGS="--isq Q4K" with SMELT_LOADER="plain -m ID") compare an
# ISQ model against the GGUF llama.cpp runs.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
: "${LLAMA_CPP_BIN:?set LLAMA_CPP_BIN to a directory holding llama-bench (see ../shared/REFERENCE.md)}"
GGUF="${1:-$(bash scripts/fetch-test-models.sh)}"
THREADS="${2:-2}"
ROUNDS="${3:-5}"
P="${P:-512}"; N="${N:-128}"; REPS="${REPS:-3}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/smelt/target}"
cargo build --release --quiet
SMELT="$CARGO_TARGET_DIR/release/smelt"
LOADER="${SMELT_LOADER:-gguf -f $GGUF}"
out="$(mktemp)"
for round in $(seq "$ROUNDS"); do
  # shellcheck disable=SC2086
  "$SMELT" --log error -t "$THREADS" ${SMELT_ARGS:-} bench -p "$P" -n "$N" -r "$REPS" --json $LOADER \
    | sed "s/^/smelt $round /" >> "$out"
  "$LLAMA_CPP_BIN/llama-bench" -m "$GGUF" -t "$THREADS" -p "$P" -n "$N" -r "$REPS" -o jsonl 2>/dev/null \
    | sed "s/^/llama $round /" >> "$out"
done
python3 - "$out" "$P" "$N" <<'PY'
import json, statistics, sys
rows = {}
for line in open(sys.argv[1]):
    who, rnd, doc = line.split(" ", 2)
    d = json.loads(doc)
    if who == "llama":
        test = f"pp{d['n_prompt']}" if d["n_prompt"] else f"tg{d['n_gen']}"
    else:
        test = d["test"]
    rows.setdefault(test, {}).setdefault(int(rnd), {})[who] = d["avg_ts"]
for test, by_round in rows.items():
    ratios = []
    for rnd in sorted(by_round):
        r = by_round[rnd]
        if "smelt" in r and "llama" in r:
            ratios.append(r["smelt"] / r["llama"])
            print(f"{test} round {rnd}: smelt {r['smelt']:.1f} t/s, llama.cpp {r['llama']:.1f} t/s, ratio {ratios[-1]:.2f}")
    if ratios:
        print(f"{test}: median ratio smelt/llama.cpp = {statistics.median(ratios):.2f} over {len(ratios)} rounds")
PY
rm -f "$out"
