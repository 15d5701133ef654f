"""The curves a benchmark reports, computed from plain numbers: best so far,
hypervolume, regret, the fraction of a pool's top rows found.

Used by :mod:`selflab.controller.bench` (per seed) and by reports.

>>> best_so_far([3.0, None, 1.0, 2.0], "minimize")
[3.0, 3.0, 1.0, 1.0]
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from typing import Any

from selflab.controller.bench_problems import BenchError, Problem, ProblemData, as_problem

TOP_FOUND = 0.8
"""The fraction of the top-5 % set the acceleration factor asks for."""


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
    return [regret_of(problem, v) for v in trace]


def top_found_trace(params: Sequence[dict[str, Any]], top: Sequence[dict[str, Any]]) -> list[float]:
    """Fraction of the ``top`` rows among the first ``i`` measured, for each ``i``."""
    wanted = {point_key(t) for t in top}
    found: set[tuple[tuple[str, Any], ...]] = set()
    out = []
    for p in params:
        if point_key(p) in wanted:
            found.add(point_key(p))
        out.append(len(found) / len(wanted))
    return out


def regret_of(problem: Problem, value: float | None) -> float | None:
    """``|value - optimum|``; ``None`` without a value or a known optimum."""
    return abs(value - problem.optimum) if value is not None and problem.optimum is not None else None


def point_key(point: dict[str, Any]) -> tuple[tuple[str, Any], ...]:
    """A hashable key of a point: its items, sorted by name (values compared exactly)."""
    return tuple(sorted(point.items()))


def first_reaching(curve: Sequence[float], level: float) -> int | None:
    """1-based index of the first value ``>= level`` (within rounding), or ``None``."""
    return next((i + 1 for i, v in enumerate(curve) if v >= level - 1e-9), None)


def mean_curve(curves: Sequence[Sequence[float]]) -> list[float]:
    """Mean of curves of unequal length, each held at its last value."""
    length = max(len(c) for c in curves)
    padded = [list(c) + [c[-1] if c else 0.0] * (length - len(c)) for c in curves]
    return [math.fsum(col) / len(col) for col in zip(*padded)]


def acceleration_factor(random_n: int | None, planner_n: int | None, budget: int) -> float | None:
    """AF: random search's evaluations to a level over the planner's (Liang et
    al.); when the planner never reached it within ``budget``, the lower bound
    ``random_n / budget``; ``None`` when random search never reached it.

    >>> acceleration_factor(120, 40, 60), acceleration_factor(120, None, 60), acceleration_factor(None, 40, 60)
    (3.0, 2.0, None)
    """
    if random_n is None:
        return None
    return random_n / (planner_n if planner_n is not None else budget)


def median_of(values: Sequence[float | None]) -> float | None:
    """The median of the values that are not ``None``; ``None`` when there are none."""
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None
