#!/usr/bin/env bash
# Same config, same seed, same bits on another CPU: runs one method of each golden scenario
# (tests/golden/golden.yaml, an MLP; tests/golden/cnn.yaml, a CNN; tests/golden/regimes.yaml,
# an MLP with dropout, per-task learning-rate decay and optimizer reset; SGD + GRAPES in each)
# under QEMU user-mode emulation of a CPU without AVX-512 (`qemu-x86_64 -cpu max`: AVX2 + FMA,
# no AVX-512), so the portable kernels take their AVX2 path by detection, and compares their
# rows of the accuracy table byte for byte with the committed tests/golden/accuracy.csv,
# tests/golden/cnn-accuracy.csv and tests/golden/regimes-accuracy.csv.
#
# `cargo test` already runs every method of both scenarios on every kernel the host runs
# (`clbench run --kernels avx512f | avx2+fma | scalar`) against the same files. What this adds is
# a real CPU without AVX-512: the kernels picked by CPU detection, and no AVX-512 instruction
# anywhere outside the AVX-512 kernels. Emulated AVX2 is slow (about 150 s per MLP method here,
# three times that on a slow host), hence one method each. CLBENCH_CROSS_ISA_METHODS=all runs
# every method.
#
# Installs Debian's qemu-user when missing. Uses $CLBENCH_BIN when set, else the dev build
# (target/debug/clbench, built if needed). x86-64 hosts only.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"

if [ "$(uname -m)" != x86_64 ]; then
  echo "cross-isa check: not an x86-64 host; skipped"
  exit 0
fi
if ! command -v qemu-x86_64 >/dev/null; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends qemu-user >/dev/null
fi
bin="${CLBENCH_BIN:-}"
if [ -z "$bin" ]; then
  cargo build -q
  bin="${CARGO_TARGET_DIR:-$root/target}/debug/clbench"
fi

qemu=(qemu-x86_64 -cpu max)
echo "native:   $("$bin" platform --short)"
emulated="$("${qemu[@]}" "$bin" platform --short)"
echo "emulated: $emulated"
case "$emulated" in
  *"kernels avx2+fma"*) ;;
  *) echo "cross-isa check: expected the emulated CPU to run the avx2+fma kernels"; exit 1 ;;
esac

out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
for triple in golden.yaml:accuracy.csv:sgd+grapes cnn.yaml:cnn-accuracy.csv:sgd+grapes \
  regimes.yaml:regimes-accuracy.csv:sgd+grapes; do
  IFS=: read -r name table method <<<"$triple"
  config="tests/golden/$name"
  table="tests/golden/$table"
  select=(--methods "$method")
  if [ "${CLBENCH_CROSS_ISA_METHODS:-}" = all ]; then
    select=()
    method=all
  fi
  start=$(date +%s)
  "${qemu[@]}" "$bin" run "$config" --out "$out/$name" "${select[@]}" --threads 2 --quiet
  secs=$(( $(date +%s) - start ))
  # The committed rows of these methods (column 3 of the table is the method).
  awk -F, -v m="$method" 'NR == 1 || m == "all" || $3 == m' "$table" >"$out/$name.want"
  if [ "$(wc -l <"$out/$name.want")" -lt 2 ]; then
    echo "cross-isa check: $table has no rows of method $method"; exit 1
  fi
  if cmp -s "$out/$name/tables/accuracy.csv" "$out/$name.want"; then
    runs=$(ls "$out/$name/runs" | wc -l)
    echo "cross-isa check: $config ($method), $runs run(s) under QEMU (avx2+fma kernels, ${secs} s) byte-identical to $table"
  else
    echo "cross-isa check: $config ($method): the emulated CPU's accuracy table differs from $table:"
    diff "$out/$name/tables/accuracy.csv" "$out/$name.want" | head -20
    exit 1
  fi
done
