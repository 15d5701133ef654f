"""Latency of one ``mf`` proposal (refit plus acquisition) against plain botorch.

Generates N observations of botorch's ``AugmentedHartmann`` (d = 6 plus the
fidelity) at uniform random points, at fidelities 0.5 / 0.75 / 1 drawn with
probabilities 0.6 / 0.25 / 0.15 (costs 0.1 / 0.3 / 1), then times one proposal
(q = 1, three offered fidelities), R times each and interleaved so that load on
a shared machine hits all alike:

- ``warm``: as in a running campaign: the planner's previous fit, at N - 1
  points, is cached, and the proposal at N points conditions on the new one;
- ``cold``: a fresh planner, no cache (hyperparameters fitted from defaults);
- ``baseline``: plain botorch as in its multi-fidelity tutorials, cold:
  ``SingleTaskMultiFidelityGP(data_fidelities=[6])`` fitted from scratch,
  ``qMultiFidelityMaxValueEntropy`` on 1,000 random candidates with an
  inverse-cost utility, ``optimize_acqf_mixed`` over the three fidelities
  (``num_restarts=10, raw_samples=512``), one torch thread (like ``mf``);
- ``--mfkg``: also the tutorial's ``qMultiFidelityKnowledgeGradient``
  (``num_fantasies=128``, ``num_restarts=10, raw_samples=512``,
  ``batch_limit=10, maxiter=200``), timed once (it takes minutes).

    python benchmarks/mf_latency.py --n 100 [--repeats 5] [--mfkg] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from typing import Any

import torch
from botorch.acquisition import PosteriorMean
from botorch.acquisition.cost_aware import InverseCostWeightedUtility
from botorch.acquisition.fixed_feature import FixedFeatureAcquisitionFunction
from botorch.acquisition.knowledge_gradient import qMultiFidelityKnowledgeGradient
from botorch.acquisition.max_value_entropy_search import qMultiFidelityMaxValueEntropy
from botorch.acquisition.utils import project_to_target_fidelity
from botorch.fit import fit_gpytorch_mll
from botorch.models import SingleTaskMultiFidelityGP
from botorch.models.transforms.outcome import Standardize
from botorch.optim import optimize_acqf, optimize_acqf_mixed
from botorch.test_functions.multi_fidelity import AugmentedHartmann
from gpytorch.mlls import ExactMarginalLogLikelihood
from torch import Tensor

from selflab.planners.acquisition import fidelity_cost_model
from selflab.planners.mf import MFPlanner
from selflab.planners.protocol import FidelityOption, Observation, PlanContext
from selflab.planners.space import FloatParameter, Objective, SearchSpace

LEVELS = (0.5, 0.75, 1.0)
COSTS = (0.1, 0.3, 1.0)
D = 6


def data(n: int, seed: int) -> tuple[Tensor, Tensor]:
    """``n x 7`` inputs (fidelity last) and ``n`` AugmentedHartmann values (to minimize)."""
    g = torch.Generator().manual_seed(seed)
    X = torch.rand(n, D, generator=g, dtype=torch.float64)
    s = torch.tensor(LEVELS, dtype=torch.float64)[torch.multinomial(torch.tensor([0.6, 0.25, 0.15]), n, replacement=True, generator=g)]
    X = torch.cat([X, s[:, None]], dim=1)
    return X, AugmentedHartmann()(X)


def baseline_model(X: Tensor, y: Tensor) -> SingleTaskMultiFidelityGP:
    model = SingleTaskMultiFidelityGP(X, -y[:, None], data_fidelities=[D], outcome_transform=Standardize(m=1))
    fit_gpytorch_mll(ExactMarginalLogLikelihood(model.likelihood, model))
    return model


def project(X: Tensor) -> Tensor:
    return project_to_target_fidelity(X, target_fidelities={D: 1.0}, d=D + 1)


def baseline_mfmes(X: Tensor, y: Tensor) -> Tensor:
    """Plain botorch MF-MES, tutorial style, from scratch."""
    model = baseline_model(X, y)
    candidates = torch.cat([torch.rand(1000, D, dtype=torch.float64), torch.ones(1000, 1, dtype=torch.float64)], dim=1)
    utility = InverseCostWeightedUtility(cost_model=fidelity_cost_model(LEVELS, COSTS))
    acqf = qMultiFidelityMaxValueEntropy(model, candidates, cost_aware_utility=utility, project=project)
    bounds = torch.tensor([[0.0] * (D + 1), [1.0] * (D + 1)], dtype=torch.float64)
    x, _ = optimize_acqf_mixed(acqf, bounds=bounds, q=1, num_restarts=10, raw_samples=512, fixed_features_list=[{D: s} for s in LEVELS])
    return x


def baseline_mfkg(X: Tensor, y: Tensor) -> Tensor:
    """Plain botorch MFKG, with the discrete multi-fidelity tutorial's settings."""
    model = baseline_model(X, y)
    bounds = torch.tensor([[0.0] * (D + 1), [1.0] * (D + 1)], dtype=torch.float64)
    best = FixedFeatureAcquisitionFunction(PosteriorMean(model), d=D + 1, columns=[D], values=[1.0])
    _, current = optimize_acqf(best, bounds=bounds[:, :D], q=1, num_restarts=10, raw_samples=1024, options={"batch_limit": 10, "maxiter": 200})
    utility = InverseCostWeightedUtility(cost_model=fidelity_cost_model(LEVELS, COSTS))
    acqf = qMultiFidelityKnowledgeGradient(model, num_fantasies=128, current_value=current, cost_aware_utility=utility, project=project)
    x, _ = optimize_acqf_mixed(acqf, bounds=bounds, q=1, num_restarts=10, raw_samples=512, fixed_features_list=[{D: s} for s in LEVELS],
                               options={"batch_limit": 10, "maxiter": 200})
    return x


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--mfkg", action="store_true", help="also time botorch's MFKG tutorial settings once")
    parser.add_argument("--json", help="also write the result to this file")
    args = parser.parse_args()
    n = args.n

    X, y = data(n, args.seed)
    space = SearchSpace(parameters=[FloatParameter(name=f"x{i}", low=0, high=1) for i in range(1, D + 1)])
    objectives = [Objective(name="y", direction="minimize")]
    observations = [
        Observation(params={f"x{i + 1}": float(v) for i, v in enumerate(row[:D])}, outcomes={"y": float(t)}, fidelity=float(row[D]))
        for row, t in zip(X, y)
    ]
    offered = tuple(FidelityOption(fidelity=f, cost=c) for f, c in zip(LEVELS, COSTS))

    def ours(warm: bool, step: int) -> tuple[float, dict[str, Any]]:
        planner = MFPlanner()
        if warm:
            planner.propose(space, objectives, observations[:-1], [], 1, context=PlanContext(seed=args.seed, step=step - 1, fidelities=offered))
        started = time.perf_counter()
        proposal = planner.propose(space, objectives, observations, [], 1, context=PlanContext(seed=args.seed, step=step, fidelities=offered))[0]
        return time.perf_counter() - started, proposal.reason

    threads = torch.get_num_threads()
    times: dict[str, list[float]] = {"warm": [], "cold": [], "baseline": []}
    fidelities: dict[str, list[float]] = {"warm": [], "cold": []}
    for r in range(args.repeats):
        for name, warm in (("warm", True), ("cold", False)):
            seconds, reason = ours(warm, n + r)
            times[name].append(seconds)
            fidelities[name].append(reason["fidelity"])
        torch.set_num_threads(1)
        started = time.perf_counter()
        baseline_mfmes(X, y)
        times["baseline"].append(time.perf_counter() - started)
        torch.set_num_threads(threads)
    if args.mfkg:
        torch.set_num_threads(1)
        started = time.perf_counter()
        baseline_mfkg(X, y)
        times["baseline_mfkg"] = [time.perf_counter() - started]
        torch.set_num_threads(threads)

    median = {k: statistics.median(v) for k, v in times.items()}
    result: dict[str, Any] = {
        "n": n,
        "repeats": args.repeats,
        "median_seconds": median["warm"],
        "cold_median_seconds": median["cold"],
        "baseline_median_seconds": median["baseline"],
        "ratio_vs_baseline": median["warm"] / median["baseline"],
        "cold_ratio_vs_baseline": median["cold"] / median["baseline"],
        "proposed_fidelities": fidelities,
        "seconds": times,
        "load_average": os.getloadavg(),
        "cpu_count": os.cpu_count(),
    }
    if "baseline_mfkg" in median:
        result["baseline_mfkg_seconds"] = median["baseline_mfkg"]
        result["ratio_vs_mfkg"] = median["warm"] / median["baseline_mfkg"]
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        with open(args.json, "w") as fh:
            fh.write(text + "\n")


if __name__ == "__main__":
    main()
