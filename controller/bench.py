"""Benchmark planners on problems: one real campaign per seed, read back from its ledger.

Each seed runs :class:`selflab.controller.campaign.Campaign` on a temporary SQLite
ledger with the simulated clock: the problem's instrument (noise-free, with
``capacity = batch`` slots, so the controller keeps ``batch`` experiments in
flight) and the planner, seeded with the seed. The run is then summarised from
the ledger alone (:func:`summarize`):

* ``values``: the observed objective value of each completed experiment, in
  completion order (several objectives: the list of objective values);
* ``trace``: the reported metric after each evaluation: the best feasible
  value so far (``None`` before the first feasible one), or the hypervolume
  of the feasible observed points (several objectives);
* ``proposal_seconds``: seconds of the planner call that proposed each
  experiment (in proposal order), as the controller stamped them;
  ``recommendation_seconds``: beside each, the seconds the campaign's
  recommendations took since the proposal before it (the runner asks for one
  after each result; its model fit is the one the next proposal finds
  cached), so that their sum is the planner's whole cost per proposal
  (``BenchResult.median_step_seconds``);
* ``makespan_seconds``: simulated seconds from start to the last event;
* pools only: ``top5_trace`` (fraction of the top-5 % rows found after each
  evaluation) and ``evaluations_to_80pct_top5`` (first evaluation at which it
  reaches 0.8; ``None`` if never);
* ``fidelity_trace``: the fidelity of each evaluation; ``cost_trace``: the
  cumulative cost of the evaluations so far (completion order; a
  single-fidelity problem costs 1 per evaluation);
* one objective only: ``recommendation_trace``, the true (noise-free)
  target-fidelity value of the campaign's current recommendation (its latest
  ``recommended`` event) after each evaluation, ``None`` before the first;
  a recommended point that was measured at the target takes its measured
  value, any other is evaluated on the problem's fidelity-1 instrument.

In multi-fidelity problems (:attr:`Problem.levels`) ``trace`` and ``best``
count target-fidelity results only; ``--cost-budget`` stops each campaign once
that many cost units are spent (``stop.max_cost``).

:class:`BenchResult` aggregates the seeds: medians, and for pools
``evaluations_to_80pct_top5`` of the seed-averaged ``top5_trace`` (the
protocol of Liang et al. 2021): the acceleration factor AF(0.8) is random's
value divided by a planner's. A seed that did not finish (its worker died,
or its campaign stopped early) is listed in ``failed`` with the reason.

Problems: :mod:`selflab.controller.bench_problems`; the curves:
:mod:`selflab.controller.bench_metrics` (both re-exported here); many seeds
at once, on worker processes or a Ray cluster: :mod:`selflab.controller.fanout`.

Example::

    problem = get_problem("branin")
    result = run_bench(problem, "sobol", budget=20, seeds=3)
    result.median_regret, result.runs[0].trace[-1]
"""

from __future__ import annotations

import asyncio
import bisect
import itertools
import math
import statistics
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from selflab.controller.bench_metrics import (
    TOP_FOUND,
    best_so_far,
    first_reaching,
    hypervolume_curve,
    hypervolume_trace,
    mean_curve,
    median_of,
    point_key,
    regret_of,
    regret_trace,
    top_found_trace,
)
from selflab.controller.bench_problems import (
    PROBLEM_GROUP,
    TARGET_FIDELITY,
    BenchError,
    FidelityLevel,
    Problem,
    ProblemData,
    ProblemError,
    as_problem,
    get_problem,
)
from selflab.controller.campaign import Campaign
from selflab.controller.config import LabConfig, parse_config
from selflab.controller.fleet import Station
from selflab.controller.ledger import Event, Ledger
from selflab.controller.progress import labelled_logs
from selflab.controller.projection import CampaignState

__all__ = ["PROBLEM_GROUP", "TARGET_FIDELITY", "TOP_FOUND", "BenchError", "BenchResult", "FidelityLevel", "Problem", "ProblemData",
           "ProblemError", "ProgressFn", "RunRecord", "SeedFailure", "aggregate", "as_problem", "bench_config", "best_so_far",
           "cost_to_regret", "get_problem", "hypervolume_curve", "hypervolume_trace", "recommendation_trace",
           "regret_against_cost", "regret_trace", "run_bench", "run_seed", "summarize", "top_found_trace", "true_values"]

ProgressFn = Callable[[int, int], None]
"""Called with ``(seed, completed experiments)`` as a campaign goes."""


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RunRecord(_Record):
    """One seed's campaign, summarised (see the module docstring)."""

    seed: int
    best: float | None
    trace: list[float | None]
    values: list[float | list[float]]
    proposal_seconds: list[float]
    regret: float | None
    recommendation_seconds: list[float] = []
    """Beside each of ``proposal_seconds``: the recommendations' seconds since the proposal before (0: none)."""
    makespan_seconds: float
    evaluations: int
    stop_reason: str
    evaluations_to_80pct_top5: int | None = None
    top5_trace: list[float] | None = None
    fidelity_trace: list[float] = []
    cost_trace: list[float] = []
    recommendation_trace: list[float | None] | None = None
    recommendation_regret: float | None = None
    """Regret of the last recommendation (``None``: no optimum, or none yet)."""


class SeedFailure(_Record):
    """A seed whose campaign did not finish, and why (its worker died, or it
    stopped early). ``selflab bench --resume`` runs it again."""

    seed: int
    reason: str


class BenchResult(_Record):
    """One planner on one problem over several seeds. Field names are a contract."""

    problem: str
    planner: str
    budget: int | None
    """Experiments per campaign (``None``: only a cost budget)."""
    seeds: int
    """Seeds that finished (``len(runs)``)."""
    direction: Literal["maximize", "minimize"]
    optimum: float | None
    runs: list[RunRecord]
    median_best: float | None
    median_regret: float | None
    median_proposal_seconds: float | None
    """Median seconds of a proposal's own planner call (a fit the recommendation before it paid not counted)."""
    metric: Literal["best", "hypervolume"]
    batch: int
    median_makespan_seconds: float
    """(0 when no seed finished.)"""
    evaluations_to_80pct_top5: int | None = None
    cost_budget: float | None = None
    median_cost: float = 0.0
    """Median total cost spent per campaign."""
    median_recommendation_regret: float | None = None
    median_step_seconds: float | None = None
    """Median seconds of the planner per proposal: its call plus the recommendations since the one before."""
    options: dict[str, Any] = Field(default_factory=dict)
    """The planner's options (``selflab bench --options``; empty: its defaults)."""
    failed: list[SeedFailure] = []
    """Seeds that did not finish, in seed order (not counted in ``seeds`` or the medians)."""


def bench_config(problem: Problem | ProblemData, planner: str, budget: int | None, seed: int, batch: int, ledger_url: str,
                 options: Mapping[str, Any] | None = None, cost_budget: float | None = None) -> LabConfig:
    """The lab config of one benchmark campaign (``options``: the planner's).

    A multi-fidelity problem gets one instrument per level (named
    ``fidelity_0.5`` etc.), each with ``batch`` slots.
    """
    problem = as_problem(problem)
    if problem.levels is None:
        instruments = [{"name": "sim", "driver": problem.driver, "options": problem.options, "capacity": batch}]
    else:
        instruments = [{"name": f"fidelity_{level.fidelity:g}", "driver": level.driver, "options": level.options,
                        "fidelity": level.fidelity, "cost": level.cost, "capacity": batch} for level in problem.levels]
    stop: dict[str, Any] = {"max_experiments": budget, "max_cost": cost_budget}
    return parse_config({
        "name": f"bench-{planner}-seed{seed}",
        "seed": seed,
        "parameters": [p.model_dump() for p in problem.parameters],
        "objectives": [o.model_dump() for o in problem.objectives],
        "constraints": [c.model_dump() for c in problem.constraints],
        "instruments": instruments,
        "target_fidelity": TARGET_FIDELITY,
        "planner": {"kind": planner, "options": dict(options or {})},
        "stop": {k: v for k, v in stop.items() if v is not None},
        "clock": "simulated",
        "ledger": ledger_url,
    })


class _Progress:
    """A campaign display that reports completed experiments to a callback."""

    def __init__(self, seed: int, callback: ProgressFn) -> None:
        self.seed, self.callback = seed, callback

    def update(self, state: CampaignState, stations: list[Station], note: str = "") -> None:
        self.callback(self.seed, state.counts()["completed"])


def run_seed(problem: Problem | ProblemData, planner: str, budget: int | None, seed: int, batch: int = 1,
             progress: ProgressFn | None = None, options: Mapping[str, Any] | None = None,
             cost_budget: float | None = None) -> RunRecord:
    """Run one campaign on a temporary ledger and summarise it.

    Raises:
        BenchError: no budget at all, or the campaign stopped for another
            reason than its budget or an exhausted pool (e.g. the planner failed).
    """
    if budget is None and cost_budget is None:
        raise BenchError("give a budget in experiments, in cost units, or both")
    problem = as_problem(problem)
    with tempfile.TemporaryDirectory(prefix="selflab-bench-") as tmp:
        url = f"sqlite:///{Path(tmp) / 'bench.sqlite'}"
        config = bench_config(problem, planner, budget, seed, batch, url, options, cost_budget)
        ledger = Ledger(url)
        try:
            display = _Progress(seed, progress) if progress else None
            with labelled_logs(f"{problem.name} {planner} seed {seed}"):
                stop = asyncio.run(Campaign(config, ledger, display=display).run())
            events = ledger.events(config.name)
        finally:
            ledger.close()
    if stop.reason not in ("max_experiments", "max_cost", "planner_exhausted"):
        raise BenchError(f"{planner} on {problem.name}, seed {seed}: campaign stopped: {stop.reason}: {stop.detail}")
    return summarize(problem, seed, events)


def run_bench(problem: Problem | ProblemData, planner: str, budget: int | None, seeds: int, batch: int = 1,
              progress: ProgressFn | None = None, options: Mapping[str, Any] | None = None,
              cost_budget: float | None = None) -> BenchResult:
    """Seeds ``0 .. seeds-1`` of ``planner`` (with ``options``) on ``problem``, aggregated."""
    problem = as_problem(problem)
    runs = [run_seed(problem, planner, budget, seed, batch, progress, options, cost_budget) for seed in range(seeds)]
    return aggregate(problem, planner, budget, batch, runs, cost_budget, options)


def aggregate(problem: Problem | ProblemData, planner: str, budget: int | None, batch: int, runs: Sequence[RunRecord],
              cost_budget: float | None = None, options: Mapping[str, Any] | None = None,
              failed: Sequence[SeedFailure] = ()) -> BenchResult:
    """Medians over ``runs`` (given in any order; kept in seed order) and, for
    pools, the seed-averaged top-5 % curve; ``failed`` seeds are listed apart."""
    problem = as_problem(problem)
    runs = sorted(runs, key=lambda r: r.seed)
    seconds = [s for r in runs for s in r.proposal_seconds]
    steps = [s + (r.recommendation_seconds[i] if i < len(r.recommendation_seconds) else 0.0)
             for r in runs for i, s in enumerate(r.proposal_seconds)]
    curves = [r.top5_trace for r in runs if r.top5_trace is not None]
    return BenchResult(
        problem=problem.name,
        planner=planner,
        budget=budget,
        seeds=len(runs),
        direction=problem.direction,
        optimum=problem.optimum,
        runs=list(runs),
        median_best=median_of([r.best for r in runs]),
        median_regret=median_of([r.regret for r in runs]),
        median_proposal_seconds=median_of(seconds),
        median_step_seconds=median_of(steps),
        metric=problem.metric,
        batch=batch,
        median_makespan_seconds=statistics.median(r.makespan_seconds for r in runs) if runs else 0.0,
        evaluations_to_80pct_top5=first_reaching(mean_curve(curves), TOP_FOUND) if curves else None,
        cost_budget=cost_budget,
        median_cost=statistics.median(r.cost_trace[-1] if r.cost_trace else 0.0 for r in runs) if runs else 0.0,
        median_recommendation_regret=median_of([r.recommendation_regret for r in runs]),
        options=dict(options or {}),
        failed=sorted(failed, key=lambda f: f.seed),
    )


def summarize(problem: Problem | ProblemData, seed: int, events: Sequence[Event]) -> RunRecord:
    """A :class:`RunRecord` from one benchmark campaign's ledger events."""
    problem = as_problem(problem)
    state = CampaignState.replay(events[0].campaign, list(events))
    done = [state.experiments[e.experiment_id] for e in events if e.kind == "completed" and e.experiment_id is not None]
    names = [o.name for o in problem.objectives]
    counted = [all(c.satisfied(x.outcomes) for c in problem.constraints) and x.fidelity == TARGET_FIDELITY for x in done]
    values: list[float | list[float]]
    if problem.metric == "hypervolume":
        points = [[x.outcomes[n] for n in names] for x in done]
        values = list(points)
        trace: list[float | None] = list(hypervolume_trace(points, counted, problem))
    else:
        values = [x.outcomes[names[0]] for x in done]
        trace = best_so_far([v if ok else None for v, ok in zip(values, counted)], problem.direction)  # type: ignore[misc]
    best = trace[-1] if trace else None
    proposed = sorted(state.experiments.values(), key=lambda x: x.experiment_id)
    timed = [x for x in proposed if "proposal_seconds" in x.reason]
    curve = top_found_trace([x.params for x in done], problem.top) if problem.top is not None else None
    recommended = recommendation_trace(problem, events, state) if len(names) == 1 else None
    last_recommended = recommended[-1] if recommended else None
    return RunRecord(
        seed=seed,
        best=best,
        trace=trace,
        values=values,
        proposal_seconds=[float(x.reason["proposal_seconds"]) for x in timed],
        recommendation_seconds=[float(x.reason.get("recommendation_seconds", 0.0)) for x in timed],
        regret=regret_of(problem, best),
        makespan_seconds=(state.last_at - state.started_at).total_seconds() if state.last_at and state.started_at else 0.0,
        evaluations=len(done),
        stop_reason=state.stopped[0] if state.stopped else "",
        top5_trace=curve,
        evaluations_to_80pct_top5=first_reaching(curve, TOP_FOUND) if curve is not None else None,
        fidelity_trace=[x.fidelity for x in done],
        cost_trace=list(itertools.accumulate(x.cost for x in done)),
        recommendation_trace=recommended,
        recommendation_regret=regret_of(problem, last_recommended),
    )



def recommendation_trace(problem: Problem | ProblemData, events: Sequence[Event], state: CampaignState) -> list[float | None]:
    """The true target-fidelity value of the current recommendation after each evaluation.

    The recommendation after evaluation ``i`` is the latest ``recommended``
    event before evaluation ``i + 1`` completed (the controller records it
    right after a result). Measured target-fidelity points take their measured
    value (benchmark instruments are noise-free); other points are evaluated
    on the problem's fidelity-1 instrument.
    """
    problem = as_problem(problem)
    objective = problem.objectives[0].name
    measured = {point_key(x.params): x.outcomes[objective] for x in state.experiments.values()
                if x.status == "completed" and x.fidelity == TARGET_FIDELITY and objective in x.outcomes}
    picks: list[dict[str, Any] | None] = []
    current: dict[str, Any] | None = None
    for event in events:
        if event.kind == "recommended":
            current = dict(event.payload["params"])
            if picks:
                picks[-1] = current
        elif event.kind == "completed":
            picks.append(current)
    unmeasured = {point_key(p): p for p in picks if p is not None and point_key(p) not in measured}
    truth = dict(zip(unmeasured, true_values(problem, list(unmeasured.values())))) if unmeasured else {}
    return [None if p is None else measured.get(point_key(p), truth.get(point_key(p))) for p in picks]


def true_values(problem: Problem | ProblemData, points: Sequence[dict[str, Any]]) -> list[float]:
    """The first objective at ``points`` on the problem's (noise-free, fidelity-1) instrument."""
    from selflab.instruments.registry import build_driver

    problem = as_problem(problem)

    async def evaluate() -> list[float]:
        instrument = build_driver(problem.driver, problem.options)
        await instrument.connect()
        try:
            return [float((await instrument.run(p))[problem.objectives[0].name]) for p in points]
        finally:
            await instrument.close()

    return asyncio.run(evaluate())


def regret_against_cost(result: BenchResult) -> list[tuple[list[float], list[float | None]]]:
    """Per run: its ``cost_trace`` and the regret of its recommendation after each evaluation."""
    optimum = result.optimum if result.optimum is not None else math.nan
    return [(run.cost_trace, [None if v is None else abs(v - optimum) for v in run.recommendation_trace or []]) for run in result.runs]


def cost_to_regret(runs: Sequence[RunRecord], optimum: float, threshold: float) -> float | None:
    """The least cost at which the median recommendation regret over ``runs``
    (``|value - optimum|``) is ``<= threshold``.

    Each run's regret at cost ``c`` is that of its recommendation after the
    last evaluation whose cumulative cost is ``<= c`` (infinite before its
    first recommendation, and past its last evaluation it stays). Evaluated at
    every run's cost steps; ``None`` when the median never gets there.
    """
    curves = [(r.cost_trace, [math.inf if v is None else abs(v - optimum) for v in r.recommendation_trace or []])
              for r in runs if r.cost_trace and r.recommendation_trace]
    if not curves:
        return None
    for c in sorted({c for costs, _ in curves for c in costs}):
        at = [regrets[i - 1] if (i := bisect.bisect_right(costs, c + 1e-12)) else math.inf for costs, regrets in curves]
        if statistics.median(at) <= threshold:
            return c
    return None
