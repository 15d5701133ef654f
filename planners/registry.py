"""Build a planner from its config ``kind`` and ``options``.

>>> make_planner("sobol", {})  # doctest: +ELLIPSIS
<planners.baselines.SobolPlanner object at ...>
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from planners.baselines import RandomPlanner, SobolPlanner
from planners.protocol import Planner

PLANNERS: dict[str, Callable[..., Planner]] = {
    "random": RandomPlanner,
    "sobol": SobolPlanner,
}


def planner_kinds() -> list[str]:
    """The planner kinds this installation knows."""
    return sorted(PLANNERS)


def make_planner(kind: str, options: Mapping[str, Any]) -> Planner:
    """A live planner. Raises ``KeyError`` for an unknown kind and
    ``TypeError`` or ``ValueError`` for bad options."""
    if kind not in PLANNERS:
        raise KeyError(f"unknown planner kind {kind!r}; known: {', '.join(planner_kinds())}")
    return PLANNERS[kind](**dict(options))
