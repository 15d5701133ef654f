"""Look at a range a person just opened: space-filling points there first.

When a person widens a parameter's range (``selflab space CONFIG widen x6 0 1
--explore 3``, ``Study.edit_space("widen", "x6", 0, 1, explore=3)``), the
model knows nothing of the opened part, and an acquisition function that
trusts a good incumbent may never look there: a campaign stuck in the
basin it found inside the old range stays stuck. With ``explore: N`` on
the edit, the next ``N`` proposals are scrambled Sobol points of the
current space whose widened parameter lies in the opened part only (the
other parameters span their whole ranges), each proposed by
``explore_opened`` with a reason that says so. They are deterministic in
(campaign seed, space version), counted from the ledger, so a resume
carries on where the campaign stopped; a later edit ends them.

Example::

    points = opened_points(state.space_view, state.experiments.values(), seed=7)
    # [Proposal(params={..., "x6": 0.83}, reason={"strategy": "explore_opened", ...}), ...]
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any, Protocol

import numpy as np

from selflab.controller.space_edits import SpaceView
from selflab.planners.protocol import Proposal
from selflab.planners.seeding import mix_seed
from selflab.planners.space import CategoricalParameter, FloatParameter, SearchSpace

STRATEGY = "explore_opened"
"""The ``reason.strategy`` (and the ``planner``) of a point in an opened range."""


class Proposed(Protocol):
    """An experiment as the projection holds it (:class:`selflab.controller.projection.ExperimentView` is one)."""

    reason: dict[str, Any]


def opened_points(view: SpaceView, experiments: Iterable[Proposed], seed: int, fidelity: float = 1.0) -> list[Proposal]:
    """The exploration points still owed for the current space version
    (none unless its edit was a ``widen`` with ``explore`` > 0)."""
    if view.version == 0 or view.space is None or len(view.history) < 2 or not view.edits:
        return []
    edit = view.edits[-1]
    owed = int(edit.get("explore") or 0)
    if edit.get("op") != "widen" or owed <= 0:
        return []
    made = sum(1 for e in experiments
               if e.reason.get("strategy") == STRATEGY and e.reason.get("space_version") == view.version)
    if made >= owed:
        return []
    space, old = view.space, view.history[-2]
    name = str(edit["parameter"])
    segments = _opened(space, old, name)
    if not segments:
        return []
    from scipy.stats import qmc  # (half a second to import: only when a widen owes points)

    sobol = qmc.Sobol(space.dim, scramble=True, seed=mix_seed(seed, view.version, 7919))
    draws = sobol.random_base2(max(0, math.ceil(math.log2(owed))))[made:owed]  # (a power of 2 keeps Sobol's balance)
    column = space.names.index(name)
    out = []
    for rank, u in enumerate(draws, start=made):
        u = u.copy()
        u[column] = _into(segments, float(u[column]))
        params = space.from_unit(u.tolist())
        out.append(Proposal(params=params, fidelity=fidelity, reason={
            "strategy": STRATEGY, "space_version": view.version, "parameter": name,
            "opened": [[_plain(space, name, a), _plain(space, name, b)] for a, b in segments], "rank": rank, "of": owed,
            "why": f"a person widened {name}; the model has no data in the opened range"}))
    return out


def _opened(space: SearchSpace, old: SearchSpace, name: str) -> list[tuple[float, float]]:
    """The opened part of ``name``'s range, as intervals of its unit coordinate in ``space``."""
    new_p = next(p for p in space.parameters if p.name == name)
    old_p = next((p for p in old.parameters if p.name == name), None)
    if not isinstance(new_p, FloatParameter) or not isinstance(old_p, FloatParameter):  # (integers: their bins, not yet)
        return []
    low = _unit(space, name, old_p.low)
    high = _unit(space, name, old_p.high)
    segments = [(0.0, low)] if low > 1e-9 else []
    if high < 1 - 1e-9:
        segments.append((high, 1.0))
    return segments


def _unit(space: SearchSpace, name: str, value: float) -> float:
    """``value`` of ``name`` on its unit coordinate in ``space`` (clipped to [0, 1])."""
    probe = {p.name: (p.choices[0] if isinstance(p, CategoricalParameter) else p.low) for p in space.parameters}
    probe[name] = value
    return float(np.clip(space.to_unit(probe)[space.names.index(name)], 0.0, 1.0))


def _into(segments: list[tuple[float, float]], u: float) -> float:
    """``u`` in [0, 1) spread over ``segments`` in proportion to their lengths."""
    total = sum(b - a for a, b in segments)
    t = u * total
    for a, b in segments:
        if t <= b - a:
            return a + t
        t -= b - a
    return segments[-1][1]


def _plain(space: SearchSpace, name: str, unit: float) -> Any:
    point: Mapping[str, Any] = space.from_unit([unit if n == name else 0.0 for n in space.names])
    return point[name]


__all__ = ["STRATEGY", "opened_points"]
