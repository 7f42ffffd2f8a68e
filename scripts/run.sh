#!/usr/bin/env bash
# The main job: fetch the default model if missing, then run smelt on it. With no
# arguments, an interactive chat with SmolLM2-135M-Instruct quantized to Q4K in situ;
# otherwise the arguments go to smelt as they are.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/smelt/target}"
bash scripts/fetch-test-models.sh >/dev/null
if [ "$#" -eq 0 ]; then
  set -- --isq Q4K -i plain -m HuggingFaceTB/SmolLM2-135M-Instruct
fi
exec cargo run --release --quiet -- "$@"
