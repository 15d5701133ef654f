"""The plain botorch baseline: ``SingleTaskGP`` with its defaults and UCB (mean + 2σ).

The yardstick that pool and batch figures are ratios to (issue 22): what a
user gets from botorch's tutorials with no tuning at all, so that a gain
over it is a gain of ``bo``'s choices and not of botorch itself.

- **Model:** ``SingleTaskGP`` with botorch's default priors (its current
  default kernel and likelihood), inputs scaled to [0, 1] by a ``Normalize``
  input transform over the space's bounds (with a pool of candidates: over
  the pool's range, every candidate, measured and pending row), a
  ``Standardize`` outcome transform. Hyperparameters fitted afresh on every
  call (``fit_gpytorch_mll``); no warp, no reported noise, no jitter retries.
- **Acquisition:** upper confidence bound with ``beta = 4`` (botorch's UCB
  adds ``sqrt(beta)`` standard deviations: mean + 2σ), analytic for one
  point with nothing in flight, else ``qUpperConfidenceBound`` with the
  pending points (sequential greedy batch), maximized by
  :func:`selflab.planners.optimize.maximize` (a pool: the best unused
  candidates).
- **Initial design:** ``n_init`` (2) uniformly random points, seeded by
  ``(seed, step)`` (:class:`~selflab.planners.baselines.RandomPlanner`), and
  whenever fewer than two observations can be modelled.

One objective and no outcome constraints (a ``ValueError`` says so
otherwise). Only target-fidelity observations are modelled; proposals are at
:func:`~selflab.planners.baselines.offered_fidelity`.

Each proposal's reason says what made it: ``{"strategy": "plain", "model":
"SingleTaskGP (botorch defaults)", "acquisition": "ucb", "beta": 4.0,
"acquisition_value", "predicted": {outcome: {"mean", "std"}}, "n_observations",
"fit_seconds", "batch_rank"}``; the initial ones ``{"strategy": "plain_random"}``.

Example::

    planner = PlainPlanner()
    planner.propose(space, [Objective(name="y")], observations, [], 1, context=PlanContext(seed=0, step=5))
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Sequence
from typing import Any

import torch
from botorch.acquisition import UpperConfidenceBound, qUpperConfidenceBound
from botorch.fit import fit_gpytorch_mll
from botorch.models import SingleTaskGP
from botorch.models.transforms.input import Normalize
from botorch.models.transforms.outcome import Standardize
from botorch.sampling import SobolQMCNormalSampler
from botorch.utils.sampling import manual_seed
from gpytorch.mlls import ExactMarginalLogLikelihood
from pydantic import BaseModel, ConfigDict, Field

from selflab.planners.baselines import RandomPlanner, offered_fidelity
from selflab.planners.encoding import Encoding
from selflab.planners.optimize import maximize
from selflab.planners.protocol import Observation, Pending, PlanContext, Proposal, parse_options
from selflab.planners.seeding import mix_seed
from selflab.planners.space import Objective, SearchSpace
from selflab.planners.surrogate import numerics


class PlainOptions(BaseModel):
    """``planner.options`` of ``kind: plain`` (the defaults are the baseline; change them only to study it)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    beta: float = Field(4.0, gt=0, description="UCB's beta: the mean plus sqrt(beta) standard deviations (4: mean + 2 sd)")
    n_init: int = Field(2, ge=1, description="uniformly random points before the first model")
    num_restarts: int = Field(10, ge=1, description="optimizer restarts (botorch tutorial setting)")
    raw_samples: int = Field(512, ge=1, description="random points scored to choose the restarts (botorch tutorial setting)")
    mc_samples: int = Field(128, ge=1, description="quasi-Monte-Carlo samples of qUCB (batches and pending points)")


MODEL_NAME = "SingleTaskGP (botorch defaults)"


class PlainPlanner:
    """Plain botorch GP + UCB (see module docs); options: :class:`PlainOptions`."""

    kind = "plain"
    options_model = PlainOptions
    blocking = True

    def __init__(self, **options: Any) -> None:
        self.options = parse_options(PlainOptions, self.kind, options)

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
        if len(objectives) != 1 or context.constraints:
            raise ValueError("plain planner: one objective and no outcome constraints only; use kind: bo")
        if n <= 0:
            return []
        objective = objectives[0]
        seen = [o for o in observations if o.fidelity == context.target_fidelity and math.isfinite(o.outcomes.get(objective.name, math.nan))]
        if context.step < self.options.n_init or len(seen) < 2:
            base = RandomPlanner().propose(space, objectives, observations, pending, n, context=context)
            return [p.model_copy(update={"reason": {**p.reason, "strategy": "plain_random", "n_observations": len(seen)}}) for p in base]
        enc = Encoding(space)
        X = enc.encode([o.params for o in seen])
        sign = 1.0 if objective.direction == "maximize" else -1.0
        y = torch.tensor([[sign * o.outcomes[objective.name]] for o in seen], dtype=enc.dtype)
        X_pending = enc.encode([p.params for p in (*pending, *context.failed)])
        pool = enc.encode(list(context.candidates)) if context.candidates is not None else None
        bounds = enc.bounds if pool is None else _range(torch.cat([pool, X, X_pending]))
        started = time.perf_counter()
        with numerics(1), manual_seed(mix_seed(context.seed, context.step)), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # botorch's input-data warnings on tiny data sets
            model = SingleTaskGP(X, y, input_transform=Normalize(d=enc.dim, bounds=bounds), outcome_transform=Standardize(m=1))
            fit_gpytorch_mll(ExactMarginalLogLikelihood(model.likelihood, model))
            fit_seconds = time.perf_counter() - started
            o = self.options
            if n == 1 and not len(X_pending):
                acqf: Any = UpperConfidenceBound(model, beta=o.beta)
                name = "ucb"
            else:
                sampler = SobolQMCNormalSampler(torch.Size([o.mc_samples]), seed=mix_seed(context.seed, context.step, 1))
                acqf, name = qUpperConfidenceBound(model, beta=o.beta, sampler=sampler), "qucb"
            Xnew, values = maximize(acqf, enc, n, X_pending=X_pending, candidates=pool, num_restarts=o.num_restarts, raw_samples=o.raw_samples)
            with torch.no_grad():
                posterior = model.posterior(Xnew)
                mean, std = sign * posterior.mean[:, 0], posterior.variance[:, 0].clamp_min(0).sqrt()
        fidelity = offered_fidelity(context)
        return [
            Proposal(params=point, fidelity=fidelity, reason={
                "strategy": "plain", "model": MODEL_NAME, "acquisition": name, "beta": o.beta,
                "acquisition_value": _number(values[i]),
                "predicted": {objective.name: {"mean": _number(mean[i]), "std": _number(std[i])}},
                "n_observations": len(seen), "fit_seconds": fit_seconds, "batch_rank": i,
            })
            for i, point in enumerate(enc.decode(Xnew))
        ]


def _range(X: torch.Tensor) -> torch.Tensor:
    """``2 x d`` bounds of the rows of ``X`` (``n x d``), each column's range kept non-empty."""
    low, high = X.min(dim=0).values, X.max(dim=0).values
    return torch.stack([low, torch.where(high > low, high, low + 1.0)])


def _number(x: torch.Tensor | float) -> float | None:
    """A JSON-safe float (``None`` for NaN or infinity)."""
    value = float(x)
    return value if math.isfinite(value) else None
