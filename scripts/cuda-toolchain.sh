#!/usr/bin/env bash
# A CUDA toolkit for building clbench with `--features cuda`, from NVIDIA's wheels on PyPI: no
# system CUDA, no root. candle's kernels are compiled to PTX by nvcc at build time and cudarc
# reads the CUDA version from nvcc; both need nvcc, cicc (NVVM), ptxas and the CUDA headers,
# which the CUDA 13 wheels below hold (the CUDA 12 `nvidia-cuda-nvcc-cu12` wheel has ptxas but
# no nvcc). CUDA 13.0 is pinned: its PTX loads on every CUDA 13 driver.
#
# Prints the environment for cargo on standard output, everything else on standard error:
#
#   eval "$(scripts/cuda-toolchain.sh)"
#   cargo build --release --features cuda
#
# CLBENCH_CUDA_ENV: where the virtual environment goes (default ~/.cache/clbench-cuda13).
# CUDA_COMPUTE_CAP: the GPU's compute capability without the dot (default 90: H100/H200); no
# GPU is needed at build time.
set -euo pipefail

env_dir=${CLBENCH_CUDA_ENV:-$HOME/.cache/clbench-cuda13}
cap=${CUDA_COMPUTE_CAP:-90}
version=13.0.88

if [ ! -x "$env_dir/bin/python" ]; then
    python3 -m venv "$env_dir" >&2
fi
"$env_dir/bin/pip" install --quiet --no-deps \
    "nvidia-cuda-nvcc==$version" "nvidia-cuda-crt==$version" "nvidia-nvvm==$version" \
    "nvidia-cuda-runtime==$version" "nvidia-cuda-cccl==13.0.85" >&2
root=$("$env_dir/bin/python" -c 'import os, nvidia; print(os.path.join(list(nvidia.__path__)[0], "cu13"))')
[ -x "$root/bin/nvcc" ] || { echo "cuda-toolchain: no nvcc under $root" >&2; exit 1; }
"$root/bin/nvcc" --version | tail -n 2 >&2

# A kernel of the kind candle's are (half and bfloat16 headers), compiled for the target GPU.
probe=$(mktemp -d)
trap 'rm -rf "$probe"' EXIT
cat >"$probe/probe.cu" <<'EOF'
#include <cuda_fp16.h>
#include <cuda_bf16.h>
extern "C" __global__ void probe(float *a, const __half *b, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) a[i] += __half2float(b[i]);
}
EOF
PATH="$root/bin:$PATH" nvcc --ptx -arch="sm_$cap" -o "$probe/probe.ptx" "$probe/probe.cu" >&2
echo "cuda-toolchain: nvcc compiles for sm_$cap; toolkit in $root" >&2

printf 'export PATH=%q:"$PATH"\n' "$root/bin"
printf 'export CUDA_ROOT=%q CUDA_PATH=%q CUDA_HOME=%q CUDA_COMPUTE_CAP=%q\n' \
    "$root" "$root" "$root" "$cap"
