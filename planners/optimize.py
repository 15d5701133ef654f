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

Example::

    X, values = maximize(acqf, encoding, q=4, X_pending=encoding.encode(pending_points))
    # X: 4 x d, values: 4
"""

from __future__ import annotations

import torch
from botorch.acquisition import AcquisitionFunction
from botorch.optim import optimize_acqf, optimize_acqf_discrete, optimize_acqf_mixed_alternating
from torch import Tensor

from planners.encoding import Encoding


def maximize(
    acqf: AcquisitionFunction,
    encoding: Encoding,
    q: int,
    *,
    X_pending: Tensor | None = None,
    candidates: Tensor | None = None,
    num_restarts: int = 8,
    raw_samples: int = 256,
    maxiter: int = 100,
) -> tuple[Tensor, Tensor]:
    """``q`` points (``q x d``, valid encodings) maximizing ``acqf`` and their
    acquisition values (``q``). With ``candidates`` (``N x d``), ``q`` is capped at ``N``."""
    acqf.set_X_pending(X_pending if X_pending is not None and len(X_pending) else None)
    if candidates is not None:
        X, values = optimize_acqf_discrete(acqf, q=min(q, len(candidates)), choices=candidates, unique=True)
        return X, values.reshape(-1)
    if encoding.continuous:
        X, values = optimize_acqf(
            acqf, bounds=encoding.bounds, q=q, num_restarts=num_restarts, raw_samples=raw_samples,
            sequential=True, options={"maxiter": maxiter},
        )
    else:
        X, _ = optimize_acqf_mixed_alternating(
            acqf, bounds=encoding.bounds, discrete_dims=encoding.discrete_dims, cat_dims=encoding.cat_dims,
            q=q, num_restarts=num_restarts, raw_samples=raw_samples, options={"maxiter_continuous": min(maxiter, 32)},
        )
        values = greedy_values(acqf, X)  # it reports one value for the whole batch
    return encoding.snap(X), values.reshape(-1)


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
    ``others`` (``k x d``) in every column, measured on the unit cube."""
    if not len(others) or not len(X):
        return torch.zeros(len(X), dtype=torch.bool, device=X.device)
    gap = (encoding.to_unit(X)[:, None, :] - encoding.to_unit(others)[None, :, :]).abs().amax(dim=-1)
    return (gap < tol).any(dim=-1)
