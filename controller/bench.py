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
value divided by a planner's.

Problems come from catalogues found through the entry-point group
``selflab.problems`` (:func:`get_problem`; selflab's own is
:func:`selflab.simulators.problems.get_problem`), as plain data in the lab config's
shape; :class:`Problem` turns that data into the planners' models, so the
controller never imports a simulator.

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
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field

from selflab.controller.campaign import Campaign
from selflab.controller.config import LabConfig, parse_config
from selflab.controller.fleet import Station
from selflab.controller.ledger import Event, Ledger
from selflab.controller.projection import CampaignState
from selflab.planners.space import Objective, OutcomeConstraint, Parameter, Point

PROBLEM_GROUP = "selflab.problems"
"""Entry-point group of benchmark-problem catalogues. Each entry point loads a
callable ``(spec, *, objective=None, direction=None) -> problem data`` (see
:class:`ProblemData`) that raises ``LookupError`` for a name it does not know
and ``ValueError`` for bad options, with a one-line message::

    [project.entry-points."selflab.problems"]
    my_problems = "my_lab.problems:get_problem"
"""

TARGET_FIDELITY = 1.0
"""Benchmark problems' target fidelity."""

TOP_FOUND = 0.8
"""The fraction of the top-5 % set the acceleration factor asks for."""

ProgressFn = Callable[[int, int], None]
"""Called with ``(seed, completed experiments)`` as a campaign goes."""


class BenchError(Exception):
    """A benchmark campaign did not finish; the message says why."""


class ProblemError(ValueError):
    """No installed catalogue knows the problem, or its options are bad; the message says which."""


class FidelityLevel(BaseModel):
    """One instrument of a multi-fidelity problem: the fidelity it serves and its cost."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    fidelity: float
    cost: float
    driver: str
    options: dict[str, Any] = {}


class Problem(BaseModel):
    """One benchmark problem, with the planners' models.

    ``metric`` is what a benchmark reports per run: the best (feasible)
    objective value, or the hypervolume of the observed points when there are
    several objectives. ``optimum`` and ``direction`` are that metric's best
    reachable value (``None`` when unknown) and which way is better.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str
    parameters: list[Parameter]
    objectives: list[Objective]
    constraints: list[OutcomeConstraint] = []
    driver: str
    """``module:Class`` or an entry-point name in ``selflab.instruments``."""
    options: dict[str, Any] = {}
    metric: Literal["best", "hypervolume"] = "best"
    optimum: float | None
    direction: Literal["maximize", "minimize"]
    top: list[Point] | None = None
    """Pools only: the rows of the top 5 %."""
    levels: list[FidelityLevel] | None = None
    """Multi-fidelity problems only: one instrument per fidelity (then
    ``driver``/``options`` are the noise-free fidelity-1 instrument, the truth
    a recommendation is judged by)."""

    @property
    def multi_fidelity(self) -> bool:
        return self.levels is not None


class ProblemData(Protocol):
    """A problem as a catalogue describes it: :class:`Problem`'s fields as
    attributes, with parameters, objectives, constraints and levels as plain
    data in the lab config's shape (e.g. :class:`selflab.simulators.problems.Problem`)."""

    @property
    def name(self) -> str: ...
    @property
    def parameters(self) -> Sequence[object]: ...
    @property
    def objectives(self) -> Sequence[object]: ...
    @property
    def constraints(self) -> Sequence[object]: ...
    @property
    def driver(self) -> str: ...
    @property
    def options(self) -> Mapping[str, Any]: ...
    @property
    def metric(self) -> str: ...
    @property
    def optimum(self) -> float | None: ...
    @property
    def direction(self) -> str: ...
    @property
    def top(self) -> Sequence[Mapping[str, Any]] | None: ...
    @property
    def levels(self) -> Sequence[object] | None: ...


def as_problem(problem: Problem | ProblemData) -> Problem:
    """``problem`` as a :class:`Problem` (itself if it is one already).

    Raises:
        pydantic.ValidationError: the data does not describe a problem.
    """
    return Problem.model_validate(problem, from_attributes=True)


def get_problem(spec: str, *, objective: str | None = None, direction: str | None = None) -> Problem:
    """The problem ``spec`` from the first installed catalogue (by entry-point
    name) that knows it; ``objective`` and ``direction`` go to the catalogue.

    Raises:
        ProblemError: no catalogue knows ``spec`` (with the first one's
            message), or its options are bad.
    """
    unknown: list[str] = []
    for catalogue in sorted(entry_points(group=PROBLEM_GROUP), key=lambda ep: ep.name):
        try:
            data = catalogue.load()(spec, objective=objective, direction=direction)
        except LookupError as exc:
            unknown.append(str(exc))
            continue
        except ValueError as exc:
            raise ProblemError(str(exc)) from None
        return as_problem(data)
    raise ProblemError(unknown[0] if unknown else f"unknown problem {spec!r}: no catalogue installed in entry-point group {PROBLEM_GROUP!r}")


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


class BenchResult(_Record):
    """One planner on one problem over several seeds. Field names are a contract."""

    problem: str
    planner: str
    budget: int | None
    """Experiments per campaign (``None``: only a cost budget)."""
    seeds: int
    direction: Literal["maximize", "minimize"]
    optimum: float | None
    runs: list[RunRecord]
    median_best: float | None
    median_regret: float | None
    median_proposal_seconds: float | None
    metric: Literal["best", "hypervolume"]
    batch: int
    median_makespan_seconds: float
    evaluations_to_80pct_top5: int | None = None
    cost_budget: float | None = None
    median_cost: float = 0.0
    """Median total cost spent per campaign."""
    median_recommendation_regret: float | None = None
    options: dict[str, Any] = Field(default_factory=dict)
    """The planner's options (``selflab bench --options``; empty: its defaults)."""


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
              cost_budget: float | None = None, options: Mapping[str, Any] | None = None) -> BenchResult:
    """Medians over runs and, for pools, the seed-averaged top-5 % curve."""
    problem = as_problem(problem)
    seconds = [s for r in runs for s in r.proposal_seconds]
    curves = [r.top5_trace for r in runs if r.top5_trace is not None]
    return BenchResult(
        problem=problem.name,
        planner=planner,
        budget=budget,
        seeds=len(runs),
        direction=problem.direction,
        optimum=problem.optimum,
        runs=list(runs),
        median_best=_median([r.best for r in runs]),
        median_regret=_median([r.regret for r in runs]),
        median_proposal_seconds=_median(seconds),
        metric=problem.metric,
        batch=batch,
        median_makespan_seconds=statistics.median(r.makespan_seconds for r in runs),
        evaluations_to_80pct_top5=_first_reaching(_mean_curve(curves), TOP_FOUND) if curves else None,
        cost_budget=cost_budget,
        median_cost=statistics.median(r.cost_trace[-1] if r.cost_trace else 0.0 for r in runs),
        median_recommendation_regret=_median([r.recommendation_regret for r in runs]),
        options=dict(options or {}),
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
    curve = top_found_trace([x.params for x in done], problem.top) if problem.top is not None else None
    recommended = recommendation_trace(problem, events, state) if len(names) == 1 else None
    last_recommended = recommended[-1] if recommended else None
    return RunRecord(
        seed=seed,
        best=best,
        trace=trace,
        values=values,
        proposal_seconds=[float(x.reason["proposal_seconds"]) for x in proposed if "proposal_seconds" in x.reason],
        regret=_regret(problem, best),
        makespan_seconds=(state.last_at - state.started_at).total_seconds() if state.last_at and state.started_at else 0.0,
        evaluations=len(done),
        stop_reason=state.stopped[0] if state.stopped else "",
        top5_trace=curve,
        evaluations_to_80pct_top5=_first_reaching(curve, TOP_FOUND) if curve is not None else None,
        fidelity_trace=[x.fidelity for x in done],
        cost_trace=list(itertools.accumulate(x.cost for x in done)),
        recommendation_trace=recommended,
        recommendation_regret=_regret(problem, last_recommended),
    )


def _regret(problem: Problem, value: float | None) -> float | None:
    return abs(value - problem.optimum) if value is not None and problem.optimum is not None else None


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
    measured = {_key(x.params): x.outcomes[objective] for x in state.experiments.values()
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
    unmeasured = {_key(p): p for p in picks if p is not None and _key(p) not in measured}
    truth = dict(zip(unmeasured, true_values(problem, list(unmeasured.values())))) if unmeasured else {}
    return [None if p is None else measured.get(_key(p), truth.get(_key(p))) for p in picks]


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


def best_so_far(values: Sequence[float | None], direction: str) -> list[float | None]:
    """The running best of ``values`` (``None`` entries skipped; ``None`` until the first value).

    >>> best_so_far([3.0, None, 1.0, 2.0], "minimize")
    [3.0, 3.0, 1.0, 1.0]
    """
    out: list[float | None] = []
    best: float | None = None
    for v in values:
        if v is not None and (best is None or (v > best if direction == "maximize" else v < best)):
            best = v
        out.append(best)
    return out


def hypervolume_trace(points: Sequence[Sequence[float]], feasible: Sequence[bool], problem: Problem | ProblemData) -> list[float]:
    """Hypervolume of the feasible points among the first ``i`` after each evaluation ``i``,
    the corner at each objective's ``reference_point`` (see :func:`hypervolume_curve`)."""
    problem = as_problem(problem)
    if any(o.reference_point is None for o in problem.objectives):
        raise BenchError(f"{problem.name}: every objective needs a reference_point for the hypervolume")
    return hypervolume_curve(points, feasible, [o.direction for o in problem.objectives],
                             [float(o.reference_point) for o in problem.objectives if o.reference_point is not None])


def hypervolume_curve(points: Sequence[Sequence[float]], feasible: Sequence[bool], directions: Sequence[str],
                      reference: Sequence[float]) -> list[float]:
    """Hypervolume dominated by the feasible points among the first ``i``, after each ``i``.

    ``points``: objective vectors in their own units; ``directions``: each
    objective's ``maximize`` or ``minimize``; ``reference``: the corner, in the
    objectives' units. Objectives are turned into maximisation and only
    points better than the corner in every objective count. Uses botorch's
    exact ``Hypervolume``.

    >>> hypervolume_curve([[1.0, 1.0], [2.0, 0.5], [3.0, 3.0]], [True, True, False], ["maximize", "maximize"], [0.0, 0.0])
    [1.0, 1.5, 1.5]
    """
    import torch
    from botorch.utils.multi_objective.hypervolume import Hypervolume
    from botorch.utils.multi_objective.pareto import is_non_dominated

    sign = torch.tensor([1.0 if d == "maximize" else -1.0 for d in directions], dtype=torch.float64)
    ref = sign * torch.tensor(list(reference), dtype=torch.float64)
    hv = Hypervolume(ref_point=ref)
    kept: list[list[float]] = []
    out: list[float] = []
    for point, ok in zip(points, feasible):
        if ok:
            kept.append(list(point))
        y = sign * torch.tensor(kept, dtype=torch.float64).reshape(-1, len(sign))
        y = y[(y > ref).all(dim=-1)]
        out.append(float(hv.compute(y[is_non_dominated(y)])) if len(y) else 0.0)
    return out


def regret_trace(problem: Problem | ProblemData, trace: Sequence[float | None]) -> list[float | None]:
    """The regret (distance from the problem's optimum) of each value of a best-so-far ``trace``."""
    problem = as_problem(problem)
    return [_regret(problem, v) for v in trace]


def top_found_trace(params: Sequence[dict[str, Any]], top: Sequence[dict[str, Any]]) -> list[float]:
    """Fraction of the ``top`` rows among the first ``i`` measured, for each ``i``."""
    wanted = {_key(t) for t in top}
    found: set[tuple[tuple[str, Any], ...]] = set()
    out = []
    for p in params:
        if _key(p) in wanted:
            found.add(_key(p))
        out.append(len(found) / len(wanted))
    return out


def _key(point: dict[str, Any]) -> tuple[tuple[str, Any], ...]:
    return tuple(sorted(point.items()))


def _first_reaching(curve: Sequence[float], level: float) -> int | None:
    """1-based index of the first value ``>= level`` (within rounding), or ``None``."""
    return next((i + 1 for i, v in enumerate(curve) if v >= level - 1e-9), None)


def _mean_curve(curves: Sequence[Sequence[float]]) -> list[float]:
    """Mean of curves of unequal length, each held at its last value."""
    length = max(len(c) for c in curves)
    padded = [list(c) + [c[-1] if c else 0.0] * (length - len(c)) for c in curves]
    return [math.fsum(col) / len(col) for col in zip(*padded)]


def _median(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None
