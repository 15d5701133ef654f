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


OPTIONS: dict[str, str] = {
    "bo": "planners.bo:BOOptions",
    "mf": "planners.mf:MFOptions",
    "ax": "planners.ax_planner:AxOptions",
}
"""Planner kind -> ``module:Class`` of its ``planner.options`` model (kinds not listed take none)."""


def options_schemas() -> dict[str, dict[str, Any]]:
    """The JSON Schema of each planner kind's ``planner.options`` (``{}``: no options)."""
    out: dict[str, dict[str, Any]] = {}
    for kind in planner_kinds():
        if kind not in OPTIONS:
            out[kind] = {"type": "object", "additionalProperties": False, "description": f"{kind} takes no options"}
            continue
        module, _, name = OPTIONS[kind].partition(":")
        out[kind] = getattr(importlib.import_module(module), name).model_json_schema()
    return out


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
