"""The one place that calls botorch's acquisition optimizers.

:func:`maximize` picks the optimizer from the space and the context:

- a pool of candidates (``N x d``): ``optimize_acqf_discrete``, which picks
  only among them and never the same one twice;
- only float parameters: ``optimize_acqf`` (multi-start L-BFGS-B);
- any int or categorical parameter: ``optimize_acqf_mixed_alternating``,
  which alternates L-BFGS-B on the floats with local search over the
  allowed integer and categorical values, so every result is a valid point
  (no rounding of a continuous optimum).

A batch (``q > 1``) is built by sequential greedy optimization, each new point
conditioned on the earlier ones and on ``X_pending`` (in-flight and failed
experiments) through the acquisition function's pending points.

Multi-fidelity acquisitions take one more column, the fidelity, last
(``fidelity=``): held at one value (``fixed_features``; a pool gets that
column appended) or optimized within a range. ``X``, ``X_pending`` and the
result then have ``d + 1`` columns. :func:`maximize_by_level` finds the best
point at each of several fidelities in one multi-start L-BFGS-B run (the
restarts of every level together, each holding its own fidelity), which costs
about as much as one level: the time goes into per-call overhead, not batch size.

Example::

    X, values = maximize(acqf, encoding, q=4, X_pending=encoding.encode(pending_points))
    # X: 4 x d, values: 4
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from botorch.acquisition import AcquisitionFunction, OneShotAcquisitionFunction
from botorch.generation.gen import gen_candidates_scipy
from botorch.optim import optimize_acqf, optimize_acqf_discrete, optimize_acqf_mixed_alternating
from botorch.optim.initializers import gen_batch_initial_conditions
from torch import Tensor

from selflab.planners.encoding import Encoding


def maximize(
    acqf: AcquisitionFunction,
    encoding: Encoding,
    q: int,
    *,
    X_pending: Tensor | None = None,
    candidates: Tensor | None = None,
    fidelity: float | tuple[float, float] | None = None,
    num_restarts: int = 8,
    raw_samples: int = 256,
    maxiter: int = 100,
    around_best: bool = False,
) -> tuple[Tensor, Tensor]:
    """``q`` points (``q x d``, valid encodings) maximizing ``acqf`` and their
    acquisition values (``q``). With ``candidates`` (``N x d``), ``q`` is capped at ``N``.

    ``around_best`` (all-float spaces): the restarts are chosen among
    ``raw_samples / 2`` random points and as many perturbations of the best
    5 % of the training points by posterior mean (botorch's ``sample_around_best``). Analytic log-EI needs
    them where the data crowd one basin: far from the data its value is
    higher than between data points, and restarts from random points alone
    climb to the corners of the box.

    ``fidelity`` (see module docs): a value or a ``(low, high)`` range for an
    extra last column; the points are then ``q x (d + 1)``.
    """
    if X_pending is not None and len(X_pending):
        acqf.set_X_pending(X_pending)
    elif getattr(acqf, "X_pending", None) is not None:  # (analytic acquisitions take no pending points)
        acqf.set_X_pending(None)
    bounds, fixed = encoding.bounds, None
    if fidelity is not None:
        low, high = (fidelity, fidelity) if isinstance(fidelity, (int, float)) else fidelity
        bounds = torch.cat([bounds, bounds.new_tensor([[low], [high]])], dim=1)
        fixed = {encoding.dim: float(low)} if low == high else None
        if candidates is not None:
            if fixed is None:
                raise ValueError("a pool of candidates needs one fidelity, not a range")
            candidates = torch.cat([candidates, candidates.new_full((len(candidates), 1), float(low))], dim=1)
    if candidates is not None:
        X, values = optimize_acqf_discrete(acqf, q=min(q, len(candidates)), choices=candidates, unique=True)
        return X, values.reshape(-1)
    if encoding.continuous:
        X, values = optimize_acqf(  # (sample_around_best adds as many perturbed points as raw_samples: half of each)
            acqf, bounds=bounds, q=q, num_restarts=num_restarts, raw_samples=max(1, raw_samples // 2) if around_best else raw_samples,
            fixed_features=fixed, sequential=True, options={"maxiter": maxiter, **({"sample_around_best": True} if around_best else {})},
        )
    else:
        X, _ = optimize_acqf_mixed_alternating(
            acqf, bounds=bounds, discrete_dims=encoding.discrete_dims, cat_dims=encoding.cat_dims, fixed_features=fixed,
            q=q, num_restarts=num_restarts, raw_samples=raw_samples, options={"maxiter_continuous": min(maxiter, 32)},
        )
        values = greedy_values(acqf, X)  # it reports one value for the whole batch
    d = encoding.dim
    return torch.cat([encoding.snap(X[:, :d]), X[:, d:]], dim=-1), values.reshape(-1)


def maximize_by_level(
    acqf: AcquisitionFunction,
    encoding: Encoding,
    levels: Sequence[float],
    *,
    candidates: Tensor | None = None,
    num_restarts: int = 8,
    raw_samples: int = 256,
    maxiter: int = 100,
) -> tuple[Tensor, Tensor]:
    """For each fidelity in ``levels`` (``L``), the point maximizing ``acqf`` with
    the fidelity held there (``L x (d + 1)``) and its value (``L``), given the
    acquisition's own pending points (if any).

    All-float spaces without a pool: one joint run (see module docs) with
    ``num_restarts`` restarts per level, chosen from ``raw_samples`` points per
    level. Otherwise, and for one-shot acquisitions (knowledge gradient), one
    :func:`maximize` per level.

    Example::

        X, values = maximize_by_level(acqf, encoding, [0.5, 0.75, 1.0])
        best = X[values.argmax()]   # d + 1 columns, the fidelity last
    """
    settings = {"num_restarts": num_restarts, "raw_samples": raw_samples, "maxiter": maxiter}
    if candidates is not None or not encoding.continuous or isinstance(acqf, OneShotAcquisitionFunction):
        found = [maximize(acqf, encoding, 1, X_pending=getattr(acqf, "X_pending", None), candidates=candidates, fidelity=f, **settings) for f in levels]
        return torch.cat([X for X, _ in found]), torch.cat([v for _, v in found])
    d = encoding.dim
    starts = []
    for f in levels:
        bounds = torch.cat([encoding.bounds, encoding.bounds.new_tensor([[f], [f]])], dim=1)
        starts.append(gen_batch_initial_conditions(acqf, bounds, q=1, num_restarts=num_restarts, raw_samples=raw_samples, fixed_features={d: f}))
    start = torch.cat(starts)  # (L * restarts) x 1 x (d + 1)
    level = start[:, 0, d].clone()
    low = torch.cat([encoding.bounds[0], level.min()[None]])
    high = torch.cat([encoding.bounds[1], level.max()[None]])
    X, values = gen_candidates_scipy(start, acqf, lower_bounds=low, upper_bounds=high, options={"maxiter": maxiter}, fixed_features={d: level})
    X, values = X[:, 0, :], values.reshape(-1)
    best = [int(torch.where(level == f, values, -torch.inf).argmax()) for f in levels]
    return torch.cat([encoding.snap(X[best, :d]), X[best, d:]], dim=-1), values[best]


def greedy_values(acqf: AcquisitionFunction, X: Tensor) -> Tensor:
    """``q`` values: of each row of ``X`` (``q x d``) given the acquisition's
    pending points and the rows before it, as sequential greedy optimization scores them."""
    base = acqf.X_pending
    values = []
    with torch.no_grad():
        for i in range(len(X)):
            pending = X[:i] if base is None else torch.cat([base, X[:i]])
            acqf.set_X_pending(pending if len(pending) else None)
            values.append(acqf(X[None, i : i + 1]).reshape(()))
    acqf.set_X_pending(base)
    return torch.stack(values)


def too_close(encoding: Encoding, X: Tensor, others: Tensor, tol: float = 1e-3) -> Tensor:
    """``n`` booleans: rows of ``X`` (``n x d``) within ``tol`` of a row of
    ``others`` (``k x d``) in every column, measured on the unit cube. Only
    the first ``d`` columns count (a trailing fidelity column is ignored)."""
    if not len(others) or not len(X):
        return torch.zeros(len(X), dtype=torch.bool, device=X.device)
    d = encoding.dim
    gap = (encoding.to_unit(X[:, :d])[:, None, :] - encoding.to_unit(others[:, :d])[None, :, :]).abs().amax(dim=-1)
    return (gap < tol).any(dim=-1)
