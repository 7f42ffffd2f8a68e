#!/usr/bin/env bash
# The whole test suite: fetch the test model if missing, then every test in release mode
# (dependencies optimized; the real-model tests would crawl in debug).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# Reuse one target dir outside the clone so fresh clones (CI) do not rebuild everything.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/smelt/target}"
bash scripts/fetch-test-models.sh >/dev/null
cargo test --release "$@"
