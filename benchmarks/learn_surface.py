"""Surrogate building (issue 19, ``objective: learn``): test RMSE on Hartmann6 after 40 evaluations.

    nice -n 10 python benchmarks/learn_surface.py --seeds 10 --json learn.json --plot benchmarks/figures/learn_surface.png
    python benchmarks/learn_surface.py --seeds 2                    # a quick look

Per seed, two designs of ``--budget`` (40) Hartmann6 evaluations:

- ``learn``: the ``bo`` planner with the output marked ``objective: learn``
  (its initial design, then qNegIntegratedPosteriorVariance, one experiment
  at a time);
- ``sobol``: the ``sobol`` planner (scrambled Sobol, same seed).

Each design's data are then fitted by the same model class, a fresh
``SurrogateFitter`` (the ``bo`` planner's GP: Matern-5/2 with Gamma(3, 6)
lengthscale priors, outcome standardized, no warp), and the posterior mean is
scored on 2,000 uniform random test points (one fixed set per seed): RMSE,
and RMSE relative to the standard deviation of the test values.

Target: median RMSE of ``learn`` at least 20 % below ``sobol``'s (10 seeds).
Counts errors, not time.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

import torch
from botorch.test_functions import Hartmann

from selflab.planners.baselines import SobolPlanner
from selflab.planners.bo import BOPlanner
from selflab.planners.encoding import Encoding
from selflab.planners.protocol import Observation, PlanContext
from selflab.planners.space import FloatParameter, Objective, SearchSpace
from selflab.planners.surrogate import SurrogateFitter, TrainingData, numerics

SPACE = SearchSpace(parameters=[FloatParameter(name=f"x{i}", low=0.0, high=1.0) for i in range(1, 7)])
LEARN = [Objective(name="y", objective="learn")]
_H6 = Hartmann(dim=6)


def f(X: torch.Tensor) -> torch.Tensor:
    return _H6(X)


def design(planner: Any, seed: int, budget: int) -> list[Observation]:
    observations: list[Observation] = []
    for step in range(budget):
        (p,) = planner.propose(SPACE, LEARN, observations, [], 1, context=PlanContext(seed=seed, step=step))
        x = torch.tensor([[float(p.params[f"x{i}"]) for i in range(1, 7)]], dtype=torch.float64)
        observations.append(Observation(params=p.params, outcomes={"y": float(f(x)[0])}))
    return observations


def rmse(observations: list[Observation], X_test: torch.Tensor, y_test: torch.Tensor) -> float:
    enc = Encoding(SPACE)
    data = TrainingData.from_observations(enc, ["y"], observations)
    with numerics():
        surrogate = SurrogateFitter().fit(enc, ["y"], data)
        mean, _ = surrogate.stats(X_test)
    return float(((mean[:, 0] - y_test) ** 2).mean().sqrt())


def one_seed(seed: int, args: argparse.Namespace) -> dict[str, Any]:
    g = torch.Generator().manual_seed(10_000 + seed)
    X_test = torch.rand(args.test_points, 6, generator=g, dtype=torch.float64)
    y_test = f(X_test)
    learn = design(BOPlanner(num_restarts=args.restarts, raw_samples=args.raw_samples, maxiter=args.maxiter), seed, args.budget)
    sobol = design(SobolPlanner(), seed, args.budget)
    out = {"seed": seed, "test_sd": float(y_test.std())}
    for name, obs in (("learn", learn), ("sobol", sobol)):
        out[name] = rmse(obs, X_test, y_test)
    print(f"seed {seed}: rmse learn {out['learn']:.4f}, sobol {out['sobol']:.4f} (test sd {out['test_sd']:.4f})", file=sys.stderr, flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--budget", type=int, default=40)
    parser.add_argument("--test-points", type=int, default=2000)
    parser.add_argument("--restarts", type=int, default=2)
    parser.add_argument("--raw-samples", type=int, default=128)
    parser.add_argument("--maxiter", type=int, default=30)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--plot", type=Path)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    runs = [one_seed(seed, args) for seed in range(args.first_seed, args.first_seed + args.seeds)]
    med = {name: statistics.median(r[name] for r in runs) for name in ("learn", "sobol")}
    summary = {"median_rmse": med, "ratio_learn_to_sobol": med["learn"] / med["sobol"],
               "seeds_learn_better": sum(r["learn"] < r["sobol"] for r in runs),
               "target_20pct_lower": med["learn"] <= 0.8 * med["sobol"]}
    result = {"command": " ".join(sys.argv), "runs": runs, "summary": summary}
    text = json.dumps(result, indent=1)
    print(text)
    if args.json:
        args.json.write_text(text)
    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(5, 4))
        for r in runs:
            ax.plot([0, 1], [r["sobol"], r["learn"]], color="grey", alpha=0.5, marker="o")
        ax.set_xticks([0, 1], ["sobol", "learn (qNIPV)"])
        ax.set_ylabel(f"test RMSE on {args.test_points} points")
        ax.set_title(f"Hartmann6, {args.budget} evaluations, {len(runs)} seeds")
        fig.tight_layout()
        fig.savefig(args.plot, dpi=120)
    return 0


if __name__ == "__main__":
    sys.exit(main())
