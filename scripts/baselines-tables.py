#!/usr/bin/env python3
"""Prints the Markdown tables of results/baselines-vs-published.md from the committed report
tables (results/<config>/tables/summary.csv), so that every number in that document is one of
the committed tables' numbers. Standard library only.

    python3 scripts/baselines-tables.py            # split MNIST, all four scenarios
    python3 scripts/baselines-tables.py permuted   # permuted MNIST, 10 tasks
    python3 scripts/baselines-tables.py grapes     # GRAPES on every baseline (ACC, forgetting)
    python3 scripts/baselines-tables.py grapes-permuted  # the same for permuted MNIST, 4 metrics
    python3 scripts/baselines-tables.py padding    # permuted MNIST padded against unpadded
    python3 scripts/baselines-tables.py seeds [DIR] [METRIC]  # one value per seed (permuted)

`grapes` reads results/grapes-on-baselines/tables/grapes_effect.csv, the merged report of the
four split-MNIST directories (`clbench report results/split-mnist-* --out
results/grapes-on-baselines`), and gives each cell the verdict `clbench report` writes in
tables/grapes_effect.md: "helps"/"hurts" when the paired t-test over at least 3 seeds has
p < 0.05 (by the metric's direction), otherwise no detectable effect.
`grapes-permuted` reads results/permuted-mnist-10-baselines/tables/grapes_effect.csv the same
way; a cell reads "n < 3" until three seeds of both methods have completed.
`padding` sets the permuted-MNIST table made on the 784 unpadded pixels
(results/permuted-mnist-10-baselines-unpadded) beside the one made on the images padded to
32×32 before permuting (results/permuted-mnist-10-baselines), method by method: mean ± sd over
the seeds of each and the difference of the means (padded − unpadded). The two streams draw
different permutations and initializations for a seed, so the seeds are not paired; the
difference is shown with Welch's standard error (√(sd₁²/n₁ + sd₂²/n₂)).
`seeds` lists, from DIR's tables/metrics.csv (default results/permuted-mnist-10-baselines), each
method's METRIC (default acc) seed by seed, then with − without GRAPES seed by seed (only seeds
where both completed), in percentage points: the numbers the prose beside the tables quotes.
"""
import csv
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent / "results"
METHODS = [
    ("finetune", 'fine-tuning ("None")'),
    ("joint", "joint (upper bound)"),
    ("joint-once", "joint, trained once (the reference's comparison bound)"),
    ("ewc", "EWC"),
    ("online-ewc", "online EWC"),
    ("si", "SI"),
    ("lwf", "LwF"),
    ("mas", "MAS (in neither paper)"),
    ("replay", "replay (ER)"),
    ("agem", "A-GEM"),
]
# Published split-MNIST ACC (mean ± SEM over 20 seeds): (b) the 2019 preprint's Task-IL,
# Domain-IL and Class-IL columns, (a) the 2022 paper's Class-IL column (see the document).
PUBLISHED = {
    "finetune": ("85.15 ± 1.00", "57.33 ± 1.66", "19.89 ± 0.02", "19.90 ± 0.02"),
    "joint": ("–", "–", "–", "–"),
    "joint-once": ("–", "–", "98.17 ± 0.04", "–"),
    "ewc": ("85.48 ‡", "57.80 ‡", "20.64 ± 0.52", "19.90 ‡"),
    "online-ewc": ("85.22 ‡", "57.60 ‡", "–", "19.90 ‡"),
    "si": ("99.14 ± 0.11", "63.77 ± 1.18", "21.20 ± 0.57", "20.04 ± 0.08"),
    "lwf": ("99.60 ± 0.03", "71.02 ± 1.26", "21.89 ± 0.32", "24.17 ± 0.51"),
    "mas": ("–", "–", "–", "–"),
    "replay": ("–", "–", "88.79 ± 0.20", "–"),
    "agem": ("–", "–", "65.10 ± 3.64", "–"),
}
SPLIT = [
    "split-mnist-task-il",
    "split-mnist-domain-il",
    "split-mnist-class-il",
    "split-mnist-class-il-seen-so-far",
]


def summary(name):
    path = ROOT / name / "tables" / "summary.csv"
    if not path.exists():
        print(f"baselines-tables: {path} missing; its cells are shown as –", file=sys.stderr)
        return {}
    with path.open() as f:
        return {row["method"]: row for row in csv.DictReader(f)}


def cell(rows, method, metric="acc"):
    row = rows.get(method)
    if row is None or not row[f"{metric}_mean"]:
        return "–"
    mean = 100 * float(row[f"{metric}_mean"])
    n = int(row["n"])
    sd = row[f"{metric}_sd"]
    text = f"{mean:.2f} ± {100 * float(sd):.2f}" if sd else f"{mean:.2f}"
    return f"{text} ({n})"


def split_tables():
    s = {name: summary(name) for name in SPLIT}
    print("| method | Task-IL ours | Task-IL (b) | Domain-IL ours | Domain-IL (b) "
          "| Class-IL ours, all | Class-IL ours, seen so far | Class-IL (a) 2022 | Class-IL (b) |")
    print("|:--|--:|--:|--:|--:|--:|--:|--:|--:|")
    for method, label in METHODS:
        p = PUBLISHED[method]
        print(f"| {label} | {cell(s[SPLIT[0]], method)} | {p[0]} | {cell(s[SPLIT[1]], method)} "
              f"| {p[1]} | {cell(s[SPLIT[2]], method)} | {cell(s[SPLIT[3]], method)} "
              f"| {p[2]} | {p[3]} |")
    print()
    print("| method + GRAPES | Task-IL | Domain-IL | Class-IL, all | Class-IL, seen so far |")
    print("|:--|--:|--:|--:|--:|")
    for method, label in METHODS:
        label = label.split(" (")[0]
        cells = " | ".join(cell(s[name], method + "+grapes") for name in SPLIT)
        print(f"| {label} + GRAPES | {cells} |")


def permuted_table():
    s = summary("permuted-mnist-10-baselines")
    print("| method | ACC | BWT | forgetting | learning acc. | + GRAPES: ACC | BWT | forgetting "
          "| learning acc. |")
    print("|:--|--:|--:|--:|--:|--:|--:|--:|--:|")
    metrics = ["acc", "bwt", "forgetting", "learning_accuracy"]
    for method, label in METHODS:
        plain = " | ".join(cell(s, method, m) for m in metrics)
        grapes = " | ".join(cell(s, method + "+grapes", m) for m in metrics)
        print(f"| {label} | {plain} | {grapes} |")


def verdict(row, lower_is_better):
    n = int(row["n"])
    if n < 3 or not row["p_t"]:
        return "n < 3"
    d, p = float(row["diff_mean"]), float(row["p_t"])
    good = d < 0 if lower_is_better else d > 0
    if p < 0.05 and good:
        return "**helps**"
    if p < 0.05 and d != 0:
        return "**hurts**"
    return "no effect detected"


def grapes_rows(directory):
    path = ROOT / directory / "tables" / "grapes_effect.csv"
    with path.open() as f:
        return list(csv.DictReader(f))


def grapes_cell(rows, stream, method, metric, lower_is_better):
    """One paired difference: `Δ [95% CI] (n, p t-test) verdict`, in percentage points."""
    r = next((r for r in rows if r["stream"] == stream and r["method"] == method
              and r["metric"] == metric), None)
    if r is None or not r["diff_mean"]:
        return "–"
    d = 100 * float(r["diff_mean"])
    if d == 0 and r["diff_ci95_low"] and float(r["diff_ci95_low"]) == 0 \
            and float(r["diff_ci95_high"]) == 0:
        # Every seed's difference is exactly 0 (e.g. the forgetting of a model
        # that never trains after its first phase): nothing to test.
        return f"{100 * float(r['mean_with']):.2f} with and without, every seed ({r['n']})"
    ci = (f" [{100 * float(r['diff_ci95_low']):+.2f}, {100 * float(r['diff_ci95_high']):+.2f}]"
          if r["diff_ci95_low"] else "")
    p = ""
    if r["p_t"]:
        p_t = float(r["p_t"])
        p = ", p < 0.001" if p_t < 0.001 else f", p {p_t:.3f}"
    return f"{d:+.2f}{ci} ({r['n']}{p}) {verdict(r, lower_is_better)}"


def grapes_table():
    rows = grapes_rows("grapes-on-baselines")
    labels = {"split-mnist-task-il": "Task-IL", "split-mnist-domain-il": "Domain-IL",
              "split-mnist-class-il": "Class-IL, all",
              "split-mnist-class-il-seen-so-far": "Class-IL, seen so far"}
    for metric, title, lower in [("acc", "ACC", False), ("forgetting", "forgetting", True)]:
        print(f"Δ{title} (with − without GRAPES, percentage points, mean [95% CI] over the "
              "seeds both completed), paired t-test p, verdict:")
        print()
        print("| baseline | " + " | ".join(labels.values()) + " |")
        print("|:--|" + "--:|" * len(labels))
        for method, label in METHODS:
            cells = [grapes_cell(rows, stream, method, metric, lower) for stream in labels]
            print(f"| {label.split(' (')[0]} | " + " | ".join(cells) + " |")
        print()


def grapes_permuted_table():
    rows = grapes_rows("permuted-mnist-10-baselines")
    metrics = [("acc", "ΔACC", False), ("bwt", "ΔBWT", False),
               ("forgetting", "Δforgetting", True), ("learning_accuracy", "Δlearning acc.", False)]
    print("| baseline | " + " | ".join(title for _, title, _ in metrics) + " |")
    print("|:--|" + "--:|" * len(metrics))
    for method, label in METHODS:
        cells = [grapes_cell(rows, "permuted-mnist-10", method, metric, lower)
                 for metric, _, lower in metrics]
        print(f"| {label.split(' (')[0]} | " + " | ".join(cells) + " |")


def padding_table(unpadded="permuted-mnist-10-baselines-unpadded",
                  padded="permuted-mnist-10-baselines"):
    old, new = summary(unpadded), summary(padded)
    metrics = [("acc", "ACC"), ("forgetting", "forgetting"),
               ("learning_accuracy", "learning acc.")]
    print("| method | " + " | ".join(f"{t} unpadded | {t} padded | Δ{t}" for _, t in metrics)
          + " |")
    print("|:--|" + "--:|" * (3 * len(metrics)))
    for method, label in METHODS:
        for name in (method, method + "+grapes"):
            cells = []
            for metric, _ in metrics:
                cells += [cell(old, name, metric), cell(new, name, metric),
                          difference(old.get(name), new.get(name), metric)]
            shown = label.split(" (")[0] + (" + GRAPES" if name != method else "")
            print(f"| {shown} | " + " | ".join(cells) + " |")


def per_seed(directory="permuted-mnist-10-baselines", metric="acc"):
    path = ROOT / directory / "tables" / "metrics.csv"
    values = {}
    with path.open() as f:
        for row in csv.DictReader(f):
            if row["status"] == "completed" and row[metric]:
                values[(row["method"], int(row["seed"]))] = 100 * float(row[metric])
    seeds = sorted({seed for _, seed in values})
    head = " / ".join(str(s) for s in seeds)
    print(f"{metric}, seed {head} (– where that seed has not completed):")
    for method, label in METHODS:
        for name in (method, method + "+grapes"):
            cells = [f"{values[(name, s)]:.2f}" if (name, s) in values else "–" for s in seeds]
            print(f"  {label.split(' (')[0]}{' + GRAPES' if name != method else ''}: "
                  + " / ".join(cells))
    print(f"with − without GRAPES, seed {head}:")
    for method, label in METHODS:
        cells = [f"{values[(method + '+grapes', s)] - values[(method, s)]:+.2f}"
                 if (method, s) in values and (method + "+grapes", s) in values else "–"
                 for s in seeds]
        print(f"  {label.split(' (')[0]}: " + " / ".join(cells))


def difference(a, b, metric):
    """`mean_b − mean_a ± √(sd_a²/n_a + sd_b²/n_b)` in percentage points, or – where either is
    missing or rests on fewer than two seeds."""
    if a is None or b is None or not a[f"{metric}_mean"] or not b[f"{metric}_mean"]:
        return "–"
    if int(a["n"]) < 2 or int(b["n"]) < 2 or not a[f"{metric}_sd"] or not b[f"{metric}_sd"]:
        return "–"
    d = 100 * (float(b[f"{metric}_mean"]) - float(a[f"{metric}_mean"]))
    se = 100 * (float(a[f"{metric}_sd"]) ** 2 / int(a["n"])
                + float(b[f"{metric}_sd"]) ** 2 / int(b["n"])) ** 0.5
    return f"{d:+.2f} ± {se:.2f}"


if __name__ == "__main__":
    if sys.argv[1:] == ["permuted"]:
        permuted_table()
    elif sys.argv[1:] == ["grapes"]:
        grapes_table()
    elif sys.argv[1:] == ["grapes-permuted"]:
        grapes_permuted_table()
    elif sys.argv[1:2] == ["padding"]:
        padding_table(*sys.argv[2:4])
    elif sys.argv[1:2] == ["seeds"]:
        per_seed(*sys.argv[2:4])
    else:
        split_tables()
