"""The target fidelity as the cheap fidelity plus a learned difference (a discrepancy model).

A multi-fidelity GP with one kernel over (design, fidelity) lets the cheap
data shape the target prediction everywhere; when the cheap model's optimum
sits elsewhere (every simulation of a real lab is biased somewhere), the
target prediction keeps being pulled toward it. The Kennedy-O'Hagan model
(with the scale fixed at 1) keeps the two apart::

    f_target(x) = f_low(x) + delta(x)

- ``f_low``: a GP on the cheaper fidelities only. With one cheap level, a
  single-fidelity GP on its data; with several, a multi-fidelity GP on them,
  read at the highest cheap level (the best proxy on offer).
- ``delta``: a single-fidelity GP on the target observations' residuals
  ``y - mean_low(x)``, whose noise variance is the low model's posterior
  variance at each target point plus the reported noise there (a residual at
  a point the cheap data barely cover says little about the bias).

The two are independent, so the target posterior is their sum (mean and
covariance add; :class:`DiscrepancyModel`, a botorch ``Model`` over rows
``n x (d + 1)`` whose fidelity column is ignored). Where target data exist,
``delta`` reproduces them: the model trusts target data there, and follows
the cheap model's shape elsewhere.

The split of the posterior variance tells whether a cheap experiment can
still pay: at a point ``x``, a cheap experiment can at most remove the low
model's share ``v_low(x) / (v_low(x) + v_delta(x))`` of the target
uncertainty, at ``cost_low / cost_target`` of a target experiment's cost
(:func:`cheap_pays`).

Example::

    model = fit_discrepancy(fitters, encoding, "y", data, target=1.0)
    mean, std = model.stats(X)            # X: n x (d + 1), fidelity column ignored
    v_low, v_delta = model.variance_split(X)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from botorch.models.model import Model
from botorch.posteriors.gpytorch import GPyTorchPosterior
from torch import Tensor

from selflab.planners.encoding import Encoding
from selflab.planners.surrogate import SurrogateFitter, TrainingData

_VAR_FLOOR = 1e-8
"""Relative floor on the residuals' noise variance (times their variance), for a stable fit."""


class DiscrepancyModel(Model):
    """``f_low(x) + delta(x)`` at the target fidelity (see module docs).

    ``posterior(X)`` takes ``b x q x (d + 1)`` rows (the last column, the
    fidelity, is ignored: the model is of the target fidelity) and returns a
    one-output Gaussian posterior, mean ``b x q x 1``.
    """

    def __init__(self, low: Model, delta: Model, dim: int, low_fidelity: float | None, target_X: Tensor) -> None:
        super().__init__()
        self.low, self.delta, self.dim, self.low_fidelity = low, delta, dim, low_fidelity
        self.target_X = target_X
        """The observed target designs (``n x d``), the discrepancy GP's inputs."""

    @property
    def num_outputs(self) -> int:
        return 1

    @property
    def batch_shape(self) -> torch.Size:
        return torch.Size()

    def _low_rows(self, X: Tensor) -> Tensor:
        design = X[..., : self.dim]
        if self.low_fidelity is None:
            return design
        return torch.cat([design, design.new_full((*design.shape[:-1], 1), self.low_fidelity)], dim=-1)

    def posterior(self, X: Tensor, output_indices: list[int] | None = None, observation_noise: bool | Tensor = False,
                  posterior_transform: object | None = None, **kwargs: object) -> GPyTorchPosterior:
        low = self.low.posterior(self._low_rows(X))
        delta = self.delta.posterior(X[..., : self.dim], observation_noise=observation_noise)
        posterior = GPyTorchPosterior(low.distribution + delta.distribution)  # independent GPs: means and covariances add
        if posterior_transform is not None:
            return posterior_transform(posterior)  # type: ignore[operator,no-any-return]
        return posterior

    def variance_split(self, X: Tensor) -> tuple[Tensor, Tensor]:
        """``n x (d + 1)`` -> the low model's and the discrepancy's posterior
        variances at the rows (each ``n``, original units squared)."""
        with torch.no_grad():
            low = self.low.posterior(self._low_rows(X)).variance.reshape(-1)
            delta = self.delta.posterior(X[..., : self.dim]).variance.reshape(-1)
        return low.clamp_min(0), delta.clamp_min(0)

    def mean_split(self, X: Tensor) -> tuple[Tensor, Tensor]:
        """``n x (d + 1)`` -> the low model's and the discrepancy's posterior means (each ``n``)."""
        with torch.no_grad():
            low = self.low.posterior(self._low_rows(X)).mean.reshape(-1)
            delta = self.delta.posterior(X[..., : self.dim]).mean.reshape(-1)
        return low, delta

    def stats(self, X: Tensor) -> tuple[Tensor, Tensor]:
        """``n x (d + 1)`` -> posterior mean and std at the target, each ``n``."""
        with torch.no_grad():
            posterior = self.posterior(X)
        return posterior.mean.reshape(-1), posterior.variance.reshape(-1).clamp_min(0).sqrt()


@dataclass
class DiscrepancyFitters:
    """The fitters of the two parts, kept between calls for their warm starts
    (a planner holds one; see :class:`~selflab.planners.surrogate.SurrogateFitter`)."""

    low_single: SurrogateFitter
    low_multi: SurrogateFitter
    delta: SurrogateFitter

    @classmethod
    def create(cls, *, refit_growth: float, warm_maxiter: int, fit_max_points: int) -> DiscrepancyFitters:
        kw = {"refit_growth": refit_growth, "warm_maxiter": warm_maxiter, "fit_max_points": fit_max_points}
        return cls(SurrogateFitter(**kw), SurrogateFitter(**kw, multi_fidelity=True), SurrogateFitter(**kw))


def fit_discrepancy(fitters: DiscrepancyFitters, encoding: Encoding, outcome: str, data: TrainingData, target: float,
                    *, min_target: int = 2) -> DiscrepancyModel | None:
    """The discrepancy model of ``outcome`` from ``data`` (rows ``n x (d + 1)``,
    fidelity last, as :meth:`TrainingData.from_observations` with
    ``with_fidelity=True``); ``None`` with fewer than ``min_target`` target
    rows or fewer than two cheap ones. Raises what the fitters raise
    (:class:`~selflab.planners.surrogate.SurrogateError`)."""
    d = encoding.dim
    at_target = data.X[:, -1] == target
    cheap = ~at_target
    if int(at_target.sum()) < min_target or int(cheap.sum()) < 2:
        return None
    levels = sorted({float(f) for f in data.X[cheap, -1].tolist()})
    low_data = TrainingData(data.X[cheap], data.Y[cheap, :1], data.Yvar[cheap, :1])
    if len(levels) > 1:
        low = fitters.low_multi.fit(encoding, [outcome], low_data).model
        low_fidelity: float | None = levels[-1]
    else:
        low = fitters.low_single.fit(encoding, [outcome], TrainingData(low_data.X[:, :d], low_data.Y, low_data.Yvar)).model
        low_fidelity = None
    X_t, y_t, noise_t = data.X[at_target, :d], data.Y[at_target, :1], data.Yvar[at_target, :1]
    rows = X_t if low_fidelity is None else torch.cat([X_t, X_t.new_full((len(X_t), 1), low_fidelity)], dim=-1)
    with torch.no_grad():
        posterior = low.posterior(rows)
        mean, var = posterior.mean.reshape(-1, 1), posterior.variance.reshape(-1, 1).clamp_min(0)
    residual = y_t - mean
    floor = _VAR_FLOOR * float(residual.var()) if len(residual) > 1 else _VAR_FLOOR
    yvar = var + torch.nan_to_num(noise_t, nan=0.0) + max(floor, 1e-12)
    delta = fitters.delta.fit(encoding, [outcome], TrainingData(X_t, residual, yvar)).model
    return DiscrepancyModel(low, delta, d, low_fidelity, X_t)


def cheap_pays(low_share: float, cost_low: float, cost_target: float) -> bool:
    """Whether a cheap experiment can still buy more of the target uncertainty
    per unit cost than a target one: its share of that uncertainty
    (``v_low / (v_low + v_delta)`` at the candidate) at least its relative cost."""
    return low_share >= cost_low / cost_target if cost_target > 0 else False


def target_candidate(model: DiscrepancyModel, encoding: Encoding, maximize: bool, observed: Tensor, target: float, *,
                     candidates: Tensor | None = None, num_restarts: int = 4, raw_samples: int = 128,
                     maxiter: int = 50) -> tuple[Tensor, float]:
    """The next target experiment by this model: the row (``d + 1``, fidelity
    ``target``) maximizing the log expected improvement of its target posterior
    over the best posterior mean at the ``observed`` target designs
    (``n x (d + 1)``, noise-robust incumbent), and that log-EI. ``candidates``
    (``N x d``): a pool to choose from instead of the design space."""
    from botorch.acquisition import LogExpectedImprovement

    from selflab.planners.optimize import maximize as maximize_acqf

    sign = 1.0 if maximize else -1.0
    mean, _ = model.stats(observed)
    best = float((sign * mean).max())
    acqf = LogExpectedImprovement(model, best_f=sign * best, maximize=maximize)
    X, values = maximize_acqf(acqf, encoding, 1, candidates=candidates, fidelity=target, num_restarts=num_restarts,
                              raw_samples=raw_samples, maxiter=maxiter)
    return X[0], float(values[0])


def best_predicted(model: DiscrepancyModel, encoding: Encoding, maximize: bool, observed: Tensor, target: float, *,
                   search: bool = True, num_restarts: int = 4, raw_samples: int = 128) -> Tensor:
    """The row (``d + 1``, fidelity ``target``) with the best target posterior
    mean: among the ``observed`` designs (``n x (d + 1)``, any fidelity; moved
    to the target) and, when ``search``, over the design space."""
    from botorch.acquisition import PosteriorMean

    from selflab.planners.optimize import maximize as maximize_acqf

    rows = observed.clone()
    rows[:, -1] = target
    acqf = PosteriorMean(model, maximize=maximize)
    with torch.no_grad():
        values = acqf(rows[:, None, :])
    i = int(values.argmax())
    x, value = rows[i], float(values[i])
    if search:
        X, found = maximize_acqf(acqf, encoding, 1, fidelity=target, num_restarts=num_restarts, raw_samples=raw_samples)
        if float(found[0]) > value:
            x = X[0]
    return x
