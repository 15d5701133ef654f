"""The loop never floods the ledger, and a cost it cannot compute fails one
experiment, not the campaign."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import pytest
from conftest import quadratic_config

from selflab.controller.campaign import MAX_CONSECUTIVE_REFUSALS, Campaign, CampaignError
from selflab.controller.config import parse_config
from selflab.controller.ledger import Ledger
from selflab.controller.oversight import OversightWriter
from selflab.controller.projection import CampaignState
from selflab.controller.runner import Runner
from selflab.planners.protocol import Observation, Pending, PlanContext, Proposal
from selflab.planners.space import Objective, SearchSpace


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
    from selflab.controller.ledger import NewEvent

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


def test_a_queued_proposal_dispatched_in_a_round_counts_against_the_budget(sqlite_url: str) -> None:
    """Experiment 2 waits for the only instrument that accepts it, and is
    dispatched in the same round as new proposals are asked for: the budget
    must count it, or one experiment too many runs (45 asked, 46 ran)."""
    cfg = quadratic_config(
        instruments=[{"name": "lo", "driver": "labdrivers:Quadratic", "limits": {"x": [0.0, 0.5]}, "options": {"duration_s": 60}},
                     {"name": "hi", "driver": "labdrivers:Quadratic", "limits": {"x": [0.5, 1.0]}, "capacity": 2,
                      "options": {"duration_s": 600}}],
        stop={"max_experiments": 3},
    )
    stop, campaign, state = _run(cfg, sqlite_url, Scripted([{"x": 0.2, "z": 0.5}, {"x": 0.2, "z": 0.5}], then={"x": 0.8, "z": 0.5}))
    assert stop.reason == "max_experiments"
    assert state.counts()["completed"] == 3
    assert sum(len(s.driver.sent) for s in campaign.stations) == 3, "an experiment beyond the budget was run"


def test_a_campaign_that_never_ran_an_experiment_starts_again_without_resume(sqlite_url: str) -> None:
    """Its only instrument never connected: fixing the config and running it
    again is a new start, not a resume (nothing to resume, nothing to keep)."""
    broken = quadratic_config(instruments=[{"name": "q1", "driver": "labdrivers:Quadratic", "options": {"fail_connect": True}}],
                              stop={"max_experiments": 3})
    stop, _, state = _run(broken, sqlite_url, Scripted([], then={"x": 0.5, "z": 0.5}))
    assert stop.reason == "no_instruments" and state.experiments == {}
    fixed = {**broken, "instruments": [{"name": "q1", "driver": "labdrivers:Quadratic"}],
             "parameters": [{"name": "x", "type": "float", "low": 0, "high": 1}, {"name": "z", "type": "float", "low": 0, "high": 2}]}
    stop, campaign, state = _run(fixed, sqlite_url, Scripted([], then={"x": 0.5, "z": 1.5}))
    assert stop.reason == "max_experiments" and state.counts()["completed"] == 3
    assert state.config is not None and state.config["parameters"][1]["high"] == 2, "the new config is the campaign's now"
    with pytest.raises(CampaignError, match="--resume"):  # once it has history, a second start needs --resume as before
        _run(fixed, sqlite_url, Scripted([], then={"x": 0.5, "z": 1.5}))


def test_a_stop_requested_in_the_ledger_stops_the_campaign_without_any_signal(sqlite_url: str) -> None:
    """``selflab stop`` writes its request into the ledger: the controller reads
    it there, so it works from any host and where POSIX signals do not exist
    (here the campaign runs in a thread, where no signal handler can be set)."""
    import threading
    import time

    from selflab.controller.ledger import NewEvent

    cfg = quadratic_config(instruments=[{"name": "q1", "driver": "labdrivers:Quadratic", "capacity": 2, "options": {"delay_s": 0.05}}],
                           stop={"max_experiments": 400})
    ledger, other = Ledger(sqlite_url), Ledger(sqlite_url)
    campaign = Campaign(parse_config({**cfg, "ledger": sqlite_url}), ledger)
    result: dict[str, Any] = {}
    thread = threading.Thread(target=lambda: result.setdefault("stop", asyncio.run(campaign.run())))
    thread.start()
    deadline = time.monotonic() + 60
    while sum(e.kind == "completed" for e in other.events("quad")) < 3:
        assert time.monotonic() < deadline and thread.is_alive()
        time.sleep(0.02)
    other.append([NewEvent(campaign="quad", kind="stop_requested", payload={"by": "ada", "origin": "the console"})])
    thread.join(timeout=30)
    assert not thread.is_alive()
    assert result["stop"].reason == "emergency_stop" and result["stop"].detail == "emergency stop requested with ada"
    state = CampaignState.replay("quad", other.events("quad"))
    assert state.stopped == ("emergency_stop", "emergency stop requested with ada")
    assert state.counts()["completed"] < 400 and state.counts()["dispatched"] == 0
    assert all(e.error.startswith("emergency_stop") for e in state.with_status("abandoned"))
    ledger.close()
    other.close()


def test_ctrl_c_stops_gracefully_where_the_loop_cannot_handle_signals(tmp_path: Any) -> None:
    """On Windows the event loop has no ``add_signal_handler``: Ctrl-C must
    still stop the campaign gracefully (recorded, resumable), not kill it
    with a KeyboardInterrupt. The loop's missing capability is injected."""
    import subprocess
    import sys

    from conftest import REPO

    url = f"sqlite:///{tmp_path / 'ctrlc.sqlite'}"
    script = f"""
import asyncio, os, signal, threading
def refuse(self, *args, **kwargs):
    raise NotImplementedError("no add_signal_handler on this loop")
asyncio.SelectorEventLoop.add_signal_handler = refuse
from conftest import quadratic_config
from selflab.controller.campaign import Campaign
from selflab.controller.config import parse_config
from selflab.controller.ledger import Ledger
cfg = quadratic_config(instruments=[{{"name": "q1", "driver": "labdrivers:Quadratic", "options": {{"delay_s": 0.05}}}}],
                       stop={{"max_experiments": 10000}}, ledger={url!r})
threading.Timer(1.5, lambda: os.kill(os.getpid(), signal.SIGINT)).start()
stop = asyncio.run(Campaign(parse_config(cfg), Ledger({url!r})).run())
print(stop.reason)
"""
    out = subprocess.run([sys.executable, "-c", script], cwd=REPO / "tests", capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "interrupted", out.stderr[-2000:]
    ledger = Ledger(url)
    state = CampaignState.replay("quad", ledger.events("quad"))
    ledger.close()
    assert state.stopped == ("interrupted", "stopped by Ctrl-C (SIGINT)")
    assert state.counts()["dispatched"] == 0 and state.counts()["completed"] > 0


def test_a_queued_experiment_holds_its_cost_so_cheaper_proposals_cannot_spend_it(sqlite_url: str) -> None:
    """A robot experiment (cost 1) waits for the busy robot while a cheap
    simulator (cost 0.1, two slots) is free: the simulator's later proposals may spend
    only what the waiting one leaves, so it runs rather than being abandoned
    for a budget that the simulator spent meanwhile."""
    cfg = quadratic_config(
        instruments=[
            {"name": "robot", "driver": "labdrivers:Quadratic", "options": {"limits": {"x": [0.5, 1]}, "duration_s": 1800}, "cost": 1},
            {"name": "sim", "driver": "labdrivers:Quadratic", "options": {"limits": {"x": [0, 0.5]}, "duration_s": 60}, "cost": 0.1,
             "capacity": 2},
        ],
        stop={"max_cost": 2.5},
        clock="simulated",
    )
    stop, campaign, state = _run(cfg, sqlite_url, Scripted([{"x": 0.8, "z": 0.5}, {"x": 0.9, "z": 0.5}], then={"x": 0.2, "z": 0.5}))
    robot, sim = campaign.stations
    assert stop.reason == "max_cost", stop
    assert [p["x"] for p in robot.driver.sent] == [0.8, 0.9]  # the queued one ran
    assert state.counts()["abandoned"] == 0
    assert len(sim.driver.sent) == 5  # 2.5 - 1 - 1 left for the simulator
    assert state.cost_spent == pytest.approx(2.5)


class _Hot:
    """Flags x above 0.9 for a person's approval."""

    def flags(self, params: Any, reason: Any) -> list[str]:
        return ["x above 0.9"] if float(params["x"]) > 0.9 else []


def test_a_proposal_awaiting_approval_holds_its_cost_until_the_person_decides(sqlite_url: str) -> None:
    """The robot experiment waits for a person while the simulator is free:
    the simulator spends only what the held one leaves, and the approval,
    given once the simulator has run out of budget, finds the cost it was
    proposed with (else it would be abandoned: the budget left cannot pay)."""
    cfg = quadratic_config(
        instruments=[
            {"name": "robot", "driver": "labdrivers:Quadratic", "options": {"limits": {"x": [0.5, 1]}, "delay_s": 0.01}, "cost": 1},
            {"name": "sim", "driver": "labdrivers:Quadratic", "options": {"limits": {"x": [0, 0.5]}, "delay_s": 0.01}, "cost": 0.1,
             "capacity": 2},
        ],
        stop={"max_cost": 1.5}, oversight={"approval": "flagged"}, ledger=sqlite_url,
    )

    async def main() -> tuple[Runner, Any]:
        runner = Runner.from_config(parse_config(cfg), Ledger(sqlite_url), planner=Scripted([{"x": 0.95, "z": 0.5}], then={"x": 0.2, "z": 0.5}))
        runner.dispatcher.flaggers = [_Hot()]
        sim = runner.stations[1].driver
        task = asyncio.create_task(runner.run())
        writer = OversightWriter(sqlite_url, "quad")
        try:
            while len(sim.sent) < 5:  # type: ignore[attr-defined]
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.5)  # (time enough for the simulator to overspend, were the held one not holding its cost)
            [held] = await asyncio.to_thread(lambda: writer.state().awaiting())
            await asyncio.to_thread(writer.approve, held.experiment_id, by="ada")
            return runner, await asyncio.wait_for(task, 60)
        finally:
            writer.close()

    runner, stop = asyncio.run(main())
    robot, sim = (s.driver for s in runner.stations)
    assert stop.reason == "max_cost", stop
    assert robot.sent == [{"x": 0.95, "z": 0.5}]  # type: ignore[attr-defined]
    assert len(sim.sent) == 5  # type: ignore[attr-defined]
    assert runner.state.counts()["abandoned"] == 0
