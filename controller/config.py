"""The campaign config: pure pydantic data, loaded from YAML.

The models live in :mod:`selflab.controller.config_models`, the faults in
:mod:`selflab.controller.config_faults`, reading a file in
:mod:`selflab.controller.config_yaml` and the checks in
:mod:`selflab.controller.config_checks`; every public name is importable from here.

Every model forbids unknown fields. :func:`load_config` returns a
:class:`LabConfig` or raises :class:`ConfigError` holding one
:class:`ConfigFault` per problem, each naming its field the way a user would
write it (``instruments[0].capacity: must be >= 1``).

A minimal config::

    name: branin-demo
    parameters:
      - {name: x1, type: float, low: -5, high: 10}
      - {name: x2, type: float, low: 0, high: 15}
    objectives: [{name: y, direction: minimize}]
    instruments: [{name: sim, driver: branin}]
    stop: {max_experiments: 20}
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from selflab.controller.config_checks import Findings, check_config, parse_config, semantic_faults
from selflab.controller.config_faults import ConfigError, ConfigFault, clip, pydantic_fault
from selflab.controller.config_models import (
    Condition,
    Duration,
    InstrumentConfig,
    Interlock,
    LabConfig,
    PlannerConfig,
    StopRules,
    TargetRule,
    parse_duration,
)
from selflab.controller.config_yaml import MAX_CONFIG_BYTES, MAX_YAML_DEPTH, MAX_YAML_NODES, read_text, read_yaml
from selflab.planners.protocol import OptionsError, Planner
from selflab.planners.registry import make_planner, options_schemas
from selflab.planners.space import brief

__all__ = [
    "JSON_SCHEMA_DIALECT", "MAX_CONFIG_BYTES", "MAX_YAML_DEPTH", "MAX_YAML_NODES", "Condition", "ConfigError", "ConfigFault",
    "Duration", "Findings", "InstrumentConfig", "Interlock", "LabConfig", "PlannerConfig", "StopRules", "TargetRule",
    "build_planner", "check_config", "json_schema", "load_config", "parse_config", "parse_duration", "read_config",
    "semantic_faults",
]

JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"


def build_planner(config: LabConfig) -> Planner:
    """The config's live planner; raises :class:`ConfigError` naming
    ``planner.options`` when the planner refuses its options (every bad
    option, in one line), or ``planner.kind`` when the package that kind needs
    is not installed."""
    try:
        return make_planner(config.planner.kind, config.planner.options)
    except ImportError as exc:
        raise ConfigError([ConfigFault(loc="planner.kind", message=str(exc))]) from None
    except OptionsError as exc:
        bad = [pydantic_fault(err, exc.model) for err in exc.errors]
        said = "; ".join(f"option {fault.loc or 'options'!r}: {fault.message}" for fault in dict.fromkeys(bad))
        message = f"{exc.kind} planner {said}; `selflab schema` lists each planner's options"
        raise ConfigError([ConfigFault(loc="planner.options", message=message)]) from None
    except ValueError as exc:
        message = f"{exc}; `selflab schema` lists each planner's options"
        raise ConfigError([ConfigFault(loc="planner.options", message=message)]) from None
    except TypeError as exc:  # a planner class without an options model: an unexpected keyword
        given = ", ".join(sorted(config.planner.options)) or "none"
        message = f"planner {brief(config.planner.kind)} does not take these options ({clip(given)}): {clip(str(exc))}"
        raise ConfigError([ConfigFault(loc="planner.options", message=message)]) from None


def load_config(path: str | Path, ledger: str | None = None) -> LabConfig:
    """Read and validate a YAML config; ``ledger`` replaces its ledger URL
    before validation. Raises :class:`ConfigError`.

    A file over :data:`MAX_CONFIG_BYTES`, YAML nested deeper than
    :data:`MAX_YAML_DEPTH` or holding more than :data:`MAX_YAML_NODES` values
    once its aliases are expanded is refused with one fault."""
    return parse_config(read_config(path, ledger))


def read_config(path: str | Path, ledger: str | None = None) -> Any:
    """A config file's parsed YAML, not yet validated, with ``ledger`` (when
    given) in place of its ledger URL. Raises :class:`ConfigError` (one fault)
    for a file that cannot be read or parsed; see :func:`load_config`."""
    path = Path(path)
    data = read_yaml(path, read_text(path))
    if ledger is not None and isinstance(data, dict):
        data = {**data, "ledger": ledger}
    return data


def json_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of a config file, as ``selflab schema`` prints it.

    ``planner.options`` is checked against the options of the ``planner.kind``
    given; ``planner_options`` lists each kind's options schema on its own.
    """
    schema: dict[str, Any] = {"$schema": JSON_SCHEMA_DIALECT, **LabConfig.model_json_schema()}
    defs: dict[str, Any] = schema.setdefault("$defs", {})
    kinds = options_schemas()
    rules = []
    for kind, options in kinds.items():
        for name, definition in options.get("$defs", {}).items():
            if defs.setdefault(name, definition) != definition:
                raise AssertionError(f"planner {kind!r} options define {name!r} unlike the config does")
        name = f"{kind}PlannerOptions"
        defs[name] = {key: value for key, value in options.items() if key != "$defs"}
        rules.append({"if": {"properties": {"kind": {"const": kind}}, "required": ["kind"]}, "then": {"properties": {"options": {"$ref": f"#/$defs/{name}"}}}})
    defs["PlannerConfig"]["allOf"] = rules
    defs["PlannerConfig"]["properties"]["kind"]["enum"] = list(kinds)
    schema["planner_options"] = kinds  # each planner kind's options, as `planner.options` faults point to
    return schema
