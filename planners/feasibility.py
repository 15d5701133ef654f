"""Where do experiments fail? A feasibility classifier and the acquisition it weights.

Experiments fail in *regions* (a line that clogs at high concentration, a
film that does not form below some temperature). With ``failures: learn``
the ``bo`` planner fits a Gaussian-process classifier (:func:`fit_feasibility`)
to which experiments completed (success) and which failed, and multiplies the
acquisition by the probability of success (:class:`FeasibilityWeighted`: it
adds ``log p`` to a log-scale acquisition such as qLogNEI), so that it avoids
the region, not just the failed points. Each proposal's reason says the
probability (``reason["feasibility"]["p_success"]``).

**Which failures count** (:func:`~selflab.planners.protocol.counts`). Only a
failure that says something about the parameters: the ledger's failure kinds
(``Failed.error_kind``) ``timeout`` and ``disconnected``
(:data:`~selflab.planners.protocol.UNINFORMATIVE_KINDS`) say only that the
instrument or its link misbehaved, and are left out; every other kind
(``bad_response`` after the retries, ``out_of_limits``, ``error`` — what
``Study.fail`` records —, a driver's own kind such as the reactor simulator's
``clogged``) counts. A failed point handed over without its kind (a plain
:class:`~selflab.planners.protocol.Pending`) counts too, as it did before
kinds were passed: the controller passes
:class:`~selflab.planners.protocol.Failure` records to say more.

**The classifier.** botorch's ``SingleTaskVariationalGP`` with gpytorch's
``BernoulliLikelihood`` (probit link), its inducing points the training
points themselves (at most :data:`MAX_INDUCING`), a scaled ARD Matern-5/2
kernel with the same Gamma(3, 6) lengthscale prior as the objective's GP, on
the unit cube (categorical inputs as ordered numbers); fitted by maximizing
the variational ELBO (``fit_gpytorch_mll``, L-BFGS). The probability of
success at ``x`` is ``Phi(mu / sqrt(1 + sigma^2))`` for the latent
posterior ``N(mu, sigma^2)``: far from every failure it tends to the campaign's
success rate, not to 0, so unexplored regions stay open.

Measured (``benchmarks/trust.py``, the reactor's clogging region, 40
evaluations, two sets of 10 seeds, ``benchmarks/RESULTS.md``, Session 15):
38 and 59 failed experiments against 86 and 119 with ``failures: avoid``
(-56 % and -50 %), at a median regret of 0.95x and 0.18x avoid's, so
``learn`` is the ``bo`` planner's default.

Example::

    feasibility = fit_feasibility(encoding, X_completed, X_failed)   # None without failures
    acqf = FeasibilityWeighted(build_acquisition(...)[0], feasibility)
    feasibility.prob(X)   # n x d -> (n,) probabilities of success
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from botorch.acquisition import AcquisitionFunction
from botorch.exceptions.warnings import InputDataWarning, UserInputWarning
from botorch.fit import fit_gpytorch_mll
from botorch.models import SingleTaskVariationalGP
from botorch.models.transforms.input import Normalize
from gpytorch.kernels import MaternKernel, ScaleKernel
from gpytorch.likelihoods import BernoulliLikelihood
from gpytorch.mlls import VariationalELBO
from gpytorch.priors import GammaPrior
from torch import Tensor

from selflab.planners.encoding import Encoding
from selflab.planners.protocol import Pending, counts

MAX_INDUCING = 200
"""At most this many inducing points (chosen by botorch's greedy variance reduction beyond)."""
_LOG_FLOOR = math.log(1e-12)


@dataclass(frozen=True)
class Feasibility:
    """A fitted success classifier over encoded rows (``... x d``)."""

    model: SingleTaskVariationalGP
    n_completed: int
    n_failed: int

    def log_prob(self, X: Tensor) -> Tensor:
        """``... x d`` -> ``...``: log probability of success (differentiable)."""
        posterior = self.model.posterior(X)
        mean, var = posterior.mean.squeeze(-1), posterior.variance.squeeze(-1)
        p = torch.special.log_ndtr(mean / (1 + var).sqrt())
        return p.clamp_min(_LOG_FLOOR)

    def prob(self, X: Tensor) -> Tensor:
        """``n x d`` -> ``(n,)`` probabilities of success."""
        with torch.no_grad():
            return self.log_prob(X).exp()


def fit_feasibility(encoding: Encoding, completed: Tensor, failed: Tensor) -> Feasibility | None:
    """The classifier of ``completed`` (``n x d``, successes) against ``failed``
    (``k x d``) encoded rows; ``None`` without a failure or without a success.
    Raises what the fit raises (the caller falls back to no weighting)."""
    if not len(failed) or not len(completed):
        return None
    X = torch.cat([completed, failed]).to(encoding.bounds)
    y = torch.cat([torch.ones(len(completed)), torch.zeros(len(failed))]).to(X).unsqueeze(-1)
    d = X.shape[-1]
    covar = ScaleKernel(MaternKernel(nu=2.5, ard_num_dims=d, lengthscale_prior=GammaPrior(3.0, 6.0)),
                        outputscale_prior=GammaPrior(2.0, 0.15))
    inducing: Tensor | int = encoding.to_unit(X) if len(X) <= MAX_INDUCING else MAX_INDUCING  # (the model's own, normalized, inputs)
    with warnings.catch_warnings():  # (it warns against input transforms for minibatch training, and about 0/1 labels)
        warnings.simplefilter("ignore", UserInputWarning)
        warnings.simplefilter("ignore", InputDataWarning)
        model = SingleTaskVariationalGP(
            X, y, likelihood=BernoulliLikelihood(), covar_module=covar, inducing_points=inducing,
            learn_inducing_points=False, input_transform=Normalize(d=d, bounds=encoding.bounds),
        ).to(X)
    fit_gpytorch_mll(VariationalELBO(model.likelihood, model.model, num_data=len(X)))
    model.eval()
    return Feasibility(model, len(completed), len(failed))


class FeasibilityWeighted(AcquisitionFunction):
    """A log-scale acquisition plus the log probability that every point of the
    batch succeeds: ``acqf(X) + sum_q log p(x_q)`` for ``X`` of shape ``b x q x d``.
    Pending points are the wrapped acquisition's."""

    def __init__(self, acqf: AcquisitionFunction, feasibility: Feasibility) -> None:
        super().__init__(model=acqf.model)
        self.acqf = acqf
        self.feasibility = feasibility
        self._log = acqf._log
        self.X_pending: Tensor | None = acqf.X_pending  # (the MC acquisitions it wraps, qlognei and qlognehvi, take pending points)

    def set_X_pending(self, X_pending: Tensor | None = None) -> None:
        self.acqf.set_X_pending(X_pending)
        self.X_pending = self.acqf.X_pending

    def forward(self, X: Tensor) -> Tensor:
        return self.acqf(X) + self.feasibility.log_prob(X).sum(dim=-1)


def encoded_failures(encoding: Encoding, failures: Sequence[Pending]) -> Tensor:
    """``k x d``: the encoded rows of the failures that :func:`counts`."""
    return encoding.encode([f.params for f in failures if counts(f)])
