"""Trust the model (issue 18): the quality checks of its "Done when".

    python benchmarks/trust.py --check all --seeds 10 --json trust.json
    python benchmarks/trust.py --check flag rescale --seeds 10 --first-seed 10   # fresh seeds
    python benchmarks/trust.py --check failures --seeds 3 --budget 30           # a reduced run

Each check runs the ``bo`` planner (default options unless said) in a plain
ask/tell loop, one experiment at a time, with the planner-facing records the
campaign loop is to pass (:class:`~selflab.planners.calibration.ScoredObservation`
for each result, :class:`~selflab.planners.feasibility.Failure` for each failure),
and judges model health with :mod:`selflab.controller.model_health`, as the
campaign loop is to:

- ``flag``: Hartmann6 BO (40 evaluations): does ``miscalibrated`` fire by
  evaluation 30? Target: in at least 8 of 10 seeds. And a Branin campaign of
  100 uniformly random points, each scored against the ``bo`` planner's model
  of the points before it (what its reason would have recorded): does it stay
  quiet? Target: at least 8 of 10 seeds.
- ``rescale``: Hartmann6 BO, 40 evaluations, with ``calibration: rescale``
  against the plain run of ``flag`` (same seeds): prequential 90 % coverage of
  evaluations 21-40 (target in [0.8, 0.95]) and median regret at 40
  (target <= 1.1x the plain run's).
- ``failures``: the reactor with its clogging region (``reactor_clog``), 40
  evaluations, ``failures: learn`` against ``failures: avoid`` (today's
  behaviour): failed experiments (target: at least 50 % fewer) and median
  regret of the best feasible yield at 40 (target <= 1.1x).

Prints (and with ``--json`` writes) one JSON object with every figure. Don't
time it: the loop's wall time depends on the machine's load.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from selflab.controller.model_health import assess, scores
from selflab.planners.bo import BOPlanner
from selflab.planners.calibration import CalibrationBand, CalibrationStats, ScoredObservation
from selflab.planners.feasibility import Failure
from selflab.planners.protocol import Observation, Pending, PlanContext
from selflab.planners.space import FloatParameter, Objective, SearchSpace
from selflab.planners.surrogate import numerics
from selflab.simulators.reactor import REACTOR_LIMITS, PlugFlowReactor, ReactorClogged

HARTMANN_OPT = -3.32237
BAND = CalibrationBand()


@dataclass
class Result:
    """A completed experiment as :mod:`selflab.controller.model_health` reads it."""

    experiment_id: int
    outcomes: dict[str, float]
    reason: dict[str, Any]


@dataclass
class Run:
    results: list[Result] = field(default_factory=list)
    values: list[float] = field(default_factory=list)  # every completed objective value, in order
    failures: int = 0
    flagged_at: int | None = None  # the first evaluation at which ``miscalibrated`` held
    extrapolating: int = 0
    proposals: int = 0


Evaluate = Callable[[dict[str, Any]], dict[str, float]]


def campaign(space: SearchSpace, objective: Objective, evaluate: Evaluate, budget: int, seed: int, options: dict[str, Any]) -> Run:
    """``budget`` experiments proposed by ``bo`` one at a time; a failure is
    an evaluation that raises :class:`ReactorClogged`."""
    planner = BOPlanner(**options)
    observations: list[Observation] = []
    failed: list[Pending] = []
    run = Run()
    for step in range(budget):
        context = PlanContext(seed=seed, step=step, failed=tuple(failed))
        (proposal,) = planner.propose(space, [objective], observations, [], 1, context=context)
        if proposal.reason.get("extrapolation"):
            run.proposals += 1
            run.extrapolating += bool(proposal.reason["extrapolation"]["extrapolating"])
        try:
            outcomes = evaluate(proposal.params)
        except ReactorClogged as exc:
            failed.append(Failure(params=proposal.params, kind=exc.kind))
            run.failures += 1
            continue
        observation = Observation.from_result(proposal.params, outcomes)
        observations.append(ScoredObservation.of(observation, proposal.reason))
        run.results.append(Result(step + 1, outcomes, proposal.reason))
        run.values.append(outcomes[objective.name])
        if run.flagged_at is None and assess(run.results, [objective.name], BAND).miscalibrated:
            run.flagged_at = step + 1
    return run


def hartmann6(x: dict[str, Any]) -> dict[str, float]:
    from botorch.test_functions import Hartmann

    point = torch.tensor([[x[f"x{i}"] for i in range(1, 7)]], dtype=torch.float64)
    return {"y": float(Hartmann(dim=6).evaluate_true(point))}


def branin(x: dict[str, Any]) -> dict[str, float]:
    from botorch.test_functions import Branin

    return {"y": float(Branin().evaluate_true(torch.tensor([[x["x1"], x["x2"]]], dtype=torch.float64)))}


HARTMANN_SPACE = SearchSpace(parameters=[FloatParameter(name=f"x{i}", low=0, high=1) for i in range(1, 7)])
BRANIN_SPACE = SearchSpace(parameters=[FloatParameter(name="x1", low=-5, high=10), FloatParameter(name="x2", low=0, high=15)])
REACTOR_SPACE = SearchSpace(parameters=[FloatParameter(name=n, low=lo, high=hi, log=n == "residence_time") for n, (lo, hi) in REACTOR_LIMITS.items()])
MINIMIZE_Y = Objective(name="y", direction="minimize")


def random_scored(seed: int, n: int = 100) -> Run:
    """Branin at ``n`` uniformly random points, each scored against the ``bo``
    planner's model of the points before it (its predicted mean, latent std and
    noise std there: what a ``bo`` reason records)."""
    planner = BOPlanner()
    g = torch.Generator().manual_seed(seed)
    U = torch.rand(n, 2, generator=g, dtype=torch.float64)
    points = [BRANIN_SPACE.from_unit(u) for u in U.tolist()]
    run = Run()
    observations: list[Observation] = []
    for step, point in enumerate(points):
        reason: dict[str, Any] = {}
        if len(observations) >= 5:
            fitted = planner._model(BRANIN_SPACE, [MINIMIZE_Y], observations, PlanContext(seed=seed, step=step))  # (the model propose fits)
            if fitted is not None:
                surrogate = fitted[0]
                X = surrogate.encoding.encode([point])
                with numerics():
                    mean, std = surrogate.stats(X)
                    noise = surrogate.noise_std(X)
                reason = {"predicted": {"y": {"mean": float(mean[0, 0]), "std": float(std[0, 0])}}, "noise_std": {"y": float(noise[0, 0])}}
        outcomes = branin(point)
        observations.append(Observation.from_result(point, outcomes))
        run.results.append(Result(step + 1, outcomes, reason))
        run.values.append(outcomes["y"])
        if run.flagged_at is None and assess(run.results, ["y"], BAND).miscalibrated:
            run.flagged_at = step + 1
    return run


def reactor_clog() -> tuple[PlugFlowReactor, Evaluate]:
    reactor = PlugFlowReactor(clogging=True)

    def evaluate(x: dict[str, Any]) -> dict[str, float]:
        if reactor.clogs(x["temperature"], x["concentration"]):
            raise ReactorClogged("clogged")
        return {"yield": reactor.outlet(x).p / x["concentration"]}

    return reactor, evaluate


def coverage_after(run: Run, after: int, outcome: str = "y") -> list[float]:
    """The prequential z of the results of evaluations after ``after``."""
    return [s.z for s in scores([r for r in run.results if r.experiment_id > after], outcome)]


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values)) if values else math.nan


def check_flag(seeds: Sequence[int], budget: int, by: int, branin_points: int, plain: dict[int, Run]) -> dict[str, Any]:
    for s in seeds:
        plain.setdefault(s, campaign(HARTMANN_SPACE, MINIMIZE_Y, hartmann6, budget, s, {}))
        print(f"hartmann6 bo seed {s}: flagged at {plain[s].flagged_at}", file=sys.stderr)
    quiet = {}
    for s in seeds:
        quiet[s] = random_scored(s, branin_points)
        print(f"branin random seed {s}: flagged at {quiet[s].flagged_at}", file=sys.stderr)
    return {
        "hartmann6_bo": {"fired_by": by, "seeds_fired": sum(1 for s in seeds if (plain[s].flagged_at or math.inf) <= by),
                         "flagged_at": {s: plain[s].flagged_at for s in seeds},
                         "z": CalibrationStats.of([s_.z for s in seeds for s_ in scores(plain[s].results, "y") if s_.experiment_id <= by]).model_dump()},
        "branin_random": {"points": branin_points, "seeds_quiet": sum(1 for s in seeds if quiet[s].flagged_at is None),
                          "flagged_at": {s: quiet[s].flagged_at for s in seeds},
                          "z": CalibrationStats.of([s_.z for s in seeds for s_ in scores(quiet[s].results, "y")]).model_dump()},
        "band": BAND.model_dump(),
    }


def check_rescale(seeds: Sequence[int], budget: int, after: int, plain: dict[int, Run]) -> dict[str, Any]:
    rescaled = {}
    for s in seeds:
        plain.setdefault(s, campaign(HARTMANN_SPACE, MINIMIZE_Y, hartmann6, budget, s, {}))
        rescaled[s] = campaign(HARTMANN_SPACE, MINIMIZE_Y, hartmann6, budget, s, {"calibration": "rescale"})
        print(f"hartmann6 rescale seed {s}: regret {min(rescaled[s].values) - HARTMANN_OPT:.4f} "
              f"(plain {min(plain[s].values) - HARTMANN_OPT:.4f})", file=sys.stderr)

    def arm(runs: dict[int, Run]) -> dict[str, Any]:
        z = [v for s in seeds for v in coverage_after(runs[s], after)]
        per_seed = [CalibrationStats.of(coverage_after(runs[s], after)).coverage90 for s in seeds]
        return {"coverage90_after": CalibrationStats.of(z).coverage90, "median_seed_coverage90": median(per_seed),
                "z_after": CalibrationStats.of(z).model_dump(),
                "regret": {s: min(runs[s].values) - HARTMANN_OPT for s in seeds},
                "median_regret": median([min(runs[s].values) - HARTMANN_OPT for s in seeds])}

    out = {"after": after, "budget": budget, "plain": arm(plain), "rescale": arm(rescaled)}
    out["regret_ratio"] = out["rescale"]["median_regret"] / out["plain"]["median_regret"]
    return out


def check_failures(seeds: Sequence[int], budget: int) -> dict[str, Any]:
    reactor, evaluate = reactor_clog()
    optimum = reactor.optimum or math.nan
    objective = Objective(name="yield", direction="maximize")
    arms: dict[str, dict[int, Run]] = {"avoid": {}, "learn": {}}
    for s in seeds:
        for mode in arms:
            arms[mode][s] = campaign(REACTOR_SPACE, objective, evaluate, budget, s, {"failures": mode})
        print(f"reactor_clog seed {s}: failures avoid {arms['avoid'][s].failures}, learn {arms['learn'][s].failures}; regret "
              f"avoid {optimum - max(arms['avoid'][s].values, default=0):.4f}, learn {optimum - max(arms['learn'][s].values, default=0):.4f}",
              file=sys.stderr)

    def arm(runs: dict[int, Run]) -> dict[str, Any]:
        regret = {s: optimum - max(runs[s].values, default=0.0) for s in seeds}
        return {"failures": {s: runs[s].failures for s in seeds}, "total_failures": sum(r.failures for r in runs.values()),
                "regret": regret, "median_regret": median(list(regret.values()))}

    out = {"budget": budget, "optimum": optimum, "avoid": arm(arms["avoid"]), "learn": arm(arms["learn"])}
    out["failure_ratio"] = out["learn"]["total_failures"] / max(out["avoid"]["total_failures"], 1)
    out["regret_ratio"] = out["learn"]["median_regret"] / out["avoid"]["median_regret"]
    return out


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", choices=["flag", "rescale", "failures", "all"], nargs="+", default=["all"])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--budget", type=int, default=40, help="evaluations per BO campaign")
    parser.add_argument("--by", type=int, default=30, help="flag: the evaluation by which miscalibrated must fire")
    parser.add_argument("--branin-points", type=int, default=100)
    parser.add_argument("--after", type=int, default=20, help="rescale: coverage of the evaluations after this one")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    seeds = list(range(args.first_seed, args.first_seed + args.seeds))
    plain: dict[int, Run] = {}
    out: dict[str, Any] = {"seeds": seeds}
    if {"flag", "all"} & set(args.check):
        out["flag"] = check_flag(seeds, args.budget, args.by, args.branin_points, plain)
    if {"rescale", "all"} & set(args.check):
        out["rescale"] = check_rescale(seeds, args.budget, args.after, plain)
    if {"failures", "all"} & set(args.check):
        out["failures"] = check_failures(seeds, args.budget)
    text = json.dumps(out, indent=2, default=float)
    print(text)
    if args.json:
        args.json.write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
