#!/usr/bin/env bash
# Type-checks the crate with `--features cuda` (lib, tests, examples, benches) on a machine
# with no GPU and no CUDA install: nvcc, cicc and the CUDA headers come from NVIDIA's PyPI
# wheels, unpacked once into a cache outside the repo. Nothing is linked or run, so no
# libcuda/cuBLAS is needed.
#
#   scripts/cuda_check.sh              # cargo check --features cuda --all-targets
#   scripts/cuda_check.sh --release    # extra arguments go to cargo check
#
# CANDLE_GENERATIVE_CUDA_CACHE  wheel cache (default ~/.cache/candle-generative/cuda)
# CARGO_TARGET_DIR              default target/cuda-check (the candle-kernels build is ~10 min cold)
# CUDA_COMPUTE_CAP              GPU arch for the kernels (default 80; there is no nvidia-smi to ask)
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
elapsed() { echo "$(( $(date +%s) - $1 ))s"; }

# One CUDA release for every wheel. cudarc 0.19.10 reads `nvcc --version` and knows CUDA
# 11.4-13.4 only (13.5 panics); the cu12 nvcc wheels (12.9) ship no nvcc binary.
CUDA_WHEEL_VERSION=13.2.86
WHEELS=(
  nvidia-cuda-nvcc    # bin/nvcc, ptxas, fatbinary, nvlink
  nvidia-nvvm         # nvvm/bin/cicc, which nvcc runs
  nvidia-cuda-crt     # include/crt/*, nvcc's own headers
  nvidia-cuda-runtime # cuda.h, cuda_runtime.h, cuda_fp16/bf16/fp8.h, mma.h
  nvidia-cuda-cccl    # cub/thrust/cuda::std (reduce.cu includes <cuda/std/limits>)
)
cache=${CANDLE_GENERATIVE_CUDA_CACHE:-$HOME/.cache/candle-generative/cuda}
prefix=$cache/$CUDA_WHEEL_VERSION
# The wheels all unpack into nvidia/cu13 as a CUDA toolkit tree (bin, include, lib, nvvm).
root=$prefix/nvidia/cu13

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
apt_install() {
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@"
}

if [ ! -f "$prefix/.complete" ]; then
  t=$(date +%s)
  # Debian's python3 comes without pip; `--target` is not blocked by PEP 668.
  python3 -m pip --version >/dev/null 2>&1 || apt_install python3-pip
  rm -rf "$prefix" "$prefix.tmp"
  mkdir -p "$cache"
  specs=()
  for w in "${WHEELS[@]}"; do specs+=("$w==$CUDA_WHEEL_VERSION"); done
  # --no-deps: the nvcc wheel's dependencies are unpinned and would pull the newest CUDA.
  PIP_ROOT_USER_ACTION=ignore PIP_DISABLE_PIP_VERSION_CHECK=1 \
    python3 -m pip install -q --no-deps --no-compile --target "$prefix.tmp" "${specs[@]}"
  mv "$prefix.tmp" "$prefix"
  touch "$prefix/.complete"
  echo "cuda_check: installed CUDA $CUDA_WHEEL_VERSION wheels in $prefix ($(elapsed "$t"))"
fi
[ -x "$root/bin/nvcc" ] && [ -x "$root/nvvm/bin/cicc" ] || {
  echo "cuda_check: no nvcc/cicc under $root (delete $prefix to reinstall)" >&2
  exit 1
}
# nvcc uses the host C++ compiler even for --ptx.
command -v g++ >/dev/null || apt_install g++

# cudarc and cudaforge (candle-kernels' build script) find nvcc on PATH / in $NVCC;
# CUDA_ROOT gives cudarc's link-search paths instead of guessing /usr/local/cuda.
export PATH=$root/bin:$PATH NVCC=$root/bin/nvcc CUDA_ROOT=$root
export CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP:-80}
# cudaforge compiles candle-kernels' 15 MoE/GGUF objects on half the cores unless told.
export CUDAFORGE_THREADS=${CUDAFORGE_THREADS:-$(nproc)}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target/cuda-check}
"$NVCC" --version | grep release

# --all-targets covers the lib too; adding a lib-only check would run candle-kernels' nvcc
# build twice (clap's derive changes syn's features, which rebuilds cudaforge).
t=$(date +%s)
cargo check --features cuda --all-targets "$@"
echo "cuda_check: cargo check $(elapsed "$t"), total $(elapsed "$start")"
