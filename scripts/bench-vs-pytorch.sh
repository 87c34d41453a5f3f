#!/usr/bin/env bash
# clbench against PyTorch on this machine, the way bench/README.md's tables are made: ROUNDS
# rounds (default 3), each one `clbench bench --json` right after `bench/torch_reference.py`'s
# same models, and after each round the table of both throughputs and their ratio per entry
# (model, batch, method), with both 2048³ products. Alternating rounds, because a shared
# machine's speed drifts by tens of percent within minutes: compare only numbers of one round.
#
#   scripts/bench-vs-pytorch.sh [ROUNDS] [-- extra arguments for both, e.g. --models mlp]
#
# Environment: CLBENCH_BIN (default: target/debug/clbench, the dev build the README's commands
# make; not one left by `cargo test`, whose test profile is slower), THREADS (default 2),
# SECONDS_PER_ENTRY (default 2), OUT (a folder for the JSON lines; default a temporary one).
# Needs `pip install torch`. Pause other work on the machine while it runs.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
rounds="${1:-3}"
shift || true
[ "${1:-}" = "--" ] && shift
bin="${CLBENCH_BIN:-$root/target/debug/clbench}"
threads="${THREADS:-2}"
seconds="${SECONDS_PER_ENTRY:-2}"
out="${OUT:-$(mktemp -d)}"
mkdir -p "$out"
[ -x "$bin" ] || { echo "no clbench binary at $bin (run: cargo build)" >&2; exit 2; }
python3 -c 'import torch' 2>/dev/null || { echo "PyTorch is not installed (pip install torch)" >&2; exit 2; }
grep -m1 'model name' /proc/cpuinfo 2>/dev/null || true
for r in $(seq 1 "$rounds"); do
  f="$out/round-$r.jsonl"
  "$bin" bench --json --seconds "$seconds" --threads "$threads" --skip-rss "$@" > "$f"
  python3 "$root/bench/torch_reference.py" --threads "$threads" --seconds "$seconds" "$@" >> "$f"
  echo "== round $r of $rounds ($(date +%T)), JSON lines in $f"
  python3 - "$f" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
for r in rows:
    if r["kind"] == "matmul_peak":
        print(f'2048³ product: {r.get("framework", "clbench"):<8} {r["gflop_per_s"]:6.0f} GFLOP/s')
train = [r for r in rows if r["kind"] == "train"]
key = lambda r: (r["model"], r["batch"], r["method"])
torch = {key(t): t for t in train if t.get("framework") == "pytorch"}
for r in (r for r in train if "framework" not in r):
    t = torch.get(key(r))
    if t is None:
        continue
    print(f'{r["model"]:>16} b{r["batch"]:<4} {r["method"]:<11} clbench {r["samples_per_s"]:8.0f}  '
          f'pytorch {t["samples_per_s"]:8.0f}  ratio {r["samples_per_s"] / t["samples_per_s"]:.2f}')
PY
done
