#!/usr/bin/env bash
# Runs the unit tests of the fused step's unsafe code (src/engine/kernels.rs: `Product`, the
# packing of operands into panels, the register tiles and the shares that threads write) under
# Miri, which checks every pointer offset, borrow and data race of those tests.
#
# kernels.rs depends only on gemm (the benchmark's reference product), rayon and tracing, so a
# small harness crate under target/miri-kernels compiles that one file instead of building
# candle and polars under Miri. It builds for the baseline x86-64 target, where Miri detects no
# AVX: the scalar tile kernel runs, through the same packing and edge code as the SIMD ones.
# Needs the nightly toolchain with the miri component:
#   rustup toolchain install nightly --component miri rust-src
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
harness="$root/target/miri-kernels"
mkdir -p "$harness/src"
version() { awk -v n="$1" '$0 == "name = \"" n "\"" {getline; gsub(/version = |"/, ""); print; exit}' "$root/Cargo.lock"; }
cat > "$harness/Cargo.toml" <<TOML
[package]
name = "clbench-kernels-miri"
version = "0.0.0"
edition = "2021"
publish = false

[lib]
path = "src/lib.rs"

[dependencies]
gemm = "=$(version gemm)"
rayon = "=$(version rayon)"
tracing = "=$(version tracing)"

[workspace]
TOML
cat > "$harness/src/lib.rs" <<RUST
//! Harness: clbench's kernels module alone, for Miri.
#[path = "$root/src/engine/kernels.rs"]
pub mod kernels;
RUST
cp "$root/Cargo.lock" "$harness/Cargo.lock"
cd "$harness"
# Tree Borrows: crossbeam-epoch (under rayon's work-stealing deques) breaks the older Stacked
# Borrows rules in its intrusive list (a known false alarm there); Tree Borrows checks our
# pointers and borrows just as strictly. rayon's global pool never joins its threads:
# -Zmiri-ignore-leaks lets the test end while they idle.
MIRIFLAGS="${MIRIFLAGS:-} -Zmiri-tree-borrows -Zmiri-ignore-leaks" \
  cargo +nightly miri test --config 'build.rustflags=[]' "$@"
