"""Baseline planners: uniform random and scrambled Sobol.

Both are pure functions of ``(seed, step)``: the ``k``-th proposal of a
campaign is the same whatever crashed and resumed in between, and no two
proposals of a campaign repeat each other. Both propose at the target
fidelity when it is on offer, else at the highest offered.

With a pool (``context.candidates``), random picks unmeasured candidates
uniformly and Sobol picks, for each Sobol point, the nearest unused candidate
in the unit cube.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np

from selflab.planners.protocol import Observation, Pending, PlanContext, Proposal
from selflab.planners.seeding import seeded_rng
from selflab.planners.space import Objective, Point, SearchSpace


def nearest_unused(space: SearchSpace, rows: Sequence[Sequence[float]], candidates: Sequence[Point]) -> list[Point]:
    """For each unit-cube row in turn (``k x d``), the nearest candidate not yet
    taken (squared distance in the unit cube); at most ``len(candidates)`` points."""
    pool = np.array([space.to_unit(c) for c in candidates])
    free = np.ones(len(pool), dtype=bool)
    points: list[Point] = []
    for row in list(rows)[: len(pool)]:
        distance = np.where(free, ((pool - np.asarray(row, dtype=float)) ** 2).sum(axis=1), np.inf)
        best = int(np.argmin(distance))
        free[best] = False
        points.append(dict(candidates[best]))
    return points


def offered_fidelity(context: PlanContext) -> float:
    """The target fidelity when some instrument serves it, else the highest served."""
    offered = [f.fidelity for f in context.fidelities]
    return context.target_fidelity if context.target_fidelity in offered else max(offered)


class RandomPlanner:
    """Uniform random proposals on the unit cube, seeded by ``(seed, step)``."""

    kind = "random"
    blocking = False  # microseconds: no worker thread needed

    def propose(
        self,
        space: SearchSpace,
        objectives: Sequence[Objective],
        observations: Sequence[Observation],
        pending: Sequence[Pending],
        n: int,
        *,
        context: PlanContext,
    ) -> list[Proposal]:
        fidelity = offered_fidelity(context)
        if context.candidates is not None:
            rng = seeded_rng(context.seed, context.step)
            picks = rng.choice(len(context.candidates), size=min(n, len(context.candidates)), replace=False)
            points: list[Point] = [dict(context.candidates[int(i)]) for i in picks]
        else:  # one generator per index: the same sequence however it is batched
            points = [space.from_unit(seeded_rng(context.seed, context.step + i).random(space.dim)) for i in range(n)]
        return [
            Proposal(params=p, fidelity=fidelity, reason={"strategy": "random", "index": context.step + i})
            for i, p in enumerate(points)
        ]


class SobolPlanner:
    """Scrambled Sobol proposals; the campaign's ``step`` indexes the sequence."""

    kind = "sobol"
    blocking = False

    def propose(
        self,
        space: SearchSpace,
        objectives: Sequence[Objective],
        observations: Sequence[Observation],
        pending: Sequence[Pending],
        n: int,
        *,
        context: PlanContext,
    ) -> list[Proposal]:
        from scipy.stats import qmc  # slow to import; only Sobol campaigns pay for it

        engine = qmc.Sobol(d=space.dim, scramble=True, seed=context.seed)
        with warnings.catch_warnings():
            # Balance warnings for n not a power of 2 do not apply to a
            # sequence consumed a few points at a time over a campaign.
            warnings.simplefilter("ignore", UserWarning)
            if context.step:
                engine.fast_forward(context.step)
            u = engine.random(n)
        if context.candidates is not None:
            points = nearest_unused(space, u, context.candidates)
        else:
            points = [space.from_unit(row) for row in u]
        fidelity = offered_fidelity(context)
        return [
            Proposal(params=p, fidelity=fidelity, reason={"strategy": "sobol", "index": context.step + i})
            for i, p in enumerate(points)
        ]
