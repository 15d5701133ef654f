"""The slow simulator that gives the Ray path real work: gas carburizing, a
1-D nonlinear diffusion PDE. Its physics, numerics and instrument manners
(no Ray here; tests/test_ray.py runs it as Ray tasks)."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest

from selflab.instruments.errors import InstrumentError
from selflab.instruments.testing import check_instrument
from selflab.simulators.carburizing import CarburizingFurnace, carbon_profile, case_depth
from selflab.simulators.problems import get_problem

GOOD = {"temperature": 925.0, "carbon_potential": 1.1, "boost_time": 2.0, "diffuse_time": 1.0}
COARSE = {"grid_points": 300, "time_steps": 1500}


def test_profiles_are_physical_and_converged() -> None:
    carbon = carbon_profile(925.0, [(2.0, 1.1)], **COARSE)
    assert carbon[0] < 1.1 and carbon[-1] == pytest.approx(0.2, abs=1e-6)  # below the potential; the core untouched
    assert np.all(np.diff(carbon) <= 1e-12) and carbon.min() >= 0.2 - 1e-9  # falls with depth, never below the core
    fine = carbon_profile(925.0, [(2.0, 1.1)], grid_points=1200, time_steps=6000)
    assert case_depth(carbon, 4.0) == pytest.approx(case_depth(fine, 4.0), abs=5e-3)  # mm
    # Harris's rule for the total case at 927 degC, 0.025 in x sqrt(hours), gives 0.90 mm for 2 h; the case to 0.4 wt % is shallower
    assert 0.4 < case_depth(fine, 4.0) < 0.9
    hotter = carbon_profile(950.0, [(2.0, 1.1)], **COARSE)
    longer = carbon_profile(925.0, [(3.0, 1.1)], **COARSE)
    assert case_depth(hotter, 4.0) > case_depth(carbon, 4.0) and case_depth(longer, 4.0) > case_depth(carbon, 4.0)
    diffused = carbon_profile(925.0, [(2.0, 1.1), (1.0, 0.8)], **COARSE)
    assert diffused[0] < carbon[0] and case_depth(diffused, 4.0) > case_depth(carbon, 4.0)  # soaks in, the surface leaner


def test_no_surface_flux_conserves_carbon() -> None:
    start = carbon_profile(925.0, [(1.0, 1.2)], **COARSE)
    assert start.sum() > 0.2 * len(start)
    sealed = carbon_profile(925.0, [(1.0, 1.2)], beta_m_per_s=1e-30, **COARSE)
    assert np.allclose(sealed, 0.2, atol=1e-9)  # nothing comes in without a surface flux


def test_case_depth_interpolates_between_nodes() -> None:
    assert case_depth(np.array([0.8, 0.6, 0.2, 0.2, 0.2]), 4.0) == pytest.approx(1.0 + 0.5)  # 0.4 halfway from node 1 to 2
    assert case_depth(np.array([0.3, 0.2]), 4.0) == 0.0
    assert case_depth(np.array([0.9, 0.8]), 4.0) == 4.0


def test_furnace_conforms_and_declares_its_cycle() -> None:
    report = check_instrument(lambda: CarburizingFurnace(**COARSE), GOOD)
    assert not report.failed and "cancellation (run after cancel)" in report.passed
    furnace = CarburizingFurnace()
    assert furnace.duration(GOOD) == 3 * 3600.0
    assert set(furnace.describe()) == {"case_depth", "surface_carbon", "cycle_time"}
    with pytest.raises(ValueError, match="grid_points must be an integer >= 20"):
        CarburizingFurnace(grid_points=5)


def test_stop_ends_a_run_at_its_next_step() -> None:
    async def scenario() -> float:
        furnace = CarburizingFurnace(grid_points=2000, time_steps=400_000)  # a minute or more of CPU
        await furnace.connect()
        run = asyncio.ensure_future(furnace.run(GOOD))
        await asyncio.sleep(0.2)
        started = time.monotonic()
        await furnace.stop()
        with pytest.raises(InstrumentError, match="aborted by stop"):
            await run
        return time.monotonic() - started

    assert asyncio.run(scenario()) < 5.0


def test_the_carburizing_problem_is_a_constrained_benchmark() -> None:
    problem = get_problem("carburizing")
    assert problem.driver == "carburizing" and problem.optimum is None and problem.direction == "minimize"
    assert [(c.outcome, c.op, c.value) for c in problem.constraints] == [("case_depth", ">=", 0.8), ("surface_carbon", "<=", 0.85)]
    assert [p.name for p in problem.parameters] == list(CarburizingFurnace().inputs)
