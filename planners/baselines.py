"""Baseline planners: uniform random and scrambled Sobol.

Both are pure functions of ``(seed, step)``: the ``k``-th proposal of a
campaign is the same whatever crashed and resumed in between, and no two
proposals of a campaign repeat each other. Both propose at the highest
fidelity on offer unless told otherwise.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np

from planners.protocol import Observation, Pending, PlanContext, Proposal
from planners.space import Objective, SearchSpace


def _fidelity(context: PlanContext) -> float:
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
        fidelity = _fidelity(context)
        out = []
        for i in range(n):
            rng = np.random.default_rng([context.seed, context.step + i])
            u = rng.random(space.dim)
            out.append(Proposal(params=space.from_unit(u), fidelity=fidelity,
                                reason={"strategy": "random", "index": context.step + i}))
        return out


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
        fidelity = _fidelity(context)
        return [
            Proposal(params=space.from_unit(row), fidelity=fidelity,
                     reason={"strategy": "sobol", "index": context.step + i})
            for i, row in enumerate(u)
        ]
