"""Trust the model (issue 18): the quality checks of its "Done when".

    python benchmarks/trust.py --check all --seeds 10 --json trust.json
    python benchmarks/trust.py --check flag rescale --seeds 10 --first-seed 10   # fresh seeds
    python benchmarks/trust.py --check failures --seeds 3 --budget 30           # a reduced run
    python benchmarks/trust.py --rejudge trust.json --json rejudged.json         # the flag check's bands, from saved scores

Each check runs the ``bo`` planner (default options unless said) in a plain
ask/tell loop, one experiment at a time, with the planner-facing records the
campaign loop is to pass (:class:`~selflab.planners.calibration.ScoredObservation`
for each result, :class:`~selflab.planners.feasibility.Failure` for each failure),
and judges model health with :mod:`selflab.controller.model_health`, as the
campaign loop is to:

- ``flag``: Hartmann6 BO (40 evaluations): does ``miscalibrated`` fire by
  evaluation 30? Target: in at least 8 of 10 seeds. Two loops: selflab's
  ``bo``, and the issue's own loop in plain botorch (:func:`plain_botorch_loop`:
  10 random points, then LogEI on a default ``SingleTaskGP``; the loop whose
  miscalibration the issue measured). And a Branin campaign of
  100 uniformly random points, each scored against the ``bo`` planner's model
  of the points before it (what its reason would have recorded): does it stay
  quiet? Target: at least 8 of 10 seeds. Judged by each band of :data:`BANDS`
  (the default window rule and :data:`~selflab.planners.calibration.SEQUENTIAL_BAND`),
  with each band's false-alarm rate on simulated calibrated scores. The JSON
  keeps every seed's scores, and ``--rejudge FILE`` judges them again without
  rerunning a campaign (the verdict is a function of the scores alone).
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
from selflab.planners.calibration import DEFAULT_BAND, SEQUENTIAL_BAND, CalibrationBand, CalibrationStats, ScoredObservation, rolling
from selflab.planners.feasibility import Failure
from selflab.planners.protocol import Observation, Pending, PlanContext
from selflab.planners.space import FloatParameter, Objective, SearchSpace
from selflab.planners.surrogate import numerics
from selflab.simulators.reactor import REACTOR_LIMITS, PlugFlowReactor, ReactorClogged

HARTMANN_OPT = -3.32237
BAND = DEFAULT_BAND
"""The band the campaigns' own ``flagged_at`` (the log lines) uses: the campaign's default."""
BANDS = {"window": CalibrationBand(), "sequential": SEQUENTIAL_BAND}
"""The bands the flag check judges by: the window rule and the sequential rule (the default since Session 11)."""


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


def plain_botorch_loop(seed: int, budget: int = 40, n_random: int = 10) -> Run:
    """The issue's own Hartmann6 BO loop, in plain botorch: ``n_random``
    uniformly random points, then LogEI steps on a ``SingleTaskGP`` with
    botorch's default priors and outcome standardization (inputs are the unit
    cube already), 10 restarts from 512 raw samples. Each step's proposal is
    scored as a ``bo`` reason would record it: the GP's latent mean and std at
    the point and its noise std (the model minimizes ``y`` by maximizing ``-y``)."""
    from botorch.acquisition import LogExpectedImprovement
    from botorch.fit import fit_gpytorch_mll
    from botorch.models import SingleTaskGP
    from botorch.optim import optimize_acqf
    from gpytorch.mlls import ExactMarginalLogLikelihood

    torch.manual_seed(seed)
    bounds = torch.tensor([[0.0] * 6, [1.0] * 6], dtype=torch.float64)
    X = torch.rand(n_random, 6, dtype=torch.float64)
    Y = torch.tensor([[-hartmann6({f"x{i + 1}": float(v) for i, v in enumerate(x)})["y"]] for x in X], dtype=torch.float64)
    run = Run(values=[-float(v) for v in Y[:, 0]])
    while X.shape[0] < budget:
        with numerics():
            model = SingleTaskGP(X, Y)
            fit_gpytorch_mll(ExactMarginalLogLikelihood(model.likelihood, model))
            candidate, _ = optimize_acqf(LogExpectedImprovement(model, best_f=Y.max()), bounds=bounds, q=1, num_restarts=10, raw_samples=512)
            posterior = model.posterior(candidate)
            noise = float(model.likelihood.noise.detach().mean().sqrt() * model.outcome_transform.stdvs.squeeze())
        x = {f"x{i + 1}": float(v) for i, v in enumerate(candidate[0])}
        y = hartmann6(x)["y"]
        reason = {"predicted": {"y": {"mean": -float(posterior.mean), "std": float(posterior.variance.sqrt())}}, "noise_std": {"y": noise}}
        X, Y = torch.cat([X, candidate]), torch.cat([Y, torch.tensor([[-y]], dtype=torch.float64)])
        run.results.append(Result(X.shape[0], {"y": y}, reason))
        run.values.append(y)
        if run.flagged_at is None and assess(run.results, ["y"], BAND).miscalibrated:
            run.flagged_at = X.shape[0]
    return run


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


def first_flag(found: Sequence[tuple[int, float]], band: CalibrationBand) -> int | None:
    """The first evaluation at which ``band`` marks scores ``found`` ((evaluation, z)
    in order) miscalibrated, judging after each score as the campaign loop does."""
    z = [v for _, v in found]
    return next((found[k - 1][0] for k in range(1, len(z) + 1) if band.miscalibrated(rolling(z[:k], band.window))), None)


def false_alarms(band: CalibrationBand, lengths: Sequence[int] = (24, 40, 100), runs: int = 4000, seed: int = 0) -> dict[int, float]:
    """The fraction of ``runs`` simulated campaigns of calibrated scores
    (``N(0, 1)``) in which ``band`` fires within each of ``lengths`` scores."""
    import numpy as np

    Z = np.random.default_rng(seed).standard_normal((runs, max(lengths)))
    firsts = [first_flag(list(enumerate(row.tolist(), start=1)), band) for row in Z]
    return {n: float(np.mean([f is not None and f <= n for f in firsts])) for n in lengths}


def judge_flag(seeds: Sequence[int], by: int, found: dict[str, dict[int, list[tuple[int, float]]]], runs: int) -> dict[str, Any]:
    """The flag check's figures from the scores of each seed (``found[problem][seed]``:
    (evaluation, z) in order), for each band of :data:`BANDS`."""
    br = found["branin_random"]
    loops = [name for name in ("hartmann6_bo", "hartmann6_botorch") if name in found]
    out: dict[str, Any] = {}
    for name, band in BANDS.items():
        quiet = {s: first_flag(br[s], band) for s in seeds}
        out[name] = {"band": band.model_dump()}
        for loop in loops:
            fired = {s: first_flag(found[loop][s], band) for s in seeds}
            out[name][loop] = {"fired_by": by, "seeds_fired": sum(1 for s in seeds if (fired[s] or math.inf) <= by), "flagged_at": fired}
        out[name]["branin_random"] = {"seeds_quiet": sum(1 for s in seeds if quiet[s] is None), "flagged_at": quiet}
        out[name]["calibrated_false_alarm_rate"] = false_alarms(band, runs=runs)
    for loop in loops:
        out[f"{loop}_z"] = CalibrationStats.of([z for s in seeds for e, z in found[loop][s] if e <= by]).model_dump()
    out["branin_random_z"] = CalibrationStats.of([z for s in seeds for _, z in br[s]]).model_dump()
    out["scores"] = {problem: {s: found[problem][s] for s in seeds} for problem in found}
    return out


def check_flag(seeds: Sequence[int], budget: int, by: int, branin_points: int, plain: dict[int, Run], runs: int) -> dict[str, Any]:
    for s in seeds:
        plain.setdefault(s, campaign(HARTMANN_SPACE, MINIMIZE_Y, hartmann6, budget, s, {}))
        print(f"hartmann6 bo seed {s}: flagged at {plain[s].flagged_at} (default band)", file=sys.stderr)
    quiet = {}
    for s in seeds:
        quiet[s] = random_scored(s, branin_points)
        print(f"branin random seed {s}: flagged at {quiet[s].flagged_at} (default band)", file=sys.stderr)
    botorch_loop = {}
    for s in seeds:
        botorch_loop[s] = plain_botorch_loop(s, budget)
        print(f"hartmann6 plain botorch loop seed {s}: flagged at {botorch_loop[s].flagged_at} (default band)", file=sys.stderr)
    found = {"hartmann6_bo": {s: [(x.experiment_id, x.z) for x in scores(plain[s].results, "y")] for s in seeds},
             "hartmann6_botorch": {s: [(x.experiment_id, x.z) for x in scores(botorch_loop[s].results, "y")] for s in seeds},
             "branin_random": {s: [(x.experiment_id, x.z) for x in scores(quiet[s].results, "y")] for s in seeds}}
    return {"branin_points": branin_points, **judge_flag(seeds, by, found, runs)}


def rejudge(path: Path, by: int, runs: int) -> dict[str, Any]:
    """The flag check's figures judged afresh from the scores a previous
    ``--json`` output recorded (``flag.scores``): the verdict is a function of
    the scores alone, so a band can be judged without rerunning the campaigns."""
    saved = json.loads(path.read_text(encoding="utf-8"))["flag"]
    found = {problem: {int(s): [(int(e), float(z)) for e, z in rows] for s, rows in per_seed.items()}
             for problem, per_seed in saved["scores"].items()}
    seeds = sorted(found["hartmann6_bo"])
    return {"seeds": seeds, "rejudged": str(path), "flag": {"branin_points": saved.get("branin_points"), **judge_flag(seeds, by, found, runs)}}


def check_rescale(seeds: Sequence[int], budget: int, after: int, plain: dict[int, Run], options: dict[str, Any] | None = None) -> dict[str, Any]:
    rescaled = {}
    for s in seeds:
        plain.setdefault(s, campaign(HARTMANN_SPACE, MINIMIZE_Y, hartmann6, budget, s, {}))
        rescaled[s] = campaign(HARTMANN_SPACE, MINIMIZE_Y, hartmann6, budget, s, {"calibration": "rescale", **(options or {})})
        print(f"hartmann6 rescale seed {s}: regret {min(rescaled[s].values) - HARTMANN_OPT:.4f} "
              f"(plain {min(plain[s].values) - HARTMANN_OPT:.4f})", file=sys.stderr)

    def arm(runs: dict[int, Run]) -> dict[str, Any]:
        z = [v for s in seeds for v in coverage_after(runs[s], after)]
        per_seed = [CalibrationStats.of(coverage_after(runs[s], after)).coverage90 for s in seeds]
        return {"coverage90_after": CalibrationStats.of(z).coverage90, "median_seed_coverage90": median(per_seed),
                "z_after": CalibrationStats.of(z).model_dump(),
                "regret": {s: min(runs[s].values) - HARTMANN_OPT for s in seeds},
                "median_regret": median([min(runs[s].values) - HARTMANN_OPT for s in seeds])}

    out = {"after": after, "budget": budget, "options": {"calibration": "rescale", **(options or {})}, "plain": arm(plain), "rescale": arm(rescaled)}
    out["regret_ratio"] = out["rescale"]["median_regret"] / out["plain"]["median_regret"]
    return out


def check_failures(seeds: Sequence[int], budget: int, learn_options: dict[str, Any] | None = None,
                   modes: Sequence[str] = ("avoid", "learn")) -> dict[str, Any]:
    reactor, evaluate = reactor_clog()
    optimum = reactor.optimum or math.nan
    objective = Objective(name="yield", direction="maximize")
    arms: dict[str, dict[int, Run]] = {mode: {} for mode in modes}
    for s in seeds:
        for mode in arms:
            arms[mode][s] = campaign(REACTOR_SPACE, objective, evaluate, budget, s, {"failures": mode, **((learn_options or {}) if mode == "learn" else {})})
            print(f"reactor_clog seed {s} {mode}: failures {arms[mode][s].failures}, regret {optimum - max(arms[mode][s].values, default=0):.5f}",
                  file=sys.stderr)

    def arm(runs: dict[int, Run]) -> dict[str, Any]:
        regret = {s: optimum - max(runs[s].values, default=0.0) for s in seeds}
        return {"failures": {s: runs[s].failures for s in seeds}, "total_failures": sum(r.failures for r in runs.values()),
                "regret": regret, "median_regret": median(list(regret.values()))}

    out: dict[str, Any] = {"budget": budget, "optimum": optimum, "learn_options": learn_options or {}, **{mode: arm(runs) for mode, runs in arms.items()}}
    if len(arms) == 2:
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
    parser.add_argument("--rescale-options", type=json.loads, default={}, help="rescale: more bo options for the rescaled arm (JSON)")
    parser.add_argument("--failure-arms", nargs="+", choices=["avoid", "learn"], default=["avoid", "learn"],
                        help="failures: the arms to run (one alone: for runs split over processes; compare the JSONs)")
    parser.add_argument("--learn-options", type=json.loads, default={}, help="failures: more bo options for the learn arm (JSON)")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--rejudge", type=Path, help="flag: judge the scores a previous --json output recorded (no campaigns run)")
    parser.add_argument("--false-alarm-runs", type=int, default=4000, help="flag: simulated calibrated campaigns per band")
    args = parser.parse_args(argv)
    seeds = list(range(args.first_seed, args.first_seed + args.seeds))
    plain: dict[int, Run] = {}
    out: dict[str, Any] = {"seeds": seeds}
    if args.rejudge is not None:
        out = rejudge(args.rejudge, args.by, args.false_alarm_runs)
    elif {"flag", "all"} & set(args.check):
        out["flag"] = check_flag(seeds, args.budget, args.by, args.branin_points, plain, args.false_alarm_runs)
    if {"rescale", "all"} & set(args.check) and args.rejudge is None:
        out["rescale"] = check_rescale(seeds, args.budget, args.after, plain, args.rescale_options)
    if {"failures", "all"} & set(args.check) and args.rejudge is None:
        out["failures"] = check_failures(seeds, args.budget, args.learn_options, args.failure_arms)
    text = json.dumps(out, indent=2, default=float)
    print(text)
    if args.json:
        args.json.write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
