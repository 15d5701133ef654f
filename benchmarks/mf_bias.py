"""Biased low fidelities (issue 22): `mf` against `bo` cost by cost, from ``selflab bench`` JSON files.

    selflab bench --problem reactor_multifidelity --planner mf --cost-budget 10 --seeds 5 --json mf.json
    selflab bench --problem reactor_multifidelity --planner bo --cost-budget 20 --seeds 5 --json bo.json
    python benchmarks/mf_bias.py mf.json bo.json [--costs 2 10] [--threshold 0.01] [--json FILE] [--plot FILE.png]

The last file's planner is the baseline (``bo`` at the target fidelity). For
each planner: the median (over seeds) regret of its recommendation at every
integer cost from ``--costs LOW`` to ``HIGH`` (a seed's regret at cost ``c``
is that of its recommendation after its last evaluation costing ``<= c``;
infinite before its first recommendation) and the cost to a median regret of
at most ``--threshold`` (:func:`selflab.controller.bench.cost_to_regret`).
Checks (the issue-22 targets): ``at_most_baseline_everywhere`` (each
planner's median regret is at most the baseline's at every listed cost) and
``cost_ratio_to_threshold`` (its cost to the threshold over the baseline's;
target <= 0.5). Prints one JSON object; ``--plot`` draws regret against cost.
"""

from __future__ import annotations

import argparse
import bisect
import json
import math
import statistics
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from mf_cost import load, summary  # noqa: E402  (the sibling script)

from selflab.controller.bench import BenchResult, cost_to_regret, regret_against_cost  # noqa: E402


def median_regret_at(result: BenchResult, cost: float) -> float:
    """The median over seeds of the recommendation regret at ``cost`` (``inf``: none yet)."""
    at = []
    for costs, regrets in regret_against_cost(result):
        i = bisect.bisect_right(costs, cost + 1e-12)
        value = regrets[i - 1] if i and i - 1 < len(regrets) else None
        at.append(math.inf if value is None else value)
    return statistics.median(at) if at else math.inf


def compare(results: list[BenchResult], costs: list[float], threshold: float) -> dict[str, Any]:
    """The per-cost medians, the cost to ``threshold`` and the checks against the last result."""
    base = results[-1]
    if base.optimum is None:
        raise SystemExit(f"{base.problem}: no known optimum, so no regret")
    curves = {r.planner: [median_regret_at(r, c) for c in costs] for r in results}
    reach = {r.planner: cost_to_regret(r.runs, base.optimum, threshold) for r in results}
    out: dict[str, Any] = {
        "problem": base.problem, "seeds": base.seeds, "baseline": base.planner, "threshold": threshold, "costs": costs,
        "median_regret_at_cost": {k: [None if math.isinf(v) else round(v, 5) for v in vs] for k, vs in curves.items()},
        "cost_to_threshold": {k: None if v is None else round(v, 3) for k, v in reach.items()},
        "summary": {r.planner: summary(r, threshold) for r in results},
    }
    checks: dict[str, Any] = {}
    for r in results[:-1]:
        mine, theirs = curves[r.planner], curves[base.planner]
        worse = [c for c, a, b in zip(costs, mine, theirs) if a > b]
        ratio = None
        if reach[r.planner] is not None and reach[base.planner]:
            ratio = round(reach[r.planner] / reach[base.planner], 3)  # type: ignore[operator]
        checks[r.planner] = {"at_most_baseline_everywhere": not worse, "worse_at_costs": worse, "cost_ratio_to_threshold": ratio}
    out["checks"] = checks
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("files", nargs="+", help="selflab bench --json outputs; the last planner is the baseline")
    parser.add_argument("--costs", type=float, nargs=2, default=[2.0, 10.0], metavar=("LOW", "HIGH"), help="integer costs compared (default 2 10)")
    parser.add_argument("--threshold", type=float, default=0.01, help="recommendation regret to reach (default 0.01)")
    parser.add_argument("--json", metavar="FILE", help="also write the output here")
    parser.add_argument("--plot", metavar="FILE.png", help="recommendation regret against cumulative cost, one line per planner")
    args = parser.parse_args()
    results = load(args.files)
    low, high = args.costs
    costs = [float(c) for c in range(math.ceil(low), math.floor(high) + 1)]
    out = compare(results, costs, args.threshold)
    if args.plot:
        from selflab.controller.plots import cost_regret_figure

        labels = {r.planner + (f" {json.dumps(r.options)}" if r.options else ""): regret_against_cost(r) for r in results}
        cost_regret_figure(labels, args.plot, title=f"{results[0].problem}: median and IQR over {results[0].seeds} seeds",
                           ylabel="regret of the recommendation (target fidelity)")
    text = json.dumps(out, indent=1)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
