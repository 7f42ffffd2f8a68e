#!/usr/bin/env bash
# Build llama.cpp's reference tools outside the repository, for side-by-side benchmarks
# and fixture regeneration: the llama.cpp inside the llama-cpp-python==0.3.36 sdist on
# PyPI, CPU only (as ../shared/REFERENCE.md describes; ~11 min on 2 cores).
#   LLAMA_CPP_VARIANT=native (default): GGML_NATIVE=ON — except on CPUs that report AMX,
#       where every native feature but AMX is named instead (its AMX path dies with
#       SIGILL/SIGSEGV in the KVM guests seen here);
#   LLAMA_CPP_VARIANT=avx2: GGML_NATIVE=OFF, AVX2 + FMA + F16C only (issue 15's "without
#       AVX-512" reference), in build-avx2/.
# Idempotent. Prints the bin directory to pass as LLAMA_CPP_BIN.
set -euo pipefail
DIR="${LLAMA_CPP_DIR:-$HOME/.cache/smelt/llama.cpp}"
VARIANT="${LLAMA_CPP_VARIANT:-native}"
case "$VARIANT" in
  native) BUILD=build
    if grep -qw amx_tile /proc/cpuinfo; then
      flags() { grep -m1 '^flags' /proc/cpuinfo | grep -qw "$1" && echo ON || echo OFF; }
      FLAGS=(-DGGML_NATIVE=OFF -DGGML_SSE42=ON -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON
        -DGGML_F16C=ON -DGGML_BMI2=ON -DGGML_AVX_VNNI="$(flags avx_vnni)"
        -DGGML_AVX512="$(flags avx512bw)" -DGGML_AVX512_VBMI="$(flags avx512vbmi)"
        -DGGML_AVX512_VNNI="$(flags avx512_vnni)" -DGGML_AVX512_BF16="$(flags avx512_bf16)"
        -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF)
    else
      FLAGS=(-DGGML_NATIVE=ON)
    fi ;;
  avx2) BUILD=build-avx2
    FLAGS=(-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON) ;;
  *) echo "LLAMA_CPP_VARIANT must be native or avx2" >&2; exit 2 ;;
esac
BIN="$DIR/src/vendor/llama.cpp/$BUILD/bin"
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
  cmake -B "$BUILD" "${FLAGS[@]}" -DLLAMA_CURL=OFF -DCMAKE_BUILD_TYPE=Release -DLLAMA_BUILD_TESTS=OFF >&2
  # shellcheck disable=SC2086
  cmake --build "$BUILD" -j"$(nproc)" --target $TARGETS >&2
fi
echo "$BIN"
