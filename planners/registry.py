"""Build a planner from its config ``kind`` and ``options``.

Planner classes are imported only when built, so that commands which merely
read a config (``validate``, ``status``) stay fast.

>>> make_planner("sobol", {})  # doctest: +ELLIPSIS
<planners.baselines.SobolPlanner object at ...>
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

from planners.protocol import Planner

PLANNERS: dict[str, str] = {
    "random": "planners.baselines:RandomPlanner",
    "sobol": "planners.baselines:SobolPlanner",
    "bo": "planners.bo:BOPlanner",
    "mf": "planners.mf:MFPlanner",
    "ax": "planners.ax_planner:AxPlanner",
}
"""Planner kind -> ``module:Class``."""


def planner_kinds() -> list[str]:
    """The planner kinds this installation knows."""
    return sorted(PLANNERS)


def make_planner(kind: str, options: Mapping[str, Any]) -> Planner:
    """A live planner. Raises ``KeyError`` for an unknown kind and
    ``TypeError`` or ``ValueError`` for bad options."""
    if kind not in PLANNERS:
        raise KeyError(f"unknown planner kind {kind!r}; known: {', '.join(planner_kinds())}")
    module, _, name = PLANNERS[kind].partition(":")
    cls = getattr(importlib.import_module(module), name)
    planner: Planner = cls(**dict(options))
    return planner
