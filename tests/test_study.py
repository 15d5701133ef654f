"""The ask/tell Study over a real ledger: a campaign driven from Python."""

from __future__ import annotations

import asyncio
import math
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from conftest import REPO, quadratic_config

from selflab.controller.campaign import Campaign
from selflab.controller.config import parse_config
from selflab.controller.ledger import Ledger, LedgerError
from selflab.controller.projection import CampaignState
from selflab.controller.study import Study, StudyError
from selflab.planners.baselines import SobolPlanner
from selflab.planners.space import FloatParameter, Objective, SearchSpace


def quadratic(params: dict[str, Any]) -> dict[str, float]:
    return {"y": 1 - (params["x"] - 0.3) ** 2 - (params["z"] - 0.6) ** 2}


def test_ask_tell_from_python_objects_alone(ledger_url: str) -> None:
    space = SearchSpace(parameters=[FloatParameter(name="x", low=0, high=1), FloatParameter(name="z", low=0, high=1)])
    with Study.create("notebook", space, [Objective(name="y", direction="maximize")], ledger=ledger_url,
                      planner=SobolPlanner()) as study:
        for _ in range(6):
            (trial,) = study.ask()
            assert trial.status == "proposed" and trial.reason["strategy"] == "sobol"
            done = study.tell(trial.trial_id, quadratic(trial.params))
            assert done.status == "completed"
        batch = study.ask(3)
        assert [t.trial_id for t in batch] == [7, 8, 9]
        assert len(study.pending()) == 3
        study.fail(7, "the vial cracked")
        study.abandon(8, "out of reagent")
        study.tell(9, {"y": np.float32(0.25)})
        study.note("switched to the new batch of reagent", by="ada")
        best = study.recommend()
        assert best is not None
        observations = study.observations()
        assert len(observations) == 7
        assert best.params == max(observations, key=lambda o: o.outcomes["y"]).params
        assert study.pending() == []
    ledger = Ledger(ledger_url, create=False)
    state = CampaignState.replay("notebook", ledger.events("notebook"))
    ledger.close()
    assert state.counts()["completed"] == 7 and state.counts()["failed"] == 1 and state.counts()["abandoned"] == 1
    assert state.experiments[7].error == "error: the vial cracked"
    assert state.notes[0][1:] == ("ada", "switched to the new batch of reagent")
    assert state.anomalies == []


def test_attach_records_an_experiment_a_person_chose_and_ran(sqlite_url: str) -> None:
    cfg = {**quadratic_config(), "ledger": sqlite_url}
    with Study.open(cfg) as study:
        (trial,) = study.ask()
        attached = study.attach({"x": 0.3, "z": 0.6}, {"y": Decimal("1.0")}, by="ada", message="the textbook optimum")
        assert attached.trial_id == trial.trial_id + 1
        assert attached.status == "completed" and attached.reason["strategy"] == "attached"
        assert study.recommend().params == {"x": 0.3, "z": 0.6}  # type: ignore[union-attr]
        (after,) = study.ask()
        assert after.trial_id == attached.trial_id + 1
        assert {"x": 0.3, "z": 0.6} in [o.params for o in study.observations()]


def test_bad_actions_are_refused_in_one_line_and_write_nothing(sqlite_url: str) -> None:
    cfg = {**quadratic_config(), "ledger": sqlite_url}
    with Study.open(cfg) as study:
        (trial,) = study.ask()
        study.tell(trial.trial_id, quadratic(trial.params))
        before = len(study.ledger.events("quad"))
        cases = [
            (lambda: study.tell(99, {"y": 1.0}), "has no trial 99; trials are 1..1"),
            (lambda: study.tell(trial.trial_id, {"y": 0.5}), "trial 1 is already completed"),
            (lambda: study.fail(trial.trial_id, "late"), "already completed"),
            (lambda: study.attach({"x": 2.0, "z": 0.5}, {"y": 1.0}), "x=2 is outside [0, 1]"),
            (lambda: study.attach({"x": 0.5, "z": 0.5}, {"y": math.nan}), "not finite"),
            (lambda: study.attach({"x": 0.5, "z": 0.5}, {"y": "high"}), "'high', not a number"),
            (lambda: study.attach({"x": 0.5, "z": 0.5}, {"w": 1.0}), "did not report y"),
            (lambda: study.note("  "), "needs some text"),
            (lambda: study.ask(0), "at least one trial"),
        ]
        for action, message in cases:
            with pytest.raises(StudyError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[").replace(".", r"\.")) as info:
                action()
            assert "\n" not in str(info.value)
        assert len(study.ledger.events("quad")) == before, "a refused action wrote something"


def test_a_study_holds_the_campaign_lease_and_resumes_with_open_trials(sqlite_url: str) -> None:
    cfg = {**quadratic_config(), "ledger": sqlite_url}
    study = Study.open(cfg)
    (trial,) = study.ask()
    with pytest.raises(LedgerError, match="already being run by pid"):
        Study.open(cfg, resume=True)
    with pytest.raises(LedgerError, match="already being run by pid"):
        asyncio.run(Campaign(parse_config(cfg), Ledger(sqlite_url), resume=True).run())
    study.close()
    with pytest.raises(StudyError, match="resume=True"):
        Study.open(cfg)
    changed = {**cfg, "objectives": [{"name": "y", "direction": "minimize"}]}
    with pytest.raises(StudyError, match="objectives differ"):
        Study.open(changed, resume=True)
    with Study.open(cfg, resume=True) as again:
        assert len(again.pending()) == 1 and [t.trial_id for t in again.trials()] == [trial.trial_id]
        again.tell(trial.trial_id, quadratic(trial.params))  # the person finished it while the notebook was closed
        assert again.trials()[0].status == "completed"


@pytest.mark.parametrize("planner", ["sobol", "bo"])
def test_ask_tell_and_selflab_run_give_the_same_campaign(tmp_path: Path, planner: str) -> None:
    """The same simulator, seed and planner, driven once by the campaign loop
    and once by hand through ask/tell, give the same parameters and outcomes."""
    cfg = yaml.safe_load((REPO / "lab_configs" / "branin_random.yaml").read_text())
    cfg["instruments"][0]["capacity"] = 1
    cfg["planner"] = {"kind": planner, "options": {"n_init": 4}} if planner == "bo" else {"kind": planner}
    cfg["stop"] = {"max_experiments": 8}
    config = parse_config({**cfg, "ledger": f"sqlite:///{tmp_path / 'loop.sqlite'}"})
    ledger = Ledger(config.ledger_url)
    asyncio.run(Campaign(config, ledger).run())
    looped = [(e.params, e.outcomes) for e in CampaignState.replay(config.name, ledger.events(config.name)).with_status("completed")]
    ledger.close()

    from selflab.simulators.benchmarks import BraninInstrument

    branin = BraninInstrument(duration_s=600)
    asyncio.run(branin.connect())
    by_hand = []
    with Study.open({**cfg, "ledger": f"sqlite:///{tmp_path / 'hand.sqlite'}"}) as study:
        for _ in range(8):
            (trial,) = study.ask()
            outcomes = asyncio.run(branin.run(trial.params))
            study.tell(trial.trial_id, outcomes)
            by_hand.append((trial.params, outcomes))
    assert len(looped) == 8
    assert by_hand == looped


def test_selflab_stop_never_signals_a_program_driving_a_study(tmp_path: Path) -> None:
    """``selflab stop`` aborts a ``selflab run``; a notebook or robot script
    holding a Study is not one, and a SIGUSR1 would kill it."""
    import subprocess
    import sys
    import time

    url = f"sqlite:///{tmp_path / 'study.sqlite'}"
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time\n"
        "from conftest import quadratic_config\n"
        "from selflab.controller.study import Study\n"
        f"study = Study.open({{**quadratic_config(), 'ledger': {url!r}}})\n"
        "study.ask()\nprint('open', flush=True)\ntime.sleep(60)\n")],
        cwd=REPO / "tests", stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "open", holder.stderr.read() if holder.stderr else ""
        stop = subprocess.run([str(Path(sys.executable).with_name("selflab")), "stop", "--ledger", url, "--campaign", "quad", "--wait", "2"],
                              capture_output=True, text=True, timeout=60)
        assert stop.returncode == 2, stop.stderr
        assert f"driven by a Python Study (pid {holder.pid}" in stop.stderr and "nothing was requested" in stop.stderr
        time.sleep(0.5)
        assert holder.poll() is None, "the Study's process was signalled"
    finally:
        holder.kill()
        holder.wait(timeout=30)
