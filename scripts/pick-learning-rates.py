#!/usr/bin/env python3
"""Reads a learning-rate tuning store's summary (results/tuning-optimizer-lr-*/tables/summary.csv,
made by `clbench run configs/tuning/optimizer-lr-*.yaml`) and picks each optimizer's learning
rate: the grid value with the best mean final validation accuracy (ACC) of the optimizer
*without* GRAPES, so that GRAPES is compared at the plain optimizer's best. Prints the grid as a
Markdown table (mean ACC ± sd (n) per rate, the pick in bold) and the picks, one `method: lr`
line each, for the optimizer table's config. Standard library only.

    python3 scripts/pick-learning-rates.py results/tuning-optimizer-lr-hsu2018-split-mnist-task-il

A pick needs every rate of the common grid (the rates every optimizer was run at) measured on the same number of seeds (at least 3; a seed that diverged counts as
measured, and a rate at which any seed diverged is never picked), and the same number for any rate
that extends that optimizer's grid; otherwise the optimizer is reported as incomplete and gets
no pick, so a half-finished grid never picks silently. A pick at the lowest or highest rate an
optimizer was run at is marked "(grid edge)": extend its grid (the config's sweep, run with
`--methods <optimizer>`) until the best lies inside.
"""
import csv
import re
import sys
from pathlib import Path

# The tuning configs' common grid has 7 rates (1e-4 … 0.1 in half-decades): an optimizer with
# fewer measured is still running, whatever the others hold.
MIN_RATES = 7
TAG = re.compile(r"^(?P<method>[^\[]+)\[lr=(?P<lr>[^\]]+)\]$")


def base_grid(grid):
    """The rates every plain optimizer was run at: the common grid. Rates beyond it extend
    some optimizers' grids (where a first pick sat at its edge)."""
    plain = [set(g) for m, g in grid.items() if not m.endswith("+grapes")]
    return set.intersection(*plain) if plain else set()


def complete(g, base):
    """An optimizer's grid is complete when it holds every rate of the common grid and every
    rate it holds has the same number of seeds, at least 3."""
    seeds = {n + diverged for (_, _, n, diverged) in g.values()}
    return (
        base <= set(g)
        and len(g) >= MIN_RATES
        and len(seeds) == 1
        and min(seeds) >= 3
        and any(v[0] is not None for v in g.values())
    )


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    path = Path(sys.argv[1]) / "tables" / "summary.csv"
    if not path.exists():
        sys.exit(f"pick-learning-rates: {path} not found (run the tuning config first)")
    grid = {}
    skipped = []
    with path.open() as f:
        for row in csv.DictReader(f):
            m = TAG.match(row["method"])
            if not m:
                skipped.append(row["method"])
                continue
            diverged = int(row["diverged"] or 0)
            if diverged:
                # A rate at which a seed diverged is measured, and never picked.
                grid.setdefault(m["method"], {})[m["lr"]] = (None, None, int(row["n"]), diverged)
                continue
            if not row["acc_mean"]:
                skipped.append(row["method"])
                continue
            sd = float(row["acc_sd"]) if row["acc_sd"] else None
            grid.setdefault(m["method"], {})[m["lr"]] = (
                float(row["acc_mean"]),
                sd,
                int(row["n"]),
                0,
            )
    if skipped:
        print(f"pick-learning-rates: left out (not `method[lr=…]` or no ACC): {', '.join(skipped)}",
              file=sys.stderr)
    if not grid:
        sys.exit(f"pick-learning-rates: {path} has no rows named `method[lr=…]`")
    rates = sorted({lr for g in grid.values() for lr in g}, key=float)
    picks = {}
    edges = set()
    base = base_grid(grid)
    for method, g in grid.items():
        if method.endswith("+grapes"):
            continue
        if complete(g, base):
            picks[method] = max((lr for lr in g if g[lr][0] is not None), key=lambda lr: g[lr][0])
            own = sorted(g, key=float)
            if picks[method] in (own[0], own[-1]):
                edges.add(method)
    print("| optimizer | " + " | ".join(f"lr {lr}" for lr in rates) + " | pick |")
    print("|---|" + "---|" * (len(rates) + 1))
    for method in sorted(grid):
        base = method.removesuffix("+grapes")
        cells = []
        for lr in rates:
            if lr not in grid[method]:
                cells.append("–")
                continue
            mean, sd, n, diverged = grid[method][lr]
            if mean is None:
                cells.append(f"diverged {diverged} of {n + diverged}")
                continue
            text = f"{100 * mean:.2f}" + (f" ± {100 * sd:.2f}" if sd is not None else "") + f" ({n})"
            cells.append(f"**{text}**" if picks.get(base) == lr else text)
        pick = picks.get(base, "incomplete")
        if base in edges and not method.endswith("+grapes"):
            pick += " (grid edge)"
        print(f"| {method} | " + " | ".join(cells) + f" | {pick} |")
    print()
    print("Picked learning rates (method: lr), for the optimizer table's config:")
    for method in sorted(picks):
        print(f"{method}: {picks[method]}")


if __name__ == "__main__":
    main()
