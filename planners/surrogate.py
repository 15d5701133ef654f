"""Gaussian-process surrogates: build, fit, warm start, and survive bad data.

One exact GP per outcome (``SingleTaskGP``, or ``MixedSingleTaskGP`` when the
space has categorical parameters), each with a fixed-bounds ``Normalize``
input transform (the :class:`~selflab.planners.encoding.Encoding` bounds) and a
``Standardize`` outcome transform; several outcomes are joined in a
``ModelListGP``. A multi-fidelity fitter (``SurrogateFitter(multi_fidelity=True)``)
builds one ``SingleTaskMultiFidelityGP`` per outcome instead, on training rows
that end with the fidelity (``n x (d + 1)``, see
:meth:`TrainingData.from_observations`); that column is a ``data_fidelities``
column of a linear-truncated fidelity kernel, not normalized (fidelities lie in
(0, 1]), and categorical columns are treated as ordered there (no categorical
kernel). When every observation of an outcome reports its noise
(:attr:`Observation.noise`, a standard deviation), the model uses it as
``train_Yvar`` (fixed noise); otherwise the noise is inferred.

Refit policy (:class:`SurrogateFitter`, per outcome, on a cache of the last
fit's hyperparameters):

- ``"full"``: no usable cache: fit the hyperparameters from their defaults;
- ``"cached"``: same training data as last time: reuse the fitted model;
- ``"warm"``: the data grew by ``refit_growth`` (a fraction) since the last
  hyperparameter fit: start L-BFGS from the previous hyperparameters, at most
  ``warm_maxiter`` iterations;
- ``"conditioned"``: otherwise: rebuild the GP on all the data with the
  previous hyperparameters and no optimization (one Cholesky factorization).

Hyperparameters are fitted on at most ``fit_max_points`` observations (a
seeded random subset); the model is then conditioned on all of them.

Robustness: a fit that raises, or yields non-finite hyperparameters or
predictions, is retried from default hyperparameters, then from defaults with
a raised noise floor and Cholesky jitter (many near-duplicate points); if
that fails too, :class:`SurrogateError` is raised for the planner to fall back.

Example::

    surrogate = fit_surrogate(space, [Objective(name="y")], observations)
    mean, std = surrogate.predict([{"x": 0.2, "z": 0.5}])["y"]   # arrays of shape (1,)
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from copy import deepcopy
from dataclasses import dataclass, replace
from functools import partial
from typing import Literal

import gpytorch
import numpy as np
import torch
from botorch.exceptions.warnings import InputDataWarning, OptimizationWarning
from botorch.fit import fit_gpytorch_mll
from botorch.models import MixedSingleTaskGP, ModelListGP, SingleTaskGP, SingleTaskMultiFidelityGP
from botorch.models.model import Model
from botorch.models.transforms.input import Normalize
from botorch.models.transforms.outcome import Standardize
from botorch.models.utils.gpytorch_modules import get_gaussian_likelihood_with_lognormal_prior
from gpytorch.constraints import GreaterThan
from gpytorch.likelihoods import FixedNoiseGaussianLikelihood, GaussianLikelihood
from gpytorch.kernels import MaternKernel, ScaleKernel
from gpytorch.mlls import ExactMarginalLogLikelihood
from gpytorch.models import ExactGP
from gpytorch.priors import GammaPrior
from torch import Tensor

from selflab.planners.device_choice import choose_device
from selflab.planners.encoding import Encoding
from selflab.planners.protocol import INTERVAL_Z, LeaveOneOut, Observation, Prediction
from selflab.planners.warp import Warp
from selflab.planners.space import Objective, OutcomeConstraint, SearchSpace

Refit = Literal["full", "warm", "conditioned", "cached"]
Kernel = Literal["matern", "rbf"]
"""The covariance of a single-fidelity GP's numeric inputs (see :func:`build_model`)."""
KernelChoice = Literal["auto", "matern", "rbf"]
"""A fitter's ``kernel``: one kernel, or ``"auto"`` (see :class:`SurrogateFitter`)."""
LengthscalePrior = Literal["gamma", "none"]
"""The ``matern`` kernel's lengthscale prior (see :func:`build_model`)."""
_COST: dict[str, int] = {"cached": 0, "conditioned": 1, "warm": 2, "full": 3}
MAX_CHOLESKY_SIZE = 10_000
"""Exact Cholesky up to this many points (gpytorch switches to CG beyond 800 by default)."""
_JITTER_NOISE_FLOOR = 1e-3  # in standardized units: the noise floor of the last-resort fit


class SurrogateError(RuntimeError):
    """Every fitting attempt failed; the caller should not use a model."""


@contextmanager
def numerics(threads: int | None = 1) -> Iterator[None]:
    """Exact GP linear algebra (Cholesky, not CG) with a cached factor, ``threads``
    torch intra-op threads (``None``: leave torch's setting), quiet expected warnings.

    ``detach_test_caches(False)`` keeps the factor of the training covariance
    across posterior calls; detached, it is refactorized on every call of the
    acquisition optimizer (measured at n = 1000: 0.5 s against 0.03 s per call,
    identical variances). One thread is the default: small GP algebra gains
    little from more, and on cores shared with instruments or other campaigns
    spinning threads lose several-fold (measured on 2 busy cores: a
    two-objective proposal at n = 6 took 3.2 s with 2 threads, 0.35 s with 1).
    Thread counts are process-wide: the previous one is restored on exit.
    """
    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        with (
            gpytorch.settings.max_cholesky_size(MAX_CHOLESKY_SIZE),
            gpytorch.settings.detach_test_caches(False),
            warnings.catch_warnings(),
        ):
            warnings.simplefilter("ignore", InputDataWarning)
            warnings.simplefilter("ignore", OptimizationWarning)
            yield
    finally:
        torch.set_num_threads(before)


@dataclass(frozen=True)
class TrainingData:
    """What the GPs are trained on: ``X`` (``n x d``, or ``n x (d + 1)`` with
    the fidelity last), ``Y`` (``n x m``) and ``Yvar`` (``n x m``, NaN where an
    observation gave no noise)."""

    X: Tensor
    Y: Tensor
    Yvar: Tensor

    def to(self, device: torch.device) -> TrainingData:
        """These data on ``device`` (themselves when already there)."""
        if self.X.device == device:
            return self
        return TrainingData(self.X.to(device), self.Y.to(device), self.Yvar.to(device))

    @classmethod
    def from_observations(
        cls,
        encoding: Encoding,
        outcomes: Sequence[str],
        observations: Sequence[Observation],
        fidelity: float | None = None,
        *,
        with_fidelity: bool = False,
    ) -> TrainingData:
        """Observations (at ``fidelity`` when given) whose modelled outcomes are all
        finite; ``with_fidelity`` appends each one's fidelity as a last column of ``X``."""
        kept = [
            o for o in observations
            if (fidelity is None or o.fidelity == fidelity)
            and all(math.isfinite(o.outcomes.get(name, math.nan)) for name in outcomes)
        ]
        Y = [[o.outcomes[name] for name in outcomes] for o in kept]
        Yvar = [[(o.noise or {}).get(name, math.nan) ** 2 for name in outcomes] for o in kept]
        like = {"dtype": encoding.dtype, "device": encoding.device}
        m = len(outcomes)
        X = encoding.encode([o.params for o in kept])
        if with_fidelity:
            X = torch.cat([X, torch.tensor([[o.fidelity] for o in kept], **like).reshape(-1, 1)], dim=-1)
        return cls(X, torch.tensor(Y, **like).reshape(-1, m), torch.tensor(Yvar, **like).reshape(-1, m))

    @property
    def n(self) -> int:
        return self.X.shape[0]

    def warped(self, warps: Sequence[Warp | None]) -> TrainingData:
        """These data with outcome ``j`` warped by ``warps[j]`` (``None``: as is);
        reported noise variances follow by the delta method."""
        Y, Yvar = self.Y.clone(), self.Yvar.clone()
        for j, warp in enumerate(warps):
            if warp is not None:
                Y[:, j] = warp.forward(self.Y[:, j])
                Yvar[:, j] = self.Yvar[:, j] * warp.slope(self.Y[:, j]) ** 2
        return TrainingData(self.X, Y, Yvar)


@dataclass
class Surrogate:
    """Fitted GPs over encoded inputs, one output per name in ``outcomes``.

    ``model.posterior(X)`` for ``X`` of shape ``b x q x d`` has a mean of shape
    ``b x q x m``, in the outcomes' original units, or on the warped scale for
    an outcome with a warp (``warps[j]``, see :mod:`selflab.planners.warp`; ``data``
    holds the warped values). :meth:`stats` and :meth:`predict` always answer
    in original units.
    """

    model: Model
    encoding: Encoding
    outcomes: tuple[str, ...]
    data: TrainingData
    refit: Refit
    fit_seconds: float
    warps: tuple[Warp | None, ...] = ()
    kernels: tuple[Kernel, ...] = ()
    """The kernel of each outcome's GP (single-fidelity surrogates; see :func:`build_model`)."""
    lengthscale_prior: LengthscalePrior = "gamma"
    """The lengthscale prior of the ``matern`` kernels among them."""
    made_by: Refit = "full"
    """How the models' hyperparameters were obtained for these data: ``refit``
    of the call that fitted them, which for a ``"cached"`` call is an earlier
    call's (a campaign's recommendation fits, the next proposal finds the fit
    cached: its ``refit`` is ``"cached"``, its ``made_by`` the recommendation's)."""

    def stats(self, X: Tensor, *, observation_noise: bool = False) -> tuple[Tensor, Tensor]:
        """``n x d`` -> posterior mean and std, each ``n x m``, original units (a
        warped outcome's mean is its posterior median, its std by the delta
        method). ``observation_noise``: the std of a new reading (the model's
        noise added), else of the latent function."""
        with numerics(threads=None), torch.no_grad():
            posterior = self.model.posterior(X, observation_noise=observation_noise)
            mean, std = posterior.mean, posterior.variance.clamp_min(0).sqrt()
        for j, warp in enumerate(self.warps):
            if warp is not None:
                mean, std = mean.clone(), std.clone()
                mean[..., j], std[..., j] = warp.untransform(mean[..., j], std[..., j])
        return mean, std

    def noise_std(self, X: Tensor) -> Tensor:
        """``n x d`` -> ``n x m``: the std that observation noise adds to a new
        reading at ``X``, original units (0 where the model cannot say, e.g. a
        model given each training point's noise, which knows none at new points)."""
        _, latent = self.stats(X)
        _, total = self.stats(X, observation_noise=True)
        return (total.square() - latent.square()).clamp_min(0).sqrt()

    def rescaled(self, factors: Sequence[float]) -> Surrogate:
        """A copy whose posterior std of outcome ``j`` is ``factors[j]`` times this
        one's, mean unchanged (``calibration: rescale``): the kernel and the
        noise variance are both multiplied by ``factors[j] ** 2``, which scales
        the posterior covariance exactly. This surrogate is left as it is."""
        if all(f == 1.0 for f in factors):
            return self
        models = list(self.model.models) if isinstance(self.model, ModelListGP) else [self.model]
        scaled = [_scaled_copy(m, float(f)) if f != 1.0 else m for m, f in zip(models, factors)]
        model: Model = scaled[0] if len(scaled) == 1 else ModelListGP(*scaled)
        return replace(self, model=model)

    def predict(self, points: Sequence[Mapping[str, float | int | str]]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Mean and std (arrays of shape ``(len(points),)``) per outcome, original
        units; single-fidelity surrogates only (multi-fidelity ones: :meth:`stats`)."""
        with numerics():
            mean, std = self.stats(self.encoding.encode(points))
        return {name: (mean[:, j].cpu().numpy(), std[:, j].cpu().numpy()) for j, name in enumerate(self.outcomes)}

    def prediction(self, X: Tensor, fidelity: float) -> dict[str, Prediction]:
        """The posterior at encoded rows ``X`` (``n x d``, or ``n x (d + 1)`` with
        the fidelity last), per outcome, as :class:`~selflab.planners.protocol.Prediction`
        (no observation noise; ``fidelity``: that of rows without a fidelity column)."""
        with numerics(threads=None), torch.no_grad():
            posterior = self.model.posterior(X)
            mean, std = posterior.mean, posterior.variance.clamp_min(0).sqrt()
        fidelities = self._fidelities(X, fidelity)
        return {name: self._in_units(j, mean[:, j], std[:, j], fidelities) for j, name in enumerate(self.outcomes)}

    def leave_one_out(self, fidelity: float) -> dict[str, LeaveOneOut]:
        """Each training observation predicted by the model conditioned on all
        the others (same hyperparameters, observation noise included; closed
        form, :func:`loo_predictive`), per outcome, in the outcome's units."""
        models = list(self.model.models) if isinstance(self.model, ModelListGP) else [self.model]
        fidelities = self._fidelities(self.data.X, fidelity)
        out: dict[str, LeaveOneOut] = {}
        for j, (name, model) in enumerate(zip(self.outcomes, models)):
            with numerics(threads=None):
                mean, var = self._loo_mean_var(model)
            mean, var = model.outcome_transform.untransform(mean.unsqueeze(-1), var.unsqueeze(-1))
            observed = self.data.Y[:, j]
            warp = self.warps[j] if j < len(self.warps) else None
            if warp is not None:
                observed = warp.inverse(observed)
            out[name] = LeaveOneOut(observed=observed.detach().cpu().numpy(),
                                    predicted=self._in_units(j, mean[:, 0], var[:, 0].clamp_min(0).sqrt(), fidelities))
        return out

    def _loo_mean_var(self, model: Model) -> tuple[Tensor, Tensor]:
        """Leave-one-out mean and variance ``(n,)`` of ``data``'s rows under one
        outcome's model, on its standardized scale (:func:`loo_predictive`)."""
        _, mean, var = loo_predictive(model)
        return mean, var

    def _fidelities(self, X: Tensor, fidelity: float) -> np.ndarray:
        if X.shape[-1] > self.encoding.dim:
            return X[:, -1].detach().cpu().numpy().astype(float)
        return np.full(X.shape[0], float(fidelity))

    def _in_units(self, j: int, mean: Tensor, std: Tensor, fidelities: np.ndarray) -> Prediction:
        """Outcome ``j``'s mean and std on the model's scale -> a Prediction in its own units."""
        lower, upper = mean - INTERVAL_Z * std, mean + INTERVAL_Z * std
        warp = self.warps[j] if j < len(self.warps) else None
        if warp is not None:
            lower, upper = warp.inverse(lower), warp.inverse(upper)
            mean, std = warp.untransform(mean, std)

        def numpy(t: Tensor) -> np.ndarray:
            return t.detach().cpu().numpy().astype(float)

        return Prediction(mean=numpy(mean), std=numpy(std), lower=numpy(lower), upper=numpy(upper), fidelity=fidelities,
                          median=warp is not None)


@dataclass
class _Fit:
    """What the fitter remembers about one outcome's last fit."""

    signature: tuple[object, ...]
    hypers: dict[str, Tensor]
    n_fit: int  # training points when the hyperparameters were last optimized
    kernel: Kernel
    data: tuple[Tensor, Tensor, Tensor | None]
    model: Model
    made_by: Refit  # the refit that produced ``model``


class SurrogateFitter:
    """Fits one GP per outcome, warm-starting from the previous call (see module docs).

    ``fit_max_points`` caps the points the hyperparameters are optimized on;
    ``refit_growth`` is the fraction by which the data must grow before the
    hyperparameters are optimized again (below ``refit_below`` points they are
    fitted afresh from the defaults on every new point: cheap there, and on
    Hartmann6 at 40 evaluations it took the median regret over 5 seeds from
    0.26 with warm starts to 0.035); ``warm_maxiter`` caps L-BFGS
    iterations in a warm refit; ``multi_fidelity`` fits multi-fidelity GPs
    (training rows end with the fidelity, see :func:`build_model`); ``kernel``:
    see :func:`build_model`, or ``"auto"``: on every full fit both kernels are
    fitted and the one with the higher :func:`loo_log_density` is kept (its
    warm and conditioned refits reuse it); twice the fitting time.
    """

    def __init__(
        self, *, refit_growth: float = 0.1, refit_below: int = 200, warm_maxiter: int = 30, fit_max_points: int = 500, seed: int = 0,
        multi_fidelity: bool = False, kernel: KernelChoice = "matern",
    ) -> None:
        self.refit_growth, self.warm_maxiter, self.fit_max_points, self.seed = refit_growth, warm_maxiter, fit_max_points, seed
        self.refit_below = refit_below
        self.multi_fidelity, self.kernel = multi_fidelity, kernel
        self._cache: dict[str, _Fit] = {}

    def fit(self, encoding: Encoding, outcomes: Sequence[str], data: TrainingData,
            warps: Sequence[Warp | None] = (), lengthscale_prior: LengthscalePrior = "gamma") -> Surrogate:
        """Models for ``outcomes`` on ``data`` (outcome ``j`` warped by ``warps[j]``
        when given; ``lengthscale_prior``: see :func:`build_model`); raises
        :class:`SurrogateError` when all attempts fail."""
        started = time.perf_counter()
        if any(w is not None for w in warps):
            data = data.warped(warps)
        models: list[Model] = []
        refits: list[Refit] = []
        for j, name in enumerate(outcomes):
            yvar = data.Yvar[:, j : j + 1]
            train = (data.X, data.Y[:, j : j + 1], yvar if bool(torch.isfinite(yvar).all()) else None)
            model, refit = self._fit_outcome(name, encoding, train, lengthscale_prior)
            models.append(model)
            refits.append(refit)
        model: Model = models[0] if len(models) == 1 else ModelListGP(*models)
        refit = max(refits, key=_COST.__getitem__)
        kernels = () if self.multi_fidelity else tuple(self._cache[name].kernel for name in outcomes)
        made_by = max((self._cache[name].made_by for name in outcomes), key=_COST.__getitem__)
        return Surrogate(model, encoding, tuple(outcomes), data, refit, time.perf_counter() - started, tuple(warps), kernels,
                         lengthscale_prior, made_by)

    def _fit_outcome(
        self, name: str, encoding: Encoding, train: tuple[Tensor, Tensor, Tensor | None], prior: LengthscalePrior
    ) -> tuple[Model, Refit]:
        X, y, yvar = train
        signature = (encoding.space, str(encoding.device), yvar is None, prior)
        cached = self._cache.get(name)
        if cached is not None and cached.signature != signature:
            cached = None
        if cached is not None and _same(cached.data, train):
            return cached.model, "cached"
        plan: list[tuple[Refit, bool]] = []  # (kind, jitter), tried in order
        if cached is not None and len(X) > self.refit_below:  # below: from the defaults every time (a warm start can stay in a poor optimum)
            plan.append(("warm", False) if len(X) >= cached.n_fit * (1 + self.refit_growth) else ("conditioned", False))
        plan += [("full", False), ("full", True)]
        errors = []
        for kind, jitter in plan:
            try:
                with numerics(threads=None):
                    model, n_fit, kernel = self._attempt(kind, jitter, encoding, train, cached, prior)
            except torch.OutOfMemoryError:
                raise  # (not a numerical failure: the planner makes this proposal on the CPU, selflab.planners.device_choice)
            except Exception as exc:  # any failure of the linear algebra or optimizer: next attempt
                errors.append(f"{kind}{'+jitter' if jitter else ''}: {type(exc).__name__}: {exc}")
                continue
            self._cache[name] = _Fit(signature, _hyperparameters(model), n_fit, kernel, train, model, kind)
            return model, kind
        self._cache.pop(name, None)
        raise SurrogateError(f"cannot fit a GP to {name!r}: " + " | ".join(errors))

    def _attempt(
        self, kind: Refit, jitter: bool, encoding: Encoding, train: tuple[Tensor, Tensor, Tensor | None], cached: _Fit | None,
        prior: LengthscalePrior,
    ) -> tuple[Model, int, Kernel]:
        X, y, yvar = train
        hypers = cached.hypers if cached is not None and kind != "full" else None
        n_fit = cached.n_fit if cached is not None and kind == "conditioned" else len(X)
        kernels: list[Kernel]
        if self.kernel != "auto":
            kernels = [self.kernel]
        elif cached is not None and kind != "full":
            kernels = [cached.kernel]
        else:
            kernels = ["matern", "rbf"]
        kernel = kernels[0]
        if kind != "conditioned":
            idx = self._subset(len(X))
            best: tuple[float, Model, Kernel] | None = None
            for candidate in kernels:
                small = build_model(encoding, X[idx], y[idx], None if yvar is None else yvar[idx], jitter=jitter,
                                    multi_fidelity=self.multi_fidelity, kernel=candidate, lengthscale_prior=prior)
                if hypers is not None:
                    _load(small, hypers)
                options = {"maxiter": self.warm_maxiter} if kind == "warm" else {}
                mll = ExactMarginalLogLikelihood(small.likelihood, small)
                fit_gpytorch_mll(mll, optimizer_kwargs={"options": options}, max_attempts=1 if kind == "warm" else 3)
                score = loo_log_density(small) if len(kernels) > 1 else 0.0
                if best is None or score > best[0]:
                    best = (score, small, candidate)
            assert best is not None
            _, small, kernel = best
            hypers = _hyperparameters(small)
            if len(idx) == len(X):
                _check(small, X)
                return small, n_fit, kernel
        model = build_model(encoding, X, y, yvar, jitter=jitter, multi_fidelity=self.multi_fidelity, kernel=kernel,
                            lengthscale_prior=prior)
        assert hypers is not None
        _load(model, hypers)
        model.eval()
        _check(model, X)
        return model, n_fit, kernel

    def _subset(self, n: int) -> Tensor:
        """Indices of at most ``fit_max_points`` of ``n`` points (seeded, sorted)."""
        if n <= self.fit_max_points:
            return torch.arange(n)
        g = torch.Generator().manual_seed(self.seed)
        return torch.randperm(n, generator=g)[: self.fit_max_points].sort().values


def build_model(
    encoding: Encoding, X: Tensor, y: Tensor, yvar: Tensor | None, *, jitter: bool = False, multi_fidelity: bool = False,
    kernel: Kernel = "matern", lengthscale_prior: LengthscalePrior = "gamma",
) -> Model:
    """An unfitted GP on ``X`` (``n x d``), ``y`` and ``yvar`` (``n x 1``).

    ``jitter`` raises the noise floor (inferred noise) or adds to ``yvar``, for
    data that are too close to singular. ``multi_fidelity``: ``X`` is
    ``n x (d + 1)`` with the fidelity last, and the GP a ``SingleTaskMultiFidelityGP``
    (with its own kernel; ``kernel`` does not apply).

    ``kernel`` (numeric inputs, on the unit cube after ``Normalize``):

    - ``"matern"``: a scaled ARD Matern-5/2 with a Gamma(3, 6) prior on each
      lengthscale (mode 1/3) and Gamma(2, 0.15) on the output scale,
      the kernel of botorch's ``get_matern_kernel_with_gamma_prior`` (its
      default GP before botorch 0.12). With ``lengthscale_prior="none"`` the
      lengthscales have no prior
      (type-II maximum likelihood): an input that does not matter can get
      an unbounded lengthscale, which the Gamma prior forbids;
    - ``"rbf"``: an ARD RBF with a lengthscale prior that grows with the
      dimension (LogNormal(sqrt(2) + log(d) / 2, sqrt(3)); median 10 at
      d = 6), botorch's current default and Ax's.

    (:class:`SurrogateFitter` adds ``"auto"``: both, kept by leave-one-out fit.)
    Measured (``benchmarks/RESULTS.md``, session 5): Hartmann6 at 40
    evaluations, 30 seeds, median regret 0.0016 with ``matern`` against
    0.033 with ``rbf``; the gain is the Gamma prior's shorter lengthscales
    (a Matern-5/2 under the dimension-scaled prior scored 0.013). On the
    Liang pools ``matern`` is better on autoam (22 evaluations to 80 % of the
    top rows against 32) and worse on p3ht (56 against 42). At these data
    sizes the Gamma prior decides the ``matern`` fit (lengthscales 0.2-0.6 and
    a small noise on p3ht, autoam and Hartmann6 alike), while ``rbf``'s wide
    prior lets p3ht's dopant inputs go nearly irrelevant; leave-one-out fit
    prefers ``rbf`` even on Hartmann6, so it cannot choose for optimization.
    Without the prior the Matern lets them drop out too (p3ht 43, autoam 23):
    the ``bo`` planner's default on pools (session 6 in ``benchmarks/RESULTS.md``).
    """
    if multi_fidelity:
        cont = list(range(encoding.dim))  # categorical columns too: the fidelity kernel has no categorical variant
    else:
        cont = [i for i in range(encoding.dim) if i not in encoding.cat_dims]
    normalize = Normalize(d=X.shape[-1], bounds=encoding.bounds[:, cont], indices=cont) if cont else None
    if yvar is not None:
        yvar = yvar.clamp_min(1e-10)
        if jitter:
            yvar = yvar + _JITTER_NOISE_FLOOR * y.var().clamp_min(1e-12)
    likelihood = None
    if jitter and yvar is None:
        likelihood = get_gaussian_likelihood_with_lognormal_prior()
        likelihood.noise_covar.register_constraint("raw_noise", GreaterThan(_JITTER_NOISE_FLOOR))
    transform = Standardize(m=1)
    if multi_fidelity:
        model: Model = SingleTaskMultiFidelityGP(
            X, y, train_Yvar=yvar, data_fidelities=[encoding.dim], likelihood=likelihood,
            input_transform=normalize, outcome_transform=transform,
        )
    elif encoding.cat_dims:
        model = MixedSingleTaskGP(
            X, y, cat_dims=sorted(encoding.cat_dims), train_Yvar=yvar, likelihood=likelihood,
            input_transform=normalize, outcome_transform=transform,
            cont_kernel_factory=partial(_matern, prior=lengthscale_prior) if kernel == "matern" else None,
        )
    else:
        covar = None
        if kernel == "matern":
            covar = ScaleKernel(_matern(torch.Size(), X.shape[-1], None, lengthscale_prior), outputscale_prior=GammaPrior(2.0, 0.15))
        model = SingleTaskGP(
            X, y, train_Yvar=yvar, likelihood=likelihood, covar_module=covar, input_transform=normalize, outcome_transform=transform,
        )
    return model.to(X)


def _matern(
    batch_shape: torch.Size, ard_num_dims: int, active_dims: list[int] | None, prior: LengthscalePrior = "gamma"
) -> MaternKernel:
    """The ARD Matern-5/2 of ``kernel: matern``, Gamma(3, 6) lengthscale prior
    or none; also a mixed GP's ``cont_kernel_factory`` (which adds the output
    scales; ``build_model`` wraps the plain GP's in one with Gamma(2, 0.15))."""
    return MaternKernel(nu=2.5, ard_num_dims=ard_num_dims, batch_shape=batch_shape, active_dims=active_dims,
                        lengthscale_prior=GammaPrior(3.0, 6.0) if prior == "gamma" else None)


def fit_surrogate(
    space: SearchSpace,
    objectives: Sequence[Objective],
    observations: Sequence[Observation],
    constraints: Sequence[OutcomeConstraint] = (),
    device: str = "auto",
    *,
    fidelity: float | None = None,
) -> Surrogate:
    """Fit GPs to every objective and constrained outcome, from scratch.

    ``fidelity`` keeps only observations at that fidelity (``None``: all).
    ``device``: ``auto`` (the GPU only from the CUDA crossover on,
    :func:`selflab.planners.device_choice.choose_device`), ``cpu`` or ``cuda``.
    Raises :class:`SurrogateError` when the data cannot be fitted, e.g. when
    no observation has every outcome.
    """
    outcomes = modelled_outcomes(objectives, constraints)
    data = TrainingData.from_observations(Encoding(space), outcomes, observations, fidelity)
    if data.n == 0:
        raise SurrogateError("no observation has a finite value for every outcome " + ", ".join(outcomes))
    if device not in ("auto", "cpu", "cuda"):
        raise ValueError(f"device must be auto, cpu or cuda, got {device!r}")
    choice = choose_device(device, data.n, data.X.shape[-1], cuda_available=torch.cuda.is_available())  # type: ignore[arg-type]
    with numerics():
        return SurrogateFitter().fit(Encoding(space, device=choice.device), outcomes, data.to(choice.device))


def modelled_outcomes(objectives: Sequence[Objective], constraints: Sequence[OutcomeConstraint]) -> list[str]:
    """Objective names, then constrained outcomes that are not objectives (model output order)."""
    names = [o.name for o in objectives]
    return names + sorted({c.outcome for c in constraints} - set(names))


def loo_predictive(model: Model) -> tuple[Tensor, Tensor, Tensor]:
    """Leave-one-out predictions of a fitted exact single-output GP at its
    training points: ``(targets, mean, variance)``, each ``(n,)``, on its
    standardized scale, observation noise included. In closed form from one
    inverse of the training covariance ``K`` (hyperparameters held):
    ``mean_i = y_i - [K^-1 r]_i / [K^-1]_ii`` (``r``: residuals from the prior
    mean), ``variance_i = 1 / [K^-1]_ii`` (Rasmussen and Williams, eq. 5.12)."""
    model.train()
    try:
        with torch.no_grad():
            prior = model.likelihood(model(*model.train_inputs), model.train_inputs)
            K = prior.covariance_matrix
            targets = model.train_targets
            residual = (targets - prior.mean).unsqueeze(-1)
            K_inv = torch.cholesky_inverse(torch.linalg.cholesky(K))
            precision = torch.diagonal(K_inv, dim1=-2, dim2=-1)
            loo_error = (K_inv @ residual).squeeze(-1) / precision
        return targets, targets - loo_error, 1 / precision
    finally:
        model.eval()


def log_likelihood_per_point(surrogate: Surrogate) -> float:
    """The fitted marginal log likelihood (with the hyperparameters' priors, as
    fitted) of the first outcome's GP, per training point, on its warped and
    standardized scale: two fits of the same outcomes and warp on different
    input scales compare by it."""
    model = surrogate.model.models[0] if isinstance(surrogate.model, ModelListGP) else surrogate.model
    assert isinstance(model, ExactGP)
    mll = ExactMarginalLogLikelihood(model.likelihood, model)
    model.train()
    try:
        with torch.no_grad():
            value = mll(model(*model.train_inputs), model.train_targets)  # (gpytorch divides by the number of points)
    finally:
        model.eval()
    return float(value)


def loo_log_density(model: Model) -> float:
    """Summed leave-one-out log predictive density of a fitted exact GP's
    training targets (on its standardized scale, observation noise included;
    see :func:`loo_predictive`)."""
    targets, mean, variance = loo_predictive(model)
    density = 0.5 * (-variance.log() - math.log(2 * math.pi) - (targets - mean) ** 2 / variance)
    return float(density.sum())


def _hyperparameters(model: Model) -> dict[str, Tensor]:
    """The model's state without its data-dependent transforms."""
    return {k: v.detach().clone() for k, v in model.state_dict().items() if not k.startswith(("outcome_transform", "input_transform"))}


def _load(model: Model, hypers: Mapping[str, Tensor]) -> None:
    """Load the hyperparameters whose names and shapes fit ``model``."""
    own = model.state_dict()
    model.load_state_dict({k: v for k, v in hypers.items() if k in own and own[k].shape == v.shape}, strict=False)


def _scaled_copy(model: Model, factor: float) -> Model:
    """A deep copy of a single-output exact GP with its kernel and noise
    variance multiplied by ``factor ** 2`` (posterior covariance likewise)."""
    copy = deepcopy(model)
    like = next(copy.parameters())
    outer = ScaleKernel(copy.covar_module).to(like)
    outer.outputscale = torch.tensor(factor**2).to(like)
    outer.raw_outputscale.requires_grad_(False)
    copy.covar_module = outer
    noise = copy.likelihood.noise.detach() * factor**2
    if isinstance(copy.likelihood, GaussianLikelihood) and not isinstance(copy.likelihood, FixedNoiseGaussianLikelihood):
        floor = copy.likelihood.noise_covar.raw_noise_constraint.lower_bound.to(noise)
        noise = noise.clamp_min(floor * (1 + 1e-6))  # (an inferred noise at its floor, scaled down: stays at the floor)
    copy.likelihood.noise = noise
    copy.train()  # (drops the cached prediction strategy of the old covariance)
    copy.eval()
    return copy


def _check(model: Model, X: Tensor) -> None:
    """Raise unless the hyperparameters and a prediction at the data are finite."""
    if not all(bool(torch.isfinite(p).all()) for p in model.parameters()):
        raise FloatingPointError("non-finite hyperparameters")
    model.eval()
    with torch.no_grad():
        posterior = model.posterior(X[:1])
        if not (torch.isfinite(posterior.mean).all() and torch.isfinite(posterior.variance).all()):
            raise FloatingPointError("non-finite prediction")


def _same(a: tuple[Tensor, Tensor, Tensor | None], b: tuple[Tensor, Tensor, Tensor | None]) -> bool:
    return all(
        (x is None and y is None) or (x is not None and y is not None and x.shape == y.shape and bool(torch.equal(x, y)))
        for x, y in zip(a, b)
    )

