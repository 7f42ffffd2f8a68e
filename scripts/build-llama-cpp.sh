#!/usr/bin/env bash
# Build llama.cpp's reference tools outside the repository, for side-by-side benchmarks
# and fixture regeneration: the llama.cpp inside the llama-cpp-python==0.3.36 sdist on
# PyPI, CPU only, GGML_NATIVE=ON (as ../shared/REFERENCE.md describes; ~11 min on 2 cores).
# Idempotent. Prints the bin directory to pass as LLAMA_CPP_BIN.
set -euo pipefail
DIR="${LLAMA_CPP_DIR:-$HOME/.cache/smelt/llama.cpp}"
BIN="$DIR/src/vendor/llama.cpp/build/bin"
TARGETS="llama-bench llama-perplexity llama-quantize llama-imatrix llama-server llama-simple llama-tokenize"
if [ ! -x "$BIN/llama-bench" ] || [ ! -x "$BIN/llama-tokenize" ]; then
  mkdir -p "$DIR"
  if [ ! -d "$DIR/src" ]; then
    tmp="$(mktemp -d)"
    python3 -m pip download --quiet --no-deps --no-binary llama-cpp-python "llama-cpp-python==0.3.36" -d "$tmp"
    tar xzf "$tmp"/llama_cpp_python-0.3.36.tar.gz -C "$tmp"
    mv "$tmp/llama_cpp_python-0.3.36" "$DIR/src"
    rm -rf "$tmp"
  fi
  command -v cmake >/dev/null || python3 -m pip install --quiet cmake ninja
  cd "$DIR/src/vendor/llama.cpp"
  cmake -B build -DGGML_NATIVE=ON -DLLAMA_CURL=OFF -DCMAKE_BUILD_TYPE=Release -DLLAMA_BUILD_TESTS=OFF >&2
  # shellcheck disable=SC2086
  cmake --build build -j"$(nproc)" --target $TARGETS >&2
fi
echo "$BIN"
