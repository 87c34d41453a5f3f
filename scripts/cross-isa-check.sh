#!/usr/bin/env bash
# Same config, same seed, same bits on another CPU: runs the golden scenarios
# (tests/golden/golden.yaml, an MLP, and tests/golden/cnn.yaml, a CNN) under QEMU user-mode
# emulation of a CPU without AVX-512 (`qemu-x86_64 -cpu max`: AVX2 + FMA, no AVX-512), so the
# portable kernels take their AVX2 path, and compares their accuracy tables byte for byte with
# the committed tests/golden/accuracy.csv and tests/golden/cnn-accuracy.csv (which `cargo test`
# compares with the native runs).
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
for pair in golden.yaml:accuracy.csv cnn.yaml:cnn-accuracy.csv; do
  config="tests/golden/${pair%%:*}"
  table="tests/golden/${pair##*:}"
  start=$(date +%s)
  "${qemu[@]}" "$bin" run "$config" --out "$out/${pair%%:*}" --threads 2 --quiet
  secs=$(( $(date +%s) - start ))
  if cmp -s "$out/${pair%%:*}/tables/accuracy.csv" "$table"; then
    runs=$(ls "$out/${pair%%:*}/runs" | wc -l)
    echo "cross-isa check: $config, $runs runs under QEMU (avx2+fma kernels, ${secs} s) byte-identical to $table"
  else
    echo "cross-isa check: $config: the emulated CPU's accuracy table differs from $table:"
    diff "$out/${pair%%:*}/tables/accuracy.csv" "$table" | head -20
    exit 1
  fi
done
