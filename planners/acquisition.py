"""Acquisition functions over a fitted :class:`~selflab.planners.surrogate.Surrogate`.

The surrogate's outputs are in original units, in the order
``[objective_1, ..., objective_k, constrained outcomes...]``. Here every
objective is turned into "larger is better" by its sign (``-1`` for
``minimize``), and every :class:`OutcomeConstraint` into a botorch constraint
callable ``c(Z) <= 0`` on posterior samples ``Z`` (``... x m``):
``value - Z[..., i]`` for ``>=`` and ``Z[..., i] - value`` for ``<=``.

- ``qlognei`` (default), one objective: ``qLogNoisyExpectedImprovement``
  with the constraints (smoothed feasibility weighting), baseline = the
  training inputs, pruned to those that may be best (``prune_baseline``).
- ``logei`` (chosen by the ``bo`` planner above ``large_data`` observations
  for one point with nothing pending, see ``selflab.planners.bo.large_data_logei``),
  one objective without constraints: analytic ``LogExpectedImprovement``
  over the best posterior mean among the ``baseline_max`` best observed
  points (``best_f``; the reason gives that mean in original units as
  ``incumbent_mean``). It scores a point from its own posterior alone,
  where qLogNEI samples the joint posterior of the point and its baseline:
  on 600-point Hartmann6 data, the same choices in about half the
  optimizer's time (benchmarks/RESULTS.md, Session 13).
- ``qlognei``, two or more objectives: ``qLogNoisyExpectedHypervolumeImprovement``
  (reported as ``qlognehvi``). The reference point is each objective's
  ``reference_point`` when set; otherwise botorch's
  ``infer_reference_point`` over the observed Pareto front (feasible
  observations only when there are any): the nadir minus 10 % of the front's
  range, in maximize-oriented units.
- ``ucb``: ``qUpperConfidenceBound(beta)``; ``ts``: Thompson sampling, one
  joint posterior sample over a candidate set per batch element (see
  :func:`thompson_select`). Both fold the constraints into the objective with
  ``ConstrainedMCObjective`` (infeasible samples cost ``get_infeasible_cost``),
  and with several objectives both scalarize them with an augmented
  Chebyshev scalarization under random simplex weights (ParEGO).

Multi-fidelity (:func:`build_mf_acquisition`, one objective, a surrogate
whose inputs end with the fidelity column): ``mfmes``
(``qMultiFidelityMaxValueEntropy``), ``gibbon``
(``qMultiFidelityLowerBoundMaxValueEntropy``) or ``mfkg``
(``qMultiFidelityKnowledgeGradient``). Each one values a point at its own
fidelity by what it tells about the optimum at the target fidelity
(``project_to_target_fidelity``), divided by the cost of that fidelity
(``InverseCostWeightedUtility`` over :func:`fidelity_cost_model`), so values at
different fidelities compare as information per unit cost.

Example::

    acqf, info = build_acquisition(surrogate, objectives, constraints, "qlognei", seed=3)
    acqf(X)   # X: b x q x d -> b log-expected improvements
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Literal

import torch
from botorch.acquisition import AcquisitionFunction, LogExpectedImprovement, qLogNoisyExpectedImprovement, qUpperConfidenceBound
from botorch.acquisition.cost_aware import InverseCostWeightedUtility
from botorch.acquisition.knowledge_gradient import qMultiFidelityKnowledgeGradient
from botorch.acquisition.max_value_entropy_search import qMultiFidelityLowerBoundMaxValueEntropy, qMultiFidelityMaxValueEntropy
from botorch.acquisition.multi_objective import qLogNoisyExpectedHypervolumeImprovement
from botorch.acquisition.multi_objective.objective import WeightedMCMultiOutputObjective
from botorch.acquisition.objective import ConstrainedMCObjective, GenericMCObjective, MCAcquisitionObjective
from botorch.acquisition.objective import ScalarizedPosteriorTransform
from botorch.acquisition.utils import get_infeasible_cost, project_to_target_fidelity
from botorch.models.deterministic import GenericDeterministicModel
from botorch.models.model import Model
from botorch.sampling import SobolQMCNormalSampler
from botorch.utils.multi_objective.hypervolume import infer_reference_point
from botorch.utils.multi_objective.pareto import is_non_dominated
from botorch.utils.multi_objective.scalarization import get_chebyshev_scalarization
from botorch.utils.sampling import sample_simplex
from torch import Tensor

from selflab.planners.space import Objective, OutcomeConstraint
from selflab.planners.surrogate import Surrogate

AcquisitionKind = Literal["qlognei", "ucb", "ts"]
MFAcquisitionKind = Literal["mfmes", "gibbon", "mfkg"]
_MIN_COST_FRACTION = 1e-3
"""A fidelity on offer at no cost is priced at this fraction of the dearest one (no division by zero)."""
Constraint = Callable[[Tensor], Tensor]


def signs(surrogate: Surrogate, objectives: Sequence[Objective]) -> Tensor:
    """``m`` weights: ``+1``/``-1`` for maximized/minimized objectives, ``0`` for constraint-only outcomes."""
    w = torch.zeros(len(surrogate.outcomes), dtype=surrogate.data.Y.dtype, device=surrogate.data.Y.device)
    for i, o in enumerate(objectives):
        w[i] = 1.0 if o.direction == "maximize" else -1.0
    return w


def constraint_callables(surrogate: Surrogate, constraints: Sequence[OutcomeConstraint]) -> list[Constraint]:
    """Botorch constraints (feasible where ``c(Z) <= 0``) on samples ``Z`` of shape ``... x m``."""
    out: list[Constraint] = []
    for c in constraints:
        i, value = surrogate.outcomes.index(c.outcome), c.value
        if c.op == ">=":
            out.append(lambda Z, i=i, v=value: v - Z[..., i])
        else:
            out.append(lambda Z, i=i, v=value: Z[..., i] - v)
    return out


def feasible(surrogate: Surrogate, constraints: Sequence[OutcomeConstraint]) -> Tensor:
    """``n`` booleans: which training observations meet every constraint."""
    ok = torch.ones(surrogate.data.n, dtype=torch.bool, device=surrogate.data.Y.device)
    for c in constraint_callables(surrogate, constraints):
        ok &= c(surrogate.data.Y) <= 0
    return ok


def reference_point(surrogate: Surrogate, objectives: Sequence[Objective], constraints: Sequence[OutcomeConstraint]) -> Tensor:
    """``k`` hypervolume corner in maximize-oriented units (see module docs)."""
    k = len(objectives)
    w = signs(surrogate, objectives)[:k]
    Y = surrogate.data.Y[:, :k] * w
    ok = feasible(surrogate, constraints)
    if ok.any():
        Y = Y[ok]
    inferred = infer_reference_point(Y[is_non_dominated(Y)])
    given = [o.reference_point for o in objectives]
    return torch.stack([inferred[i] if r is None else w[i] * r for i, r in enumerate(given)])


def scalarized_objective(
    surrogate: Surrogate, objectives: Sequence[Objective], constraints: Sequence[OutcomeConstraint], seed: int
) -> tuple[MCAcquisitionObjective, dict[str, Any]]:
    """A scalar MC objective for UCB and Thompson sampling: the signed objective
    (Chebyshev-scalarized under random weights when there are several), with
    the constraints folded in. Also what it used, for the proposal's reason."""
    k = len(objectives)
    w = signs(surrogate, objectives)
    info: dict[str, Any] = {}
    if k == 1:
        def scalar(Z: Tensor, X: Tensor | None = None) -> Tensor:
            return (Z * w).sum(dim=-1)
    else:
        weights = sample_simplex(k, dtype=w.dtype, device=w.device, seed=seed).squeeze(0)
        chebyshev = get_chebyshev_scalarization(weights, surrogate.data.Y[:, :k] * w[:k])
        info["scalarization_weights"] = [float(x) for x in weights]

        def scalar(Z: Tensor, X: Tensor | None = None) -> Tensor:
            return chebyshev(Z[..., :k] * w[:k], X)
    if not constraints:
        return GenericMCObjective(scalar), info
    cost = get_infeasible_cost(surrogate.data.X, surrogate.model, GenericMCObjective(scalar))
    return ConstrainedMCObjective(scalar, constraint_callables(surrogate, constraints), infeasible_cost=cost), info


def build_acquisition(
    surrogate: Surrogate,
    objectives: Sequence[Objective],
    constraints: Sequence[OutcomeConstraint],
    kind: Literal["qlognei", "logei", "ucb"],
    *,
    beta: float = 2.0,
    mc_samples: int = 128,
    seed: int = 0,
    baseline_max: int | None = None,
) -> tuple[AcquisitionFunction, str, dict[str, Any]]:
    """The acquisition function, its name for the record, and extra facts for the reason.

    ``baseline_max``: one objective without constraints, at most this many of
    the best observed points form qLogNEI's baseline (the rest are, in
    practice, never the incumbent; pruning all of them costs a joint posterior
    over every observation: 0.35 s of a 1.17 s proposal at n = 1000, d = 6);
    ``logei`` picks its incumbent among them too. ``logei`` takes one objective
    and no constraints (raises ``ValueError`` otherwise) and no pending points.
    """
    model, X = surrogate.model, surrogate.data.X
    sampler = SobolQMCNormalSampler(torch.Size([mc_samples]), seed=seed)
    k = len(objectives)
    if kind == "ucb":
        objective, info = scalarized_objective(surrogate, objectives, constraints, seed)
        return qUpperConfidenceBound(model, beta=beta, sampler=sampler, objective=objective), "ucb", info
    w = signs(surrogate, objectives)
    cons = constraint_callables(surrogate, constraints) or None
    info: dict[str, Any] = {}
    if kind == "logei":
        if k != 1 or cons is not None:
            raise ValueError("logei takes one objective and no outcome constraints; use qlognei")
        top = (surrogate.data.Y[:, 0] * w[0]).topk(min(baseline_max or len(X), len(X))).indices
        with torch.no_grad():
            means = model.posterior(X[top]).mean[..., 0] * w[0]  # (maximize-oriented, the model's units)
        best = int(means.argmax())
        acqf = LogExpectedImprovement(model, best_f=float(means[best] * w[0]), maximize=bool(w[0] > 0))
        incumbent, _ = surrogate.stats(X[top][best : best + 1])  # (in original units, for the reason)
        return acqf, "logei", {"baseline_points": len(top), "incumbent_mean": float(incumbent[0, 0])}
    if k == 1 and cons is None and baseline_max is not None and len(X) > baseline_max:
        best = (surrogate.data.Y[:, 0] * w[0]).topk(baseline_max).indices
        X, info = X[best], {"baseline_points": baseline_max}
    if k == 1:
        acqf = qLogNoisyExpectedImprovement(
            model, X_baseline=X, sampler=sampler, objective=GenericMCObjective(lambda Z, X=None: (Z * w).sum(dim=-1)),
            constraints=cons, prune_baseline=True, cache_root=True,
        )
        return acqf, "qlognei", info
    ref = reference_point(surrogate, objectives, constraints)
    acqf = qLogNoisyExpectedHypervolumeImprovement(
        model, ref_point=ref, X_baseline=X, sampler=sampler,
        objective=WeightedMCMultiOutputObjective(weights=w[:k], outcomes=list(range(k))),
        constraints=cons, prune_baseline=True, cache_root=True,
    )
    return acqf, "qlognehvi", {"reference_point": [float(r * s) for r, s in zip(ref, w[:k])]}


def thompson_select(surrogate: Surrogate, objective: MCAcquisitionObjective, candidates: Tensor, q: int) -> tuple[Tensor, Tensor]:
    """Thompson sampling over ``candidates`` (``N x d``): for each of ``q``
    batch elements draw one joint posterior sample over all candidates and
    take its best unused candidate. Returns indices (``q``) and the sampled
    objective values there (``q``). Seed torch's generator for reproducibility."""
    with torch.no_grad():
        samples = surrogate.model.posterior(candidates).rsample(torch.Size([q]))  # q x N x m
        values = objective(samples, candidates)  # q x N
    chosen: list[int] = []
    for row in values:
        row = row.clone()
        row[chosen] = -torch.inf
        chosen.append(int(row.argmax()))
    idx = torch.tensor(chosen, device=candidates.device)
    return idx, values[torch.arange(q), idx]


def fidelity_cost_model(fidelities: Sequence[float], costs: Sequence[float]) -> GenericDeterministicModel:
    """Cost of one experiment from the fidelity, the last input column.

    Exact at each offered ``(fidelity, cost)`` pair, linear between them and
    constant beyond the extreme ones, floored at ``1e-3`` of the dearest cost.
    ``X`` (``... x n x (d + 1)``) -> costs (``... x n x 1``).

    >>> model = fidelity_cost_model([0.5, 0.75, 1.0], [0.1, 0.3, 1.0])
    >>> model(torch.tensor([[0.2, 0.75], [0.2, 1.0]], dtype=torch.float64)).squeeze(-1).tolist()
    [0.3, 1.0]
    """
    order = sorted(range(len(fidelities)), key=lambda i: fidelities[i])
    f = torch.tensor([float(fidelities[i]) for i in order], dtype=torch.float64)
    c = torch.tensor([float(costs[i]) for i in order], dtype=torch.float64)
    c = c.clamp_min(_MIN_COST_FRACTION * float(c.max()) if float(c.max()) > 0 else 1.0)

    def cost(X: Tensor) -> Tensor:
        s = X[..., -1]
        fs, cs = f.to(X), c.to(X)
        if len(fs) == 1:
            return cs.expand(s.shape).unsqueeze(-1)
        s = s.clamp(fs[0], fs[-1])
        hi = torch.searchsorted(fs, s.contiguous()).clamp(1, len(fs) - 1)
        lo = hi - 1
        w = (s - fs[lo]) / (fs[hi] - fs[lo])
        return (cs[lo] * (1 - w) + cs[hi] * w).unsqueeze(-1)  # exact at both ends of a segment

    return GenericDeterministicModel(cost)


def build_mf_acquisition(
    model: Model,
    d: int,
    objective: Objective,
    kind: MFAcquisitionKind,
    *,
    fidelities: Sequence[float],
    costs: Sequence[float],
    target: float,
    candidate_set: Tensor,
    num_fantasies: int = 16,
    current_value: Tensor | None = None,
) -> AcquisitionFunction:
    """A cost-aware multi-fidelity acquisition (see module docs) on a model that
    takes ``d + 1`` columns, the fidelity last.

    ``candidate_set`` (``N x d``, design columns) is where ``mfmes`` and
    ``gibbon`` sample the target-fidelity maximum; ``current_value`` is the
    best posterior mean at the target (maximize-oriented, i.e. negated for
    ``minimize``) that ``mfkg`` measures its gain from. ``num_fantasies``:
    fantasy models for pending points (``mfmes``, ``gibbon``) or for the
    lookahead (``mfkg``). ``acqf(X)`` for ``X`` of shape ``b x 1 x (d + 1)``
    returns ``b`` values per unit cost.
    """
    utility = InverseCostWeightedUtility(cost_model=fidelity_cost_model(fidelities, costs))

    def project(X: Tensor) -> Tensor:
        return project_to_target_fidelity(X, target_fidelities={d: target}, d=d + 1)

    maximize = objective.direction == "maximize"
    if kind == "mfkg":
        sign = torch.tensor([1.0 if maximize else -1.0], dtype=candidate_set.dtype, device=candidate_set.device)
        return qMultiFidelityKnowledgeGradient(
            model, num_fantasies=num_fantasies, current_value=current_value, cost_aware_utility=utility, project=project,
            posterior_transform=ScalarizedPosteriorTransform(weights=sign),
        )
    mes = qMultiFidelityMaxValueEntropy if kind == "mfmes" else qMultiFidelityLowerBoundMaxValueEntropy
    return mes(model, candidate_set=project(candidate_set), num_fantasies=num_fantasies, maximize=maximize,
               cost_aware_utility=utility, project=project)
