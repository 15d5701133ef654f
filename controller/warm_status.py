"""What ``selflab status`` says about a warm start: the source campaigns and
their rows, how many of this campaign's model proposals used the multi-task
model (the guard's leave-one-out check keeps the cold-start model when the
sources do not help), and the latest decision with the learnt task
correlations, from the proposals' reasons (``warm_start``).

Example::

    warm_status(state)
    # {'sources': {'march@sqlite:///runs/lab.sqlite': 40}, 'model_proposals': 9, 'used': 9, 'latest_used': True,
    #  'correlation': {'march@...': {'yield': 0.98}}, 'decision': 'multi-task model: ...', 'experiment_id': 12,
    #  'line': "from march@... (40 rows): transfer in 9 of 9 model proposals; ..."}
"""

from __future__ import annotations

from typing import Any

from selflab.controller.projection import CampaignState


def warm_status(state: CampaignState) -> dict[str, Any] | None:
    """The ``warm_start`` object of ``selflab status --json``; ``None`` when
    no proposal of this campaign was made with warm-start sources."""
    warm = state.reasoned("warm_start", dict)
    if not warm:
        return None
    latest = warm[-1].reason["warm_start"]
    out = {"sources": dict(latest.get("source_rows") or {}), "model_proposals": len(warm),
           "used": sum(bool(e.reason["warm_start"].get("used")) for e in warm), "latest_used": bool(latest.get("used")),
           "correlation": latest.get("correlation"), "decision": latest.get("decision"), "experiment_id": warm[-1].experiment_id}
    return {**out, "line": _line(out)}


def _line(data: dict[str, Any]) -> str:
    sources = ", ".join(f"{name} ({rows} rows)" for name, rows in data["sources"].items())
    parts = [f"from {sources}: transfer in {data['used']} of {data['model_proposals']} model proposals"]
    correlation = data["correlation"] or {}
    shown = "; ".join(", ".join(f"{out} {r:+.2f}" if isinstance(r, (int, float)) else f"{out} ?" for out, r in by_outcome.items())
                      for by_outcome in correlation.values() if isinstance(by_outcome, dict))
    latest = "uses the sources" if data["latest_used"] else "keeps the cold-start model"
    parts.append(f"experiment {data['experiment_id']} {latest}" + (f" (task correlation {shown})" if shown else "")
                 + (f": {data['decision']}" if data["decision"] else ""))
    return "; ".join(parts)
