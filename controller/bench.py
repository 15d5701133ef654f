"""Benchmark planners on problems: one real campaign per seed, read back from its ledger.

Each seed runs :class:`controller.campaign.Campaign` on a temporary SQLite
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
  reaches 0.8; ``None`` if never).

:class:`BenchResult` aggregates the seeds: medians, and for pools
``evaluations_to_80pct_top5`` of the seed-averaged ``top5_trace`` (the
protocol of Liang et al. 2021): the acceleration factor AF(0.8) is random's
value divided by a planner's.

Example::

    problem = get_problem("branin")
    result = run_bench(problem, "sobol", budget=20, seeds=3)
    result.median_regret, result.runs[0].trace[-1]
"""

from __future__ import annotations

import asyncio
import math
import statistics
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from controller.campaign import Campaign
from controller.config import LabConfig, parse_config
from controller.fleet import Station
from controller.ledger import Event, Ledger
from controller.projection import CampaignState
from simulators.problems import Problem

TOP_FOUND = 0.8
"""The fraction of the top-5 % set the acceleration factor asks for."""

ProgressFn = Callable[[int, int], None]
"""Called with ``(seed, completed experiments)`` as a campaign goes."""


class BenchError(Exception):
    """A benchmark campaign did not finish; the message says why."""


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


class BenchResult(_Record):
    """One planner on one problem over several seeds. Field names are a contract."""

    problem: str
    planner: str
    budget: int
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


def bench_config(problem: Problem, planner: str, budget: int, seed: int, batch: int, ledger_url: str,
                 options: Mapping[str, Any] | None = None) -> LabConfig:
    """The lab config of one benchmark campaign (``options``: the planner's)."""
    return parse_config({
        "name": f"bench-{planner}-seed{seed}",
        "seed": seed,
        "parameters": [p.model_dump() for p in problem.parameters],
        "objectives": [o.model_dump() for o in problem.objectives],
        "constraints": [c.model_dump() for c in problem.constraints],
        "instruments": [{"name": "sim", "driver": problem.driver, "options": problem.options, "capacity": batch}],
        "planner": {"kind": planner, "options": dict(options or {})},
        "stop": {"max_experiments": budget},
        "clock": "simulated",
        "ledger": ledger_url,
    })


class _Progress:
    """A campaign display that reports completed experiments to a callback."""

    def __init__(self, seed: int, callback: ProgressFn) -> None:
        self.seed, self.callback = seed, callback

    def update(self, state: CampaignState, stations: list[Station], note: str = "") -> None:
        self.callback(self.seed, state.counts()["completed"])


def run_seed(problem: Problem, planner: str, budget: int, seed: int, batch: int = 1,
             progress: ProgressFn | None = None, options: Mapping[str, Any] | None = None) -> RunRecord:
    """Run one campaign on a temporary ledger and summarise it.

    Raises:
        BenchError: the campaign stopped for another reason than its budget
            or an exhausted pool (e.g. the planner failed).
    """
    with tempfile.TemporaryDirectory(prefix="selflab-bench-") as tmp:
        url = f"sqlite:///{Path(tmp) / 'bench.sqlite'}"
        config = bench_config(problem, planner, budget, seed, batch, url, options)
        ledger = Ledger(url)
        try:
            display = _Progress(seed, progress) if progress else None
            stop = asyncio.run(Campaign(config, ledger, display=display).run())
            events = ledger.events(config.name)
        finally:
            ledger.close()
    if stop.reason not in ("max_experiments", "planner_exhausted"):
        raise BenchError(f"{planner} on {problem.name}, seed {seed}: campaign stopped: {stop.reason}: {stop.detail}")
    return summarize(problem, seed, events)


def run_bench(problem: Problem, planner: str, budget: int, seeds: int, batch: int = 1,
              progress: ProgressFn | None = None, options: Mapping[str, Any] | None = None) -> BenchResult:
    """Seeds ``0 .. seeds-1`` of ``planner`` (with ``options``) on ``problem``, aggregated."""
    runs = [run_seed(problem, planner, budget, seed, batch, progress, options) for seed in range(seeds)]
    return aggregate(problem, planner, budget, batch, runs)


def aggregate(problem: Problem, planner: str, budget: int, batch: int, runs: Sequence[RunRecord]) -> BenchResult:
    """Medians over runs and, for pools, the seed-averaged top-5 % curve."""
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
    )


def summarize(problem: Problem, seed: int, events: Sequence[Event]) -> RunRecord:
    """A :class:`RunRecord` from one benchmark campaign's ledger events."""
    state = CampaignState.replay(events[0].campaign, list(events))
    done = [state.experiments[e.experiment_id] for e in events if e.kind == "completed" and e.experiment_id is not None]
    names = [o.name for o in problem.objectives]
    feasible = [all(c.satisfied(x.outcomes) for c in problem.constraints) for x in done]
    values: list[float | list[float]]
    if problem.metric == "hypervolume":
        points = [[x.outcomes[n] for n in names] for x in done]
        values = list(points)
        trace: list[float | None] = list(hypervolume_trace(points, feasible, problem))
    else:
        values = [x.outcomes[names[0]] for x in done]
        trace = best_so_far([v if ok else None for v, ok in zip(values, feasible)], problem.direction)  # type: ignore[misc]
    best = trace[-1] if trace else None
    proposed = sorted(state.experiments.values(), key=lambda x: x.experiment_id)
    curve = top_found_trace([x.params for x in done], problem.top) if problem.top is not None else None
    return RunRecord(
        seed=seed,
        best=best,
        trace=trace,
        values=values,
        proposal_seconds=[float(x.reason["proposal_seconds"]) for x in proposed if "proposal_seconds" in x.reason],
        regret=abs(best - problem.optimum) if best is not None and problem.optimum is not None else None,
        makespan_seconds=(state.last_at - state.started_at).total_seconds() if state.last_at and state.started_at else 0.0,
        evaluations=len(done),
        stop_reason=state.stopped[0] if state.stopped else "",
        top5_trace=curve,
        evaluations_to_80pct_top5=_first_reaching(curve, TOP_FOUND) if curve is not None else None,
    )


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


def hypervolume_trace(points: Sequence[Sequence[float]], feasible: Sequence[bool], problem: Problem) -> list[float]:
    """Hypervolume of the feasible points among the first ``i`` after each evaluation ``i``.

    Objectives are turned into maximisation; the corner is each objective's
    ``reference_point``. Uses botorch's exact ``Hypervolume``.
    """
    import torch
    from botorch.utils.multi_objective.hypervolume import Hypervolume
    from botorch.utils.multi_objective.pareto import is_non_dominated

    sign = torch.tensor([1.0 if o.direction == "maximize" else -1.0 for o in problem.objectives], dtype=torch.float64)
    if any(o.reference_point is None for o in problem.objectives):
        raise BenchError(f"{problem.name}: every objective needs a reference_point for the hypervolume")
    ref = sign * torch.tensor([o.reference_point for o in problem.objectives], dtype=torch.float64)
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
