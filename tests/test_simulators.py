"""Tests of the bundled simulators: protocol, known values, physics, noise, failures."""

from __future__ import annotations

import asyncio
import itertools
import math
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from selflab.instruments.errors import BadResponse, InstrumentDisconnected, OutOfLimits
from selflab.instruments.protocol import Describable, Instrument, Stoppable, Timed
from selflab.simulators import BraninInstrument, Hartmann6Instrument, PlugFlowReactor
from selflab.simulators.reactor import REACTOR_LIMITS, Kinetics, best_yield, solve_pfr
from selflab.simulators.simulated import Simulation

REPO = Path(__file__).resolve().parents[1]
RIDGE_POINT = {"residence_time": 13.8, "temperature": 87.1, "equivalents": 3.0, "concentration": 1.0}
BRANIN_MINIMISERS = [(-math.pi, 12.275), (math.pi, 2.275), (9.42478, 2.475)]
HARTMANN6_MINIMISER = (0.20169, 0.150011, 0.476874, 0.275332, 0.311652, 0.6573)

SimulatorClass = type[PlugFlowReactor] | type[BraninInstrument] | type[Hartmann6Instrument]
ALL_CLASSES: list[SimulatorClass] = [PlugFlowReactor, BraninInstrument, Hartmann6Instrument]


def connected(instrument: Any) -> Any:
    asyncio.run(instrument.connect())
    return instrument


def run_once(instrument: Any, params: Mapping[str, Any]) -> dict[str, float]:
    result: dict[str, float] = asyncio.run(instrument.run(params))
    return result


def run_many(instrument: Any, params_list: list[dict[str, float]]) -> list[dict[str, float]]:
    async def go() -> list[dict[str, float]]:
        return [await instrument.run(p) for p in params_list]

    return asyncio.run(go())


def midpoint(limits: Mapping[str, tuple[float, float]]) -> dict[str, float]:
    return {name: (low + high) / 2 for name, (low, high) in limits.items()}


def reactor_params(tau: float, temp: float, eq: float, conc: float) -> dict[str, float]:
    return {"residence_time": tau, "temperature": temp, "equivalents": eq, "concentration": conc}


def reference_pfr(tau_min: float, temp_c: float, eq: float, conc: float, kin: Kinetics) -> np.ndarray:
    """Direct integration of the five-species ODE (independent of the closed form)."""
    from scipy.integrate import solve_ivp

    k1, k2, k3 = kin.rate_constants(temp_c)

    def rates(_t: float, y: np.ndarray) -> list[float]:
        a, b, p, _s, _i = y
        r1, r2, r3 = k1 * a * b, k2 * p * b, k3 * a * b
        return [-r1 - r3, -r1 - r2 - r3, r1 - r2, r2, r3]

    sol = solve_ivp(rates, (0.0, tau_min * 60.0), [conc, conc * eq, 0.0, 0.0, 0.0],
                    method="LSODA", rtol=1e-11, atol=1e-14)
    assert sol.success
    return np.asarray(sol.y[:, -1])


# --------------------------------------------------------------------------- protocol


@pytest.mark.parametrize("cls", ALL_CLASSES)
def test_satisfies_instrument_protocols(cls: SimulatorClass) -> None:
    instrument = cls()
    assert isinstance(instrument, Instrument)
    assert isinstance(instrument, Stoppable)
    assert isinstance(instrument, Describable)
    assert isinstance(instrument, Timed)
    assert instrument.fidelity == 1.0 and instrument.cost == 1.0 and instrument.capacity == 1
    assert instrument.primary_output in instrument.describe()
    assert instrument.direction in ("maximize", "minimize")
    for low, high in instrument.limits.values():
        assert isinstance(low, float) and isinstance(high, float) and low < high


@pytest.mark.parametrize("cls", ALL_CLASSES)
def test_limits_are_per_instance(cls: SimulatorClass) -> None:
    first, second = cls(), cls()
    name = next(iter(first.limits))
    first.limits[name] = (0.0, 0.0)
    assert second.limits[name] != (0.0, 0.0)
    assert cls().limits[name] != (0.0, 0.0)


def test_declared_interfaces() -> None:
    assert PlugFlowReactor().limits == {
        "residence_time": (0.5, 30.0),
        "temperature": (30.0, 150.0),
        "equivalents": (1.0, 5.0),
        "concentration": (0.1, 2.0),
    }
    assert PlugFlowReactor().describe() == {"yield": "1", "space_time_yield": "kg/m^3/h"}
    assert PlugFlowReactor().direction == "maximize"
    assert BraninInstrument().limits == {"x1": (-5.0, 10.0), "x2": (0.0, 15.0)}
    assert Hartmann6Instrument().limits == {f"x{i}": (0.0, 1.0) for i in range(1, 7)}
    for cls in (BraninInstrument, Hartmann6Instrument):
        assert cls().describe() == {"y": "1"}
        assert cls().direction == "minimize"
        assert cls().primary_output == "y"


def test_importing_simulators_does_not_import_botorch_or_scipy_integrate() -> None:
    code = (
        "import sys, selflab.simulators\n"
        "selflab.simulators.BraninInstrument(); selflab.simulators.Hartmann6Instrument(); selflab.simulators.PlugFlowReactor()\n"
        "heavy = [m for m in ('botorch', 'torch', 'scipy.integrate') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


# --------------------------------------------------------------------------- known values


@pytest.mark.parametrize("x1, x2", BRANIN_MINIMISERS)
def test_branin_minimisers(x1: float, x2: float) -> None:
    branin = connected(BraninInstrument())
    assert run_once(branin, {"x1": x1, "x2": x2})["y"] == pytest.approx(0.397887, abs=1e-5)


def test_branin_away_from_minimum_is_worse() -> None:
    branin = connected(BraninInstrument())
    # At (0, 0): (x2 - b x1^2 + c x1 - 6)^2 + 10 (1 - 1/(8 pi)) cos(x1) + 10
    expected = 36 + 10 * (1 - 1 / (8 * math.pi)) + 10
    assert run_once(branin, {"x1": 0.0, "x2": 0.0})["y"] == pytest.approx(expected, rel=1e-9)


def test_hartmann6_minimiser() -> None:
    hartmann = connected(Hartmann6Instrument())
    params = dict(zip(hartmann.limits, HARTMANN6_MINIMISER, strict=True))
    assert run_once(hartmann, params)["y"] == pytest.approx(-3.32237, abs=1e-4)
    assert run_once(hartmann, midpoint(hartmann.limits))["y"] > -3.0


def test_benchmark_optimum_attributes_match_botorch() -> None:
    from botorch.test_functions.synthetic import Branin, Hartmann

    assert BraninInstrument().optimum == pytest.approx(Branin().optimal_value, abs=1e-6)
    assert Hartmann6Instrument().optimum == pytest.approx(Hartmann(dim=6).optimal_value, abs=1e-5)
    assert list(BraninInstrument().limits.values()) == Branin()._bounds
    assert list(Hartmann6Instrument().limits.values()) == Hartmann(dim=6)._bounds


# --------------------------------------------------------------------------- reactor physics


@pytest.mark.parametrize(
    "tau, temp, eq, conc",
    [(13.8, 87.1, 3.0, 1.0), (0.5, 30.0, 1.0, 0.1), (30.0, 150.0, 5.0, 2.0),
     (30.0, 150.0, 1.0, 2.0), (30.0, 30.0, 1.0, 0.1), (5.0, 120.0, 1.3, 0.7), (20.0, 60.0, 4.0, 1.5)],
)
def test_reactor_matches_direct_ode_and_conserves_mass(tau: float, temp: float, eq: float, conc: float) -> None:
    kin = Kinetics()
    out = solve_pfr(tau, temp, eq, conc, kin)
    a, b, p, s, i = reference_pfr(tau, temp, eq, conc, kin)
    for got, want in [(out.a, a), (out.b, b), (out.p, p), (out.s, s), (out.i, i)]:
        assert got == pytest.approx(want, abs=1e-7 * conc)
    # Mass balance on A in both solutions: A + P + S + I = A0.
    assert out.a + out.p + out.s + out.i == pytest.approx(conc, rel=1e-12)
    assert a + p + s + i == pytest.approx(conc, rel=1e-9)
    # B consumption: one B per A converted (to P or I), one more per S.
    assert conc * eq - out.b == pytest.approx(out.p + 2 * out.s + out.i, rel=1e-9, abs=1e-14)
    assert conc * eq - b == pytest.approx(p + 2 * s + i, rel=1e-8, abs=1e-12)
    assert min(out.a, out.b, out.p, out.s, out.i) >= 0.0


def test_reactor_without_competing_pathway() -> None:
    kin = Kinetics(a3=0.0)
    out = solve_pfr(10.0, 80.0, 2.0, 1.0, kin)
    a, b, p, s, i = reference_pfr(10.0, 80.0, 2.0, 1.0, kin)
    assert out.i == 0.0 and i == 0.0
    assert out.p == pytest.approx(p, abs=1e-8)
    assert out.a + out.p + out.s == pytest.approx(1.0, rel=1e-12)


@settings(max_examples=60, deadline=None)
@given(
    tau=st.floats(0.5, 30.0), temp=st.floats(30.0, 150.0),
    eq=st.floats(1.0, 5.0), conc=st.floats(0.1, 2.0),
)
def test_reactor_outputs_are_physical(tau: float, temp: float, eq: float, conc: float) -> None:
    reactor = connected(PlugFlowReactor())
    reading = run_once(reactor, reactor_params(tau, temp, eq, conc))
    assert 0.0 <= reading["yield"] <= 1.0
    assert reading["yield"] <= reactor.optimum + 1e-9
    assert math.isfinite(reading["space_time_yield"]) and reading["space_time_yield"] >= 0.0
    assert reading["space_time_yield"] == pytest.approx(reading["yield"] * conc * 200.0 / (tau / 60.0), rel=1e-12)


def test_higher_temperature_gives_higher_conversion_at_short_residence_time() -> None:
    conversions = [1 - solve_pfr(1.0, temp, 2.0, 1.0).a for temp in (40.0, 70.0, 100.0, 130.0)]
    assert all(later > earlier + 0.02 for earlier, later in itertools.pairwise(conversions))
    yields = [solve_pfr(1.0, temp, 2.0, 1.0).p for temp in (40.0, 70.0, 100.0)]
    assert yields == sorted(yields)


def test_excessive_temperature_and_time_destroy_the_product() -> None:
    best = solve_pfr(*_args(RIDGE_POINT))
    hot = solve_pfr(30.0, 150.0, 3.0, 1.0)
    assert hot.p < 0.1 < best.p
    assert hot.s > 0.8  # the product went on to the side product S
    long_run = solve_pfr(30.0, 87.1, 5.0, 2.0)
    assert long_run.p / 2.0 < best.p - 0.1
    assert long_run.s / 2.0 > best.s + 0.1
    hotter = solve_pfr(13.8, 120.0, 3.0, 1.0)
    assert hotter.p < best.p - 0.2 and hotter.s > best.s


def test_cold_favours_the_competing_by_product() -> None:
    cold = solve_pfr(30.0, 30.0, 5.0, 2.0)
    best = solve_pfr(*_args(RIDGE_POINT))
    assert cold.i / 2.0 > 3 * best.i
    assert cold.p / 2.0 < best.p - 0.1


def test_interior_optimum_beats_every_corner() -> None:
    reactor = connected(PlugFlowReactor())
    interior = run_once(reactor, RIDGE_POINT)["yield"]
    corners = [reactor_params(*corner) for corner in itertools.product(*reactor.limits.values())]
    corner_yields = [r["yield"] for r in run_many(reactor, corners)]
    assert len(corner_yields) == 16
    assert interior > 0.9
    assert interior > max(corner_yields) + 0.25
    for name, (low, high) in reactor.limits.items():
        assert low < RIDGE_POINT[name] < high


def test_reactor_optimum_is_reached_and_not_exceeded() -> None:
    reactor = PlugFlowReactor()
    assert reactor.optimum == pytest.approx(0.9155, abs=2e-4)
    assert reactor.optimum_temperature == pytest.approx(87.1, abs=0.2)
    assert solve_pfr(*_args(RIDGE_POINT)).p == pytest.approx(reactor.optimum, abs=1e-5)
    rng = np.random.default_rng(123)
    lows = [lo for lo, _ in REACTOR_LIMITS.values()]
    highs = [hi for _, hi in REACTOR_LIMITS.values()]
    for tau, temp, eq, conc in rng.uniform(lows, highs, size=(300, 4)):
        assert solve_pfr(tau, temp, eq, conc).p / conc <= reactor.optimum + 1e-9  # type: ignore[operator]


def test_outlet_gives_the_noise_free_composition() -> None:
    reactor = PlugFlowReactor(noise_std=0.3, seed=1)  # outlet() needs no connection and has no noise
    out = reactor.outlet(RIDGE_POINT)
    assert out.p == pytest.approx(solve_pfr(*_args(RIDGE_POINT)).p, rel=1e-12)
    assert out.a + out.p + out.s + out.i == pytest.approx(1.0, rel=1e-12)
    with pytest.raises(OutOfLimits, match="temperature"):
        reactor.outlet({**RIDGE_POINT, "temperature": 200.0})


def test_best_yield_is_none_when_unreachable() -> None:
    # So slow that the peak cannot be reached in 30 min even at the richest corner.
    assert best_yield(Kinetics(a1=1e-3, a2=1e-5, a3=0.0)) is None
    assert PlugFlowReactor(a1_l_per_mol_s=1e-3, a2_l_per_mol_s=1e-5, a3_l_per_mol_s=0.0).optimum is None


def test_molar_mass_scales_space_time_yield() -> None:
    light = run_once(connected(PlugFlowReactor()), RIDGE_POINT)
    heavy = run_once(connected(PlugFlowReactor(molar_mass_p_g_per_mol=400.0)), RIDGE_POINT)
    assert heavy["yield"] == light["yield"]
    assert heavy["space_time_yield"] == pytest.approx(2 * light["space_time_yield"], rel=1e-12)
    # 0.9155 mol/L * 200 g/mol over 13.8/60 h
    assert light["space_time_yield"] == pytest.approx(0.9155 * 200 / (13.8 / 60), rel=1e-3)


def _args(params: Mapping[str, float]) -> tuple[float, float, float, float]:
    """``solve_pfr`` arguments for reactor ``params``."""
    return (params["residence_time"], params["temperature"], params["equivalents"], params["concentration"])


# --------------------------------------------------------------------------- noise


def _sample_params(cls: SimulatorClass, n: int, seed: int) -> list[dict[str, float]]:
    rng = np.random.default_rng(seed)
    limits = cls().limits
    return [{k: float(rng.uniform(lo, hi)) for k, (lo, hi) in limits.items()} for _ in range(n)]


@pytest.mark.parametrize("cls", ALL_CLASSES)
def test_noise_is_seeded_and_reproducible(cls: SimulatorClass) -> None:
    params = _sample_params(cls, 20, seed=5)
    first = run_many(connected(cls(noise_std=0.05, seed=11)), params)
    again = run_many(connected(cls(noise_std=0.05, seed=11)), params)
    other = run_many(connected(cls(noise_std=0.05, seed=12)), params)
    exact = run_many(connected(cls()), params)
    assert first == again
    assert first != other
    assert first != exact


@pytest.mark.parametrize("cls", ALL_CLASSES)
def test_zero_noise_is_deterministic(cls: SimulatorClass) -> None:
    params = _sample_params(cls, 5, seed=9)
    instrument = connected(cls(noise_std=0.0, seed=1))
    first = run_many(instrument, params)
    assert run_many(instrument, params) == first
    assert run_many(connected(cls(seed=2)), params) == first


def test_noise_has_the_requested_spread() -> None:
    branin = connected(BraninInstrument(noise_std=0.5, seed=3))
    exact = run_once(connected(BraninInstrument()), {"x1": 1.0, "x2": 4.0})["y"]
    readings = np.array([r["y"] for r in run_many(branin, [{"x1": 1.0, "x2": 4.0}] * 2000)])
    assert readings.mean() == pytest.approx(exact, abs=0.05)
    assert readings.std() == pytest.approx(0.5, rel=0.1)


def test_noisy_yield_is_clipped_to_unit_interval() -> None:
    reactor = connected(PlugFlowReactor(noise_std=2.0, seed=0))
    readings = run_many(reactor, [RIDGE_POINT] * 200)
    yields = [r["yield"] for r in readings]
    assert min(yields) == 0.0 and max(yields) == 1.0
    assert all(0.0 <= y <= 1.0 for y in yields)
    for r in readings:  # space-time yield follows the measured yield
        assert r["space_time_yield"] == pytest.approx(r["yield"] * 1.0 * 200 / (13.8 / 60), rel=1e-12, abs=1e-12)


# --------------------------------------------------------------------------- failures


@pytest.mark.parametrize("cls", ALL_CLASSES)
def test_out_of_limits_is_refused(cls: SimulatorClass) -> None:
    instrument = connected(cls())
    base = midpoint(instrument.limits)
    for name, (low, high) in instrument.limits.items():
        for bad in (low - 1e-6, high + 1e-6, math.inf, -math.inf):
            with pytest.raises(OutOfLimits, match=name):
                run_once(instrument, {**base, name: bad})
        # The limits are inclusive.
        assert run_once(instrument, {**base, name: low}).keys() == instrument.describe().keys()
        assert run_once(instrument, {**base, name: high}).keys() == instrument.describe().keys()


@pytest.mark.parametrize("cls", ALL_CLASSES)
def test_missing_or_non_numeric_input_is_a_bad_response(cls: SimulatorClass) -> None:
    instrument = connected(cls())
    base = midpoint(instrument.limits)
    name = list(instrument.limits)[-1]
    missing = {k: v for k, v in base.items() if k != name}
    with pytest.raises(BadResponse, match=f"missing input '{name}'"):
        run_once(instrument, missing)
    for bad in ("0.5", None, True, [0.5], math.nan):
        with pytest.raises(BadResponse, match=name):
            run_once(instrument, {**base, name: bad})


@pytest.mark.parametrize("cls", ALL_CLASSES)
def test_numpy_and_integer_inputs_and_extra_keys_are_accepted(cls: SimulatorClass) -> None:
    instrument = connected(cls())
    base = midpoint(instrument.limits)
    plain = run_once(instrument, base)
    as_numpy = {k: np.float64(v) for k, v in base.items()}
    assert run_once(instrument, {**as_numpy, "operator": "ada"}) == plain
    low_ints = {k: int(math.ceil(lo)) for k, (lo, _) in instrument.limits.items()}
    assert run_once(instrument, low_ints) == run_once(instrument, {k: float(v) for k, v in low_ints.items()})
    assert run_once(instrument, {k: np.int64(v) for k, v in low_ints.items()}) == run_once(instrument, low_ints)


@pytest.mark.parametrize("cls", ALL_CLASSES)
def test_run_requires_a_connection(cls: SimulatorClass) -> None:
    instrument = cls()
    params = midpoint(instrument.limits)
    with pytest.raises(InstrumentDisconnected):
        run_once(instrument, params)
    connected(instrument)
    reading = run_once(instrument, params)
    asyncio.run(instrument.close())
    asyncio.run(instrument.close())  # twice is fine
    with pytest.raises(InstrumentDisconnected):
        run_once(instrument, params)
    connected(instrument)  # and it can reconnect
    assert run_once(instrument, params) == reading


@pytest.mark.parametrize("cls", ALL_CLASSES)
def test_stop_is_a_harmless_no_op(cls: SimulatorClass) -> None:
    instrument = connected(cls())
    params = midpoint(instrument.limits)
    before = run_once(instrument, params)
    assert asyncio.run(instrument.stop()) is None
    assert run_once(instrument, params) == before


def test_non_finite_output_is_a_bad_response() -> None:
    class Broken:
        def evaluate_true(self, x: Any) -> Any:
            import torch

            return torch.tensor([math.nan], dtype=torch.float64)

    branin = connected(BraninInstrument())
    branin._function = Broken()
    with pytest.raises(BadResponse, match="not finite"):
        run_once(branin, {"x1": 0.0, "x2": 0.0})
    sim = Simulation(limits={"x": (0.0, 1.0)}, outputs={"y": "1"})
    with pytest.raises(BadResponse, match="y"):
        sim.finish({"y": math.inf})


# --------------------------------------------------------------------------- options


@pytest.mark.parametrize(
    "cls, options, message",
    [
        (PlugFlowReactor, {"noise_std": -1}, "noise_std must be >= 0, got -1"),
        (BraninInstrument, {"noise_std": math.nan}, "noise_std must be finite"),
        (Hartmann6Instrument, {"noise_std": "0.1"}, "noise_std must be a number"),
        (BraninInstrument, {"seed": -3}, "seed must be >= 0"),
        (Hartmann6Instrument, {"seed": 1.5}, "seed must be an integer"),
        (PlugFlowReactor, {"seed": True}, "seed must be an integer"),
        (BraninInstrument, {"duration_s": -1.0}, "duration_s must be >= 0"),
        (PlugFlowReactor, {"overhead_s": -5}, "overhead_s must be >= 0"),
        (PlugFlowReactor, {"molar_mass_p_g_per_mol": 0}, "molar_mass_p_g_per_mol must be > 0"),
        (PlugFlowReactor, {"a1_l_per_mol_s": 0.0}, "a1_l_per_mol_s must be > 0"),
        (PlugFlowReactor, {"ea2_j_per_mol": -1.0}, "ea2_j_per_mol must be >= 0"),
        (PlugFlowReactor, {"a3_l_per_mol_s": -1.0}, "a3_l_per_mol_s must be >= 0"),
    ],
)
def test_bad_options_raise_value_error(cls: SimulatorClass, options: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        cls(**options)


@pytest.mark.parametrize("cls", ALL_CLASSES)
def test_unknown_or_positional_options_raise_type_error(cls: SimulatorClass) -> None:
    with pytest.raises(TypeError):
        cls(noise=0.1)  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        cls(0.1)  # type: ignore[call-arg]


def test_options_are_kept() -> None:
    reactor = PlugFlowReactor(noise_std=0.2, seed=4, overhead_s=60, ea1_j_per_mol=55_000)
    assert (reactor.noise_std, reactor.seed, reactor.overhead_s) == (0.2, 4, 60.0)
    assert reactor.kinetics.ea1 == 55_000.0
    branin = BraninInstrument(noise_std=1, duration_s=30)
    assert (branin.noise_std, branin.duration_s) == (1.0, 30.0)


# --------------------------------------------------------------------------- duration


def test_durations() -> None:
    reactor = PlugFlowReactor()  # not connected: duration() must still work
    assert reactor.duration(reactor_params(10.0, 80.0, 2.0, 1.0)) == pytest.approx(1200.0 + 600.0)
    assert reactor.duration({"residence_time": 0.5}) == pytest.approx(1230.0)
    assert PlugFlowReactor(overhead_s=0).duration({"residence_time": 30}) == pytest.approx(1800.0)
    with pytest.raises(BadResponse, match="residence_time"):
        reactor.duration({"temperature": 80.0})
    assert BraninInstrument().duration({"x1": 0.0, "x2": 0.0}) == 0.0
    assert BraninInstrument(duration_s=90).duration({"x1": 0.0, "x2": 0.0}) == 90.0
    assert Hartmann6Instrument(duration_s=2.5).duration(midpoint(Hartmann6Instrument().limits)) == 2.5


# --------------------------------------------------------------------------- speed


@pytest.mark.parametrize("cls", ALL_CLASSES)
def test_each_run_is_fast(cls: SimulatorClass) -> None:
    instrument = connected(cls(noise_std=0.01))
    params = _sample_params(cls, 200, seed=1)
    run_many(instrument, params[:5])  # warm up
    start = time.perf_counter()
    run_many(instrument, params)
    per_call = (time.perf_counter() - start) / len(params)
    assert per_call < 5e-3, f"{cls.__name__}.run takes {per_call * 1e3:.2f} ms"
