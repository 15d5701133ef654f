"""What ``selflab report`` and the console draw of a campaign's results, as
the plain records of :mod:`selflab.controller.plots`: the results of each
objective in the order they came (:func:`results_of`) and the Pareto front
of several (:func:`front_of`), all from the ledger's projection and the
config snapshot of its ``campaign_started`` event (:func:`config_of`).

A result *counts* (:func:`counted`) when it is feasible and at the target
fidelity: a best so far and a hypervolume are over counted results only.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from selflab.controller import plots
from selflab.controller.bench import best_so_far
from selflab.controller.config import LabConfig, StopRules
from selflab.controller.events import ExperimentState
from selflab.controller.ledger import LedgerError
from selflab.controller.projection import CampaignState, ExperimentView
from selflab.planners.space import Objective


def config_of(state: CampaignState) -> LabConfig:
    """The campaign's config, from its ``campaign_started`` snapshot."""
    if state.config is None:
        raise LedgerError(f"campaign {state.campaign!r} has no campaign_started event: nothing to report")
    if "instruments" in state.config:
        return LabConfig.model_validate(state.config)
    # A campaign a Python Study made records its problem, not a lab: its instruments
    # are the caller's objects and it has no stop rule. Check the rest as a config,
    # then leave those two empty (a report reads neither).
    checked = LabConfig.model_validate({**state.config, "instruments": [{"name": "study", "driver": "study:Study"}],
                                        "stop": {"max_experiments": 1}})
    return checked.model_copy(update={"instruments": [], "stop": StopRules.model_construct()})


def completed(state: CampaignState) -> list[ExperimentView]:
    """Completed experiments (attached ones too), in the order their results came."""
    return [state.experiments[eid] for eid in state.completions]


def feasible(exp: ExperimentView, config: LabConfig) -> bool:
    """Whether ``exp`` meets every outcome constraint."""
    return all(c.satisfied(exp.outcomes) for c in config.constraints)


def counted(exp: ExperimentView, config: LabConfig) -> bool:
    """Whether a best so far counts ``exp``: feasible and at the target fidelity."""
    return exp.fidelity == config.target_fidelity and feasible(exp, config)


def has_finite(exp: ExperimentView, name: str) -> bool:
    """Whether ``exp`` has a finite value of outcome ``name``."""
    return name in exp.outcomes and math.isfinite(exp.outcomes[name])


def results_of(state: CampaignState, config: LabConfig, name: str, *,
               recommended: tuple[float, float] | None = None) -> plots.Results:
    """Objective ``name``'s results in the order they came, with the cost spent
    when each came in (completed and failed experiments, in finishing order),
    the best so far over the counted ones (:func:`counted`), and the
    recommendation's predicted ``(mean, std)`` when given."""
    objective = next(o for o in config.objectives if o.name == name)
    finished = sorted(state.with_status(ExperimentState.COMPLETED, ExperimentState.FAILED), key=lambda e: (e.finished_position, e.experiment_id))
    by_id = {e.experiment_id: e for e in completed(state) if has_finite(e, name)}
    spent, cost_at = 0.0, {}
    for e in finished:
        spent += e.cost
        cost_at[e.experiment_id] = spent
    for eid in by_id:
        cost_at.setdefault(eid, spent)  # (an attached result costs nothing and may have no finishing position)
    shown = list(by_id.values())
    counts = np.array([counted(e, config) for e in shown], dtype=bool)
    values = np.array([e.outcomes[name] for e in shown], dtype=float)
    return plots.Results(
        name=name, unit=objective.unit, direction=objective.direction, values=values,
        fidelity=np.array([e.fidelity for e in shown], dtype=float),
        feasible=np.array([feasible(e, config) for e in shown], dtype=bool), counted=counts,
        best=best_so_far([float(v) if c else None for v, c in zip(values, counts, strict=True)], objective.direction),
        cost=np.array([cost_at[e.experiment_id] for e in shown], dtype=float), target_fidelity=config.target_fidelity,
        recommended=recommended,
    )


def front_of(state: CampaignState, config: LabConfig) -> plots.Front:
    """The results that have every objective (completion order), which count
    for the hypervolume (:func:`counted`), the Pareto set, and the reference point."""
    names = [o.name for o in config.objectives]
    shown = [e for e in completed(state) if all(has_finite(e, n) for n in names)]
    points = np.array([[e.outcomes[n] for n in names] for e in shown], dtype=float).reshape(-1, len(names))
    ok = np.array([counted(e, config) for e in shown], dtype=bool)
    pareto = {e.experiment_id for e in state.pareto(config.objectives, config.constraints)}
    return plots.Front(
        names=names, units=[o.unit for o in config.objectives], points=points, feasible=ok,
        pareto=np.array([e.experiment_id in pareto for e in shown], dtype=bool),
        reference=reference_point(config.objectives, points, ok),
        reference_given=[o.reference_point is not None for o in config.objectives],
    )


def reference_point(objectives: Sequence[Objective], points: np.ndarray, usable: np.ndarray) -> np.ndarray:
    """The hypervolume corner in the objectives' units: each objective's
    ``reference_point``, else inferred as :func:`selflab.planners.acquisition.reference_point`
    infers it (botorch's ``infer_reference_point`` over the Pareto front of the
    ``usable`` points, all of them when none is: the nadir less 10 % of the
    front's range)."""
    import torch
    from botorch.utils.multi_objective.hypervolume import infer_reference_point
    from botorch.utils.multi_objective.pareto import is_non_dominated

    sign = np.array([o.sign for o in objectives])
    given = np.array([np.nan if o.reference_point is None else o.reference_point for o in objectives], dtype=float)
    if not np.isnan(given).any() or not len(points):
        return given
    Y = torch.tensor(points[usable] if usable.any() else points, dtype=torch.float64) * torch.tensor(sign)
    inferred = infer_reference_point(Y[is_non_dominated(Y)]).numpy() * sign
    return np.where(np.isnan(given), inferred, given)
