"""Cost to reach a recommendation regret, from ``selflab bench`` JSON files.

    selflab bench --problem augmented_hartmann --planner mf --cost-budget 25 --seeds 10 --json mf.json
    selflab bench --problem augmented_hartmann --planner bo --cost-budget 80 --seeds 10 --json bo.json
    python benchmarks/mf_cost.py mf.json bo.json [--threshold 0.1] [--json FILE]

For each planner in the files: the least cumulative cost at which the median
(over seeds) regret of the recommendation at the target fidelity is at most
``--threshold`` (:func:`controller.bench.cost_to_regret`), the same per seed,
and the median cost share of each fidelity. With two or more planners, the
ratio of each planner's cost to the last one's (the baseline, e.g. ``bo`` at
the target fidelity only). Target (issue 4): ``mf`` / ``bo`` <= 0.5 on
AugmentedHartmann. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import Any

from controller.bench import BenchResult, cost_to_regret


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
        "cost_to_threshold": cost_to_regret(result.runs, result.optimum, threshold),
        "per_seed": [cost_to_regret([run], result.optimum, threshold) for run in result.runs],
        "median_final_regret": result.median_recommendation_regret,
        "median_evaluations": statistics.median(run.evaluations for run in result.runs),
        "median_proposal_seconds": result.median_proposal_seconds,
        "median_cost_share_by_fidelity": {f"{f:g}": round(statistics.median(v), 3) for f, v in sorted(shares.items())},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("files", nargs="+", help="selflab bench --json outputs")
    parser.add_argument("--threshold", type=float, default=0.1, help="recommendation regret to reach (default 0.1)")
    parser.add_argument("--json", metavar="FILE", help="also write the output here")
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
    text = json.dumps(out, indent=1)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
