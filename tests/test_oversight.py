"""Human oversight: the approval gate, approve / veto / edit / attach / note /
pause / resume as unfenced ledger events, their refusals, the planner keeping
away from vetoed points, flaggers, and a resume while proposals await; on
SQLite and on Postgres."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import quadratic_config

from selflab.controller.config import ConfigError, parse_config
from selflab.controller.console.actions import request_stop
from selflab.controller.ledger import Ledger
from selflab.controller.oversight import (
    ActionRefused,
    ExtrapolationFlagger,
    LimitFlagger,
    OversightWriter,
    ProposalFlagger,
    gate,
    near,
)
from selflab.controller.projection import CampaignState
from selflab.controller.runner import Runner
from selflab.controller.study import Study, StudyError
from selflab.planners.protocol import Proposal
from selflab.planners.space import SearchSpace

REPO = Path(__file__).resolve().parents[1]
SPACE = SearchSpace.model_validate({"parameters": [{"name": "x", "type": "float", "low": 0, "high": 1},
                                                   {"name": "z", "type": "float", "low": 0, "high": 1}]})


def gated(url: str, **overrides: Any) -> dict[str, Any]:
    return quadratic_config(**{"name": "gated", "ledger": url, "oversight": {"approval": "all"}, "stop": {"max_experiments": 6},
                            "instruments": [{"name": "q1", "driver": "labdrivers:Quadratic", "limits": {"x": [0.0, 0.6]},
                                          "options": {"delay_s": 0.01}},
                                         {"name": "q2", "driver": "labdrivers:Quadratic", "limits": {"x": [0.4, 1.0]},
                                          "options": {"delay_s": 0.01}}], **overrides})


def sent_to(runner: Runner) -> list[dict[str, Any]]:
    """Every parameter set that reached an instrument."""
    return [p for s in runner.stations for p in s.driver.sent]  # type: ignore[attr-defined]


async def person(url: str, campaign: str, done: asyncio.Event, seen: dict[str, Any]) -> None:
    """Veto the first proposal, edit the second, approve the rest, as another process would (unfenced writer)."""
    writer = OversightWriter(url, campaign)
    try:
        while not done.is_set():
            state = await asyncio.to_thread(writer.state)
            for exp in state.awaiting():
                if "vetoed" not in seen:
                    await asyncio.to_thread(writer.veto, exp.experiment_id, "too close to the old reactor's hot spot", by="ada")
                    seen["vetoed"] = exp
                elif "edited" not in seen:
                    await asyncio.to_thread(writer.edit, exp.experiment_id, {"x": "0.25", "z": 0.5}, "a safer point", by="bob")
                    seen["edited"] = exp
                else:
                    await asyncio.to_thread(writer.approve, exp.experiment_id, by="ada")
            await asyncio.sleep(0.02)
    finally:
        writer.close()


def run_with_person(url: str, cfg: dict[str, Any]) -> tuple[Runner, dict[str, Any], Any]:
    seen: dict[str, Any] = {}

    async def main() -> Any:
        runner = Runner.from_config(parse_config(cfg), Ledger(url))
        done = asyncio.Event()
        helper = asyncio.create_task(person(url, cfg["name"], done, seen))
        try:
            return runner, await asyncio.wait_for(runner.run(), 60)
        finally:
            done.set()
            await helper

    runner, stop = asyncio.run(main())
    return runner, seen, stop


def test_approve_veto_edit_through_a_running_campaign(ledger_url: str) -> None:
    runner, seen, stop = run_with_person(ledger_url, gated(ledger_url))
    assert stop.reason == "max_experiments"
    sent = sent_to(runner)
    vetoed, edited = seen["vetoed"], seen["edited"]
    assert vetoed.params not in sent
    assert {"x": 0.25, "z": 0.5} in sent and edited.params not in sent
    ledger = Ledger(ledger_url, create=False)
    try:
        events = ledger.events("gated")
    finally:
        ledger.close()
    state = CampaignState.replay("gated", events)
    assert state.anomalies == []
    assert state.experiments[vetoed.experiment_id].shown_status == "vetoed"
    after = [e for e in state.experiments.values() if e.experiment_id > vetoed.experiment_id and not e.attached]
    assert after and not any(near(SPACE, e.params, [vetoed.params], 0.1) for e in after)
    edit = state.experiments[edited.experiment_id]
    assert edit.approval == "edited" and edit.original_params == edited.params and edit.params == {"x": 0.25, "z": 0.5}
    assert edit.status == "completed"
    human = [e for e in events if e.kind in ("approved", "vetoed", "edited")]
    assert human and all(e.payload["by"] in ("ada", "bob") for e in human)
    assert {e.kind for e in human} == {"approved", "vetoed", "edited"}
    # every dispatched experiment was approved or edited first: the gate held them all
    for e in state.experiments.values():
        if e.started_at is not None and not e.attached:
            assert e.approval in ("approved", "edited"), e


def test_refused_actions_write_nothing(ledger_url: str) -> None:
    cfg = gated(ledger_url, stop={"max_experiments": 1})
    for inst, (lo, hi) in zip(cfg["instruments"], ((0.0, 0.6), (0.4, 1.0))):
        inst["limits"] = {"x": [lo, hi], "z": [lo, hi]}  # (no instrument takes x=0.1 with z=0.9)
    seen: dict[str, Any] = {}

    async def main() -> None:
        runner = Runner.from_config(parse_config(cfg), Ledger(ledger_url))
        task = asyncio.create_task(runner.run())
        writer = OversightWriter(ledger_url, "gated")
        try:
            while not (await asyncio.to_thread(writer.state)).awaiting():
                await asyncio.sleep(0.02)
            state = await asyncio.to_thread(writer.state)
            [first] = state.awaiting()
            before = len(await asyncio.to_thread(writer.ledger.events, "gated"))
            refusals = {
                "unknown": lambda: writer.approve(999, by="ada"),
                "no reason": lambda: writer.veto(first.experiment_id, "  ", by="ada"),
                "outside the space": lambda: writer.edit(first.experiment_id, {"x": 1.5, "z": 0.1}, "r", by="ada"),
                "outside the limits": lambda: writer.edit(first.experiment_id, {"x": 0.1, "z": 0.9}, "r", by="ada"),
                "unknown parameter": lambda: writer.edit(first.experiment_id, {"x": 0.5, "q": 0.1}, "r", by="ada"),
                "not a number": lambda: writer.edit(first.experiment_id, {"x": "hot", "z": 0.1}, "r", by="ada"),
                "not paused": lambda: writer.resume(by="ada"),
                "bad attach": lambda: writer.attach({"x": 0.5, "z": 0.5}, {"y": "nan"}, by="ada"),
            }
            for what, act in refusals.items():
                with pytest.raises(ActionRefused) as caught:
                    await asyncio.to_thread(act)
                assert "\n" not in str(caught.value) and "nothing was written" in str(caught.value), what
            seen["refused_kept_count"] = len(await asyncio.to_thread(writer.ledger.events, "gated")) == before
            await asyncio.to_thread(writer.veto, first.experiment_id, "no", by="ada")
            for act in (lambda: writer.veto(first.experiment_id, "again", by="ada"),
                        lambda: writer.approve(first.experiment_id, by="ada")):
                with pytest.raises(ActionRefused, match="it is vetoed"):
                    await asyncio.to_thread(act)
            while not task.done():  # (a proposal no instrument takes is refused: out_of_limits)
                for exp in (await asyncio.to_thread(writer.state)).awaiting():
                    await asyncio.to_thread(writer.approve, exp.experiment_id, by="ada")
                await asyncio.sleep(0.02)
            seen["stop"] = await task
        finally:
            writer.close()

    asyncio.run(main())
    assert seen["refused_kept_count"] is True
    assert seen["stop"].reason == "max_experiments"


def test_pause_resume_note_attach_and_a_resume_that_keeps_awaiting(ledger_url: str) -> None:
    cfg = gated(ledger_url, stop={"max_experiments": 20})
    result: dict[str, Any] = {}

    async def until(check: Any) -> Any:
        while not (found := check()):
            await asyncio.sleep(0.02)
        return found

    async def first_run() -> None:
        runner = Runner.from_config(parse_config(cfg), Ledger(ledger_url))
        task = asyncio.create_task(runner.run())
        writer = OversightWriter(ledger_url, "gated")
        try:
            waiting, *_ = await until(lambda: writer.state().awaiting())
            await asyncio.to_thread(writer.pause, "cleaning the reactor", by="ada")
            with pytest.raises(ActionRefused, match="paused already"):
                await asyncio.to_thread(writer.pause, by="bob")
            await asyncio.to_thread(writer.note, "new reagent batch", by="ada")
            result["request"] = (await asyncio.to_thread(writer.attach, {"x": 0.3, "z": 0.6}, {"y": 1.0}, by="ada")).kind
            await asyncio.to_thread(writer.attach, {"x": 0.7, "z": 0.2}, None, by="ada", message="still running")
            await until(lambda: len([e for e in runner.state.experiments.values() if e.attached]) == 2)
            await asyncio.to_thread(writer.approve, waiting.experiment_id, by="ada")
            await until(lambda: runner.state.experiments[waiting.experiment_id].approval == "approved")
            await asyncio.sleep(0.3)  # (the runner was woken by the approval; paused, it must not dispatch)
            await asyncio.to_thread(writer.resume, by="ada")
            await until(lambda: runner.state.experiments[waiting.experiment_id].status == "completed")
            await until(lambda: runner.state.awaiting())
            request_stop(ledger_url, "gated", runner.state.config and {"controller": "run"}, emergency=False, by="ada", origin="test")
            result["stop"] = await asyncio.wait_for(task, 30)
        finally:
            writer.close()

    asyncio.run(first_run())
    assert result["stop"].reason == "stop_requested" and result["request"] == "attach_requested"
    ledger = Ledger(ledger_url)
    try:
        events = ledger.events("gated")
        kinds = [e.kind for e in events]
        paused, resumed = kinds.index("pause_requested"), kinds.index("resume_requested")
        assert "dispatched" not in kinds[paused:resumed]
        assert [e.payload["request"] is not None for e in events if e.kind == "attached"] == [True, True]
        state = CampaignState.replay("gated", events)
        still = [e.experiment_id for e in state.awaiting()]
        assert still
        pending = [e for e in state.experiments.values() if e.attached and e.status == "dispatched"]
        assert len(pending) == 1 and state.notes[-1][1:] == ("ada", "new reagent batch")
        assert {a["action"] for a in state.actions} >= {"pause", "resume", "note", "attach", "approve", "stop"}
        # resumed: the proposal still awaits (not abandoned), the person's pending experiment is not made stale
        runner = Runner.from_config(parse_config(cfg), ledger, resume=True)
        try:
            assert [e.experiment_id for e in runner.state.awaiting()] == still
            assert runner.state.experiments[pending[0].experiment_id].status == "dispatched"
        finally:
            runner.study.release()
    finally:
        ledger.close()


def test_study_python_form_and_attach_without_a_holder(ledger_url: str) -> None:
    cfg = gated(ledger_url, stop={"max_experiments": 20})
    # a Study (the lease holder) approves, vetoes and edits what a runner left awaiting
    ledger = Ledger(ledger_url)
    try:
        from selflab.controller.events import Proposed
        from selflab.controller.ledger import NewEvent

        with Study.open(cfg, ledger) as study:
            study.record([NewEvent(campaign="gated", kind="proposed", experiment_id=i, payload=Proposed(
                params={"x": 0.1 * i, "z": 0.5}, awaiting_approval=True)) for i in (1, 2, 3)])
            assert [t.status for t in study.trials()] == ["awaiting_approval"] * 3
            assert study.approve(1, by="ada").status == "proposed"
            assert study.veto(2, "no", by="ada").status == "vetoed"
            edited = study.edit(3, {"x": 0.5, "z": 0.5}, "moved", by="ada")
            assert edited.params == {"x": 0.5, "z": 0.5}
            with pytest.raises(StudyError, match="it is vetoed"):
                study.edit(2, {"x": 0.5, "z": 0.5}, "again", by="ada")
            study.pause(by="ada")
            study.resume(by="ada")
            (trial,) = study.ask()
            assert not near(SPACE, trial.params, [{"x": 0.2, "z": 0.5}], 0.1)
        # nobody holds the lease now: the writer records the attached experiment itself
        with OversightWriter(ledger, "gated") as writer:
            attached = writer.attach({"x": 0.4, "z": 0.4}, {"y": 0.5}, by="ada")
            assert attached.kind == "attached" and attached.payload["by"] == "ada"
            assert writer.state().experiments[attached.experiment_id or 0].outcomes == {"y": 0.5}
    finally:
        ledger.close()


def test_vetoed_neighbourhood_is_never_proposed_again(sqlite_url: str) -> None:
    cfg = quadratic_config(name="veto", ledger=sqlite_url, planner={"kind": "random"}, oversight={"veto_radius": 0.3})
    with Study.open(cfg) as study:
        from selflab.controller.events import Proposed
        from selflab.controller.ledger import NewEvent

        study.record([NewEvent(campaign="veto", kind="proposed", experiment_id=1, payload=Proposed(
            params={"x": 0.5, "z": 0.5}, awaiting_approval=True))])
        study.veto(1, "unsafe", by="ada")
        trials = study.ask(40)
    assert not any(near(SPACE, t.params, [{"x": 0.5, "z": 0.5}], 0.3) for t in trials)
    assert any(t.reason.get("strategy") == "veto_avoidance" for t in trials)  # random proposals landed there and were moved


class NearLimit:
    """A flagger of our own: flags x above 0.9."""

    def flags(self, params: Any, reason: Any) -> list[str]:
        return ["x above 0.9"] if float(params["x"]) > 0.9 else []


def test_flaggers_and_the_gate() -> None:
    assert isinstance(NearLimit(), ProposalFlagger) and isinstance(ExtrapolationFlagger(), ProposalFlagger)
    hot, cool = Proposal(params={"x": 0.95, "z": 0.5}), Proposal(params={"x": 0.5, "z": 0.5})
    assert gate("flagged", [NearLimit()], hot) == (True, ["x above 0.9"])
    assert gate("flagged", [NearLimit()], cool) == (False, [])
    assert gate("all", [NearLimit()], cool) == (True, [])
    assert gate("off", [NearLimit()], hot) == (False, [])
    extrapolating = Proposal(params={"x": 0.5, "z": 0.5}, reason={"extrapolation": {"extrapolating": True}})
    assert gate("flagged", [ExtrapolationFlagger()], extrapolating) == (True, ["extrapolating"])
    assert ExtrapolationFlagger().flags({}, {"extrapolating": True}) == ["extrapolating"]
    limits = LimitFlagger(SPACE, {"q1": {"x": (0.0, 0.8)}}, margin=0.05)
    assert limits.flags({"x": 0.79, "z": 0.5}, {}) == ["near the limit of x on q1"]
    assert limits.flags({"x": 0.5, "z": 0.5}, {}) == []


def test_flagged_campaign_holds_only_flagged_proposals(sqlite_url: str) -> None:
    cfg = quadratic_config(name="flag", ledger=sqlite_url, oversight={"approval": "flagged", "limit_margin": 0.2},
                           stop={"max_experiments": 4}, instruments=[{"name": "q1", "driver": "labdrivers:Quadratic"}])
    runner = Runner.from_config(parse_config(cfg), Ledger(sqlite_url))
    runner.dispatcher.flaggers = [NearLimit()]
    stop = asyncio.run(asyncio.wait_for(runner.run(), 60))
    state = runner.state
    flagged = [e for e in state.experiments.values() if e.flags]
    assert all(e.awaiting_approval and e.flags == ["x above 0.9"] for e in flagged)
    assert all(float(e.params["x"]) <= 0.9 for e in state.experiments.values() if e.status == "completed")
    assert stop.reason == "max_experiments"


def test_config_oversight_is_strict_and_in_the_schema() -> None:
    assert parse_config(quadratic_config()).oversight.approval == "off"
    with pytest.raises(ConfigError, match="oversight"):
        parse_config(quadratic_config(oversight={"approval": "sometimes"}))
    with pytest.raises(ConfigError, match="oversight"):
        parse_config(quadratic_config(oversight={"aproval": "all"}))
    schema = json.loads(subprocess.run([sys.executable, "-m", "selflab.controller.cli", "schema"], capture_output=True, text=True,
                                       check=True, cwd=REPO).stdout)
    assert "oversight" in schema["properties"]


def test_cli_forms_and_status_and_export(sqlite_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from selflab.controller.cli import main
    from selflab.controller.events import Proposed
    from selflab.controller.ledger import NewEvent

    cfg = gated(sqlite_url)
    with Study.open(cfg) as study:
        study.record([NewEvent(campaign="gated", kind="proposed", experiment_id=i, payload=Proposed(
            params={"x": 0.1 * i, "z": 0.5}, awaiting_approval=True)) for i in (1, 2, 3, 4)])
    base = ["--ledger", sqlite_url, "--by", "ada"]
    assert main(["approve", "1", *base]) == 0
    assert main(["veto", "2", "--reason", "too hot", *base]) == 0
    assert main(["edit", "3", "x=0.45", "z=0.5", "--reason", "cooler", *base]) == 0
    assert main(["note", "new batch", *base]) == 0
    assert main(["pause", *base]) == 0 and main(["resume", *base]) == 0
    assert main(["attach", "x=0.3", "z=0.6", "--result", "y=0.9", *base]) == 0
    assert main(["attach", "x=0.35", "z=0.6", *base]) == 0
    assert main(["result", "6", "y=0.7", *base]) == 0
    out = capsys.readouterr().out
    assert "vetoed experiment 2 in campaign 'gated' by ada" in out and "attached experiment 5" in out
    assert main(["veto", "2", "--reason", "again", *base]) == 2
    assert main(["edit", "4", "x=7", "z=0.5", "--reason", "r", *base]) == 2
    assert main(["approve", "99", *base]) == 2
    assert main(["result", "6", "y=0.8", *base]) == 2
    assert main(["result", "1", "y=0.8", *base]) == 2
    err = capsys.readouterr().err
    assert "it is vetoed" in err and "no such experiment" in err and err.count("\n") == 5
    assert "cannot give a result to experiment 6: it is completed" in err and "not an attached experiment" in err
    assert main(["status", "--ledger", sqlite_url]) == 0
    status = capsys.readouterr().out
    assert "oversight  1 awaiting approval (4), 1 vetoed" in status and "veto experiment 2 by ada: too hot" in status
    assert main(["status", "--ledger", sqlite_url, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["oversight"]["awaiting_approval"] == [4]
    assert main(["export", "--ledger", sqlite_url, "--format", "jsonl"]) == 0
    rows = {r["experiment_id"]: r for r in map(json.loads, capsys.readouterr().out.splitlines())}
    assert [rows[i]["approval"] for i in (1, 2, 3, 4, 5)] == ["approved", "vetoed", "edited", "awaiting", None]
    assert rows[6]["y"] == 0.7
    assert json.loads(rows[3]["original_params"]) == {"x": 0.30000000000000004, "z": 0.5} and rows[3]["x"] == 0.45
    assert main(["report", "--ledger", sqlite_url, "--out", str(tmp_path / "report")]) == 0
    import csv

    with (tmp_path / "report" / "actions.csv").open() as handle:
        actions = list(csv.DictReader(handle))
    assert [(a["action"], a["experiment_id"], a["by"]) for a in actions][:3] == [("approve", "1", "ada"), ("veto", "2", "ada"),
                                                                                  ("edit", "3", "ada")]
    assert actions[1]["text"] == "too hot" and {a["action"] for a in actions} >= {"note", "pause", "resume", "attach"}
