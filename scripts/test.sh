#!/usr/bin/env bash
# The whole test suite: fetch the test model if missing, then every test in release mode
# (dependencies optimized; the real-model tests would crawl in debug). Ends with one
# "N passed, N failed" line summing all test binaries.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# Reuse one target dir outside the clone so fresh clones (CI) do not rebuild everything.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/smelt/target}"
bash scripts/fetch-test-models.sh >/dev/null
# HAProxy for the scale-out test (tests/scale_out.rs), from Debian's packages.
if ! command -v haproxy >/dev/null; then
  echo "[test] installing haproxy" >&2
  sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo
  $sudo apt-get install -y -qq haproxy >/dev/null 2>&1 ||
    { $sudo apt-get update -qq >/dev/null && $sudo apt-get install -y -qq haproxy >/dev/null; } ||
    echo "[test] could not install haproxy: tests/scale_out.rs will fail" >&2
fi
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
status=0
cargo test --release "$@" 2>&1 | tee "$log" || status=$?
# The Python package (python/), built into the helper venv from the same target dir, and
# its pytest suite on the test model.
venv="${SMELT_TEST_MODELS:-$HOME/.cache/smelt-test-models}/venv"
start=$(date +%s)
if "$venv/bin/pip" install --quiet ./python pytest==9.2.0 2>&1 | tee -a "$log"; then
  echo "[test] pip install ./python: $(( $(date +%s) - start )) s" >&2
  "$venv/bin/python" -m pytest python/tests -q -p no:cacheprovider 2>&1 | tee -a "$log" || status=1
else
  echo "pytest: 1 failed (pip install ./python failed)" | tee -a "$log"
  status=1
fi
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     /^[0-9]+ (passed|failed)/ && / in [0-9.]+s/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     /^pytest: 1 failed/ { f += 1 }
     END { printf "%d passed, %d failed\n", p, f }' "$log"
exit "$status"
