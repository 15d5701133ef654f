"""Surrogate building (``objective: learn``): proposals that make the model's map of an output better.

A lab that wants a map of a property rather than its best value marks the
output ``objective: learn`` (:class:`~selflab.planners.space.Objective`).
The ``bo`` planner then proposes where a new result would most reduce the
model's posterior variance integrated over the space: botorch's
``qNegIntegratedPosteriorVariance`` (qNIPV), the mean latent variance at
``mc_points`` integration points after fantasizing the batch, negated.

- The integration points are a scrambled Sobol sample of the space (encoded,
  so categorical and integer parameters take valid values), or, with a pool
  (``context.candidates``), the pool's rows (at most ``mc_points`` of them, a
  seeded sample): the map that matters is the map of what can be measured.
- With several learnt outputs their variances are added, each divided by its
  observed variance, so that outputs in different units weigh alike
  (a ``ScalarizedPosteriorTransform`` with weights ``1 / sd_j``; outcome
  constraints are modelled but weigh nothing).
- Learnt outputs are modelled unwarped (a warp would change what "variance"
  means), and ``acquisition``, ``beta`` and ``failures: learn`` do not apply.

The proposal's reason says ``"acquisition": "qnipv"``, the number of
integration points and the integrated variance before the batch
(``integrated_variance``, weighted as above; qNIPV's value is minus the one
after it).

Example::

    acqf, name, info = learn_acquisition(surrogate, objectives, seed=3)
    acqf(X)   # X: b x q x d -> b values, minus the integrated variance after the batch
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from botorch.acquisition import AcquisitionFunction
from botorch.acquisition.active_learning import qNegIntegratedPosteriorVariance
from botorch.acquisition.objective import ScalarizedPosteriorTransform
from botorch.sampling import SobolQMCNormalSampler
from torch import Tensor

from selflab.planners.space import Objective
from selflab.planners.surrogate import Surrogate

MC_POINTS = 512
"""Integration points of the integrated posterior variance."""


class LearnError(ValueError):
    """Objectives that mix ``learn`` with optimized ones (not supported)."""


def learning(objectives: Sequence[Objective]) -> bool:
    """Whether the campaign maps its outputs (every objective ``learn``); raises
    :class:`LearnError` when ``learn`` is mixed with optimized objectives."""
    learnt = [o.learn for o in objectives]
    if any(learnt) and not all(learnt):
        names = ", ".join(o.name for o in objectives if not o.learn)
        raise LearnError(f"objective: learn cannot be mixed with optimized objectives ({names}); "
                         "mark every objective learn, or none")
    return bool(learnt) and all(learnt)


def integration_points(surrogate: Surrogate, n: int, seed: int, pool: Tensor | None = None) -> Tensor:
    """``m x d`` encoded points the variance is averaged over: Sobol, or (a seeded sample of) the pool."""
    enc = surrogate.encoding
    if pool is not None and len(pool):
        if len(pool) <= n:
            return pool
        g = torch.Generator().manual_seed(seed)
        return pool[torch.randperm(len(pool), generator=g)[:n].sort().values.to(pool.device)]
    U = torch.quasirandom.SobolEngine(enc.dim, scramble=True, seed=seed).draw(n, dtype=enc.dtype)
    return enc.from_unit(U.to(enc.device))


def learn_acquisition(
    surrogate: Surrogate, objectives: Sequence[Objective], *, seed: int = 0, mc_points: int = MC_POINTS,
    pool: Tensor | None = None, mc_samples: int = 1,
) -> tuple[AcquisitionFunction, str, dict[str, Any]]:
    """qNIPV over ``surrogate`` for the learnt outputs (see module docs): the
    acquisition, its name (``"qnipv"``) and facts for the reason.
    ``mc_samples``: fantasy samples (the posterior variance of a GP does not
    depend on the fantasized values, so one is enough)."""
    Y = surrogate.data.Y
    weights = torch.zeros(len(surrogate.outcomes), dtype=Y.dtype, device=Y.device)
    for j, o in enumerate(objectives):
        spread = Y[:, j].std() if Y.shape[0] > 1 else Y.new_tensor(1.0)
        weights[j] = 1.0 / spread if bool(spread > 1e-12) else 1.0
    points = integration_points(surrogate, mc_points, seed, pool)
    transform = ScalarizedPosteriorTransform(weights=weights)
    acqf = qNegIntegratedPosteriorVariance(
        surrogate.model, mc_points=points, sampler=SobolQMCNormalSampler(torch.Size([mc_samples]), seed=seed),
        posterior_transform=transform,
    )
    with torch.no_grad():
        before = transform(surrogate.model.posterior(points)).variance.mean()
    return acqf, "qnipv", {"integration_points": len(points), "integrated_variance": float(before),
                           "learnt": [o.name for o in objectives]}

