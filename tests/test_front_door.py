"""Issue 16, "the front door": every config fault in one run, drivers that
declare their inputs, drivers that cannot be imported, a JSON Schema that the
shipped configs pass, and durations as people write them."""

from __future__ import annotations

import asyncio
import json
import math
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from conftest import REPO, quadratic_config
from test_cli import selflab, write

from selflab.controller.config import ConfigError, build_planner, parse_config
from selflab.controller.fleet import check_campaign
from selflab.instruments.errors import BadResponse
from selflab.instruments.protocol import DeclaresInputs, declared_inputs
from selflab.instruments.registry import installed_drivers, resolve_driver
from selflab.planners.protocol import OptionsError
from selflab.planners.registry import make_planner
from selflab.simulators.benchmarks import BraninInstrument
from selflab.simulators.reactor import PlugFlowReactor


def branin(**overrides: Any) -> dict[str, Any]:
    """A valid Branin campaign as a plain dict."""
    return {
        "name": "branin",
        "parameters": [{"name": "x1", "type": "float", "low": -5, "high": 10}, {"name": "x2", "type": "float", "low": 0, "high": 15}],
        "objectives": [{"name": "y", "direction": "minimize"}],
        "instruments": [{"name": "sim", "driver": "branin"}],
        "planner": {"kind": "sobol"},
        "stop": {"max_experiments": 5},
        **overrides,
    }


def faults(data: Any) -> list[str]:
    """Every fault line of ``data``, as ``selflab validate`` prints them."""
    with pytest.raises(ConfigError) as info:
        check_campaign(data)
    return [str(f) for f in info.value.faults]


# --- 1. every fault in one run -----------------------------------------------------------

FIVE_FAULTS = branin(
    parameters=[
        {"name": "x1", "type": "float", "low": -10, "high": 10},  # beyond the driver's limits [-5, 10]
        {"name": "x2", "type": "float", "low": 0, "high": 15},
        {"name": "n", "type": "int", "low": 1, "high": 15.5},  # an integer bound that is not one
    ],
    instruments=[
        {"name": "sim", "driver": "branin", "limits": {"temp": [0, 1]}},  # limits on an unknown parameter
        {"name": "sim", "driver": "branin"},  # a duplicate name
    ],
    planner={"kind": "bo", "options": {"acqusition": "ucb"}},  # a typo
)


def test_five_faults_of_five_stages_are_reported_at_once(tmp_path: Path) -> None:
    path = write(tmp_path, FIVE_FAULTS)
    for command in ("validate", "run"):
        out = selflab(command, str(path), cwd=tmp_path)
        assert out.returncode == 2 and out.stdout == "", out.stderr
        lines = out.stderr.splitlines()
        assert len(lines) == 5, lines
        assert lines[0] == "parameters[2].high: must be a valid integer, got a number with a fractional part (got 15.5)"
        assert lines[1] == "instruments[1].name: duplicate name 'sim'"
        assert lines[2] == "instruments[0].limits.temp: 'temp' is not a parameter"
        assert lines[3].startswith("parameters[0]: x1 asks for [-10, 10] but the instruments' limits allow only [-5, 10]")
        assert lines[4].startswith("planner.options: bo planner option 'acqusition': unknown field; did you mean 'acquisition'? allowed: ")
        assert lines[4].endswith("`selflab schema` lists each planner's options")
    assert not (tmp_path / "runs").exists(), "a bad config must not create a ledger"


def test_sections_that_validated_are_still_checked_at_their_place_in_the_file() -> None:
    cfg = branin(
        parameters=[{"name": "x0", "type": "float", "low": 1, "high": 0},
                    {"name": "x1", "type": "float", "low": -5, "high": 10}, {"name": "x2", "type": "float", "low": 0, "high": 15}],
        objectives=[{"name": "y", "direction": "minimize"}, {"name": "y"}],
        stop={"max_experiments": 0},
    )
    assert faults(cfg) == [
        "parameters[0]: low (1) must be below high (0)",
        "stop.max_experiments: must be >= 1 (got 0)",
        "objectives[1].name: duplicate name 'y'",
    ]
    # an item that failed is left out, and so is what only echoes its fault
    cfg = branin(parameters=[{"name": "x1", "type": "float", "low": -5, "high": 10}, {"name": "x2", "type": "flaot", "low": 0, "high": 15}],
                 instruments=[{"name": "sim", "driver": "branin", "limits": {"x2": [0, 1], "w": [0, 1]}}])
    assert faults(cfg) == ["parameters[1].type: must be one of 'float', 'int', 'categorical' (got 'flaot')",
                           "instruments[0].limits.w: 'w' is not a parameter"]


def test_every_bad_planner_option_in_one_line_with_did_you_mean() -> None:
    config = parse_config(branin(planner={"kind": "bo", "options": {"acquisition": "qei", "pool_scal": "rank", "beta": -1}}))
    with pytest.raises(ConfigError) as info:
        build_planner(config)
    [fault] = info.value.faults
    assert fault.loc == "planner.options"
    assert fault.message.startswith("bo planner option 'acquisition': must be 'auto', 'qlognei', 'ucb' or 'ts' (got 'qei'); ")
    assert "; option 'pool_scal': unknown field; did you mean 'pool_scale'? allowed: " in fault.message
    assert "; option 'beta': must be > 0" in fault.message
    # planners know nothing of the controller: they raise every fault, structured
    with pytest.raises(OptionsError) as raised:
        make_planner("mf", {"kernle": "rbf", "maxiter": 0})
    assert sorted(tuple(err["loc"]) for err in raised.value.errors) == [("kernle",), ("maxiter",)]
    assert str(raised.value).startswith("mf planner option ") and "\n" not in str(raised.value)


# --- 2. drivers declare their inputs -----------------------------------------------------


def test_a_driver_input_that_is_not_a_parameter_stops_validate_and_run(tmp_path: Path) -> None:
    path = write(tmp_path, branin(parameters=[{"name": "temp", "type": "float", "low": 0, "high": 1}]))
    for command in ("validate", "run"):
        out = selflab(command, str(path), cwd=tmp_path)
        assert out.returncode == 2 and out.stdout == "", out.stderr
        assert out.stderr.splitlines() == ["instruments[0].driver: 'branin' reads the inputs x1, x2, which are not parameters "
                                           "(parameters: temp); name the parameters after the driver's inputs"]
    assert not (tmp_path / "runs").exists(), "the run must stop before the ledger is touched"


def test_one_missing_input_is_named_alone() -> None:
    cfg = branin(parameters=[{"name": "x1", "type": "float", "low": -5, "high": 10}, {"name": "z", "type": "float", "low": 0, "high": 1}])
    assert faults(cfg) == ["instruments[0].driver: 'branin' reads the input x2, which is not a parameter (parameters: x1, z); "
                           "name the parameters after the driver's inputs"]


@pytest.mark.parametrize("name", sorted(installed_drivers()))
def test_every_bundled_driver_declares_its_limited_inputs(name: str) -> None:
    cls = resolve_driver(name)
    try:
        driver = cls()
    except (TypeError, ValueError):  # a serial driver needs its ports: read the class
        driver = cls
    assert isinstance(driver, DeclaresInputs)
    assert declared_inputs(driver) == tuple(driver.limits)


@pytest.mark.parametrize("driver", [BraninInstrument(), PlugFlowReactor()], ids=lambda d: type(d).__name__)
def test_declared_inputs_are_exactly_what_run_reads(driver: Any) -> None:
    inputs = declared_inputs(driver)
    assert inputs
    params = {name: (low + high) / 2 for name, (low, high) in driver.limits.items()}

    async def go() -> None:
        await driver.connect()
        assert math.isfinite(next(iter((await driver.run({name: params[name] for name in inputs})).values())))
        for name in inputs:
            with pytest.raises(BadResponse, match=f"missing input {name!r}"):
                await driver.run({other: params[other] for other in inputs if other != name})
        await driver.close()

    asyncio.run(go())


# --- 3. a driver whose module cannot be imported -----------------------------------------


def test_a_driver_module_with_a_syntax_error_is_a_fault_naming_file_and_line(tmp_path: Path) -> None:
    package = tmp_path / "site" / "brokenlab"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "pump.py").write_text("class Pump:\n    async def run(self, params)\n        return {}\n")
    (package / "oven.py").write_text("LIMIT = 1\nraise RuntimeError('no calibration file')\n")
    path = write(tmp_path, quadratic_config(instruments=[{"name": "a", "driver": "brokenlab.pump:Pump"},
                                                          {"name": "b", "driver": "brokenlab.oven:Oven"}]))
    for command in ("validate", "run"):
        out = selflab(command, str(path), cwd=tmp_path, first_on_path=[tmp_path / "site"])
        assert out.returncode == 2 and out.stdout == "", out.stderr
        assert "internal error" not in out.stderr
        first, second = out.stderr.splitlines()
        assert first == f"instruments[0].driver: module 'brokenlab.pump' failed to import: SyntaxError at {package / 'pump.py'}:2: expected ':'"
        assert second == f"instruments[1].driver: module 'brokenlab.oven' failed to import: RuntimeError at {package / 'oven.py'}:2: no calibration file"
    assert not (tmp_path / "runs").exists()


# --- 4. the JSON Schema -------------------------------------------------------------------


@pytest.fixture(scope="module")
def schema(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = selflab("schema", cwd=tmp_path_factory.mktemp("schema"))
    assert out.returncode == 0, out.stderr
    document: dict[str, Any] = json.loads(out.stdout)
    return document


def _keys(node: Any) -> set[str]:
    if isinstance(node, dict):
        return set(node) | {k for value in node.values() for k in _keys(value)}
    if isinstance(node, list):
        return {k for value in node for k in _keys(value)}
    return set()


def test_the_schema_is_draft_2020_12_with_only_its_keywords(schema: dict[str, Any]) -> None:
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    jsonschema.Draft202012Validator.check_schema(schema)
    assert not {"gt", "ge", "lt", "le"} & _keys(schema)


@pytest.mark.parametrize("path", sorted((REPO / "lab_configs").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_config_passes_the_schema(schema: dict[str, Any], path: Path) -> None:
    jsonschema.validate(yaml.safe_load(path.read_text()), schema, cls=jsonschema.Draft202012Validator)


def test_the_schema_takes_one_line_forms_and_durations(schema: dict[str, Any]) -> None:
    cfg = quadratic_config(constraints=["aux >= 0.6"], interlocks=[{"pause_when": "q1.temperature > 90", "poll": "PT5S"}],
                           stop={"max_time": "1h30m", "max_wall_time": 90})
    jsonschema.validate(cfg, schema, cls=jsonschema.Draft202012Validator)
    parse_config(cfg)  # and the loader agrees


@pytest.mark.parametrize(
    "change",
    [
        {"colour": "blue"},
        {"constraints": ["aux = 0.6"]},
        {"stop": {"max_time": -5}},
        {"planner": {"kind": "bo", "options": {"acqusition": "ucb"}}},
        {"planner": {"kind": "random", "options": {"seed": 3}}},
        {"instruments": [{"name": "q1", "driver": "labdrivers:Quadratic", "capacity": 0}]},
        {"parameters": [{"name": "x", "type": "int", "low": 0, "high": 1.5}]},
    ],
    ids=["unknown-field", "constraint", "duration", "bo-option", "random-option", "capacity", "int-bound"],
)
def test_bad_configs_fail_the_schema_and_the_loader(schema: dict[str, Any], change: dict[str, Any]) -> None:
    cfg = quadratic_config(**change)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(cfg, schema, cls=jsonschema.Draft202012Validator)
    with pytest.raises(ConfigError):
        build_planner(parse_config(cfg))


# --- 5. durations -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("written", "seconds"),
    [("90s", 90), ("30m", 1800), ("2h", 7200), ("3d", 259200), ("1h30m", 5400), ("1.5h", 5400), ("1h 30m", 5400),
     ("2 hours", 7200), ("PT2H", 7200), ("P1DT2H", 93600), ("pt30m", 1800), ("3600", 3600), (3600, 3600), (0.5, 0.5)],
)
def test_durations_as_people_write_them(written: Any, seconds: float) -> None:
    config = parse_config(quadratic_config(stop={"max_time": written}, instruments=[{"name": "q1", "driver": "labdrivers:Quadratic", "timeout": written}]))
    assert config.stop.max_time == seconds and config.instruments[0].timeout == seconds


@pytest.mark.parametrize(
    ("written", "message"),
    [("soon", "stop.max_time: cannot read duration 'soon': write seconds (3600) or e.g. '90s', "),
     ("P", "stop.max_time: cannot read duration 'P': "),
     ("1e999", "stop.max_time: cannot read duration '1e999': "),
     ("-5m", "stop.max_time: must be > 0 (got '-5m')"),
     ("0s", "stop.max_time: must be > 0 (got '0s')")],
)
def test_a_duration_that_cannot_be_read_is_one_line_naming_the_field(written: str, message: str) -> None:
    [line] = faults(quadratic_config(stop={"max_time": written}))
    assert line.startswith(message) and "\n" not in line
