"""The campaign's recommendation: the point it would bet on now, recorded when it changes.

With one objective, after each round of results the runner records a
``recommended`` event when the recommendation moved: the planner's best
predicted point at the target fidelity when it can say
(:meth:`selflab.controller.study.Study.planner_recommendation`, fitted off the
event loop), else the best feasible observation there. With several
objectives the Pareto set is the answer, and nothing is recorded.

Example::

    await record_recommendation(study, config, pool=None, doing=print)
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from selflab.controller.config import LabConfig
from selflab.controller.ledger import NewEvent
from selflab.controller.projection import CampaignState
from selflab.controller.study import Study
from selflab.planners.protocol import Recommendation

log = logging.getLogger("selflab")


async def record_recommendation(study: Study, config: LabConfig, pool: list[dict[str, Any]] | None,
                                doing: Callable[[str], None], *, blocking: bool = True) -> None:
    """Record the campaign's recommendation when it changes (see the module docs);
    ``pool`` is the pool instruments' points, as the planner proposes from them;
    ``blocking``: fit in a worker thread, off the event loop."""
    if len(config.objectives) != 1 or config.objectives[0].learn:
        return  # several objectives: the Pareto set is the answer; objective: learn: no optimum
    objective, state = config.objectives[0], study.state
    recommendation: Recommendation | None = None
    try:
        if blocking:
            doing(f"recommending (fitting {study.planner_kind})")
            recommendation = await asyncio.to_thread(study.planner_recommendation, candidates=pool)
        else:
            recommendation = study.planner_recommendation(candidates=pool)
    except Exception as exc:  # a recommendation is advice: never stop the campaign for it
        log.warning("planner %s could not recommend: %s: %s", study.planner_kind, type(exc).__name__, exc)
    payload: dict[str, Any]
    if recommendation is not None:
        payload = {"params": recommendation.params, "fidelity": recommendation.fidelity,
                   "predicted": recommendation.predicted, "basis": recommendation.basis}
    else:
        best = state.best(objective.name, objective.direction, config.target_fidelity, config.constraints)
        if best is None:
            return
        payload = {"params": best.params, "fidelity": best.fidelity, "observed": best.outcomes,
                   "basis": "best_observed", "experiment_id": best.experiment_id}
    previous = state.recommendation
    if previous is not None and previous.get("params") == payload["params"] and previous.get("basis") == payload["basis"]:
        return
    study.record([NewEvent(campaign=config.name, kind="recommended", at=study.clock.now(), payload=payload)])


def best_note(state: CampaignState, config: LabConfig, judged: float | None) -> str:
    """`` | best y=0.91 (experiment 12)`` for a log line: the best feasible
    result of the first objective at the ``judged`` fidelity (``None``: any)."""
    objective = config.objectives[0]
    if objective.learn:
        return " | learning (no optimum)"
    best = state.best(objective.name, objective.direction, judged, config.constraints)
    if best is None:
        return ""
    return f" | best {objective.name}={best.outcomes[objective.name]:.4g} (experiment {best.experiment_id})"


__all__ = ["best_note", "record_recommendation"]
