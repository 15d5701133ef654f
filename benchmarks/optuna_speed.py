"""``bo`` against Optuna's ``GPSampler`` on Hartmann6 (issue 22): seconds per
ask and final regret, both as ask/tell loops, in the same run.

    python benchmarks/optuna_speed.py --seeds 5 --budget 40 [--json FILE] [--options '{"...": ...}']

Each seed runs, one after the other and each in this process:

- ``bo``: a :class:`selflab.controller.study.Study` on an SQLite ledger in a
  temporary directory, ``study.ask()`` -> Hartmann6 -> ``study.tell()``
  ``--budget`` times (``--options``: the planner's options). Nothing else is
  asked of the study (no recommendation), so each ask pays the whole model
  work of a step: the GP fit and the acquisition's optimization.
- ``optuna``: ``optuna.samplers.GPSampler(seed=seed)`` in an in-memory study,
  ``study.ask()`` plus the six ``suggest_float`` calls -> Hartmann6 ->
  ``study.tell()``. GPSampler does its model work in ``ask``.

"Seconds per ask" is the median over the model-based asks of every seed
(Optuna: after its ``n_startup_trials``, 10, its default; ``bo``: after its initial
design, the asks whose reason says ``"strategy": "bo"``), and also the mean
over all asks. Regret is the best value against Hartmann6's optimum
(-3.32237), its median over the seeds. Target (issue 22): ``bo``'s seconds
per model-based ask at most Optuna's, at a median regret no worse than today's.
Optuna is not a dependency of selflab: ``pip install optuna`` first.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from botorch.test_functions import Hartmann
from selflab.controller.study import Study
from selflab.planners.registry import make_planner
from selflab.planners.space import FloatParameter, Objective, SearchSpace
from selflab.simulators.problems import get_problem

_PROBLEM = get_problem("hartmann6")
assert _PROBLEM.optimum is not None
OPTIMUM: float = _PROBLEM.optimum
DIM = 6
OPTUNA_STARTUP = 10
"""GPSampler's random trials before its model (its default, set explicitly)."""
_HARTMANN = Hartmann(dim=DIM)


def hartmann6(params: dict[str, float]) -> float:
    """Hartmann6 at ``x1..x6`` in the unit cube (to minimize)."""
    return float(_HARTMANN(torch.tensor([[params[f"x{i}"] for i in range(1, DIM + 1)]], dtype=torch.float64))[0])


def run_bo(seed: int, budget: int, options: dict[str, Any]) -> dict[str, Any]:
    """One ``bo`` campaign as an ask/tell loop: seconds per ask, which asks were model-based, the best value."""
    space = SearchSpace(parameters=[FloatParameter(name=f"x{i}", low=0, high=1) for i in range(1, DIM + 1)])
    seconds: list[float] = []
    model: list[bool] = []
    best = float("inf")
    with tempfile.TemporaryDirectory() as tmp, Study.create(
        f"h6-{seed}", space, [Objective(name="y", direction="minimize")], ledger=f"sqlite:///{Path(tmp) / 'h6.sqlite'}",
        planner=make_planner("bo", options), seed=seed,
    ) as study:
        for _ in range(budget):
            started = time.perf_counter()
            (trial,) = study.ask()
            seconds.append(time.perf_counter() - started)
            model.append(trial.reason.get("strategy") == "bo")
            y = hartmann6(dict(trial.params))
            best = min(best, y)
            study.tell(trial.trial_id, {"y": y})
    return {"seconds": seconds, "model_based": model, "best": best, "regret": best - OPTIMUM}


def run_optuna(seed: int, budget: int) -> dict[str, Any]:
    """One campaign of Optuna's GPSampler as an ask/tell loop."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sampler = optuna.samplers.GPSampler(seed=seed, n_startup_trials=OPTUNA_STARTUP)
    study = optuna.create_study(direction="minimize", sampler=sampler)
    seconds: list[float] = []
    best = float("inf")
    for _ in range(budget):
        started = time.perf_counter()
        trial = study.ask()
        params = {f"x{i}": trial.suggest_float(f"x{i}", 0.0, 1.0) for i in range(1, DIM + 1)}
        seconds.append(time.perf_counter() - started)
        y = hartmann6(params)
        best = min(best, y)
        study.tell(trial, y)
    return {"seconds": seconds, "model_based": [i >= OPTUNA_STARTUP for i in range(budget)], "best": best, "regret": best - OPTIMUM}


def summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Median seconds per model-based ask, mean per ask, median regret."""
    model = [s for r in runs for s, m in zip(r["seconds"], r["model_based"]) if m]
    every = [s for r in runs for s in r["seconds"]]
    return {
        "median_model_ask_s": statistics.median(model) if model else None,
        "mean_ask_s": statistics.fmean(every),
        "median_regret": statistics.median(r["regret"] for r in runs),
        "regrets": [r["regret"] for r in runs],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--budget", type=int, default=40)
    parser.add_argument("--options", default="{}", help="bo's planner options, JSON")
    parser.add_argument("--only", choices=["bo", "optuna"], default=None, help="run one side only")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    options = json.loads(args.options)
    runs: dict[str, list[dict[str, Any]]] = {"bo": [], "optuna": []}
    for seed in range(args.seeds):  # (interleaved, so that a change of load hits both alike)
        if args.only in (None, "bo"):
            runs["bo"].append(run_bo(seed, args.budget, options))
        if args.only in (None, "optuna"):
            runs["optuna"].append(run_optuna(seed, args.budget))
        print(f"seed {seed}: " + ", ".join(f"{k} regret {v[-1]['regret']:.4f}, model ask {statistics.median(s for s, m in zip(v[-1]['seconds'], v[-1]['model_based']) if m):.3f} s"
                                          for k, v in runs.items() if v), flush=True)
    result = {name: summary(r) for name, r in runs.items() if r}
    print("| sampler | median s per model-based ask | mean s per ask | median regret |")
    print("|---|---|---|---|")
    for name, s in result.items():
        print(f"| {name} | {s['median_model_ask_s']:.3f} | {s['mean_ask_s']:.3f} | {s['median_regret']:.4f} |")
    if len(result) == 2:
        print(f"bo / optuna seconds per model-based ask: {result['bo']['median_model_ask_s'] / result['optuna']['median_model_ask_s']:.2f}")
    if args.json:
        args.json.write_text(json.dumps({"options": options, "budget": args.budget, "summary": result, "runs": runs}, indent=1))


if __name__ == "__main__":
    main()
