"""Device parity: the same seeded campaign proposes the same points on the CPU and the GPU.

:func:`hartmann6_campaign` runs a seeded ``bo`` campaign on Hartmann6 (6
inputs in the unit cube, minimized): ``start`` scrambled Sobol points, then
``proposals`` proposals, each one measured and added before the next.
:func:`compare` says how far two runs' proposals are apart (unit-cube
coordinates, the largest absolute difference). ``benchmarks/gpu.py`` runs it
on ``cpu`` and ``cuda``; the tests run it on ``cpu`` twice (and on ``cuda``
where there is one).

Example::

    result = compare(hartmann6_campaign("cpu"), hartmann6_campaign("cuda"), ("cpu", "cuda"))
    result.within   # True when every coordinate agrees within 1e-6
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from botorch.test_functions.synthetic import Hartmann
from pydantic import BaseModel, ConfigDict

from selflab.planners.bo import BOPlanner
from selflab.planners.protocol import Observation, PlanContext
from selflab.planners.space import FloatParameter, Objective, SearchSpace

SPACE = SearchSpace(parameters=[FloatParameter(name=f"x{i}", low=0.0, high=1.0) for i in range(6)])
PARITY_TOL = 1e-6


class ParityResult(BaseModel):
    """Two runs' proposals compared: the largest coordinate difference of each proposal and overall."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    devices: tuple[str, str]
    tol: float
    per_proposal: list[float]
    max_abs_diff: float
    within: bool


def hartmann6_campaign(
    device: str, *, start: int = 20, proposals: int = 5, seed: int = 0, options: Mapping[str, Any] | None = None
) -> list[list[float]]:
    """The ``proposals`` points (each 6 unit-cube coordinates) of a seeded
    Hartmann6 campaign whose ``bo`` planner runs on ``device`` (``options``: more
    ``bo`` options, e.g. fewer restarts for a quick check)."""
    f = Hartmann(dim=6)
    U = torch.quasirandom.SobolEngine(6, scramble=True, seed=seed).draw(start, dtype=torch.float64)
    observations = [_observe(f, u.tolist()) for u in U]
    planner = BOPlanner(**{**dict(options or {}), "device": device})
    out: list[list[float]] = []
    for k in range(proposals):
        proposal = planner.propose(SPACE, [Objective(name="y", direction="minimize")], observations, [], 1,
                                   context=PlanContext(seed=seed, step=start + k))[0]
        x = [float(proposal.params[p.name]) for p in SPACE.parameters]  # type: ignore[arg-type]
        out.append(x)
        observations.append(_observe(f, x))
    return out


def compare(a: list[list[float]], b: list[list[float]], devices: tuple[str, str], tol: float = PARITY_TOL) -> ParityResult:
    """How far the proposals of two runs are apart (see module docs); runs of different lengths never agree."""
    per = [max(abs(x - y) for x, y in zip(p, q)) for p, q in zip(a, b)]
    worst = max(per, default=0.0) if len(a) == len(b) else float("inf")
    return ParityResult(devices=devices, tol=tol, per_proposal=per, max_abs_diff=worst, within=worst <= tol)


def _observe(f: Hartmann, x: list[float]) -> Observation:
    y = float(f(torch.tensor([x], dtype=torch.float64))[0])
    return Observation(params={f"x{i}": v for i, v in enumerate(x)}, outcomes={"y": y})
