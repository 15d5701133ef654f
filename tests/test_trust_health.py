"""Trust the model (issue 18): model health from completed experiments and
their reasons (controller.model_health), and the reactor's hidden failure region."""

from __future__ import annotations

import asyncio
import math
from typing import Any

import numpy as np
import pytest

from selflab.controller.model_health import CalibrationVerdict, assess, calibration_events, scores, verdict_line
from selflab.controller.projection import ExperimentView
from selflab.planners.calibration import DEFAULT_BAND, SEQUENTIAL_BAND, CalibrationBand
from selflab.simulators.problems import get_problem, problem_names
from selflab.simulators.reactor import PlugFlowReactor, ReactorClogged, solubility


def result(eid: int, y: float, mean: float | None, std: float = 1.0, **extra: Any) -> ExperimentView:
    reason: dict[str, Any] = {"strategy": "bo", **extra}
    if mean is not None:
        reason.update(predicted={"y": {"mean": mean, "std": std}}, noise_std={"y": 0.0})
    return ExperimentView(experiment_id=eid, status="completed", params={"x": 0.0}, fidelity=1.0, reason=reason, outcomes={"y": y})


def test_results_are_scored_against_the_model_that_proposed_them() -> None:
    results = [result(1, 3.0, None), result(2, 3.0, 1.0, std=0.5), result(3, 0.0, 1.0, std=2.0)]
    assert [(s.experiment_id, s.z) for s in scores(results, "y")] == [(2, 4.0), (3, -0.5)]  # the Sobol point has no prediction
    noisy = ExperimentView(experiment_id=4, status="completed", params={}, fidelity=1.0, outcomes={"y": 2.0, "y_sd": 0.4},
                           reason={"predicted": {"y": {"mean": 1.0, "std": 0.3}}, "noise_std": {"y": 5.0}})
    assert scores([noisy], "y")[0].z == pytest.approx(2.0)  # its own reported noise, not the model's guess


def test_the_verdict_is_recorded_when_it_changes_with_the_numbers() -> None:
    """The window rule (``CalibrationBand()``), given explicitly."""
    band = CalibrationBand()
    rng = np.random.default_rng(1)
    wild = [result(i, 3.0 * float(z), 0.0) for i, z in enumerate(rng.standard_normal(band.window), start=1)]
    assert calibration_events(wild[:-1], ["y"], band=band) == []  # too few to judge
    ((kind, verdict),) = calibration_events(wild, ["y"], band=band)
    assert kind == "miscalibrated" and isinstance(verdict, CalibrationVerdict)
    assert verdict.experiment_id == band.window and verdict.coverage90 < band.coverage_low and verdict.window == band.window
    assert verdict.band == band and verdict.z_spread > 1.5
    assert calibration_events(wild, ["y"], flagged={"y"}, band=band) == []  # already marked: nothing new
    calm = wild + [result(100 + i, float(z), 0.0) for i, z in enumerate(0.8 * rng.standard_normal(band.window))]
    ((kind, verdict),) = calibration_events(calm, ["y"], flagged={"y"}, band=band)
    assert kind == "calibration_restored" and verdict.coverage90 >= band.coverage_low and verdict.experiment_id == 100 + band.window - 1
    assert calibration_events(calm, ["y"], band=band) == []


def test_by_default_the_sequential_band_judges_from_ten_scores_and_restores_after_a_quiet_window() -> None:
    assert DEFAULT_BAND == SEQUENTIAL_BAND and DEFAULT_BAND.min_scored == 10 and DEFAULT_BAND.window == 20
    wild = [result(i, 3.0 * (-1) ** i, 0.0) for i in range(1, 11)]  # ten results 3 sd off: 10 nats of evidence
    assert calibration_events(wild[:-1], ["y"]) == []  # nine: too few to judge
    ((kind, verdict),) = calibration_events(wild, ["y"])
    assert kind == "miscalibrated" and verdict.experiment_id == 10 and verdict.n_scored == 10 and verdict.window == 20
    assert verdict.overconfidence is not None and verdict.overconfidence > DEFAULT_BAND.evidence_high and verdict.band == DEFAULT_BAND
    line = verdict_line(kind, verdict.model_dump(mode="json"))
    assert "at experiment 10" in line and "of the last 10 results" in line and "evidence 10.0 nats" in line and "4 nats in the last 20" in line
    calm = wild + [result(100 + i, 0.3 * (-1) ** i, 0.0) for i in range(20)]  # in the bulk: no evidence of overconfidence
    restored = next(calm[n - 1].experiment_id for n in range(11, len(calm) + 1)
                    if [k for k, _ in calibration_events(calm[:n], ["y"], flagged={"y"})] == ["calibration_restored"])
    # Back in the band once the last 20 hold at most three of the wild ones (3 nats), i.e. after 17 calm results:
    assert restored == 100 + 16


def test_status_lines_show_the_figures_the_verdict_loo_and_extrapolation() -> None:
    loo = {"y": {"n": 12, "z_mean": 0.1, "z_spread": 0.9, "coverage90": 0.92, "r2": 0.8, "rank_correlation": 0.85}}
    flags = [{"extrapolating": i % 3 == 0} for i in range(18)]
    results = [result(i + 1, 4.0 * (-1) ** i, 0.0, extrapolation=flags[i], loo=loo if i == 9 else None) for i in range(18)]
    health = assess(results, ["y"])
    assert health.miscalibrated == ["y"] and health.outcomes[0].loo is not None and health.outcomes[0].loo.r2 == 0.8
    assert health.outcomes[0].loo_experiment_id == 10 and health.proposals_checked == 18 and health.proposals_flagged == 6  # (all 18: fewer than the window)
    text = "\n".join(health.lines())
    assert "MISCALIBRATED" in text and "spread 4.00" in text and "R2 0.80" in text and "6 of the last 18" in text
    assert assess([result(1, 0.0, None)], ["y"]).lines() == []  # nothing scored: nothing to say


def test_reactor_clogs_only_when_asked_above_the_solubility() -> None:
    cold_rich = {"residence_time": 10.0, "temperature": 40.0, "equivalents": 2.0, "concentration": 1.5}
    hot_rich = {**cold_rich, "temperature": 95.0}
    assert solubility(40.0) == pytest.approx(0.25 * math.sqrt(2)) and solubility(40.0) < 1.5 < solubility(95.0)

    async def run(reactor: PlugFlowReactor, params: dict[str, float]) -> dict[str, float]:
        await reactor.connect()
        try:
            return await reactor.run(params)
        finally:
            await reactor.close()

    clogging = PlugFlowReactor(clogging=True)
    with pytest.raises(ReactorClogged, match="solubility") as info:
        asyncio.run(run(clogging, cold_rich))
    assert info.value.kind == "clogged"
    assert 0 < asyncio.run(run(clogging, hot_rich))["yield"] <= 1
    assert 0 <= asyncio.run(run(PlugFlowReactor(), cold_rich))["yield"] <= 1  # off by default
    assert not PlugFlowReactor(clogging=True, model="cstr").clogs(40.0, 1.5)  # a computation never clogs
    problem = get_problem("reactor_clog")
    assert "reactor_clog" in problem_names() and problem.options == {"clogging": True}
    assert problem.optimum == pytest.approx(get_problem("reactor").optimum)
    with pytest.raises(ValueError, match="solubility_30c_mol_per_l"):
        PlugFlowReactor(solubility_30c_mol_per_l=0)
