"""Config loading: one line per fault, naming the field; never a traceback."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO, quadratic_config
from hypothesis import given, settings
from hypothesis import strategies as st

from selflab.controller.config import ConfigError, LabConfig, load_config, parse_config
from selflab.controller.fleet import build_fleet


def faults(data: Any) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(data)
    return [str(f) for f in info.value.faults]


@pytest.mark.parametrize("path", sorted((REPO / "lab_configs").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_config_validates_and_builds(path: Path) -> None:
    config = load_config(path)
    stations = build_fleet(config)
    assert len(stations) == len(config.instruments)
    assert config.ledger_url == f"sqlite:///runs/{config.name}.sqlite"


def test_defaults() -> None:
    config = parse_config(quadratic_config())
    assert config.seed == 0 and config.clock == "auto" and config.target_fidelity == 1.0
    assert config.instruments[0].capacity is None and config.instruments[0].timeout == 3600
    assert config.outcome_names == ["y"]


def test_the_issue_example_fault_line() -> None:
    cfg = quadratic_config()
    cfg["instruments"][0]["capacity"] = 0
    assert faults(cfg) == ["instruments[0].capacity: must be >= 1 (got 0)"]


def test_many_faults_one_line_each() -> None:
    cfg = quadratic_config(seed=-3, planner={"kind": "random", "extra": 1})
    cfg["parameters"][0]["low"] = 2
    cfg["parameters"][1]["type"] = "flaot"
    cfg["objectives"][0]["direction"] = "up"
    cfg["instruments"][0]["fidelty"] = 0.5
    lines = faults(cfg)
    assert lines == [
        "seed: must be >= 0 (got -3)",
        "parameters[0]: low (2) must be below high (1)",
        "parameters[1].type: must be one of 'float', 'int', 'categorical' (got 'flaot')",
        "objectives[0].direction: must be 'maximize' or 'minimize' (got 'up')",
        "instruments[0].fidelty: unknown field; did you mean 'fidelity'? allowed: capacity, cost, driver, executor, fidelity, limits, max_consecutive_failures, name, num_cpus, num_gpus, options, remote, retries, retry_backoff, timeout",
        "planner.extra: unknown field; allowed: kind, options",
    ]


def test_cross_field_faults() -> None:
    cfg = quadratic_config(
        objectives=[{"name": "y"}, {"name": "y"}, {"name": "x"}],
        planner={"kind": "gradient-descent"},
        stop={"max_experiments": 3, "target": {"value": 1}},
        ledger="mysql://db/x",
    )
    cfg["instruments"].append({"name": "q1", "driver": "labdrivers:Quadratic"})
    lines = faults(cfg)
    assert "objectives[1].name: duplicate name 'y'" in lines
    assert "instruments[1].name: duplicate name 'q1'" in lines
    assert "objectives[2].name: 'x' is also a parameter name" in lines
    assert "planner.kind: unknown planner 'gradient-descent'; choose one of ax, bo, mf, plain, random, sobol" in lines
    assert any(line.startswith("stop.target.objective: required with several objectives") for line in lines)
    assert any(line.startswith("ledger: 'mysql://db/x' is not a sqlite:// or postgresql:// URL") for line in lines)


def test_reserved_names() -> None:
    cfg = quadratic_config()
    cfg["parameters"][0]["name"] = "cost"
    assert faults(cfg) == ["parameters[0].name: 'cost' is reserved for a ledger export column; rename it"]


def test_bad_names() -> None:
    cfg = quadratic_config(name="my campaign")
    cfg["parameters"][1]["name"] = "1bad name"
    lines = faults(cfg)
    assert len(lines) == 2
    assert lines[0].startswith("name: 'my campaign' is not a valid name")
    assert lines[1].startswith("parameters[1].name: '1bad name' is not a valid name")


def test_stop_needs_a_bound_and_durations_parse() -> None:
    assert faults(quadratic_config(stop={})) == ["stop: give at least one of max_experiments, max_cost, max_time, max_wall_time"]
    config = parse_config(quadratic_config(stop={"max_time": "2h", "max_wall_time": "90s"}))
    assert config.stop.max_time == 7200 and config.stop.max_wall_time == 90
    assert faults(quadratic_config(stop={"max_time": "two hours"}))[0].startswith("stop.max_time: cannot read duration 'two hours'")


def test_constraints_parse_from_strings_and_mappings() -> None:
    config = parse_config(quadratic_config(constraints=["aux >= 0.6", {"outcome": "y", "op": "<=", "value": 2}]))
    assert [str(c) for c in config.constraints] == ["aux >= 0.6", "y <= 2"]
    assert config.outcome_names == ["y", "aux"]
    assert faults(quadratic_config(constraints=["aux >= lots"])) == ["constraints[0]: cannot read 'aux >= lots': 'lots' is not a number"]


def test_parameter_kinds() -> None:
    config = parse_config(quadratic_config(parameters=[
        {"name": "t", "type": "float", "low": 1, "high": 100, "log": True, "unit": "min"},
        {"name": "n", "type": "int", "low": 1, "high": 8},
        {"name": "solvent", "type": "categorical", "choices": ["water", "ethanol"]},
    ]))
    assert [p.type for p in config.parameters] == ["float", "int", "categorical"]
    assert faults(quadratic_config(parameters=[{"name": "t", "type": "float", "low": 0, "high": 1, "log": True}])) == [
        "parameters[0]: a log-scale parameter needs low > 0, got 0"
    ]
    assert faults(quadratic_config(parameters=[{"name": "c", "type": "categorical", "choices": ["a", "a"]}])) == [
        "parameters[0]: choices must be distinct"
    ]


def test_yaml_problems_are_one_line(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("name: x\nparameters: [\n  - a: 1\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    (line,) = map(str, info.value.faults)
    assert line.startswith(f"{path}:") and "YAML syntax error" in line
    path.write_text("")
    with pytest.raises(ConfigError, match="got an empty file"):
        load_config(path)
    path.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="got a list"):
        load_config(path)
    with pytest.raises(ConfigError, match="no such file"):
        load_config(tmp_path / "missing.yaml")


def test_driver_faults_name_the_instrument_field() -> None:
    cfg = quadratic_config(instruments=[
        {"name": "a", "driver": "no_such_module:Pump"},
        {"name": "b", "driver": "labdrivers:Nope"},
        {"name": "c", "driver": "labdrivers:NotAnInstrument"},
        {"name": "d", "driver": "labdrivers:Quadratic", "options": {"speed": 3}},
        {"name": "e", "driver": "no-such-entry-point"},
        {"name": "f", "driver": "labdrivers:Quadratic", "limits": {"x": [2, 3], "w": [0, 1]}},
    ])
    with pytest.raises(ConfigError) as info:
        build_fleet(parse_config(cfg))
    lines = [str(f) for f in info.value.faults]
    assert lines[0].startswith("instruments[0].driver: cannot import module 'no_such_module'")
    assert lines[1] == "instruments[1].driver: module 'labdrivers' has no 'Nope'"
    assert lines[2] == "instruments[2].driver: 'labdrivers:NotAnInstrument' is not an instrument: it needs async methods run, close"
    assert lines[3].startswith("instruments[3].options: bad options for Quadratic:") and "speed" in lines[3]
    assert lines[4].startswith("instruments[4].driver: no driver named 'no-such-entry-point' in entry-point group 'selflab.instruments' (installed: ")
    assert "instruments[5].limits.w: 'w' is not a parameter" in lines
    assert any(line.startswith("instruments[5].limits.x: the instrument accepts x in [2, 3] but parameters asks for [0, 1]") for line in lines)


def test_objective_no_instrument_reports() -> None:
    with pytest.raises(ConfigError) as info:
        build_fleet(parse_config(quadratic_config(objectives=[{"name": "yeild"}])))
    assert [str(f) for f in info.value.faults] == ["objectives[0].name: no instrument reports 'yeild'; they report aux, y"]


def test_schema_is_json_schema_with_every_section() -> None:
    schema = LabConfig.model_json_schema()
    json.dumps(schema)
    assert set(schema["required"]) == {"name", "parameters", "objectives", "instruments", "stop"}
    assert {"InstrumentConfig", "StopRules", "FloatParameter", "IntParameter", "CategoricalParameter"} <= set(schema["$defs"])
    assert schema["additionalProperties"] is False


_json = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 5) | st.floats(allow_nan=True) | st.text(max_size=6),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)
_keys = st.sampled_from(["name", "seed", "parameters", "objectives", "instruments", "planner", "stop", "ledger", "clock", "constraints"])


@settings(max_examples=150, deadline=None)
@given(data=st.one_of(_json, st.dictionaries(_keys, _json, max_size=8)), mutate=st.booleans())
def test_property_any_input_is_a_config_or_a_config_error(data: Any, mutate: bool) -> None:
    if mutate and isinstance(data, dict):
        data = {**quadratic_config(), **data}
    try:
        config = parse_config(data)
    except ConfigError as exc:
        assert exc.faults
        for fault in exc.faults:
            assert "\n" not in str(fault)
    else:
        assert isinstance(config, LabConfig)


@settings(max_examples=60, deadline=None)
@given(text=st.text(max_size=200))
def test_property_garbage_yaml_never_escapes_as_another_error(tmp_path_factory: pytest.TempPathFactory, text: str) -> None:
    path = tmp_path_factory.mktemp("garbage") / "c.yaml"
    path.write_text(text, encoding="utf-8")
    try:
        load_config(path)
    except ConfigError as exc:
        assert exc.faults and all("\n" not in str(f) for f in exc.faults)


def test_a_space_beyond_every_instruments_limits_names_both_sides() -> None:
    cfg = quadratic_config(instruments=[
        {"name": "a", "driver": "labdrivers:Quadratic", "limits": {"x": [0, 0.6]}},
        {"name": "b", "driver": "labdrivers:Quadratic", "options": {"limits": {"x": [0.2, 0.8]}}},
    ])
    with pytest.raises(ConfigError) as info:
        build_fleet(parse_config(cfg))
    assert [str(f) for f in info.value.faults] == [
        "parameters[0]: x asks for [0, 1] but the instruments' limits allow only [0, 0.8] "
        "(a accepts [0, 0.6], b accepts [0.2, 0.8]); narrow the parameter or widen a limit"
    ]
    cfg["parameters"][0]["high"] = 0.8
    assert len(build_fleet(parse_config(cfg))) == 2  # each instrument covers part; routing does the rest
