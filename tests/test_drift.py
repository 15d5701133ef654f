"""Drift checks (issue 18, item 4): the pure decision, the config, a campaign
through the Runner that pauses on a drift, recalibration, and the emulators'
drift fault setting it off."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Mapping
from typing import Any

import pytest
from conftest import quadratic_config

from selflab.controller.campaign import Campaign
from selflab.controller.config import ConfigError, parse_config
from selflab.controller.drift import PAUSED_BY, PRIOR_DOF, STRATEGY, campaign_check, judge
from selflab.controller.ledger import Ledger, NewEvent
from selflab.controller.projection import CampaignState
from selflab.controller.reports import format_status, status_dict
from selflab.controller.runner import Runner
from selflab.controller.study import Study, StudyError
from selflab.planners.baselines import SobolPlanner
from selflab.planners.space import FloatParameter, Objective
from selflab.simulators.benchmarks import BraninInstrument
from selflab.simulators.emulators.devices import SpectrometerDevice
from selflab.simulators.emulators.physics import FlowWorld

# --- the decision -------------------------------------------------------------------------------


def test_judge_fires_on_a_planted_shift_and_not_on_noise() -> None:
    rng = random.Random(3)
    readings = [[rng.gauss(10.0, 1.0) for _ in range(5)] for _ in range(2000)]
    known = [judge(r[:4], r[4], sigma_floor=1.0, threshold_sigma=4.0) for r in readings]
    guessed = [judge(r[:4], r[4], sigma_floor=0.8, threshold_sigma=4.0, prior_dof=PRIOR_DOF) for r in readings]
    assert sum(j.suspected for j in known) <= 2  # 4 sigma: about 1 in 16,000
    assert sum(j.suspected for j in guessed) <= 20  # a guessed sigma, 20 % low, shrunk towards 3 readings' std
    planted = [judge(r[:4], r[4] + 8.0, sigma_floor=1.0, threshold_sigma=4.0) for r in readings]
    assert sum(j.suspected for j in planted) >= 0.95 * len(readings)
    assert all(j.shift_sigma > 0 for j in planted if j.suspected)
    # two readings that agree by chance do not make sigma vanish: the floor holds it up
    close = judge([5.0, 5.0001], 5.05, sigma_floor=0.02, threshold_sigma=4.0)
    assert close.sigma == 0.02 and not close.suspected
    assert judge([5.0, 5.0001], 5.05, sigma_floor=0.0, threshold_sigma=4.0).suspected  # (what no floor would say)
    with pytest.raises(ValueError, match="at least one earlier reading"):
        judge([], 1.0, sigma_floor=1.0, threshold_sigma=4.0)


# --- the config -------------------------------------------------------------------------------


def _faults(**drift: Any) -> list[str]:
    config = quadratic_config(instruments=[{"name": "q1", "driver": "labdrivers:Quadratic", "limits": {"x": [0, 0.8]}}],
                              drift=drift)
    with pytest.raises(ConfigError) as info:
        parse_config(config)
    return [str(f) for f in info.value.faults]


def test_the_drift_config_is_checked_with_one_line_per_fault() -> None:
    ok = parse_config(quadratic_config(drift={"every": 5, "reference": {"x": 0.3, "z": 0.6}, "policy": "pause"}))
    assert ok.drift is not None and ok.drift.threshold_sigma == 4.0 and ok.drift.reference == {"x": 0.3, "z": 0.6}
    assert parse_config(quadratic_config()).drift is None  # off when absent
    assert _faults(every=0) == ["drift.every: must be >= 1 (got 0)"]
    assert _faults(every=5, policy="panic") == ["drift.policy: must be 'warn', 'pause' or 'recalibrate' (got 'panic')"]
    assert _faults(every=5, often=True) == ["drift.often: unknown field; allowed: every, min_sigma, outcome, policy, reference, threshold_sigma"]
    assert _faults(every=5, reference="best") == ["drift.reference: must be 'incumbent' or a point {parameter: value, ...} (got 'best')"]
    assert _faults(every=5, outcome="purity") == ["drift.outcome: 'purity' is not an objective or a constrained outcome; one of y"]
    assert _faults(every=5, reference={"x": 1.5, "z": 0.6}) == [
        "drift.reference: {'x': 1.5, 'z': 0.6}: x=1.5 is outside [0, 1]; name a point inside the space, or use reference: incumbent"]
    assert _faults(every=5, reference={"x": 0.5}) == [
        "drift.reference: {'x': 0.5}: z is missing; name a point inside the space, or use reference: incumbent"]
    assert _faults(every=5, reference={"x": 0.9, "z": 0.6}) == [
        "drift.reference: {'x': 0.9, 'z': 0.6} is outside every instrument's limits (q1: x in [0, 0.8]); name a point an instrument may run"]
    assert _faults(every=5, threshold_sigma=float("nan")) == [
        "drift.threshold_sigma: must be a finite number (got nan); NaN and infinity are not allowed"]
    with pytest.raises(StudyError, match=r"drift: Input should be greater than or equal to 1 \(every\)"):
        Study.create("bad", [FloatParameter(name="x", low=0, high=1)], [Objective(name="y")], ledger="sqlite://",
                     planner=SobolPlanner(), drift={"every": 0})


# --- a campaign through the Runner: pause ---------------------------------------------------------


class SteppedBranin(BraninInstrument):
    """Branin whose readings jump by ``step`` from its ``onset``-th run on (the injected drift)."""

    def __init__(self, step: float, onset: int) -> None:
        super().__init__(noise_std=0.5, seed=1)
        self.step, self.onset, self.runs = step, onset, 0

    async def run(self, params: Mapping[str, Any]) -> dict[str, float]:
        reading = await super().run(params)
        self.runs += 1
        return {"y": reading["y"] + (self.step if self.runs >= self.onset else 0.0)}


async def _until_paused(runner: Runner, study: Study, url: str) -> Any:
    """Run until the campaign is paused and has nothing in flight, then stop it as ``selflab stop`` would (a ledger request)."""
    task = asyncio.create_task(runner.run())
    while not task.done() and (study.state.hold is None or study.state.with_status("dispatched")):
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.3)  # (paused: nothing more is dispatched meanwhile)
    writer = Ledger(url)
    try:
        writer.append([NewEvent(campaign="branin", kind="stop_requested", payload={"emergency": False, "by": "test"})])
    finally:
        writer.close()
    return await task


def _study(url: str, **drift: Any) -> Study:
    space = [FloatParameter(name="x1", low=-5, high=10), FloatParameter(name="x2", low=0, high=15)]
    return Study.create("branin", space, [Objective(name="y", direction="minimize")], ledger=url, planner=SobolPlanner(),
                        seed=2, drift={"every": 4, "min_sigma": 0.5, **drift}, resume=True)


def test_a_runner_campaign_pauses_on_a_drift_and_a_person_resumes_it(sqlite_url: str) -> None:
    with _study(sqlite_url, policy="pause") as study:
        runner = Runner(study, {"sim": SteppedBranin(step=20.0, onset=12)}, stop={"max_experiments": 30, "max_wall_time": 120})
        stop = asyncio.run(_until_paused(runner, study, sqlite_url))
        assert stop.reason == "stop_requested"  # it waited, paused, until a person stopped it
        state = study.state
        checks = [e for e in state.experiments.values() if e.reason.get("strategy") == STRATEGY]
        assert [e.experiment_id for e in checks] == [5, 10, 15]  # every 4 experiments, the check itself aside
        assert {e.params == checks[0].params for e in checks} == {True}  # the incumbent when the first was due, kept
        assert all(e.status == "completed" and e.instrument == "sim" for e in checks)
        [event] = [e for e in study.ledger.events("branin") if e.kind == "drift_suspected"]
        p = event.payload
        assert p["experiment_id"] == 15 and p["policy"] == "pause" and p["outcome"] == "y" and p["reference"] == checks[0].params
        assert p["shift"] == pytest.approx(20.0, abs=3.0) and p["shift_sigma"] > 4.0 and p["earlier_ids"][-2:] == [5, 10]
        assert p["floor_source"] == "min_sigma" and p["sigma"] >= 0.5 and p["in_control_through"] == 10
        assert state.hold is not None and state.hold["by"] == PAUSED_BY and "experiment 15" in state.hold["reason"]
        assert max(state.experiments) == 15  # nothing was dispatched after the drift
        planners = {e.payload["planner"] for e in study.ledger.events("branin") if e.kind == "proposed" and e.experiment_id in (5, 15)}
        assert planners == {"drift_check"}
        text = format_status(status_dict(state, writer_active=False))
        assert "drift      last check experiment 15: y = " in text and "drift suspected; 1 drift(s) suspected, policy pause" in text
        with pytest.raises(StudyError, match="paused by a drift check"):
            study.ask()
    # a resumed study records nothing twice; after a person resumes it, asking goes on
    with _study(sqlite_url, policy="pause") as study:
        assert study.check_drift() == [] and len(study.state.drift_suspected) == 1
        study.resume("probe re-seated", by="ada")
        trials = study.ask(2)
        assert [t.reason.get("strategy") for t in trials] == ["sobol", "sobol"]
    events = Ledger(sqlite_url).events("branin")
    assert [e.kind for e in events].count("drift_suspected") == 1 and [e.kind for e in events].count("pause_requested") == 1


def test_recalibrate_puts_earlier_results_on_the_new_scale(sqlite_url: str) -> None:
    """ask/tell: the drift moves every reading by +3 from trial 9 on; the check at 10 finds it, and the planner
    then sees results up to the last in-control reading (5) shifted by the measured step, and 6..9 left out."""
    with _study(sqlite_url, policy="recalibrate") as study:
        seen: list[Any] = []
        study.planner.propose = _spy(study.planner.propose, seen)  # type: ignore[method-assign]
        truth: dict[int, float] = {}
        for _ in range(12):
            (trial,) = study.ask()
            truth[trial.trial_id] = 1.0 + trial.params["x1"] / 10
            study.tell(trial.trial_id, {"y": truth[trial.trial_id] + (3.0 if trial.trial_id >= 9 else 0.0)})
        [suspected] = study.state.drift_suspected
        assert suspected["experiment_id"] == 10 and suspected["in_control_through"] == 5 and suspected["shift"] == pytest.approx(3.0)
        observed = seen[-1]  # what the planner was told for trial 12
        assert len(observed) == 11 - 4  # 6..9 dropped
        by_value = sorted(o.outcomes["y"] for o in observed)
        expected = sorted([truth[i] + 3.0 for i in range(1, 6)] + [truth[i] + 3.0 for i in (10, 11)])
        assert by_value == pytest.approx(expected)
        last = study.trials()[-1]
        assert last.reason["drift_recalibration"] == {"outcome": "y", "drifts": [10], "shifted": 5, "dropped": [6, 7, 8, 9],
                                                      "max_offset": pytest.approx(3.0)}
        assert study.state.hold is None  # recalibrate goes on


def _spy(propose: Any, seen: list[Any]) -> Any:
    def wrapped(space: Any, objectives: Any, observations: Any, pending: Any, n: int, **kw: Any) -> Any:
        seen.append(list(observations))
        return propose(space, objectives, observations, pending, n, **kw)
    return wrapped


# --- the emulators' drift fault ---------------------------------------------------------------------


def test_the_emulated_drift_starts_at_its_onset_with_its_step() -> None:
    world = FlowWorld(time_scale=60_000.0)
    later = SpectrometerDevice(world, seed=0, noise=False, drift_per_min=0.01, drift_after_min=1e9, drift_step=0.5)
    now = SpectrometerDevice(world, seed=0, noise=False, drift_per_min=0.0, drift_after_min=0.0, drift_step=0.5)
    plain = SpectrometerDevice(world, seed=0, noise=False)
    assert float(later.handle("ACQ?")) == float(plain.handle("ACQ?"))
    assert float(now.handle("ACQ?")) == pytest.approx(float(plain.handle("ACQ?")) + 0.5)


def _emulated(url: str, faults: dict[str, Any]) -> CampaignState:
    config = parse_config({
        "name": "flow", "seed": 1, "ledger": url,
        "parameters": [{"name": "temperature", "type": "float", "low": 60, "high": 140},
                       {"name": "flow_rate", "type": "float", "low": 0.2, "high": 2.0},
                       {"name": "volume", "type": "float", "low": 1.5, "high": 3.0}],
        "objectives": [{"name": "yield", "direction": "maximize"}],
        "instruments": [{"name": "rig", "driver": "flow_synthesis", "timeout": 20, "options": {
            "emulate": True, "poll_s": 0.01, "timeout_s": 0.3, "retries": 1, "backoff_s": 0.05, "settle_timeout_s": 5,
            "tolerance_c": 10,  # (the fault drifts the plate's probe too; here only the spectrometer's drift is under test)
            "emulator": {"seed": 2, "time_scale": 6000, "faults": faults}}}],
        "planner": {"kind": "sobol"},
        "drift": {"every": 2, "policy": "warn", "min_sigma": 0.01},
        "stop": {"max_experiments": 6, "max_wall_time": 60},
    })
    ledger = Ledger(config.ledger_url)
    try:
        asyncio.run(Campaign(config, ledger).run())
        return CampaignState.replay(config.name, ledger.events(config.name))
    finally:
        ledger.close()


def test_the_emulators_drift_fault_sets_off_drift_suspected(tmp_path: Any) -> None:
    """The flow rig over real ptys: the spectrometer's baseline creeps up 0.02 AU per emulated minute, so
    that the reference's reading moves by well over the threshold between two checks however fast the
    experiments run (the drift is per emulated minute, and a quiet machine runs them in less time); the
    same campaign without the fault raises nothing."""
    drifting = _emulated(f"sqlite:///{tmp_path / 'drift.sqlite'}", {"drift_per_min": 0.02})
    steady = _emulated(f"sqlite:///{tmp_path / 'steady.sqlite'}", {})
    assert drifting.drift_suspected and drifting.drift_suspected[0]["shift"] > 0.04
    assert drifting.drift_suspected[0]["policy"] == "warn" and drifting.counts()["completed"] == 6  # warn: it went on
    assert steady.drift_suspected == []
    check = campaign_check(steady.config)
    assert check is not None and [v.status for v in check.verdicts(steady)] == ["ok", "ok"]
