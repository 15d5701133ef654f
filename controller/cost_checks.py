"""Where a cost expression is checked before a campaign starts.

An instrument's cost may be an expression of the parameters (``1 +
residence_time / 10``). It is checked when the fleet is built, at the points
the planners will use first (the centre of the space, the first Sobol points
of the campaign's seed, every pool candidate up to :data:`POOL_CHECKED`) and
at points spread over the space: it must give a finite cost >= 0 at each.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, TypeGuard

from selflab.controller.config import ConfigFault, LabConfig
from selflab.controller.expressions import ExpressionError
from selflab.instruments.protocol import Limits

if TYPE_CHECKING:
    from selflab.controller.fleet import Station

SOBOL_CHECKED = 16
"""First Sobol points of the campaign's seed at which a cost expression is checked."""
POOL_CHECKED = 2000
"""Pool candidates at which a cost expression is checked (evenly spaced when there are more)."""


def finite(x: object) -> TypeGuard[int | float]:
    """Whether ``x`` is a real number that is neither NaN nor infinite."""
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def check_costs(config: LabConfig, stations: list[Station], pool: list[dict[str, Any]] | None) -> list[ConfigFault]:
    """Check each cost expression at the points of :func:`_cost_points` within
    the station's limits, and set its mean (``cost``) and least (``min_cost``).
    ``pool`` is the pool instruments' candidates (``None``: no pool)."""
    faults: list[ConfigFault] = []
    checked = _spread(pool or [])
    for station in stations:
        if station.cost_expression is None:
            continue
        index = next(k for k, inst in enumerate(config.instruments) if inst is station.config)
        costs: list[float] = []
        for where, point in _cost_points(config, station.limits, checked):
            try:
                costs.append(station.cost_of(point))
            except ExpressionError as exc:
                faults.append(ConfigFault(loc=f"instruments[{index}].cost", message=f"{exc} ({where}); "
                                          "a cost must be a finite number >= 0 wherever the planner may propose"))
                break
        else:
            station.cost, station.min_cost = sum(costs) / len(costs), min(costs)
    return faults


def _spread(pool: list[dict[str, Any]]) -> list[tuple[int, dict[str, Any]]]:
    """Pool candidates with their positions, at most :data:`POOL_CHECKED` of them, evenly spaced."""
    step = max(1, math.ceil(len(pool) / POOL_CHECKED))
    return list(enumerate(pool))[::step]


def _cost_points(config: LabConfig, limits: Limits, pool: list[tuple[int, dict[str, Any]]]) -> list[tuple[str, dict[str, Any]]]:
    """Where a cost expression is checked, each with a label for the fault
    message: the centre of the space (the ``bo`` planner's first point), the
    first Sobol points of the campaign's seed (the ``sobol`` planner's and
    ``bo``'s initial design), the pool candidates, and :func:`_space_sample`.
    Each is moved within ``limits``, where the instrument can be charged."""
    from selflab.planners.baselines import SobolPlanner  # (imports scipy: only configs with a cost expression pay)
    from selflab.planners.protocol import PlanContext

    space = config.space
    points = [("the centre of the space, the bo planner's first point", space.from_unit([0.5] * space.dim))]
    sobol = SobolPlanner().propose(space, [], [], [], SOBOL_CHECKED, context=PlanContext(seed=config.seed))
    points += [(f"Sobol point {k} of seed {config.seed}", dict(p.params)) for k, p in enumerate(sobol)]
    points += [(f"pool candidate {k}", p) for k, p in pool]
    points += [("a point of the space", p) for p in _space_sample(config)]
    return [(where, _within(point, limits)) for where, point in points]


def _within(point: dict[str, Any], limits: Limits) -> dict[str, Any]:
    """``point`` with each numeric value moved into its (finite) limit."""
    out = dict(point)
    for name, (low, high) in limits.items():
        value = out.get(name)
        if finite(value) and finite(low) and finite(high):
            out[name] = min(max(value, low), high)
    return out


def _space_sample(config: LabConfig, n: int = 64) -> list[dict[str, Any]]:
    """``n`` points spread over the space, corners included."""
    import itertools

    import numpy as np

    space = config.space
    rng = np.random.default_rng(0)
    units = [list(c) for c in itertools.product([0.0, 1.0], repeat=min(space.dim, 6))][:n // 2]
    units = [u + [0.5] * (space.dim - len(u)) for u in units] + rng.random((n - len(units), space.dim)).tolist()
    return [space.from_unit(u) for u in units]
