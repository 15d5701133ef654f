"""Tests of the multi-fidelity simulators and the shipped multi-fidelity configs."""

from __future__ import annotations

import asyncio
import math
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from selflab.controller.config import load_config
from selflab.controller.fleet import build_fleet
from selflab.instruments.errors import OutOfLimits
from selflab.instruments.protocol import Describable, Instrument, Stoppable, Timed
from selflab.simulators.benchmarks import BraninInstrument, Hartmann6Instrument
from selflab.simulators.multifidelity import (
    DEFAULT_COSTS,
    AugmentedBraninInstrument,
    AugmentedHartmannInstrument,
    reactor_fidelity_gap,
)
from selflab.simulators.reactor import REACTOR_LIMITS, Kinetics, PlugFlowReactor, best_yield, solve_cstr, solve_pfr

REPO = Path(__file__).resolve().parents[1]
HARTMANN_MINIMISER = dict(zip([f"x{i}" for i in range(1, 7)], (0.20169, 0.150011, 0.476874, 0.275332, 0.311652, 0.6573), strict=True))
BRANIN_MINIMISER = {"x1": math.pi, "x2": 2.275}
AUGMENTED = [AugmentedHartmannInstrument, AugmentedBraninInstrument]
RIDGE_POINT = {"residence_time": 13.8, "temperature": 87.1, "equivalents": 3.0, "concentration": 1.0}


def evaluate(instrument: Any, points: list[Mapping[str, float]]) -> list[float]:
    async def go() -> list[float]:
        await instrument.connect()
        try:
            return [(await instrument.run(p))["y"] for p in points]
        finally:
            await instrument.close()

    return asyncio.run(go())


def uniform_points(limits: Mapping[str, tuple[float, float]], n: int, seed: int) -> list[dict[str, float]]:
    rng = np.random.default_rng(seed)
    return [{k: float(lo + (hi - lo) * rng.random()) for k, (lo, hi) in limits.items()} for _ in range(n)]


# --------------------------------------------------------------------------- augmented benchmarks


@pytest.mark.parametrize("cls", AUGMENTED)
def test_augmented_instruments_satisfy_the_protocols(cls: type[AugmentedHartmannInstrument]) -> None:
    instrument = cls()
    for protocol in (Instrument, Stoppable, Describable, Timed):
        assert isinstance(instrument, protocol)
    assert instrument.describe() == {"y": "1"}
    assert (instrument.direction, instrument.primary_output, instrument.capacity) == ("minimize", "y", 1)
    assert (instrument.fidelity, instrument.cost, instrument.duration({})) == (1.0, 1.0, 3600.0)


def test_augmented_limits_and_optima() -> None:
    assert AugmentedHartmannInstrument().limits == {f"x{i}": (0.0, 1.0) for i in range(1, 7)}
    assert AugmentedBraninInstrument().limits == {"x1": (-5.0, 10.0), "x2": (0.0, 15.0)}
    assert AugmentedHartmannInstrument(fidelity=0.5).optimum == -3.32237  # the target-fidelity optimum
    assert AugmentedBraninInstrument(fidelity=0.5).optimum == 0.397887


def test_augmented_hartmann_known_values() -> None:
    at = {s: evaluate(AugmentedHartmannInstrument(fidelity=s), [HARTMANN_MINIMISER])[0] for s in (0.5, 0.75, 1.0)}
    assert at[1.0] == pytest.approx(-3.32237, abs=1e-5)
    assert at[0.75] == pytest.approx(-3.312134, abs=1e-5)
    assert at[0.5] == pytest.approx(-3.301901, abs=1e-5)


def test_augmented_branin_known_values() -> None:
    at = {s: evaluate(AugmentedBraninInstrument(fidelity=s), [BRANIN_MINIMISER])[0] for s in (0.5, 0.75, 1.0)}
    assert at[1.0] == pytest.approx(0.397887, abs=1e-5)
    assert at[0.75] == pytest.approx(0.458768, abs=1e-5)
    assert at[0.5] == pytest.approx(0.641410, abs=1e-5)


@pytest.mark.parametrize(
    "augmented, plain", [(AugmentedHartmannInstrument, Hartmann6Instrument), (AugmentedBraninInstrument, BraninInstrument)]
)
def test_target_fidelity_is_the_plain_function_and_lower_ones_differ(augmented: Any, plain: Any) -> None:
    points = uniform_points(plain().limits, 20, seed=4)
    target = evaluate(augmented(), points)
    assert target == pytest.approx(evaluate(plain(), points), abs=1e-12)
    low = evaluate(augmented(fidelity=0.5), points)
    assert all(abs(a - b) > 1e-9 for a, b in zip(low, target, strict=True))
    assert np.corrcoef(low, target)[0, 1] > 0.8  # biased but correlated


def test_costs_and_durations_follow_the_fidelity() -> None:
    for fidelity, cost in DEFAULT_COSTS.items():
        instrument = AugmentedHartmannInstrument(fidelity=fidelity)
        assert (instrument.fidelity, instrument.cost) == (fidelity, cost)
        assert instrument.duration(HARTMANN_MINIMISER) == pytest.approx(3600.0 * cost)
    custom = AugmentedBraninInstrument(fidelity=0.6, cost=0.2, duration_s=45)
    assert (custom.fidelity, custom.cost, custom.duration(BRANIN_MINIMISER)) == (0.6, 0.2, 45.0)
    assert AugmentedBraninInstrument(fidelity=1, cost=2).duration({}) == 7200.0


@pytest.mark.parametrize(
    "options, message",
    [
        ({"fidelity": 0}, "fidelity must be > 0"),
        ({"fidelity": 1.5}, "fidelity must be <= 1"),
        ({"fidelity": "high"}, "fidelity must be a number"),
        ({"fidelity": 0.6}, "cost has no default at fidelity 0.6"),
        ({"cost": -1}, "cost must be >= 0"),
        ({"duration_s": -1}, "duration_s must be >= 0"),
        ({"noise_std": -0.1}, "noise_std must be >= 0"),
    ],
)
def test_bad_options_raise_value_error(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        AugmentedHartmannInstrument(**options)


def test_noise_is_seeded() -> None:
    points = [HARTMANN_MINIMISER] * 5
    first = evaluate(AugmentedHartmannInstrument(fidelity=0.75, noise_std=0.1, seed=3), points)
    again = evaluate(AugmentedHartmannInstrument(fidelity=0.75, noise_std=0.1, seed=3), points)
    other = evaluate(AugmentedHartmannInstrument(fidelity=0.75, noise_std=0.1, seed=4), points)
    assert first == again != other
    assert len(set(first)) == 5
    assert np.mean(first) == pytest.approx(-3.312134, abs=0.2)


def test_out_of_limits_is_refused() -> None:
    with pytest.raises(OutOfLimits, match="x1=11"):
        evaluate(AugmentedBraninInstrument(fidelity=0.5), [{"x1": 11.0, "x2": 1.0}])


def test_building_does_not_import_botorch_or_scipy_integrate() -> None:
    code = (
        "import sys\n"
        "from selflab.simulators.multifidelity import AugmentedBraninInstrument, AugmentedHartmannInstrument\n"
        "from selflab.simulators.reactor import PlugFlowReactor\n"
        "AugmentedHartmannInstrument(fidelity=0.5); AugmentedBraninInstrument(); PlugFlowReactor(model='cstr')\n"
        "heavy = [m for m in ('botorch', 'torch', 'scipy.integrate', 'scipy.optimize') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


# --------------------------------------------------------------------------- reactor: lumped model


def test_cstr_satisfies_its_steady_state_balances() -> None:
    """Independent check: in - out + rate * tau = 0 for every species."""
    kin = Kinetics()
    for tau, temp, eq, conc in [(13.8, 87.1, 3.0, 1.0), (0.5, 150.0, 5.0, 2.0), (30.0, 30.0, 1.0, 0.1), (5.0, 120.0, 1.5, 0.7)]:
        out = solve_cstr(tau, temp, eq, conc, kin)
        k1, k2, k3 = kin.rate_constants(temp)
        r1, r2, r3 = k1 * out.a * out.b, k2 * out.p * out.b, k3 * out.a * out.b
        t = tau * 60.0
        residuals = [
            conc - out.a - (r1 + r3) * t,
            conc * eq - out.b - (r1 + r2 + r3) * t,
            -out.p + (r1 - r2) * t,
            -out.s + r2 * t,
            -out.i + r3 * t,
        ]
        assert residuals == pytest.approx([0.0] * 5, abs=1e-10 * conc * eq)
        assert min(out.a, out.b, out.p, out.s, out.i) >= 0.0


def test_cstr_agrees_with_pfr_at_low_conversion_and_falls_short_at_the_optimum() -> None:
    short_cold = (0.5, 30.0, 1.0, 0.1)
    assert solve_cstr(*short_cold).p == pytest.approx(solve_pfr(*short_cold).p, rel=1e-3)
    assert solve_cstr(*RIDGE_POINT.values()).p == pytest.approx(0.7597, abs=1e-4)
    assert solve_pfr(*RIDGE_POINT.values()).p == pytest.approx(0.9155, abs=1e-4)


def test_lumped_model_is_cheaper_biased_and_correlated() -> None:
    gap = reactor_fidelity_gap(n=300, seed=1)
    assert gap.evaluation_ratio > 10  # machine-independent cost: solver evaluations
    assert gap.correlation > 0.9
    assert gap.mean_abs_error > 0.05 and gap.max_abs_error < 0.3
    assert gap.mean_error < -0.03 and gap.fraction_below > 0.6  # biased low
    assert reactor_fidelity_gap(n=300, seed=1).correlation == gap.correlation  # a fixed sample


def test_lumped_best_yield_stays_below_the_plug_flow_optimum() -> None:
    optimum = best_yield()
    assert optimum is not None
    yields = [solve_cstr(*p.values()).p / p["concentration"] for p in uniform_points(REACTOR_LIMITS, 500, seed=2)]
    assert max(yields) < 0.83 < optimum[0]


def test_reactor_model_option() -> None:
    robot, simulator = PlugFlowReactor(), PlugFlowReactor(model="cstr")
    assert (robot.model, robot.fidelity, robot.cost) == ("pfr", 1.0, 1.0)
    assert (simulator.model, simulator.fidelity, simulator.cost) == ("cstr", 0.5, 0.05)
    assert simulator.optimum == robot.optimum  # the target-fidelity optimum
    for tau in (0.5, 30.0):
        assert robot.duration({"residence_time": tau}) == pytest.approx(1200.0 + 60.0 * tau)
        assert simulator.duration({"residence_time": tau}) == 60.0
    assert PlugFlowReactor(model="cstr", overhead_s=5).duration({"residence_time": 30}) == 5.0
    with pytest.raises(ValueError, match="model must be 'pfr' or 'cstr'"):
        PlugFlowReactor(model="cfd")  # type: ignore[arg-type]
    cheap, dear = simulator.outlet(RIDGE_POINT), robot.outlet(RIDGE_POINT)
    assert cheap.evaluations * 10 < dear.evaluations


def test_cstr_instrument_runs_the_lumped_model() -> None:
    simulator = PlugFlowReactor(model="cstr", noise_std=0.01, seed=5)

    async def go() -> list[dict[str, float]]:
        await simulator.connect()
        return [await simulator.run(RIDGE_POINT) for _ in range(2)]

    first, second = asyncio.run(go())
    assert first["yield"] == pytest.approx(0.7597, abs=0.05)
    assert first != second  # noisy
    exact = PlugFlowReactor(model="cstr")
    asyncio.run(exact.connect())
    assert asyncio.run(exact.run(RIDGE_POINT))["yield"] == pytest.approx(solve_cstr(*RIDGE_POINT.values()).p, rel=1e-12)


# --------------------------------------------------------------------------- shipped configs


@pytest.mark.parametrize(
    "name, expected",
    [
        ("reactor_multifidelity.yaml", {"simulator": (0.5, 0.05, 4), "robot": (1.0, 1.0, 1)}),
        ("hartmann_multifidelity.yaml", {"coarse": (0.5, 0.1, 4), "medium": (0.75, 0.3, 2), "full": (1.0, 1.0, 1)}),
    ],
)
def test_shipped_config_builds_with_its_fidelities_and_costs(name: str, expected: dict[str, tuple[float, float, int]], tmp_path: Path) -> None:
    config = load_config(REPO / "lab_configs" / name, ledger=f"sqlite:///{tmp_path / 'ledger.sqlite'}")
    stations = build_fleet(config)
    assert {s.name: (s.fidelity, s.cost, s.capacity) for s in stations} == expected
    for station in stations:  # the driver itself serves the station's fidelity
        assert station.driver.fidelity == station.fidelity
    durations = {s.fidelity: s.duration({n: 1.0 for n in config.space.names}) for s in stations}
    assert durations[min(durations)] < durations[1.0]  # the low fidelity is quicker
    assert config.target_fidelity == 1.0 and config.stop.max_cost is not None

    # tests/test_lab_configs.py runs every shipped config to its budget.
