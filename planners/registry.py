"""Build a planner from its config ``kind`` and ``options``.

Planner classes are imported only when built, so that commands which merely
read a config (``validate``, ``status``) stay fast.

>>> make_planner("sobol", {})  # doctest: +ELLIPSIS
<selflab.planners.baselines.SobolPlanner object at ...>
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

from selflab.planners.protocol import Planner

PLANNERS: dict[str, str] = {
    "random": "selflab.planners.baselines:RandomPlanner",
    "sobol": "selflab.planners.baselines:SobolPlanner",
    "bo": "selflab.planners.bo:BOPlanner",
    "mf": "selflab.planners.mf:MFPlanner",
    "ax": "selflab.planners.ax_planner:AxPlanner",
    "plain": "selflab.planners.plain:PlainPlanner",
}
"""Planner kind -> ``module:Class``."""

MODEL_FREE: frozenset[str] = frozenset({"random", "sobol"})
"""Planner kinds that fit no model: a proposal costs microseconds, not a GP fit."""


def options_schemas() -> dict[str, dict[str, Any]]:
    """The JSON Schema of each planner kind's ``planner.options`` (from the
    class's ``options_model``; a class without one takes no options)."""
    out: dict[str, dict[str, Any]] = {}
    for kind in planner_kinds():
        model = getattr(_planner_class(kind), "options_model", None)
        if model is None:
            out[kind] = {"type": "object", "additionalProperties": False, "description": f"{kind} takes no options"}
        else:
            out[kind] = model.model_json_schema()
    return out


def planner_kinds() -> list[str]:
    """The planner kinds this installation knows."""
    return sorted(PLANNERS)


def make_planner(kind: str, options: Mapping[str, Any]) -> Planner:
    """A live planner. Raises ``KeyError`` for an unknown kind and
    ``TypeError`` or ``ValueError`` for bad options."""
    if kind not in PLANNERS:
        raise KeyError(f"unknown planner kind {kind!r}; known: {', '.join(planner_kinds())}")
    planner: Planner = _planner_class(kind)(**dict(options))
    return planner


def planner_module(kind: str) -> str:
    """The module that holds a known planner kind's class (not imported)."""
    return PLANNERS[kind].partition(":")[0]


def _planner_class(kind: str) -> Any:
    """The class of a known planner kind, imported now."""
    return getattr(importlib.import_module(planner_module(kind)), PLANNERS[kind].partition(":")[2])
