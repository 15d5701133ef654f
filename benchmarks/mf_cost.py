"""Cost to reach a recommendation regret, from ``selflab bench`` JSON files.

    selflab bench --problem augmented_hartmann --planner mf --cost-budget 25 --seeds 10 --json mf.json
    selflab bench --problem augmented_hartmann --planner bo --cost-budget 80 --seeds 10 --json bo.json
    python benchmarks/mf_cost.py mf.json bo.json [--threshold 0.1] [--json FILE] [--plot FILE.png]

For each planner in the files: the least cumulative cost at which the median
(over seeds) regret of the recommendation at the target fidelity is at most
``--threshold`` (:func:`selflab.controller.bench.cost_to_regret`), the same per seed,
and the median cost share of each fidelity. With two or more planners, the
ratio of each planner's cost to the last one's (the baseline, e.g. ``bo`` at
the target fidelity only). Target (issue 4): ``mf`` / ``bo`` <= 0.5 on
AugmentedHartmann. Prints one JSON object; ``--plot`` draws every file's
planners in one regret-against-cost figure (as ``selflab bench --plot`` does
for one run), so planners run with different cost budgets share a figure.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import Any

from selflab.controller.bench import BenchResult, cost_to_regret, regret_against_cost


def load(paths: list[str]) -> list[BenchResult]:
    """Bench results from files holding one result or an array of them."""
    results = []
    for path in paths:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        results += [BenchResult.model_validate(d) for d in (data if isinstance(data, list) else [data])]
    return results


def summary(result: BenchResult, threshold: float) -> dict[str, Any]:
    """Cost to the threshold (median curve and per seed) and the cost share per fidelity."""
    if result.optimum is None:
        raise SystemExit(f"{result.problem}: no known optimum, so no regret")
    shares: dict[float, list[float]] = {}
    for run in result.runs:
        total = run.cost_trace[-1] if run.cost_trace else 0.0
        steps = [b - a for a, b in zip([0.0, *run.cost_trace], run.cost_trace)]
        for f in set(run.fidelity_trace):
            spent = sum(c for c, g in zip(steps, run.fidelity_trace) if g == f)
            shares.setdefault(f, []).append(spent / total if total else 0.0)
    return {
        "seeds": result.seeds,
        "cost_budget": result.cost_budget,
        "cost_to_threshold": _rounded(cost_to_regret(result.runs, result.optimum, threshold)),
        "per_seed": [_rounded(cost_to_regret([run], result.optimum, threshold)) for run in result.runs],
        "median_final_regret": result.median_recommendation_regret,
        "median_evaluations": statistics.median(run.evaluations for run in result.runs),
        "median_proposal_seconds": result.median_proposal_seconds,
        "median_cost_share_by_fidelity": {f"{f:g}": round(statistics.median(v), 3) for f, v in sorted(shares.items())},
    }


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 6)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("files", nargs="+", help="selflab bench --json outputs")
    parser.add_argument("--threshold", type=float, default=0.1, help="recommendation regret to reach (default 0.1)")
    parser.add_argument("--json", metavar="FILE", help="also write the output here")
    parser.add_argument("--plot", metavar="FILE.png", help="recommendation regret against cumulative cost, one line per planner")
    args = parser.parse_args()
    results = load(args.files)
    out: dict[str, Any] = {"problem": results[0].problem, "threshold": args.threshold,
                           "planners": {r.planner: summary(r, args.threshold) for r in results}}
    baseline = out["planners"][results[-1].planner]["cost_to_threshold"]
    if len(results) > 1:
        out["ratio_to_" + results[-1].planner] = {
            r.planner: (round(c / baseline, 3) if (c := out["planners"][r.planner]["cost_to_threshold"]) is not None and baseline else None)
            for r in results[:-1]
        }
    if args.plot:
        from selflab.controller.plots import cost_regret_figure

        cost_regret_figure({r.planner: regret_against_cost(r) for r in results}, args.plot, title=f"{results[0].problem}: median and IQR over {results[0].seeds} seeds",
                           ylabel="regret of the recommendation (target fidelity)")
    text = json.dumps(out, indent=1)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
