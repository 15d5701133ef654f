"""Pools beyond the three Liang et al. tables (issue 22): AF(0.8) of ``bo`` and
of the plain botorch baseline on measured pools, as ratios in one run.

    python benchmarks/pools.py --seeds 20 --budget 60 --out pools/                     # every pool, bo and plain
    python benchmarks/pools.py --pools suzuki,alkox --variant ucb='{"acquisition": "ucb"}' --out pools/
    python benchmarks/pools.py --table pools/                                          # the table of what has run

**The held-out pools** are the measured tables that the Olympus project
(Häse et al. 2021) ships in the ``olympus-surrogate-bench`` package on PyPI
(MIT licence): ``pip download`` fetches its wheel once into ``OUT/data/``
and each table's ``feats.csv`` and ``targets.csv`` are joined into
``OUT/data/<name>.csv``. Nothing of them is in this repository. The
directions are the experiments' own (a conversion, a yield and a product
maximized; an impurity, a colour difference, a degradation minimized; the
package's ``minimizes.json`` is not used). A table of more than
``--max-rows`` (200) distinct input rows is cut to that many by a seeded
draw (seed 0), so that random search needs about as many evaluations as on
the Liang pools and AF(0.8) within the budget is possible at all. The
Liang pools (``p3ht``, ``perovskite``, ``autoam``) run beside them.

For each pool: ``random`` through the whole pool and every planner up to
``--budget``, seeds ``0 .. --seeds - 1`` (:func:`selflab.controller.fanout.run_grid`,
``--workers`` processes), each a real simulated campaign on the pool's
CSV (``pool:PATH.csv``). AF(0.8) = random's evaluations to find 80 % of the
top-5 % rows (seed-averaged curve) / the planner's, as in
``benchmarks/liang_af.py``; a planner that does not reach 80 % within the
budget gets the lower bound random / budget, marked ``>=``. The table gives
each planner's AF and its ratio to ``plain``'s (target: >= 1.3 on every
pool). Every finished seed is appended to ``OUT/runs.jsonl`` at once, so a
rerun of the same command only runs what is missing.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import random
import statistics
import subprocess
import sys
import warnings
import zipfile
from pathlib import Path
from typing import Any

from selflab.controller.bench import RunRecord, SeedFailure, get_problem
from selflab.controller.bench_metrics import TOP_FOUND, acceleration_factor, first_reaching, mean_curve
from selflab.controller.fanout import SeedTask, prepare_workers, run_grid
from selflab.simulators.pool import PoolInstrument
from selflab.simulators.problems import Problem

PACKAGE = "olympus-surrogate-bench==0.0.2"
# name -> (objective column, direction): each experiment's own goal.
OLYMPUS = {
    "alkox": ("conversion", "maximize"),
    "benzylation": ("impurity", "minimize"),
    "colors_bob": ("difference_to_green", "minimize"),
    "colors_n9": ("difference_to_green", "minimize"),
    "fullerenes": ("product", "maximize"),
    "hplc": ("peak_area", "maximize"),
    "photo_pce10": ("degradation", "minimize"),
    "photo_wf3": ("degradation", "minimize"),
    "snar": ("impurity", "minimize"),
    "suzuki": ("yield", "maximize"),
}
LIANG = ("p3ht", "perovskite", "autoam")


def olympus_tables(data: Path, max_rows: int) -> dict[str, Path]:
    """Each Olympus table as ``data/<name>.csv`` (inputs then the objective), fetched once."""
    data.mkdir(parents=True, exist_ok=True)
    wheels = sorted(data.glob("olympus_surrogate_bench-*.whl"))
    if not wheels:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "--dest", str(data), PACKAGE], check=True)
        wheels = sorted(data.glob("olympus_surrogate_bench-*.whl"))
    out: dict[str, Path] = {}
    with zipfile.ZipFile(wheels[-1]) as wheel:
        for name, (objective, _) in OLYMPUS.items():
            path = data / f"{name}.csv"
            out[name] = path
            if path.exists():
                continue
            feats = list(csv.reader(io.TextIOWrapper(wheel.open(f"olympus_surrogate_bench/data/{name}/feats.csv"), "utf-8")))
            targets = list(csv.reader(io.TextIOWrapper(wheel.open(f"olympus_surrogate_bench/data/{name}/targets.csv"), "utf-8")))
            if targets[0] != [objective]:
                raise SystemExit(f"{PACKAGE}: {name}/targets.csv has columns {targets[0]}, expected [{objective!r}]")
            rows = [f + t for f, t in zip(feats[1:], targets[1:], strict=True)]
            inputs = sorted({tuple(r[:-1]) for r in rows})
            if len(inputs) > max_rows:  # a seeded draw of distinct input rows, with all their replicates
                keep = set(random.Random(0).sample(inputs, max_rows))
                rows = [r for r in rows if tuple(r[:-1]) in keep]
            with path.open("w", newline="", encoding="utf-8") as handle:
                csv.writer(handle).writerows([feats[0] + targets[0], *rows])
    return out


def problems(names: list[str], data: Path, max_rows: int) -> dict[str, Problem]:
    """The named pools as benchmark problems (Liang names or Olympus names)."""
    tables = olympus_tables(data, max_rows) if any(n in OLYMPUS for n in names) else {}
    out: dict[str, Problem] = {}
    for name in names:
        if name in LIANG:
            out[name] = get_problem(name)
        elif name in OLYMPUS:
            objective, direction = OLYMPUS[name]
            out[name] = get_problem(f"pool:{tables[name]}", objective=objective, direction=direction).model_copy(update={"name": name})
        else:
            raise SystemExit(f"unknown pool {name!r}; pools: {', '.join([*LIANG, *OLYMPUS])}")
    return out


def _done(runs: Path) -> dict[tuple[str, str, int], dict[str, Any]]:
    if not runs.exists():
        return {}
    rows = [json.loads(line) for line in runs.read_text().splitlines() if line.strip()]
    return {(r["pool"], r["arm"], r["seed"]): r for r in rows}


def table(runs: Path, pools: list[str] | None = None, arms: list[str] | None = None) -> str:
    """A Markdown table of AF(0.8) per pool and arm, and each arm's ratio to ``plain``."""
    done = _done(runs)
    pools = pools or sorted({p for p, _, _ in done})
    arms = arms or sorted({a for _, a, _ in done} - {"random"}, key=lambda a: (a != "plain", a))
    lines = ["| pool (rows) | random | " + " | ".join(f"{a}: evals (AF)" for a in arms)
             + " | " + " | ".join(f"{a} / plain" for a in arms if a != "plain") + " | seeds |",
             "|---|---|" + "---|" * len(arms) + "---|" * sum(a != "plain" for a in arms) + "---|"]
    for pool in pools:
        curves: dict[str, list[list[float]]] = {}
        budgets: dict[str, int] = {}
        for (p, arm, _), r in sorted(done.items()):
            if p == pool:
                curves.setdefault(arm, []).append(r["top5_trace"])
                budgets[arm] = r["budget"]
        if "random" not in curves:
            continue
        random_n = first_reaching(mean_curve(curves["random"]), TOP_FOUND)
        af: dict[str, tuple[float | None, str]] = {}
        cells = []
        for arm in arms:
            if arm not in curves:
                af[arm] = (None, "")
                cells.append("")
                continue
            n = first_reaching(mean_curve(curves[arm]), TOP_FOUND)
            value = acceleration_factor(random_n, n, budgets[arm])
            af[arm] = (value, "" if n is not None else ">=")
            cells.append(f"{n if n is not None else '>' + str(budgets[arm])} ({af[arm][1]}{value:.2f})" if value is not None else "")
        plain = af.get("plain", (None, ""))[0]
        ratios = [f"{af[a][0] / plain:.2f}" if plain and af[a][0] else "" for a in arms if a != "plain"]
        seeds = min(len(curves[a]) for a in arms if a in curves) if any(a in curves for a in arms) else 0
        rows = len(curves["random"][0])
        lines.append(f"| {pool} ({rows}) | {random_n} | " + " | ".join(cells) + " | " + " | ".join(ratios) + f" | {seeds} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pools", default=",".join([*LIANG, *OLYMPUS]))
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--budget", type=int, default=60)
    parser.add_argument("--planners", default="bo,plain", help="planners run with their defaults, comma-separated")
    parser.add_argument("--variant", action="append", default=[], metavar="NAME=JSON", help="a bo variant with these options")
    parser.add_argument("--max-rows", type=int, default=200)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("pools"))
    parser.add_argument("--table", action="store_true", help="only print the table of what OUT/runs.jsonl holds")
    args = parser.parse_args()
    runs = args.out / "runs.jsonl"
    names = args.pools.split(",")
    arms: dict[str, tuple[str, dict[str, Any]]] = {p: (p, {}) for p in args.planners.split(",") if p}
    for spec in args.variant:
        name, _, options = spec.partition("=")
        arms[name] = ("bo", json.loads(options))
    if args.table:
        print(table(runs, names, list(arms)))
        return
    warnings.filterwarnings("ignore", module=r"(linear_operator|gpytorch|botorch)\.")
    prepare_workers(args.workers, "process", [p for p, _ in arms.values()])
    pools = problems(names, args.out / "data", args.max_rows)
    done = _done(runs)
    tasks: list[tuple[str, str, SeedTask]] = []
    for pool, problem in pools.items():
        rows = len(PoolInstrument(**problem.options).candidates())  # random runs through the whole pool
        for arm, (planner, options) in {"random": ("random", {}), **arms}.items():
            budget = rows if arm == "random" else args.budget
            tasks += [(pool, arm, SeedTask(problem=problem, planner=planner, seed=s, budget=budget, options=options))
                      for s in range(args.seeds) if (pool, arm, s) not in done]
    by_task = {(t.problem.name, t.planner, t.seed, json.dumps(t.options, sort_keys=True)): (pool, arm) for pool, arm, t in tasks}
    print(f"{len(tasks)} seeds to run ({len(done)} already in {runs})", file=sys.stderr, flush=True)
    args.out.mkdir(parents=True, exist_ok=True)

    def on_done(task: SeedTask, outcome: RunRecord | SeedFailure) -> None:
        pool, arm = by_task[(task.problem.name, task.planner, task.seed, json.dumps(task.options, sort_keys=True))]
        if isinstance(outcome, SeedFailure):
            print(f"FAILED {pool} {arm} seed {task.seed}: {outcome.reason}", file=sys.stderr, flush=True)
            return
        record = {"pool": pool, "arm": arm, "seed": task.seed, "budget": outcome.evaluations if arm == "random" else args.budget,
                  "evaluations_to_80pct_top5": outcome.evaluations_to_80pct_top5, "top5_trace": outcome.top5_trace,
                  "median_proposal_seconds": statistics.median(outcome.proposal_seconds) if outcome.proposal_seconds else None}
        with runs.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")
        print(f"{pool} {arm} seed {task.seed}: {outcome.evaluations_to_80pct_top5}", file=sys.stderr, flush=True)

    run_grid([t for _, _, t in tasks], on_done=on_done, workers=args.workers)
    print(table(runs, names, list(arms)))


if __name__ == "__main__":
    main()
