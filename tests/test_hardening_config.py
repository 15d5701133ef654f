"""Issue 14 (hardening): configs that used to validate and then switch off a
safety limit, crash the run, or exhaust memory or the stack.

Each test drives the code a user drives (``parse_config``, ``build_fleet``,
``Station.cost_of``, ``limit_violations``, or the ``selflab`` command).
"""

from __future__ import annotations

import math
import resource
import subprocess
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from conftest import quadratic_config
from test_cli import SELFLAB, env

from selflab.controller.config import ConfigError, InstrumentConfig, parse_config
from selflab.controller.expressions import Expression, ExpressionError
from selflab.controller.fleet import Station, _intersect, build_fleet
from selflab.instruments.protocol import declared_limits, limit_violations
from selflab.planners.baselines import SobolPlanner
from selflab.planners.protocol import PlanContext

NAN, INF = float("nan"), float("inf")


def faults_of(cfg: dict[str, Any], *, fleet: bool = False) -> list[str]:
    """The fault lines of ``cfg`` (after building the fleet when ``fleet``); [] when it is valid."""
    try:
        config = parse_config(cfg)
        if fleet:
            build_fleet(config)
    except ConfigError as exc:
        return [str(f) for f in exc.faults]
    return []


def branin_config(**instrument: Any) -> dict[str, Any]:
    return {
        "name": "branin",
        "parameters": [{"name": "x1", "type": "float", "low": -5, "high": 10}, {"name": "x2", "type": "float", "low": 0, "high": 15}],
        "objectives": [{"name": "y", "direction": "minimize"}],
        "instruments": [{"name": "sim", "driver": "branin", **instrument}],
        "planner": {"kind": "bo"},
        "stop": {"max_experiments": 20},
    }


BRANIN_YAML = """\
name: branin-demo
parameters:
  - {name: x1, type: float, low: -5, high: 10}
  - {name: x2, type: float, low: 0, high: 15}
objectives: [{name: y, direction: minimize}]
instruments: [{name: sim, driver: branin}]
planner: {kind: bo}
stop: {max_experiments: 20}
"""
"""The config a new user writes first (as in the README)."""


def validate(tmp_path: Path, text: str, *, memory_bytes: int | None = None) -> subprocess.CompletedProcess[str]:
    """``selflab validate`` on a config file holding ``text``, as a user runs it."""
    path = tmp_path / "lab.yaml"
    path.write_text(text)

    def guard() -> None:
        if memory_bytes is not None:
            resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))

    return subprocess.run([SELFLAB, "validate", str(path)], cwd=tmp_path, env=env(), capture_output=True, text=True,
                          timeout=60, preexec_fn=guard)


def one_fault_line(out: subprocess.CompletedProcess[str]) -> str:
    """The single stderr line of a refused config (exit 2, no internal error)."""
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 2, out.stderr[-2000:]
    assert len(lines) == 1 and "internal error" not in out.stderr, out.stderr[-2000:]
    assert len(lines[0]) < 400, lines[0][:500]
    return lines[0]


# --- item 2: NaN and infinity are refused wherever a number is configured -----------------


def test_a_nan_limit_is_one_fault_naming_the_limit() -> None:
    cfg = quadratic_config(instruments=[{"name": "q1", "driver": "labdrivers:Quadratic", "limits": {"x": [NAN, NAN]}}])
    assert faults_of(cfg) == ["instruments[0].limits.x: must be a finite number (got nan); NaN and infinity are not allowed"]
    cfg["instruments"][0]["limits"] = {"x": [0, INF]}
    assert faults_of(cfg) == ["instruments[0].limits.x: must be a finite number (got inf); NaN and infinity are not allowed"]


def constraint(value: Any) -> dict[str, Any]:
    return quadratic_config(constraints=[value])


@pytest.mark.parametrize(
    ("cfg", "loc"),
    [
        (quadratic_config(parameters=[{"name": "x", "type": "float", "low": NAN, "high": 1}, {"name": "z", "type": "float", "low": 0, "high": 1}]), "parameters[0].low"),
        (quadratic_config(parameters=[{"name": "x", "type": "float", "low": 0, "high": INF}, {"name": "z", "type": "float", "low": 0, "high": 1}]), "parameters[0].high"),
        (quadratic_config(objectives=[{"name": "y", "reference_point": NAN}]), "objectives[0].reference_point"),
        (constraint("y >= nan"), "constraints[0].value"),
        (constraint("y <= inf"), "constraints[0].value"),
        (constraint({"outcome": "y", "op": ">=", "value": -INF}), "constraints[0].value"),
        (quadratic_config(instruments=[{"name": "q1", "driver": "labdrivers:Quadratic", "cost": NAN}]), "instruments[0].cost"),
        (quadratic_config(instruments=[{"name": "q1", "driver": "labdrivers:Quadratic", "cost": INF}]), "instruments[0].cost"),
        (quadratic_config(instruments=[{"name": "q1", "driver": "labdrivers:Quadratic", "cost": "nan"}]), "instruments[0].cost"),
        (quadratic_config(instruments=[{"name": "q1", "driver": "labdrivers:Quadratic", "cost": "1e400"}]), "instruments[0].cost"),
        (quadratic_config(instruments=[{"name": "q1", "driver": "labdrivers:Quadratic", "fidelity": NAN}]), "instruments[0].fidelity"),
        (quadratic_config(instruments=[{"name": "q1", "driver": "labdrivers:Quadratic", "timeout": INF}]), "instruments[0].timeout"),
        (quadratic_config(instruments=[{"name": "q1", "driver": "labdrivers:Quadratic", "retry_backoff": NAN}]), "instruments[0].retry_backoff"),
        (quadratic_config(stop={"max_cost": INF}), "stop.max_cost"),
        (quadratic_config(stop={"max_time": INF}), "stop.max_time"),
        (quadratic_config(stop={"max_experiments": 5, "target": {"value": NAN}}), "stop.target.value"),
        (quadratic_config(target_fidelity=NAN), "target_fidelity"),
        (quadratic_config(interlocks=[{"pause_when": "q1.temperature > nan"}]), "interlocks[0].pause_when.value"),
        (quadratic_config(interlocks=[{"pause_when": "q1.temperature > 90", "poll": INF}]), "interlocks[0].poll"),
    ],
)
def test_every_configured_number_refuses_nan_and_infinity(cfg: dict[str, Any], loc: str) -> None:
    faults = faults_of(cfg)
    assert len(faults) == 1 and faults[0].startswith(f"{loc}: must be a finite number (got "), faults


def test_limit_violations_fail_closed_when_no_comparison_can_be_made() -> None:
    limits = {"x": (0.0, 10.0)}
    for value in (NAN, INF, -INF, "5", None, True, complex(1, 0), Decimal("NaN"), Decimal("sNaN"), [5]):
        assert len(limit_violations({"x": value}, limits)) == 1, value
    for bounds in [(NAN, 10.0), (0.0, NAN), (NAN, NAN), (-INF, INF), (0.0, INF), (10.0, 0.0), (0.0,), (None, 10.0), ("0", "10")]:
        assert len(limit_violations({"x": 5.0}, {"x": bounds})) == 1, bounds  # type: ignore[dict-item]
    for value in (5, 5.0, np.float32(5), np.float64(0), np.int64(10), Decimal("2.5"), Fraction(1, 3)):
        assert limit_violations({"x": value}, limits) == [], value
    assert limit_violations({"x": np.float64(10.5)}, limits) == ["x=10.5 is above the limit 10"]
    assert limit_violations({"x": Decimal("-1")}, limits) == ["x=-1 is below the limit 0"]


def test_declared_limits_that_are_not_numbers_refuse_every_value() -> None:
    class Broken:
        limits = {"x": ("low", 10), "z": None, "w": (0, 1)}

    declared = declared_limits(Broken())
    assert declared["w"] == (0.0, 1.0)
    for name in ("x", "z"):
        assert len(limit_violations({name: 0.5}, declared)) == 1


def test_a_configured_limit_that_is_not_finite_never_replaces_a_declared_one() -> None:
    assert _intersect({"x": (0.0, 10.0)}, {"x": (NAN, NAN)}) == {"x": (0.0, 10.0)}
    assert _intersect({"x": (0.0, 10.0)}, {"x": (-INF, INF)}) == {"x": (0.0, 10.0)}
    assert _intersect({"x": (0.0, 10.0)}, {"x": (2.0, 20.0)}) == {"x": (2.0, 10.0)}  # narrows, never widens
    alone = _intersect({}, {"x": (NAN, NAN)})  # nothing declared: kept, and refuses every value
    assert limit_violations({"x": 100.0}, alone) and limit_violations({"x": 5.0}, alone)
    declared_nan = _intersect({"x": (NAN, 10.0)}, {"x": (0.0, 5.0)})
    assert limit_violations({"x": 1.0}, declared_nan)


def test_a_driver_declaring_a_nan_limit_is_a_fault_not_a_silent_pass() -> None:
    cfg = quadratic_config(instruments=[{"name": "q1", "driver": "labdrivers:Quadratic", "options": {"limits": {"x": [NAN, NAN]}}}])
    faults = faults_of(cfg, fleet=True)
    assert len(faults) == 1 and faults[0].startswith("instruments[0].limits.x: the instrument's limit on x is [nan, nan], not two finite numbers"), faults


def test_selflab_validate_refuses_a_nan_limit_in_one_line(tmp_path: Path) -> None:
    cfg = BRANIN_YAML.replace("driver: branin}", "driver: branin, limits: {x1: [.nan, .nan]}}")
    line = one_fault_line(validate(tmp_path, cfg))
    assert line == "instruments[0].limits.x1: must be a finite number (got nan); NaN and infinity are not allowed"


# --- item 8: cost expressions checked where the planner will look ------------------------


def test_a_cost_that_divides_by_zero_at_the_centre_is_a_fault_naming_the_point() -> None:
    faults = faults_of(branin_config(cost="1/(x1-2.5)"), fleet=True)
    assert len(faults) == 1, faults
    assert faults[0].startswith("instruments[0].cost: '1/(x1-2.5)' cannot be evaluated at x1=2.5, x2=7.5: float division by zero")
    assert "the centre of the space" in faults[0]


def test_a_negative_cost_is_a_fault_as_a_string_and_as_an_expression() -> None:
    assert faults_of(branin_config(cost="-5")) == ["instruments[0].cost: must be >= 0 (got -5.0)"]
    faults = faults_of(branin_config(cost="x1"), fleet=True)  # x1 reaches -5
    assert len(faults) == 1 and faults[0].startswith("instruments[0].cost: 'x1' gives a negative cost ("), faults


def test_a_cost_failing_only_at_a_sobol_point_of_the_seed_is_a_fault() -> None:
    cfg = branin_config()
    cfg["seed"] = 7
    space = parse_config(cfg).space
    first = SobolPlanner().propose(space, [], [], [], 3, context=PlanContext(seed=7))[2].params
    cfg["instruments"][0]["cost"] = f"1 + 1/(x1 - {first['x1']!r})**2"
    faults = faults_of(cfg, fleet=True)
    assert len(faults) == 1 and "(Sobol point 2 of seed 7)" in faults[0], faults
    cfg["seed"] = 8  # another seed's Sobol points do not hit it
    assert faults_of(cfg, fleet=True) == []


def test_a_cost_failing_only_at_a_pool_candidate_is_a_fault() -> None:
    cfg = quadratic_config(instruments=[{"name": "p", "driver": "labdrivers:Pool", "cost": "1/(x - 0.25)**2"}])  # row 3 of 12
    faults = faults_of(cfg, fleet=True)
    assert len(faults) == 1 and "at x=0.25, z=0.75: float division by zero (pool candidate 3)" in faults[0], faults


def test_cost_of_raises_expression_error_when_the_cost_cannot_be_computed() -> None:
    inst = InstrumentConfig(name="q1", driver="labdrivers:Quadratic", cost="x - 0.5")
    station = Station(config=inst, driver=None, capacity=1, fidelity=1.0, cost=1.0, limits={}, cost_expression=inst.cost_expression())
    assert station.cost_of({"x": 0.75}) == pytest.approx(0.25)
    with pytest.raises(ExpressionError, match=r"'x - 0.5' gives a negative cost \(-0.5\) at x=0$"):
        station.cost_of({"x": 0})
    with pytest.raises(ExpressionError, match="cannot be evaluated at z=1"):
        station.cost_of({"z": 1})
    inst = InstrumentConfig(name="q1", driver="labdrivers:Quadratic", cost="log(x)")
    station = Station(config=inst, driver=None, capacity=1, fidelity=1.0, cost=1.0, limits={}, cost_expression=inst.cost_expression())
    with pytest.raises(ValueError, match="cannot be evaluated at x=0"):
        station.cost_of({"x": 0})


# --- item 9: echoes are bounded; YAML bombs and huge files are refused --------------------


def billion_laughs(levels: int = 9) -> str:
    """A config of under a kilobyte with an alias bomb in a driver option that
    the driver echoes when it refuses it (9**levels strings once expanded)."""
    lines = ['        a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    names = "abcdefghijklmnop"
    for prev, name in zip(names, names[1:levels]):
        lines.append(f"        {name}: &{name} [" + ",".join([f"*{prev}"] * 9) + "]")
    block = "instruments:\n  - name: sim\n    driver: branin\n    options:\n      duration_s:\n" + "\n".join(lines) + "\n"
    return BRANIN_YAML.replace("instruments: [{name: sim, driver: branin}]\n", block)


def test_selflab_validate_refuses_a_yaml_alias_bomb_in_bounded_memory(tmp_path: Path) -> None:
    text = billion_laughs()
    assert len(text.encode()) < 1000
    line = one_fault_line(validate(tmp_path, text, memory_bytes=3 * 2**30 // 2))
    assert "YAML aliases expand to more than 1,000,000 values" in line


def test_aliases_that_expand_modestly_still_load(tmp_path: Path) -> None:
    from selflab.controller.config import load_config

    path = tmp_path / "lab.yaml"
    path.write_text(billion_laughs(levels=5))  # 9**5 values once expanded: fine
    config = load_config(path)
    option = config.instruments[0].options["duration_s"]
    assert len(option["e"]) == 9 and option["e"][0] is option["d"]
    with pytest.raises(ConfigError) as info:  # the driver refuses it, echoing all 9**5 strings: the fault stays one short line
        build_fleet(config)
    (fault,) = map(str, info.value.faults)
    assert fault.startswith("instruments[0].options: bad options for BraninInstrument: duration_s") and len(fault) < 400, fault[:500]


def test_a_config_file_over_a_megabyte_is_refused(tmp_path: Path) -> None:
    text = yaml.safe_dump(quadratic_config(description="x" * 1_100_000))
    line = one_fault_line(validate(tmp_path, text))
    assert line.endswith("larger than 1,000,000 bytes; a config names parameters and instruments, keep bulk data in files a driver reads")


def test_faults_never_echo_a_large_value_in_full() -> None:
    from selflab.planners.space import brief  # (the one helper that renders a value for a message)

    big = "y" * 200_000
    for cfg in (quadratic_config(seed=big), quadratic_config(name=big + " !"), quadratic_config(constraints=[big]),
                quadratic_config(instruments=[{"name": "q1", "driver": "labdrivers:Quadratic", "timeout": big}]),
                quadratic_config(planner={"kind": big})):
        faults = faults_of(cfg)
        assert faults and all(len(f) < 400 for f in faults), [f[:300] for f in faults]
    nested: Any = ["lol"] * 9
    for _ in range(8):
        nested = [nested] * 9  # 9**9 values if expanded
    assert len(brief(nested)) <= 80 and len(brief({"k": nested, "s": big})) <= 80


# --- item 11: deep nesting is one fault, not an internal error ----------------------------


def test_selflab_validate_refuses_a_cost_of_3000_terms(tmp_path: Path) -> None:
    line = one_fault_line(validate(tmp_path, yaml.safe_dump(branin_config(cost="x1" + "+1" * 3000))))
    assert line.startswith("instruments[0].cost: 'x1+1+1") and "6002 characters long; an expression may have at most 1000" in line


def test_selflab_validate_refuses_yaml_nested_5000_deep(tmp_path: Path) -> None:
    text = yaml.safe_dump(branin_config()) + "description: " + "[" * 5000 + "]" * 5000 + "\n"
    line = one_fault_line(validate(tmp_path, text))
    assert line.endswith("YAML nested more than 64 levels deep; flatten it")


def test_deep_expressions_are_refused_before_they_are_evaluated() -> None:
    for text in ("-" * 900 + "x", "sqrt(" * 150 + "x" + ")" * 150, "x" + "+1" * 400):
        with pytest.raises(ExpressionError, match="nested more than 100 levels deep|nested too deeply"):
            Expression.parse(text)
    assert Expression.parse("+".join(["x"] * 50)).evaluate({"x": 1}) == 50.0
    assert math.isclose(Expression.parse("((((x))))**2").evaluate({"x": 3}), 9.0)
