"""Trust the model (issue 18), wired into running campaigns: the ledger's
``miscalibrated`` / ``calibration_restored`` events (once per change, never
again on a resume), ``selflab status`` and its ``model_health``, the failure
kinds the planner is told, the report's prequential calibration figure, and
``oversight.approval: flagged`` holding an extrapolating proposal. Real
botorch models (tiny budgets), real SQLite, a real Runner."""

from __future__ import annotations

import asyncio
import html
import json
import logging
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import quadratic_config
from console_fixtures import serve
from matplotlib.image import imread

from selflab.controller.cli import main
from selflab.controller.ledger import Ledger
from selflab.controller.oversight import ExtrapolationFlagger, default_flaggers, gate
from selflab.controller.report_data import config_of
from selflab.controller.report_model import prequential_figures
from selflab.controller.reports import load_state
from selflab.controller.runner import Runner
from selflab.controller.study import Study
from selflab.instruments.errors import InstrumentError, InstrumentTimeout, OutOfLimits
from selflab.planners.baselines import SobolPlanner
from selflab.planners.bo import BOPlanner
from selflab.planners.calibration import DEFAULT_BAND, ScoredObservation
from selflab.planners.protocol import Failure, counts
from selflab.planners.space import FloatParameter, Objective, SearchSpace

SPACE = SearchSpace(parameters=[FloatParameter(name="x", low=0, high=1), FloatParameter(name="z", low=0, high=1)])
Y = Objective(name="y", direction="maximize")
FAST = {"num_restarts": 2, "raw_samples": 32, "mc_samples": 16, "n_init": 4}
WINDOW = DEFAULT_BAND.window
FIRST_JUDGED = DEFAULT_BAND.min_scored or WINDOW


def f(params: Mapping[str, Any]) -> float:
    return math.sin(3 * float(params["x"])) + float(params["z"])


def kinds(url: str, campaign: str) -> list[str]:
    ledger = Ledger(url)
    try:
        return [str(e.kind) for e in ledger.events(campaign) if e.kind in ("miscalibrated", "calibration_restored")]
    finally:
        ledger.close()


def tell_batch(study: Study, n: int, sds_off: float) -> None:
    """Ask for ``n`` and tell results ``sds_off`` predictive sds away from what the model predicted (alternating sides)."""
    for i, trial in enumerate(study.ask(n)):
        p, noise = trial.reason["predicted"]["y"], trial.reason["noise_std"]["y"]
        study.tell(trial.trial_id, {"y": p["mean"] + (-1) ** i * sds_off * math.sqrt(p["std"] ** 2 + noise**2)})


def status_json(url: str, capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    capsys.readouterr()
    assert main(["status", "--ledger", url, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_the_ledger_records_each_verdict_change_once_and_status_and_report_show_it(
        sqlite_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="selflab")
    config = quadratic_config(name="trust", ledger=sqlite_url, planner={"kind": "bo", "options": FAST})
    with Study.open(config) as study:
        for trial in study.ask(4):  # the Sobol start: no prediction, nothing scored
            study.tell(trial.trial_id, {"y": f(trial.params)})
        for _ in range(2):  # results far outside every interval the model gave (16 >= the 10 the band judges from)
            tell_batch(study, 8, 8.0)
        scored = [o for o in study.observations() if isinstance(o, ScoredObservation)]
        assert len(scored) == 16 and all(abs(o.z("y") or 0.0) == pytest.approx(8.0) for o in scored)  # what rescale reads
        assert kinds(sqlite_url, "trust") == ["miscalibrated"]
        verdict = study.state.miscalibrated["y"]
        assert verdict["coverage90"] == 0.0 and verdict["window"] == WINDOW and verdict["n_scored"] == FIRST_JUDGED
        assert verdict["experiment_id"] == 4 + FIRST_JUDGED and verdict["z_spread"] == pytest.approx(8.0)
        assert verdict["overconfidence"] == pytest.approx(FIRST_JUDGED * 1.004, abs=0.01)  # ~1 nat a result outside its interval
    warnings = [r.getMessage() for r in caplog.records if "miscalibrated" in r.getMessage()]
    assert len(warnings) == 1 and "model of y miscalibrated at experiment 14" in warnings[0]

    # A resumed campaign (a fresh Study, nothing in memory) still judged miscalibrated: nothing new in the ledger.
    with Study.open(config, resume=True) as study:
        assert set(study.state.miscalibrated) == {"y"}
        tell_batch(study, 5, 8.0)
        assert kinds(sqlite_url, "trust") == ["miscalibrated"]
        data = status_json(sqlite_url, capsys)  # read while the study holds the lease
        health = data["model_health"]
        assert health["miscalibrated"] == ["y"] and health["outcomes"][0]["n_scored"] == 16 + 5
        assert health["outcomes"][0]["rolling"]["coverage90"] == 0.0 and health["outcomes"][0]["miscalibrated"] is True
        assert any("MISCALIBRATED" in line for line in health["lines"]) and "counts" in data and "best" in data
        capsys.readouterr()
        assert main(["status", "--ledger", sqlite_url]) == 0
        assert "model health (miscalibrated: y)" in capsys.readouterr().out
        with serve(sqlite_url) as server:  # the console's campaign page shows the same lines
            page = httpx.get(server.url.rstrip("/") + "/c/trust", timeout=30).text
        assert 'id="model-health"' in page and "miscalibrated: y" in page
        assert all(html.escape(line) in page for line in health["lines"])

        for n in (8, 8, 1):  # honest results (each at its predicted mean): back in the band at the 17th, when the last 20 hold 3 wild ones
            tell_batch(study, n, 0.0)
        assert kinds(sqlite_url, "trust") == ["miscalibrated", "calibration_restored"]
        assert study.state.miscalibrated == {}
    restored = [r.getMessage() for r in caplog.records if "calibrated again" in r.getMessage()]
    assert len(restored) == 1 and "held 85% of the last 20" in restored[0]  # 17 of 20 inside, 3 nats: first time back in the band
    health = status_json(sqlite_url, capsys)["model_health"]
    assert health["miscalibrated"] == [] and not any("MISCALIBRATED" in line for line in health["lines"])
    json.dumps(health, allow_nan=False)

    capsys.readouterr()
    assert main(["report", "--ledger", sqlite_url, "--out", str(tmp_path / "report")]) == 0
    figure = tmp_path / "report" / "prequential_y.png"
    assert str(figure) in capsys.readouterr().out.split()
    pixels = imread(figure)
    assert pixels.shape[1] > 1000 and pixels.std() > 0.05  # a wide three-panel figure, not a blank page


def test_a_planner_without_predictions_gets_a_note_not_an_empty_figure(sqlite_url: str, tmp_path: Path) -> None:
    with Study.open(quadratic_config(name="sobol", ledger=sqlite_url, planner={"kind": "sobol"})) as study:
        for trial in study.ask(5):
            study.tell(trial.trial_id, {"y": f(trial.params)})
        assert not any(isinstance(o, ScoredObservation) for o in study.observations())
    ledger = Ledger(sqlite_url)
    try:
        state = load_state(ledger, "sobol")
    finally:
        ledger.close()
    notes: list[str] = []
    assert prequential_figures(state, config_of(state), tmp_path, notes.append) == []
    assert notes == ["prequential calibration of y skipped: no result was proposed with a prediction of it "
                     "(the sobol planner records none)"]
    assert not list(tmp_path.glob("prequential_*.png"))


class Clogged(InstrumentError):
    kind = "clogged"


class Flaky:
    """Times out at low x (the instrument's fault), clogs at high x (the chemistry's), refuses very high z."""

    async def connect(self) -> None: ...
    async def close(self) -> None: ...

    async def run(self, params: Mapping[str, Any]) -> dict[str, float]:
        x, z = float(params["x"]), float(params["z"])
        if x < 0.3:
            raise InstrumentTimeout("no answer within 5 s")
        if x > 0.7:
            raise Clogged("the line clogged")
        if z > 0.9:
            raise OutOfLimits("z above the pump's range")
        return {"y": f(params)}


def test_only_failures_that_say_something_about_the_chemistry_reach_the_classifier(sqlite_url: str) -> None:
    study = Study.create("flaky", SPACE, [Y], ledger=sqlite_url, planner=SobolPlanner(), clock="simulated")
    try:
        runner = Runner(study, {"flaky": Flaky()}, settings={"flaky": {"retries": 0, "max_consecutive_failures": 100}},
                        stop={"max_experiments": 6})
        asyncio.run(asyncio.wait_for(runner.run(), 60))
        (trial,) = study.ask()
        study.fail(trial.trial_id, "the film did not form")  # a person's failure: kind "error"
        from selflab.controller.events import Proposed
        from selflab.controller.ledger import NewEvent

        vetoed = study.state.next_experiment_id
        study.record([NewEvent(campaign="flaky", kind="proposed", experiment_id=vetoed, payload=Proposed(
            params={"x": 0.5, "z": 0.5}, awaiting_approval=True))])
        study.veto(vetoed, "not today", by="ada")  # a person's refusal: avoided, but says nothing about the chemistry
        failed = study.context().failed
        assert all(isinstance(f, Failure) for f in failed)
        by_kind = {k: [f for f in failed if f.kind == k] for k in {f.kind for f in failed}}
        assert {"timeout", "clogged", "error"} <= set(by_kind), by_kind
        assert all(float(f.params["x"]) < 0.3 for f in by_kind["timeout"]) and all(float(f.params["x"]) > 0.7 for f in by_kind["clogged"])
        assert [counts(f) for f in by_kind["timeout"]] == [False] * len(by_kind["timeout"])
        assert [counts(f) for f in by_kind["vetoed"]] == [False]
        assert all(counts(f) for k in set(by_kind) - {"timeout", "vetoed"} for f in by_kind[k])
        ledger_kinds = {e.error_kind for e in study.state.with_status("failed")}
        assert ledger_kinds == set(by_kind) - {"vetoed"}  # the projection carries the failed event's kind

        # The bo planner with failures: learn is told them; its reason says which counted.
        planner = BOPlanner(failures="learn", **FAST)
        (proposal,) = planner.propose(SPACE, [Y], study.observations(), study.pending(), 1, context=study.context())
        feasibility = proposal.reason["feasibility"]
        assert feasibility["failures_ignored"] == len(by_kind["timeout"]) + 1
        assert feasibility["failures_counted"] == len(failed) - len(by_kind["timeout"]) - 1
        assert 0 < feasibility["p_success"] <= 1
    finally:
        study.close()


class FarPool:
    """An instrument that can only measure points far from where the campaign has been."""

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    def candidates(self) -> list[dict[str, float]]:
        return [{"x": 0.9, "z": 0.5}, {"x": 0.88, "z": 0.45}]

    async def connect(self) -> None: ...
    async def close(self) -> None: ...

    async def run(self, params: Mapping[str, Any]) -> dict[str, float]:
        self.sent.append(dict(params))
        return {"y": f(params)}


def test_flagged_approval_holds_a_proposal_the_planner_marks_extrapolating(sqlite_url: str) -> None:
    planner = BOPlanner(pool_scale="linear", **FAST)
    study = Study.create("far", SPACE, [Y], ledger=sqlite_url, planner=planner)
    try:
        for i in range(8):  # every result in x < 0.5
            params = {"x": 0.05 + 0.05 * i, "z": (0.37 * i) % 1.0}
            study.attach(params, {"y": f(params)}, by="ada")
        (near,) = study.propose(1, candidates=[{"x": 0.25, "z": 0.5}])
        assert near.reason["extrapolation"]["extrapolating"] is False
        assert gate("flagged", default_flaggers(SPACE, study.state.config), near) == (False, [])

        pool = FarPool()
        runner = Runner(study, {"pool": pool}, oversight={"approval": "flagged"}, stop={"max_wall_time": 0.5})
        asyncio.run(asyncio.wait_for(runner.run(), 60))
        (held,) = study.state.awaiting()
        assert held.flags == ["extrapolating"] and held.reason["extrapolation"]["extrapolating"] is True
        assert float(held.params["x"]) > 0.85 and "x" in held.reason["extrapolation"]["outside_range"]
        assert pool.sent == []  # held for a person: never dispatched
        assert ExtrapolationFlagger().flags(held.params, held.reason) == ["extrapolating"]
    finally:
        study.close()


def test_status_says_which_failures_the_planner_learns_from(sqlite_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    """A bo campaign on the flaky instrument (failures: learn, the default):
    ``selflab status`` counts the failures that say something about the
    parameters and those that do not, by kind, and gives the latest
    proposal's probability of success."""
    study = Study.create("clog", SPACE, [Y], ledger=sqlite_url, planner=BOPlanner(**FAST), clock="simulated")
    try:
        runner = Runner(study, {"flaky": Flaky()}, settings={"flaky": {"retries": 0, "max_consecutive_failures": 100}},
                        stop={"max_experiments": 8})
        asyncio.run(asyncio.wait_for(runner.run(), 120))
        failed = study.state.with_status("failed")
        by_kind = {k: sum(e.error_kind == k for e in failed) for k in {e.error_kind for e in failed}}
        latest = max((e for e in study.state.experiments.values() if "feasibility" in e.reason), key=lambda e: e.experiment_id)
    finally:
        study.close()
    assert by_kind.get("clogged") and by_kind.get("timeout"), by_kind
    data = status_json(sqlite_url, capsys)["failures"]
    ignored = {"timeout": by_kind["timeout"]}
    assert data["counted"] == {k: n for k, n in by_kind.items() if k not in ignored} and data["ignored"] == ignored
    assert data["mode"] == "learn" and data["experiment_id"] == latest.experiment_id
    assert data["p_success"] == latest.reason["feasibility"]["p_success"] and 0 < data["p_success"] <= 1
    assert main(["status", "--ledger", sqlite_url]) == 0
    [line] = [line for line in capsys.readouterr().out.splitlines() if line.startswith("failures   ")]
    counted = sum(data["counted"].values())
    assert line.startswith(f"failures   {counted} that say something about the parameters (") and f"clogged {by_kind['clogged']}" in line
    assert f"; {by_kind['timeout']} that do not (timeout {by_kind['timeout']}); " in line, line
    assert line.endswith(f"by the probability of success (experiment {latest.experiment_id}: {data['p_success']:.2f})"), line
    with serve(sqlite_url) as server:  # the console's campaign page shows the same line
        page = httpx.get(server.url.rstrip("/") + "/c/clog", timeout=30).text
    assert 'id="failures"' in page and html.escape(data["line"]) in page
