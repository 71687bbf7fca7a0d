#!/usr/bin/env bash
# Packs what scripts/device/gpu-check.sh runs on a GPU machine into one archive (no Node.js, no
# compiler needed there): the CUDA executables, the vocabulary, the vendored converter for the
# transformers reference, and these scripts.
#   bash scripts/device/pack-gpu.sh OUT.tar.xz [CUDA_BUILD_DIR] [KERNELS_BUILD_DIR]
# CUDA_BUILD_DIR (default build-cuda): VISPLAY_CUDA=1 VISPLAY_BUILD_DIR=build-cuda node scripts/build-native.mjs
#   then cmake --build build-cuda --target visplay_gpu_test visplay_gpu_bench visplay_train_test llama-batched-bench
# KERNELS_BUILD_DIR (default build-kernels-cuda): cmake -S native/kernels -B build-kernels-cuda -DVISPLAY_CUDA=ON ...
# Executables are stripped (the archive must stay under the device tool's 64 MiB).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
OUTF=$(realpath -m "$1")
CB=$(realpath "${2:-$ROOT/build-cuda}")
KB=$(realpath "${3:-$ROOT/build-kernels-cuda}")
V=$ROOT/native/vendor/llama.cpp
S=$(mktemp -d)
trap 'rm -rf "$S"' EXIT
mkdir -p "$S/bin" "$S/vocab" "$S/vendor" "$S/scripts/device"
for b in "$CB/visplay_gpu_test" "$CB/visplay_gpu_bench" "$CB/visplay_train_test" "$CB/bin/llama-batched-bench" "$KB/visplay_kernels_test" "$KB/visplay_kernels_bench"; do
  strip -o "$S/bin/$(basename "$b")" "$b"
done
cp "$V/models/ggml-vocab-qwen2.gguf" "$S/vocab/"
cp -r "$V/convert_hf_to_gguf.py" "$V/conversion" "$S/vendor/"
mkdir -p "$S/vendor/gguf-py" && cp -r "$V/gguf-py/gguf" "$S/vendor/gguf-py/"
cp "$ROOT/scripts/device/gpu-check.sh" "$ROOT/scripts/device/"*.py "$S/scripts/device/"
# xz -9 (64 MiB window): the executables share ggml-cuda's device code and most host code, which
# the window finds again in each next file (a third of the size of gzip).
tar -C "$S" -cf - bin vocab vendor scripts | xz -9 -T1 > "$OUTF"
ls -la "$OUTF"
