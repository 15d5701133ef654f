"""Is a proposal inside what the model has seen? Extrapolation flags for a reason.

For each proposed point (:func:`extrapolation_flags`, ``reason["extrapolation"]``):

- ``sigma_ratio`` (per outcome): the posterior std of the latent function at
  the point over its prior std there (on the model's standardized scale):
  near 0 where data pin the model down, 1 where they say nothing;
- ``nearest``: the distance from the point to the nearest observation, in
  lengthscale units (numeric inputs on the unit cube, each divided by the
  first outcome's fitted lengthscale of that input; categorical inputs do
  not count), and ``spacing``: the data's own nearest-neighbour spacing in
  the same units (the median, over observations, of the distance to the
  nearest other one); ``distance_ratio`` is ``nearest / spacing``;
- ``outside_range``: the inputs whose value lies outside the range the
  observations span, by more than ``range_margin`` of the input's range
  (numeric), or a choice never observed (categorical).

The verdict, ``extrapolating`` (:class:`ExtrapolationRule`), is true when
``distance_ratio > distance_ratio_max`` or, for any outcome,
``sigma_ratio > sigma_ratio_max``: the point is further from the data than
the data are from each other, or the model itself says the data barely inform
it. ``outside_range`` is reported, not part of the verdict: a point on the
edge of the observed range may still be close to data. Both
thresholds are relative (to the data's spacing, to the prior), so the rule
needs no tuning for the dimension, the units or the number of points.

Example::

    flags = extrapolation_flags(surrogate, X)      # X: n x d encoded rows
    flags[0]["extrapolating"], flags[0]["outside_range"]   # True, ['x1']
    is_extrapolating(proposal.reason)              # reads the verdict back
"""

from __future__ import annotations

import math
from typing import Any

import torch
from botorch.models import ModelListGP
from botorch.models.model import Model
from gpytorch.kernels import MaternKernel, RBFKernel
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor

from selflab.planners.reasons import is_extrapolating as is_extrapolating  # (torch-free, for the controller)
from selflab.planners.surrogate import Surrogate, numerics


class ExtrapolationRule(BaseModel):
    """When a proposal is ``extrapolating`` (see module docs)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    distance_ratio_max: float = Field(2.0, gt=0, description="nearest observation further than this many data spacings")
    sigma_ratio_max: float = Field(0.9, gt=0, le=1, description="posterior std above this fraction of the prior std")
    range_margin: float = Field(0.02, ge=0, description="outside the observed range by more than this fraction of the input's range")


def extrapolation_flags(surrogate: Surrogate, X: Tensor, rule: ExtrapolationRule | None = None) -> list[dict[str, Any]]:
    """One JSON-safe dict per row of ``X`` (``n x d``, or ``n x (d + 1)`` with a
    fidelity column, encoded as the surrogate's training rows): see module docs."""
    rule = rule or ExtrapolationRule()
    enc = surrogate.encoding
    d = enc.dim
    models = list(surrogate.model.models) if isinstance(surrogate.model, ModelListGP) else [surrogate.model]
    with numerics(threads=None), torch.no_grad():
        ratios = [_sigma_ratio(m, X) for m in models]
    numeric = [i for i in range(d) if i not in enc.cat_dims]
    train_u = enc.to_unit(surrogate.data.X[:, :d])
    point_u = enc.to_unit(X[:, :d])
    scale = _lengthscales(models[0], numeric, d).to(X)
    nearest = _nearest(point_u[:, numeric] / scale, train_u[:, numeric] / scale)
    spacing = _spacing(train_u[:, numeric] / scale)
    lo, hi = train_u.min(dim=0).values, train_u.max(dim=0).values
    names = enc.space.names
    out = []
    for row in range(len(X)):
        outside = [names[i] for i in numeric
                   if point_u[row, i] < lo[i] - rule.range_margin or point_u[row, i] > hi[i] + rule.range_margin]
        outside += [names[i] for i in sorted(enc.cat_dims) if not bool((surrogate.data.X[:, i] == X[row, i]).any())]
        sigma = {name: _safe(r[row]) for name, r in zip(surrogate.outcomes, ratios)}
        ratio = float(nearest[row] / spacing) if spacing > 0 else math.inf
        extrapolating = ratio > rule.distance_ratio_max or any(v is not None and v > rule.sigma_ratio_max for v in sigma.values())
        out.append({
            "sigma_ratio": sigma,
            "nearest": _safe(nearest[row]),
            "spacing": _safe(spacing),
            "distance_ratio": _safe(ratio),
            "outside_range": outside,
            "extrapolating": bool(extrapolating),
        })
    return out


def _sigma_ratio(model: Model, X: Tensor) -> Tensor:
    """``(n,)``: latent posterior std over prior std at ``X``, on the model's own scale."""
    model.eval()
    Xt = model.transform_inputs(X)
    posterior = model(Xt).variance.reshape(-1)
    prior = model.covar_module(Xt, diag=True).reshape(-1)
    return (posterior.clamp_min(0) / prior.clamp_min(1e-300)).sqrt()


def _lengthscales(model: Model, columns: list[int], d: int) -> Tensor:
    """The lengthscale of each of ``columns`` (unit-cube units) from the model's
    first Matern or RBF kernel; 1 where the kernel does not say."""
    found = torch.ones(len(columns), dtype=torch.float64)
    for kernel in model.covar_module.modules():
        if isinstance(kernel, (MaternKernel, RBFKernel)) and kernel.lengthscale is not None:
            ls = kernel.lengthscale.detach().reshape(-1).to(found)
            active = kernel.active_dims.tolist() if kernel.active_dims is not None else None
            if len(ls) == 1:
                return found * ls
            dims = active if active is not None and len(active) == len(ls) else (list(range(d)) if len(ls) >= d else None)
            if dims is None:
                return found
            by_dim = dict(zip(dims, ls.tolist()))
            return torch.tensor([by_dim.get(c, 1.0) for c in columns], dtype=torch.float64)
    return found


def _nearest(points: Tensor, data: Tensor) -> Tensor:
    """``(n,)``: distance from each row of ``points`` to the nearest row of ``data``."""
    if points.shape[-1] == 0:
        return torch.zeros(len(points), dtype=points.dtype)
    return torch.cdist(points, data).min(dim=-1).values


def _spacing(data: Tensor) -> float:
    """The median distance from each row of ``data`` to its nearest distinct other row (0 when undefined)."""
    if data.shape[-1] == 0 or len(data) < 2:
        return 0.0
    gaps = torch.cdist(data, data)
    gaps[gaps <= 1e-12] = math.inf  # itself and exact duplicates
    nearest = gaps.min(dim=-1).values
    nearest = nearest[torch.isfinite(nearest)]
    return float(nearest.median()) if len(nearest) else 0.0


def _safe(x: Tensor | float) -> float | None:
    value = float(x)
    return value if math.isfinite(value) else None
