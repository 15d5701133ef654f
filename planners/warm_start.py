"""Warm start from earlier campaigns: a multi-task GP, guarded against negative transfer.

An earlier campaign on a related system (``warm_start`` in the config; its
completed experiments reach the planner as
:class:`~selflab.planners.protocol.SourceTask` values in
``context.warm_start``) is another *task*, not more data of this one: one
``MultiTaskGP`` per modelled outcome is fitted to this campaign's
observations (task 0, the target) and each source's (tasks 1..S), with

- a data kernel over the inputs: the scaled ARD Matern-5/2 with Gamma(3, 6)
  lengthscale priors of :func:`selflab.planners.surrogate.build_model`
  (categorical columns are treated as ordered numbers here);
- a task kernel (botorch's ``PositiveIndexKernel``: full rank, correlations
  in (0, 1], the target's own scale 1) whose learnt correlation between the
  target and each source says how much the source is worth;
- a noise level per task (the sources' own noise is inferred; reported noise
  is not used here);
- each source's outcome moved onto the target's scale before fitting
  (``(y - mean_s) / sd_s * sd_t + mean_t``), so that an offset or a
  different scale between the systems costs nothing; the target's mean and
  spread come from its own data only.

The model answers for the target task only (``output_tasks=[0]``): its
posterior at ``n x d`` points has the shape and the units of the single-task
surrogate's, so the acquisition, the optimizer and the reason work as for a
cold start. It works on the single-task model's scale: when that one warps
the objective (``outcome_warp``), the target's and the (rescaled) sources'
values are warped alike.

Guard against negative transfer (:func:`guarded`): the multi-task model is
used unless it predicts this campaign's own observations clearly worse than
the single-task model a cold start would use. Both are scored by their summed
leave-one-out log predictive density of the target observations, on the
scale both model (closed form, hyperparameters held; the multi-task model
keeps every source row when it leaves a target row out). When the
multi-task model falls short by more than ``margin`` nats per modelled
outcome (a source that misleads: e.g. a smooth function of the same inputs
with their roles swapped), the cold-start model is
used unchanged, so a source that does not help costs one extra fit and
nothing else. The reason records the sources, their rows, the learnt
correlations, both scores and the decision
(``{"warm_start": {"used": ..., "guard": ..., ...}}``).

Example::

    surrogate, reason = guarded(cold, target_data, sources)
    reason["used"], reason["correlation"]   # (True, {"old-run@sqlite:///runs/a.sqlite": 0.93})
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from botorch.fit import fit_gpytorch_mll
from botorch.models import ModelListGP, MultiTaskGP
from botorch.models.model import Model
from botorch.models.transforms.input import Normalize
from botorch.models.transforms.outcome import Standardize
from gpytorch.kernels import ScaleKernel
from gpytorch.mlls import ExactMarginalLogLikelihood
from gpytorch.priors import GammaPrior
from linear_operator import to_dense
from torch import Tensor

from selflab.planners.protocol import SourceTask
from selflab.planners.surrogate import Surrogate, TrainingData, _matern, loo_predictive, numerics

GuardMode = Literal["loo", "off"]
"""``loo``: the multi-task model only when its leave-one-out fit of the target beats the single-task one; ``off``: always."""
GUARD_MARGIN = 2.0
"""Nats per modelled outcome by which the multi-task model's leave-one-out log density may fall short of the single-task one's."""
_MAXITER = 200
"""L-BFGS iterations of a multi-task fit (a 6-D fit with 40 source rows took ~600 uncapped, to little gain)."""


@dataclass
class MultiTaskSurrogate(Surrogate):
    """A :class:`Surrogate` whose model is multi-task (one ``MultiTaskGP`` per
    outcome, answering for the target task); ``data`` holds the target's rows
    only and ``single_task`` the cold-start surrogate (extrapolation flags are
    judged against this campaign's own data and model)."""

    single_task: Surrogate | None = None

    def _loo_mean_var(self, model: Model) -> tuple[Tensor, Tensor]:
        """Each target observation predicted from all the others and every source
        row (closed form, :func:`_loo`): the target's rows come first."""
        _, mean, var = _loo(model)
        return mean[: self.data.n], var[: self.data.n]

def single_task(surrogate: Surrogate) -> Surrogate:
    """The single-task surrogate behind ``surrogate`` (itself unless it is a :class:`MultiTaskSurrogate`)."""
    if isinstance(surrogate, MultiTaskSurrogate) and surrogate.single_task is not None:
        return surrogate.single_task
    return surrogate


@dataclass(frozen=True)
class MultiTaskFit:
    """A fitted multi-task surrogate and what it learnt: ``correlation[s]`` is
    the task correlation between the target and source ``s`` (per outcome),
    ``loo`` the target's leave-one-out log density (per outcome, nats)."""

    surrogate: MultiTaskSurrogate
    correlation: dict[str, list[float]]
    loo: dict[str, float]


def source_data(sources: Sequence[SourceTask], target: Surrogate) -> list[TrainingData]:
    """Each source's rows encoded like the target's (``n_s x d``), its outcomes in the target's order
    (rows without a value for every parameter, e.g. one added to the space since, are left out)."""
    names = target.encoding.space.names
    return [TrainingData.from_observations(target.encoding, target.outcomes, [o for o in s.observations if all(k in o.params for k in names)])
            for s in sources]


def fit_multitask(target: Surrogate, data: TrainingData, sources: Sequence[TrainingData]) -> MultiTaskFit:
    """Fit one multi-task GP per outcome of ``target`` (the single-task surrogate:
    its encoding, outcomes and warps) on the target's raw ``data`` and the
    ``sources``' rows (see module docs): each source is moved onto the
    target's scale in the outcome's own units, then both are warped by the
    target's warp, so that the model works on the scale the single-task one
    does. Raises what the fit raises."""
    started = time.perf_counter()
    enc = target.encoding
    d = enc.dim
    models: list[Model] = []
    correlation: dict[str, list[float]] = {}
    loo: dict[str, float] = {}
    for j, name in enumerate(target.outcomes):
        warp = target.warps[j] if j < len(target.warps) else None
        X_parts, y_parts = [_with_task(data.X, 0)], [data.Y[:, j : j + 1]]
        mean_t, sd_t = _moments(data.Y[:, j])
        for s, src in enumerate(sources, start=1):
            if src.n == 0:
                continue
            mean_s, sd_s = _moments(src.Y[:, j])
            X_parts.append(_with_task(src.X, s))
            y_parts.append((src.Y[:, j : j + 1] - mean_s) / sd_s * sd_t + mean_t)
        X, y = torch.cat(X_parts), torch.cat(y_parts)
        if warp is not None:
            y = warp.forward(y[:, 0]).unsqueeze(-1)
        tasks = sorted({int(t) for t in X[:, -1].tolist()})
        cont = list(range(d))
        covar = ScaleKernel(_matern(torch.Size(), d, cont), outputscale_prior=GammaPrior(2.0, 0.15))
        model = MultiTaskGP(
            X, y, task_feature=d, covar_module=covar, output_tasks=[0], all_tasks=tasks,
            input_transform=Normalize(d=d + 1, bounds=_bounds(enc.bounds), indices=cont), outcome_transform=Standardize(m=1),
        ).to(X)
        fit_gpytorch_mll(ExactMarginalLogLikelihood(model.likelihood, model), max_attempts=3,
                         optimizer_kwargs={"options": {"maxiter": _MAXITER}})
        model.eval()
        models.append(model)
        correlation[name] = _correlations(model, len(sources), tasks)
        loo[name] = multitask_loo_density(model, data.n)
    model_out: Model = models[0] if len(models) == 1 else ModelListGP(*models)
    surrogate = MultiTaskSurrogate(
        model_out, target.encoding, target.outcomes, target.data, target.refit, target.fit_seconds + time.perf_counter() - started,
        target.warps, target.kernels, target.lengthscale_prior, target.made_by, single_task=target)
    return MultiTaskFit(surrogate, correlation, loo)


def multitask_loo_density(model: MultiTaskGP, n_target: int) -> float:
    """Summed leave-one-out log predictive density (nats, outcome units) of the
    first ``n_target`` training rows (the target's), each predicted from every
    other row, the sources' included."""
    with numerics(threads=None):
        targets, mean, var = _loo(model)
    stdv = float(model.outcome_transform.stdvs.reshape(-1)[0])
    return _density(targets[:n_target], mean[:n_target], var[:n_target]) - n_target * math.log(stdv)


def single_task_loo_density(target: Surrogate) -> dict[str, float]:
    """The same score for each outcome's single-task GP of ``target`` (its own
    training rows, on the same scale: a warped outcome's warped values)."""
    models = list(target.model.models) if isinstance(target.model, ModelListGP) else [target.model]
    out: dict[str, float] = {}
    for j, (name, model) in enumerate(zip(target.outcomes, models)):
        with numerics(threads=None):
            targets, mean, var = loo_predictive(model)
        stdv = float(model.outcome_transform.stdvs.reshape(-1)[0])
        out[name] = _density(targets, mean, var) - len(targets) * math.log(stdv)
    return out


def guarded(
    cold: Surrogate, data: TrainingData, sources: Sequence[SourceTask], *, guard: GuardMode = "loo", margin: float = GUARD_MARGIN
) -> tuple[Surrogate, dict[str, Any]]:
    """The surrogate to propose with, and the reason's ``warm_start`` entry.

    ``cold``: the single-task surrogate a cold start fits; ``data``: the
    target's raw training data. The multi-task model replaces ``cold`` when
    ``guard`` is ``off``, or unless it loses the leave-one-out comparison by
    more than ``margin`` nats per outcome (module docs).
    (Requiring a *win* was tried first: the target's own early points, a
    space-filling design, lie where a source campaign that homed in on its
    optimum says little, so the multi-task model never won there and the
    guard threw a useful source away: Hartmann6, 0 of 13 model steps.) A multi-task fit that fails
    keeps ``cold`` and says why."""
    encoded = source_data(sources, cold)
    reason: dict[str, Any] = {
        "sources": [s.name for s in sources],
        "source_rows": {s.name: e.n for s, e in zip(sources, encoded)},
        "source_rows_dropped": {s.name: s.dropped + len(s.observations) - e.n for s, e in zip(sources, encoded)},
        "guard": guard,
        "used": False,
        "correlation": None,
        "loo_multitask": None,
        "loo_single_task": None,
    }
    if not any(e.n for e in encoded):
        return cold, {**reason, "decision": "no source rows with every modelled outcome"}
    try:
        with torch.random.fork_rng(devices=[]):  # (torch's random state is left as it was: a switched-off guard proposes as a cold start)
            fit = fit_multitask(cold, data, encoded)
    except Exception as exc:  # any failure of the multi-task fit: the cold-start model, said in the reason
        return cold, {**reason, "decision": f"multi-task fit failed: {type(exc).__name__}: {exc}"}
    reason["correlation"] = {s.name: {out: _round(fit.correlation[out][i]) for out in cold.outcomes} for i, s in enumerate(sources)}
    reason["loo_multitask"] = {out: _round(v) for out, v in fit.loo.items()}
    if guard == "off":
        return fit.surrogate, {**reason, "used": True, "decision": "guard off: multi-task model"}
    single = single_task_loo_density(cold)
    reason["loo_single_task"] = {out: _round(v) for out, v in single.items()}
    gain = sum(fit.loo.values()) - sum(single.values())
    allowed = margin * len(cold.outcomes)
    if math.isfinite(gain) and gain >= -allowed:
        return fit.surrogate, {**reason, "used": True, "decision": f"multi-task model: its leave-one-out log density is "
                                                                   f"{gain:+.3g} nats from the single-task one's (switched off below {-allowed:g})"}
    return cold, {**reason, "decision": f"transfer switched off: the multi-task model's leave-one-out log density is "
                                        f"{gain:+.3g} nats from the single-task one's, below {-allowed:g}"}


def _loo(model: MultiTaskGP) -> tuple[Tensor, Tensor, Tensor]:
    """Closed-form leave-one-out ``(targets, mean, variance)`` of every training row
    (standardized scale, per-task noise included): as :func:`loo_predictive`,
    with the task column given to the likelihood."""
    model.train()
    try:
        with torch.no_grad():
            X = model.train_inputs[0]
            prior = model.likelihood(model(X), X)
            K = prior.covariance_matrix
            targets = model.train_targets
            K_inv = torch.cholesky_inverse(torch.linalg.cholesky(K))
            precision = torch.diagonal(K_inv, dim1=-2, dim2=-1)
            loo_error = (K_inv @ (targets - prior.mean).unsqueeze(-1)).squeeze(-1) / precision
        return targets, targets - loo_error, 1 / precision
    finally:
        model.eval()


def _density(targets: Tensor, mean: Tensor, var: Tensor) -> float:
    return float((0.5 * (-var.log() - math.log(2 * math.pi) - (targets - mean) ** 2 / var)).sum())


def _correlations(model: MultiTaskGP, n_sources: int, tasks: Sequence[int]) -> list[float]:
    """Task correlation between the target (task 0) and each source (NaN for a source without rows)."""
    kernel = model.covar_module.kernels[1]
    with torch.no_grad():
        B = to_dense(kernel.covar_matrix)
    index = {t: i for i, t in enumerate(tasks)}
    out = []
    for s in range(1, n_sources + 1):
        if s not in index:
            out.append(math.nan)
            continue
        i = index[s]
        out.append(float(B[0, i] / (B[0, 0] * B[i, i]).sqrt()))
    return out


def _with_task(X: Tensor, task: int) -> Tensor:
    return torch.cat([X, X.new_full((X.shape[0], 1), float(task))], dim=-1)


def _bounds(bounds: Tensor) -> Tensor:
    """The encoding's ``2 x d`` bounds with a task column (left alone by ``Normalize``'s ``indices``)."""
    return torch.cat([bounds, bounds.new_tensor([[0.0], [1.0]])], dim=-1)


def _moments(y: Tensor) -> tuple[Tensor, Tensor]:
    """Mean and spread of ``y`` (spread 1 for fewer than two values or a constant)."""
    if y.numel() < 2:
        return (y.mean() if y.numel() else y.new_tensor(0.0)), y.new_tensor(1.0)
    sd = y.std()
    return y.mean(), sd if bool(sd > 1e-12) else y.new_tensor(1.0)


def _round(x: float) -> float | None:
    return round(x, 4) if math.isfinite(x) else None
