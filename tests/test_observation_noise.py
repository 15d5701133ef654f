"""Noise reported by an instrument (output ``NAME_sd``) reaches the planners, live and after a resume."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from conftest import quadratic_config

from selflab.controller.campaign import Campaign
from selflab.controller.config import parse_config
from selflab.controller.ledger import Ledger
from selflab.planners.protocol import Observation, PlanContext


def test_from_result_reads_sd_outputs_next_to_their_output() -> None:
    obs = Observation.from_result({"x": 1.0}, {"y": 0.5, "y_sd": 0.1, "orphan_sd": 3.0, "z": 2.0, "z_sd": float("nan")})
    assert obs.noise == {"y": 0.1}  # orphan_sd has no output 'orphan'; a NaN sd is no noise
    assert Observation.from_result({"x": 1.0}, {"y": 0.5}).noise is None
    assert Observation.from_result({"x": 1.0}, {"y": 0.5, "y_sd": -1.0}).noise is None


def test_campaign_passes_reported_noise_to_the_planner_and_keeps_it_on_resume(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'noise.sqlite'}"
    raw = quadratic_config(instruments=[{"name": "q", "driver": "labdrivers:Reporting", "options": {"sd": 0.07}}],
                           planner={"kind": "bo", "options": {"n_init": 3, "num_restarts": 2, "raw_samples": 32}},
                           stop={"max_experiments": 5}, ledger=url)
    ledger = Ledger(url)
    try:
        campaign = Campaign(parse_config(raw), ledger)
        asyncio.run(campaign.run())
        assert len(campaign.study.observations()) == 5
        assert all(o.noise == {"y": pytest.approx(0.07)} for o in campaign.study.observations())
        resumed = Campaign(parse_config({**raw, "stop": {"max_experiments": 6}}), ledger, resume=True)
        asyncio.run(resumed.run())
        assert len(resumed.study.observations()) == 6
        assert all(o.noise == {"y": pytest.approx(0.07)} for o in resumed.study.observations())
    finally:
        ledger.close()


def test_ax_gets_the_reported_noise_as_sem() -> None:
    pytest.importorskip("ax")
    from selflab.planners.ax_planner import _Codec
    from selflab.planners.space import FloatParameter, Objective, SearchSpace

    codec = _Codec(SearchSpace(parameters=[FloatParameter(name="x", low=0, high=1)]), [Objective(name="y")], PlanContext())
    assert codec.data({"y": 0.5}, {"y": 0.1}) == {"m0": (0.5, 0.1)}
    assert codec.data({"y": 0.5}) == {"m0": 0.5}
    from selflab.planners.ax_planner import AxPlanner

    observations = [Observation.from_result({"x": x}, {"y": (x - 0.3) ** 2, "y_sd": 0.01}) for x in (0.1, 0.5, 0.9)]
    [proposal] = AxPlanner(initial_points=2).propose(SearchSpace(parameters=[FloatParameter(name="x", low=0, high=1)]),
                                                     [Objective(name="y", direction="minimize")], observations, [], 1,
                                                     context=PlanContext(step=3))
    assert 0 <= proposal.params["x"] <= 1 and proposal.reason["strategy"] == "ax"
