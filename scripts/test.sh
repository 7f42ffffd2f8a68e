#!/usr/bin/env bash
# The whole test suite: fetch the test model if missing, then every test in release mode
# (dependencies optimized; the real-model tests would crawl in debug). Ends with one
# "N passed, N failed" line summing all test binaries.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# Reuse one target dir outside the clone so fresh clones (CI) do not rebuild everything.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/smelt/target}"
bash scripts/fetch-test-models.sh >/dev/null
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
status=0
cargo test --release "$@" 2>&1 | tee "$log" || status=$?
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "%d passed, %d failed\n", p, f }' "$log"
exit "$status"
