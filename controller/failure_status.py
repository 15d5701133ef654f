"""What ``selflab status`` says about failed experiments: how many say
something about the parameters (and so train ``failures: learn``'s success
classifier) and how many do not, by kind, and what the planner does with
them, from the latest proposal's reason.

Example::

    failure_status(state)
    # {'counted': {'clogged': 4}, 'ignored': {'timeout': 1}, 'mode': 'learn', 'why_not_learn': None,
    #  'p_success': 0.83, 'experiment_id': 23, 'line': '4 that say something about the parameters (clogged 4); ...'}
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from selflab.controller.projection import CampaignState
from selflab.planners.protocol import Failure, counts


def failure_status(state: CampaignState) -> dict[str, Any] | None:
    """The ``failures`` object of ``selflab status --json``; ``None`` when no
    experiment failed (or went unpriced: ``bad_cost``). Vetoes are the
    oversight line's."""
    avoided = state.avoided()
    if not avoided:
        return None
    kinds = [(e.failure_kind, counts(Failure(params=e.params, kind=e.failure_kind))) for e in avoided]
    counted = dict(Counter(kind for kind, says in kinds if says))
    ignored = dict(Counter(kind for kind, says in kinds if not says))
    said_about = state.reasoned("feasibility", dict)
    latest = said_about[-1] if said_about else None
    said = latest.reason["feasibility"] if latest is not None else {}
    out = {"counted": counted, "ignored": ignored, "mode": said.get("mode"), "why_not_learn": said.get("why_not_learn"),
           "p_success": said.get("p_success"), "experiment_id": latest.experiment_id if latest is not None else None}
    return {**out, "line": _line(out)}


def _line(data: dict[str, Any]) -> str:
    def by_kind(found: dict[str, int]) -> str:
        return ", ".join(f"{k} {n}" for k, n in sorted(found.items()))

    parts = []
    if data["counted"]:
        parts.append(f"{sum(data['counted'].values())} that say something about the parameters ({by_kind(data['counted'])})")
    if data["ignored"]:
        parts.append(f"{sum(data['ignored'].values())} that do not ({by_kind(data['ignored'])})")
    if data["mode"] == "learn" and data["p_success"] is not None:
        parts.append(f"the planner weighs its proposals by the probability of success "
                     f"(experiment {data['experiment_id']}: {data['p_success']:.2f})")
    elif data["mode"] == "learn":
        parts.append("the planner starts learning where experiments fail at the first failure that says something about them")
    elif data["mode"] == "avoid":
        parts.append("the planner keeps away from the failed points alone"
                     + (f" ({data['why_not_learn']})" if data["why_not_learn"] else " (failures: avoid)"))
    return "; ".join(parts)
