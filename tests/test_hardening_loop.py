"""The loop never floods the ledger, and a cost it cannot compute fails one
experiment, not the campaign."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import pytest
from conftest import quadratic_config

from controller.campaign import MAX_CONSECUTIVE_REFUSALS, Campaign
from controller.config import parse_config
from controller.ledger import Ledger
from controller.projection import CampaignState
from planners.protocol import Observation, Pending, PlanContext, Proposal
from planners.space import Objective, SearchSpace


class Scripted:
    """Proposes ``first`` in order, then ``then`` forever (no randomness)."""

    blocking = False

    def __init__(self, first: Sequence[dict[str, float]], then: dict[str, float] | None = None) -> None:
        self.queue = [dict(p) for p in first]
        self.then = then
        self.asked = 0

    def propose(self, space: SearchSpace, objectives: Sequence[Objective], observations: Sequence[Observation],
                pending: Sequence[Pending], n: int, *, context: PlanContext) -> list[Proposal]:
        out = []
        for _ in range(n):
            self.asked += 1
            if self.queue:
                params = self.queue.pop(0)
            elif self.then is not None:
                params = dict(self.then)
            else:
                k = self.asked
                params = {"x": (k * 0.37) % 1.0, "z": (k * 0.61) % 1.0}
            out.append(Proposal(params=params, reason={"strategy": "scripted"}))
        return out


def _run(cfg: dict[str, Any], url: str, planner: Scripted, timeout: float = 60) -> tuple[Any, Campaign, CampaignState]:
    config = parse_config({**cfg, "ledger": url})
    ledger = Ledger(url)
    try:
        campaign = Campaign(config, ledger, planner=planner)
        stop = asyncio.run(asyncio.wait_for(campaign.run(), timeout))
        state = CampaignState.replay(config.name, ledger.events(config.name))
    finally:
        ledger.close()
    return stop, campaign, state


def test_proposals_the_budget_can_never_pay_for_stop_the_campaign_not_flood_it(sqlite_url: str) -> None:
    """The planner keeps proposing a point whose cost exceeds what is left:
    each proposal waits, is abandoned, and another comes. Without progress
    the campaign must stop with a reason, not write proposals forever."""
    cfg = quadratic_config(
        instruments=[{"name": "q1", "driver": "labdrivers:Quadratic", "cost": "1 + 100 * x"}],
        stop={"max_cost": 1.5},
    )
    stop, campaign, state = _run(cfg, sqlite_url, Scripted([], then={"x": 1.0, "z": 0.5}))
    assert stop.reason == "refusals"
    assert "budget left cannot pay" in stop.detail
    assert campaign.stations[0].driver.sent == []
    assert MAX_CONSECUTIVE_REFUSALS <= len(state.experiments) <= MAX_CONSECUTIVE_REFUSALS + 2


def test_a_cost_that_cannot_be_computed_abandons_that_experiment_and_the_campaign_goes_on(sqlite_url: str) -> None:
    cfg = quadratic_config(
        instruments=[{"name": "q1", "driver": "labdrivers:Quadratic", "cost": "1 / abs(x - 0.123)"}],
        stop={"max_experiments": 4},
    )
    planner = Scripted([{"x": 0.123, "z": 0.5}])
    stop, campaign, state = _run(cfg, sqlite_url, planner)
    assert stop.reason == "max_experiments"
    first = state.experiments[1]
    assert first.status == "abandoned" and first.end_reason == "bad_cost"
    assert "cannot be evaluated" in first.error and "q1" in first.error
    assert {"x": 0.123, "z": 0.5} not in campaign.stations[0].driver.sent
    assert state.counts()["completed"] == 4
    assert [e.params for e in state.avoided()] == [{"x": 0.123, "z": 0.5}], "the planner is told to avoid it"


@pytest.mark.parametrize("policy", ["requeue", "drop"])
def test_stale_events_record_the_requeue_decision(sqlite_url: str, policy: str) -> None:
    from controller.ledger import NewEvent

    cfg = quadratic_config(stop={"max_experiments": 2}, stale_policy=policy)
    ledger = Ledger(sqlite_url)
    ledger.append([
        NewEvent(campaign="quad", kind="campaign_started", payload={
            "config": parse_config(cfg).model_dump(mode="json"), "version": "x", "seed": 0, "clock": "wall"}),
        NewEvent(campaign="quad", kind="proposed", experiment_id=1, payload={"params": {"x": 0.1, "z": 0.2}}),
        NewEvent(campaign="quad", kind="dispatched", experiment_id=1, instrument="q1", payload={"cost": 1.0}),
    ])
    ledger.close()
    config = parse_config({**cfg, "ledger": sqlite_url})
    ledger = Ledger(sqlite_url)
    campaign = Campaign(config, ledger, resume=True)
    asyncio.run(campaign.run())
    stale = next(e for e in ledger.events("quad") if e.kind == "stale")
    ledger.close()
    assert stale.payload["requeue"] is (policy == "requeue")
    assert (campaign.stations[0].driver.sent[0] == {"x": 0.1, "z": 0.2}) is (policy == "requeue")
