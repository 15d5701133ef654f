"""Latency of one ``bo`` proposal (refit plus acquisition) against plain botorch.

Generates N observations of a Hartmann function (botorch's ``Hartmann`` for
d = 3, 4, 6; otherwise a Hartmann-like sum of four Gaussian wells with seeded
centres and widths) at uniform random points, then times, R times each and
interleaved so that load on a shared machine hits all alike:

- ``warm``: as in a running campaign: the planner's previous fit, at N - 1
  points, is cached, and the proposal at N points conditions on the new one;
- ``warm_refit``: the cache is from N / (1 + refit_growth) points, so the
  proposal re-optimizes the hyperparameters from the cached ones;
- ``cold``: a fresh planner, no cache;
- ``baseline``: plain botorch as in its tutorials: ``SingleTaskGP`` fitted
  from scratch with ``fit_gpytorch_mll``, ``qLogNoisyExpectedImprovement`` and
  ``optimize_acqf`` with ``num_restarts=10, raw_samples=512``, with torch's
  default thread count and again with one thread (the ``bo`` planner's
  default ``torch_threads``), so that the ratio is not only thread contention.

    python benchmarks/planner_latency.py --n 1000 --dim 6 [--repeats 5] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
from botorch.acquisition import qLogNoisyExpectedImprovement
from botorch.fit import fit_gpytorch_mll
from botorch.models import SingleTaskGP
from botorch.models.transforms.input import Normalize
from botorch.models.transforms.outcome import Standardize
from botorch.optim import optimize_acqf
from botorch.test_functions import Hartmann
from gpytorch.mlls import ExactMarginalLogLikelihood
from torch import Tensor

from selflab.planners.bo import BOPlanner
from selflab.planners.protocol import Observation, PlanContext
from selflab.planners.space import FloatParameter, Objective, SearchSpace


def hartmann_like(dim: int, seed: int = 0) -> Callable[[Tensor], Tensor]:
    """``n x dim`` in the unit cube -> ``n`` values to minimize."""
    if dim in (3, 4, 6):
        return Hartmann(dim=dim)
    g = torch.Generator().manual_seed(seed)
    alpha = torch.tensor([1.0, 1.2, 3.0, 3.2], dtype=torch.float64)
    A = 0.5 + 17.5 * torch.rand(4, dim, generator=g, dtype=torch.float64)
    P = torch.rand(4, dim, generator=g, dtype=torch.float64)
    return lambda X: -(alpha * torch.exp(-(A * (X[..., None, :] - P) ** 2).sum(-1))).sum(-1)


def baseline_proposal(X: Tensor, y: Tensor) -> Tensor:
    """Plain botorch, tutorial settings: fit from scratch, qLogNEI, optimize_acqf."""
    model = SingleTaskGP(X, -y[:, None], input_transform=Normalize(d=X.shape[-1]), outcome_transform=Standardize(m=1))
    fit_gpytorch_mll(ExactMarginalLogLikelihood(model.likelihood, model))
    acqf = qLogNoisyExpectedImprovement(model, X_baseline=X, prune_baseline=True)
    bounds = torch.stack([torch.zeros(X.shape[-1]), torch.ones(X.shape[-1])]).to(X)
    candidate, _ = optimize_acqf(acqf, bounds=bounds, q=1, num_restarts=10, raw_samples=512)
    return candidate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--dim", type=int, default=6)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", help="also write the result to this file")
    args = parser.parse_args()
    n, d = args.n, args.dim

    f = hartmann_like(d, args.seed)
    X = torch.rand(n, d, generator=torch.Generator().manual_seed(args.seed), dtype=torch.float64)
    y = f(X)
    space = SearchSpace(parameters=[FloatParameter(name=f"x{i}", low=0, high=1) for i in range(d)])
    objectives = [Objective(name="y", direction="minimize")]
    observations = [Observation(params={f"x{i}": float(v) for i, v in enumerate(row)}, outcomes={"y": float(t)}) for row, t in zip(X, y)]

    def ours(cached_at: int | None, step: int) -> tuple[float, dict[str, Any]]:
        planner = BOPlanner()
        if cached_at is not None:
            planner.propose(space, objectives, observations[:cached_at], [], 1, context=PlanContext(seed=args.seed, step=step - 1))
        started = time.perf_counter()
        proposal = planner.propose(space, objectives, observations, [], 1, context=PlanContext(seed=args.seed, step=step))[0]
        return time.perf_counter() - started, proposal.reason

    growth = BOPlanner().options.refit_growth
    times: dict[str, list[float]] = {"warm": [], "warm_refit": [], "cold": [], "baseline": [], "baseline_1thread": []}
    refits: dict[str, list[str]] = {"warm": [], "warm_refit": [], "cold": []}
    for r in range(args.repeats):
        step = n + r
        for name, cached_at in (("warm", n - 1), ("warm_refit", int(n / (1 + growth))), ("cold", None)):
            seconds, reason = ours(cached_at, step)
            times[name].append(seconds)
            refits[name].append(reason["refit"])
        threads = torch.get_num_threads()
        for name, count in (("baseline", threads), ("baseline_1thread", 1)):
            torch.set_num_threads(count)
            started = time.perf_counter()
            baseline_proposal(X, y)
            times[name].append(time.perf_counter() - started)
        torch.set_num_threads(threads)

    median = {k: statistics.median(v) for k, v in times.items()}
    result = {
        "n": n,
        "dim": d,
        "repeats": args.repeats,
        "median_seconds": median["warm"],
        "warm_refit_median_seconds": median["warm_refit"],
        "cold_median_seconds": median["cold"],
        "baseline_median_seconds": median["baseline"],
        "baseline_1thread_median_seconds": median["baseline_1thread"],
        "ratio_vs_baseline": median["warm"] / median["baseline"],
        "ratio_vs_baseline_1thread": median["warm"] / median["baseline_1thread"],
        "cold_ratio_vs_baseline": median["cold"] / median["baseline"],
        "refit_kinds": refits,
        "seconds": times,
        "torch_threads": torch.get_num_threads(),
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        with open(args.json, "w") as fh:
            fh.write(text + "\n")


if __name__ == "__main__":
    main()
