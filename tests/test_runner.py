"""The Runner built from Python objects: a study, instrument objects, settings and stop rules."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

import selflab
from selflab.controller.campaign import Campaign
from selflab.controller.config import ConfigError, parse_config
from selflab.controller.exit_codes import ExitCode
from selflab.controller.ledger import Ledger, NewEvent
from selflab.controller.projection import CampaignState
from selflab.controller.runner import Runner
from selflab.controller.study import Study, StudyError
from selflab.planners.baselines import RandomPlanner, SobolPlanner
from selflab.planners.protocol import MultiFidelity
from selflab.planners.space import FloatParameter, Objective, SearchSpace
from selflab.simulators.benchmarks import BraninInstrument

SPACE = SearchSpace(parameters=[FloatParameter(name="x", low=0, high=1), FloatParameter(name="z", low=0, high=1)])
BOWL = [Objective(name="y", direction="minimize")]


class Bowl:
    """A real instrument object: ``y = (x - 0.3)^2 + (z - 0.6)^2``, two slots
    (declared), 30 seconds an experiment (declared). It reads the ledger when
    asked to run, to see whether the runner recorded the experiment first."""

    capacity = 2

    def __init__(self, ledger_url: str, campaign: str) -> None:
        self.ledger_url, self.campaign = ledger_url, campaign
        self.recorded_first: list[bool] = []
        self.closed = False

    async def connect(self) -> None:
        self.closed = False

    async def run(self, params: Mapping[str, Any]) -> dict[str, float]:
        reader = Ledger(self.ledger_url, create=False)
        try:
            state = CampaignState.replay(self.campaign, reader.events(self.campaign))
        finally:
            reader.close()
        mine = [e for e in state.experiments.values() if e.params == dict(params)]
        self.recorded_first.append(bool(mine) and mine[-1].status == "dispatched")
        return {"y": (params["x"] - 0.3) ** 2 + (params["z"] - 0.6) ** 2}

    async def close(self) -> None:
        self.closed = True

    def duration(self, params: Mapping[str, Any]) -> float:
        return 30.0


def test_a_runner_from_objects_honours_its_stop_rule_and_records_before_it_runs(sqlite_url: str) -> None:
    with Study.create("bowl", SPACE, BOWL, ledger=sqlite_url, planner=SobolPlanner(), clock="simulated") as study:
        bowl = Bowl(sqlite_url, "bowl")
        stop = asyncio.run(Runner(study, instruments={"bowl": bowl}, stop={"max_experiments": 7}).run())
        assert stop.reason == "max_experiments" and ExitCode.for_stop(stop.reason) == ExitCode.OK
        assert study.state.counts()["completed"] == 7 and study.pending() == []
        assert len(bowl.recorded_first) == 7 and all(bowl.recorded_first), "an experiment ran before its dispatch was recorded"
        assert bowl.closed
        assert study.clock.elapsed_s() == 120.0, "7 experiments of 30 s on the 2 slots the instrument declares take 4 rounds"
        assert study.recommend() is not None
    ledger = Ledger(sqlite_url, create=False)
    events = ledger.events("bowl")
    ledger.close()
    stops = [e.payload["reason"] for e in events if e.kind == "campaign_stopped"]
    assert stops == ["max_experiments"], "closing the study after the runner recorded its stop must not record another"
    assert [e.payload["controller"] for e in events if e.kind == "campaign_started"] == ["study"]


def test_settings_and_stop_rules_are_objects_too(sqlite_url: str) -> None:
    with Study.create("branin", [FloatParameter(name="x1", low=-5, high=10), FloatParameter(name="x2", low=0, high=15)],
                      [Objective(name="y", direction="minimize")], ledger=sqlite_url, planner=SobolPlanner(),
                      clock="simulated") as study:
        runner = selflab.Runner(study, instruments={"sim": BraninInstrument(duration_s=600)},
                                settings={"sim": selflab.InstrumentSettings(capacity=3, cost=2.5, timeout=30)},
                                stop=selflab.StopRules(max_cost=10))
        (station,) = runner.stations
        assert (station.capacity, station.cost, station.config.timeout, station.limits) == (3, 2.5, 30.0, {"x1": (-5.0, 10.0), "x2": (0.0, 15.0)})
        stop = asyncio.run(runner.run())
        assert stop.reason == "max_cost" and study.state.cost_spent == 10.0
        assert study.state.counts()["completed"] == 4 and study.state.counts()["abandoned"] == 0


def test_a_bad_instrument_object_or_setting_is_refused_by_name_and_writes_nothing(sqlite_url: str) -> None:
    class NoRun:
        async def connect(self) -> None: ...
        async def close(self) -> None: ...

    class Blocking:
        async def connect(self) -> None: ...
        def run(self, params: Mapping[str, Any]) -> dict[str, float]:
            return {"y": 0.0}
        async def close(self) -> None: ...

    with Study.create("bad", SPACE, BOWL, ledger=sqlite_url, planner=SobolPlanner()) as study:
        written = len(study.ledger.events("bad"))
        cases: list[tuple[dict[str, Any], dict[str, Any], str]] = [
            ({"sim": BraninInstrument}, {}, "instruments['sim']: is the class BraninInstrument, not an instrument: pass an instance"),
            ({"sim": "branin"}, {}, "instruments['sim']: is the string 'branin', not an instrument object"),
            ({"dead": NoRun()}, {}, "instruments['dead']: a NoRun is not an instrument: it has no run()"),
            ({"slow": Blocking()}, {}, "instruments['slow']: Blocking.run must be async"),
            ({}, {}, "instruments: give at least one instrument object"),
            ({"bowl": Bowl(sqlite_url, "bad")}, {"bowl": {"capacity": 0}}, "instruments['bowl'].capacity: must be >= 1 (got 0)"),
            ({"bowl": Bowl(sqlite_url, "bad")}, {"bowl": {"driver": "x:Y"}}, "instruments['bowl'].driver: not a setting of an instrument object"),
            ({"bowl": Bowl(sqlite_url, "bad")}, {"bowel": {"capacity": 2}}, "settings['bowel']: no instrument is named 'bowel'"),
            ({"bowl": Bowl(sqlite_url, "bad")}, {"bowl": {"cost": "1 / w"}}, "instruments['bowl'].cost: '1 / w' uses w, which is not a numeric parameter"),
            ({"bowl": Bowl(sqlite_url, "bad")}, {"bowl": {"limits": {"x": (2, 3)}}}, "instruments['bowl'].limits.x: the instrument accepts x in [2, 3]"),
            ({"bowl": Bowl(sqlite_url, "bad")}, {"bowl": {"limits": {"x": (0, 0.5)}}}, "parameters[0]: x asks for [0, 1] but the instruments' limits allow only [0, 0.5]"),
        ]
        for instruments, settings, message in cases:
            with pytest.raises(ConfigError) as info:
                Runner(study, instruments=instruments, settings=settings, stop={"max_experiments": 3})
            assert message in str(info.value), str(info.value)
        with pytest.raises(ConfigError, match=r"stop: give at least one of max_experiments"):
            Runner(study, instruments={"bowl": Bowl(sqlite_url, "bad")}, stop={})
        assert len(study.ledger.events("bad")) == written, "a refused runner wrote to the ledger"


def test_without_stop_rules_a_pool_runs_until_the_planner_has_nothing_left(sqlite_url: str) -> None:
    class Shelf:
        """Five bottles on a shelf: the only points it can measure."""

        def __init__(self) -> None:
            self.measured: list[dict[str, Any]] = []

        def candidates(self) -> list[dict[str, float]]:
            return [{"x": i / 4, "z": 1 - i / 4} for i in range(5)]

        async def connect(self) -> None: ...

        async def run(self, params: Mapping[str, Any]) -> dict[str, float]:
            self.measured.append(dict(params))
            return {"y": params["x"] * params["z"]}

        async def close(self) -> None: ...

    shelf = Shelf()
    with Study.create("shelf", SPACE, BOWL, ledger=sqlite_url, planner=RandomPlanner()) as study:
        stop = asyncio.run(Runner(study, instruments={"shelf": shelf}).run())
        assert stop.reason == "planner_exhausted"
        assert sorted(p["x"] for p in shelf.measured) == [0.0, 0.25, 0.5, 0.75, 1.0]


def test_objects_and_a_config_run_the_same_campaign(tmp_path: Path) -> None:
    """``selflab run``'s config path and the objects path are one runner: the
    same simulator, planner and seed give the same experiments at the same
    simulated times."""
    cfg = {"name": "branin", "seed": 1, "planner": {"kind": "random"}, "stop": {"max_experiments": 9},
           "parameters": [{"name": "x1", "type": "float", "low": -5, "high": 10}, {"name": "x2", "type": "float", "low": 0, "high": 15}],
           "objectives": [{"name": "y", "direction": "minimize"}],
           "instruments": [{"name": "sim", "driver": "branin", "options": {"duration_s": 600}, "capacity": 3}],
           "ledger": f"sqlite:///{tmp_path / 'config.sqlite'}"}
    config = parse_config(cfg)
    ledger = Ledger(config.ledger_url)
    assert asyncio.run(Campaign(config, ledger).run()).reason == "max_experiments"
    from_config = CampaignState.replay("branin", ledger.events("branin"))
    ledger.close()

    with Study.create("branin", config.space, config.objectives, ledger=f"sqlite:///{tmp_path / 'objects.sqlite'}",
                      planner=RandomPlanner(), seed=1, clock="simulated") as study:
        stop = asyncio.run(Runner(study, instruments={"sim": BraninInstrument(duration_s=600)}, settings={"sim": {"capacity": 3}},
                                  stop={"max_experiments": 9}).run())
        assert stop.reason == "max_experiments"
        from_objects = study.state

    def timeline(state: CampaignState) -> list[tuple[Any, ...]]:
        assert state.started_at is not None
        return [(e.params, e.outcomes, e.instrument, (e.finished_at - state.started_at).total_seconds())  # type: ignore[operator]
                for e in state.with_status("completed")]

    assert len(timeline(from_config)) == 9
    assert timeline(from_objects) == timeline(from_config)


def test_capabilities_are_declared_protocols_and_exit_codes_one_enum() -> None:
    from selflab.controller.dispatch import blocks, chooses_fidelity
    from selflab.controller.fleet import declared_capacity, declared_cost, declared_fidelity
    from selflab.planners.mf import MFPlanner

    assert isinstance(MFPlanner(), MultiFidelity) and chooses_fidelity(MFPlanner())
    assert not chooses_fidelity(SobolPlanner()) and not blocks(SobolPlanner()) and blocks(MFPlanner())
    assert (declared_capacity(Bowl("sqlite://", "x")), declared_fidelity(Bowl("sqlite://", "x")), declared_cost(Bowl("sqlite://", "x"))) == (2, 1.0, 1.0)
    assert [int(c) for c in ExitCode] == [0, 1, 2, 130]
    assert {r: int(ExitCode.for_stop(r)) for r in ("interrupted", "lease_lost", "no_instruments", "max_experiments", "target")} == {
        "interrupted": 130, "lease_lost": 1, "no_instruments": 1, "max_experiments": 0, "target": 0}


def test_a_runner_from_objects_takes_oversight(sqlite_url: str) -> None:
    """``Runner(..., oversight={"approval": "all"})`` holds every proposal for a
    person: the vetoed one never reaches the instrument, the edited one runs
    with the edited parameters."""
    from test_oversight import person

    seen: dict[str, Any] = {}
    with Study.create("held", SPACE, BOWL, ledger=sqlite_url, planner=SobolPlanner()) as study:
        bowl = Bowl(sqlite_url, "held")
        runner = Runner(study, instruments={"bowl": bowl}, stop={"max_experiments": 4}, oversight={"approval": "all"})

        async def main() -> Any:
            done = asyncio.Event()
            helper = asyncio.create_task(person(sqlite_url, "held", done, seen))
            try:
                return await asyncio.wait_for(runner.run(), 60)
            finally:
                done.set()
                await helper

        stop = asyncio.run(main())
        assert stop.reason == "max_experiments"
        state = study.state
        with pytest.raises(ConfigError, match="oversight.approval"):
            Runner(study, instruments={"bowl": bowl}, oversight={"approval": "sometimes"})
    assert runner.config.oversight.approval == "all"
    assert study.veto_radius == 0.1  # (the default, as in a config)
    vetoed, edited = seen["vetoed"], seen["edited"]
    assert state.experiments[vetoed.experiment_id].shown_status == "vetoed"
    assert state.experiments[edited.experiment_id].params == {"x": 0.25, "z": 0.5}
    assert state.counts()["completed"] == 4
    assert all(e.approval in ("approved", "edited") for e in state.with_status("completed"))


def test_a_runner_from_objects_keeps_its_veto_radius(sqlite_url: str) -> None:
    """``Runner(..., oversight={"veto_radius": 0.3})`` on a study made from
    objects (whose snapshot has no oversight section): no later proposal
    comes within 0.3 of a vetoed point."""
    from selflab.controller.events import Proposed
    from selflab.controller.oversight import near
    from selflab.planners.baselines import RandomPlanner

    with Study.create("radius", SPACE, BOWL, ledger=sqlite_url, planner=RandomPlanner()) as study:
        assert study.veto_radius == 0.1
        Runner(study, instruments={"bowl": Bowl(sqlite_url, "radius")}, oversight={"veto_radius": 0.3})
        assert study.veto_radius == 0.3
        study.record([NewEvent(campaign="radius", kind="proposed", experiment_id=1, payload=Proposed(
            params={"x": 0.5, "z": 0.5}, awaiting_approval=True))])
        study.veto(1, "unsafe", by="ada")
        trials = study.ask(40)
        with pytest.raises(StudyError, match="veto_radius"):
            study.keep_away_from_vetoed(0.9)
    assert not any(near(SPACE, t.params, [{"x": 0.5, "z": 0.5}], 0.3) for t in trials)
