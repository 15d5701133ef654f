"""The campaign config: pure pydantic data, loaded from YAML.

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

import dataclasses
import datetime
import difflib
import math
import re
import types
import typing
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

import pytimeparse2
import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    GetJsonSchemaHandler,
    TypeAdapter,
    ValidationError,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema

from selflab.controller.expressions import Expression
from selflab.planners.protocol import OptionsError, Planner
from selflab.planners.registry import make_planner, options_schemas, planner_kinds
from selflab.planners.space import FiniteFloat, Objective, OutcomeConstraint, Parameter, SearchSpace, brief, or_one_line

_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"
_ISO_DURATION = TypeAdapter(datetime.timedelta)
"""Reads ISO 8601 durations such as ``PT2H`` (pydantic's own parser)."""
_DURATION_EXAMPLES = ["90s", "30m", "2h", "3d", "1h30m", "1.5h", "PT2H", "P1DT2H"]
JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"

MAX_CONFIG_BYTES = 1_000_000
"""A config file larger than this is refused unread."""
MAX_YAML_DEPTH = 64
"""Levels of nesting a config's YAML may have."""
MAX_YAML_NODES = 1_000_000
"""Values (scalars and collections) a config's YAML may hold once its aliases
are expanded: a small file with nested aliases ("billion laughs") is refused."""


def _not_finite(value: Any) -> str:
    """The message for a configured number that is NaN or infinite."""
    return f"must be a finite number (got {brief(value)}); NaN and infinity are not allowed"


def parse_duration(value: Any) -> Any:
    """Seconds from a number or a string as people write durations.

    Strings are read by ``pytimeparse2`` (``"90s"``, ``"30m"``, ``"2h"``,
    ``"3d"``, ``"1h30m"``, ``"1.5h"``, ``"2 hours"``, ``"3600"``) or, when they
    start with ``P``, as ISO 8601 durations (``"PT2H"``, ``"P1DT2H"``).
    Anything else is returned as it is, for the number check that follows.

    >>> [parse_duration(text) for text in ("1h30m", "1.5h", "PT2H", "90")]
    [5400.0, 5400.0, 7200.0, 90.0]
    """
    if not isinstance(value, str):
        return value
    text = value.strip()
    seconds: float | None = None
    if text[:1] in ("P", "p"):
        try:
            seconds = _ISO_DURATION.validate_python(text.upper()).total_seconds()
        except ValidationError:
            seconds = None
    elif text:
        seconds = pytimeparse2.parse(text)  # (None for what it cannot read, e.g. 'soon', or '1e999', which overflows)
    if seconds is None:
        raise ValueError(f"cannot read duration {brief(value)}: write seconds (3600) or e.g. "
                         f"{', '.join(map(repr, _DURATION_EXAMPLES[:-1]))} or {_DURATION_EXAMPLES[-1]!r}")
    return float(seconds)


Duration = Annotated[
    FiniteFloat,
    BeforeValidator(parse_duration),
    Field(gt=0),
    WithJsonSchema({"anyOf": [{"type": "number", "exclusiveMinimum": 0},
                              {"type": "string", "description": "a duration", "examples": _DURATION_EXAMPLES}]}),
]
"""Seconds > 0; YAML may say ``"30m"``, ``"1h30m"`` or ``"PT2H"`` (see :func:`parse_duration`)."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class InstrumentConfig(_Strict):
    """One instrument: a driver and how the campaign may use it.

    ``capacity``, ``fidelity`` and ``cost`` override what the driver declares;
    ``limits`` intersect with the driver's declared limits.
    """

    name: str = Field(pattern=_NAME)
    driver: str = Field(min_length=1, description="'package.module:Class' or an entry-point name in 'selflab.instruments'")
    options: dict[str, Any] = Field(default_factory=dict, description="keyword arguments of the driver class")
    capacity: int | None = Field(default=None, ge=1, description="concurrent experiments (default: the driver's, else 1)")
    fidelity: FiniteFloat | None = Field(default=None, gt=0, le=1, description="fidelity served, 1 = target (default: the driver's, else 1)")
    cost: float | str | None = Field(
        default=None, description="cost units per experiment: a number >= 0, or an expression of the parameters such as '1 + residence_time / 10' (default: the driver's, else 1)"
    )
    limits: dict[str, tuple[FiniteFloat, FiniteFloat]] = Field(default_factory=dict, description="extra safe ranges, inclusive")
    timeout: Duration = Field(default=3600.0, description="wall-clock seconds before an experiment is failed as timed out")
    max_consecutive_failures: int = Field(default=5, ge=1, description="failed experiments in a row before the instrument is taken offline")
    remote: bool = Field(default=False, description="run by `selflab worker` on the instrument's own host; `selflab run` only queues its experiments (Postgres ledger)")
    retries: int = Field(default=0, ge=0, le=10, description="extra attempts of an experiment after a timeout, disconnect or bad response")
    retry_backoff: Duration = Field(default=1.0, description="seconds before the first retry; doubles each time (wall clock only)")


    @field_validator("cost")
    @classmethod
    def _check_cost(cls, value: float | str | None) -> float | str | None:
        """A number (``2.5`` or ``"2.5"``) must be finite and >= 0; any other
        string must be an allowed expression (where it is evaluated is
        checked when the fleet is built)."""
        if isinstance(value, str):
            try:
                number = float(value)  # "2.5" is a number
            except ValueError:
                Expression.parse(value)  # ExpressionError is a ValueError: reported on this field
                return value
            value = number
        if value is not None and not math.isfinite(value):
            raise ValueError(_not_finite(value))
        if value is not None and value < 0:
            raise ValueError(f"must be >= 0 (got {brief(value)})")
        return value

    def cost_expression(self) -> Expression | None:
        return Expression.parse(self.cost) if isinstance(self.cost, str) else None


class PlannerConfig(_Strict):
    """Which planner proposes experiments, and its options."""

    kind: str = "sobol"
    options: dict[str, Any] = Field(default_factory=dict)


class TargetRule(_Strict):
    """Stop once the best observed value of ``objective`` reaches ``value``."""

    objective: str | None = Field(default=None, description="default: the only objective")
    value: FiniteFloat


class StopRules(_Strict):
    """When the campaign ends; the first rule met stops it."""

    max_experiments: int | None = Field(default=None, ge=1, description="completed experiments")
    max_cost: FiniteFloat | None = Field(default=None, gt=0, description="total cost units spent")
    max_time: Duration | None = Field(default=None, description="campaign-clock seconds (simulated when the clock is)")
    max_wall_time: Duration | None = Field(default=None, description="real seconds, whatever the clock")
    target: TargetRule | None = None

    @model_validator(mode="after")
    def _some_bound(self) -> StopRules:
        if not any(v is not None for v in (self.max_experiments, self.max_cost, self.max_time, self.max_wall_time)):
            raise ValueError("give at least one of max_experiments, max_cost, max_time, max_wall_time")
        return self


_CONDITION = re.compile(r"^\s*(.+)\.([A-Za-z_][A-Za-z0-9_]*)\s*(<=|>=|<|>)\s*(\S+)\s*$")


class Condition(_Strict):
    """``<instrument>.<reading> <op> <value>``, e.g. ``"hotplate.temperature > 200"``."""

    instrument: str
    reading: str
    op: Literal[">", ">=", "<", "<="]
    value: FiniteFloat

    @model_validator(mode="before")
    @classmethod
    def _parse(cls, data: Any) -> Any:
        if isinstance(data, str):
            match = _CONDITION.match(data)
            if not match:
                raise ValueError(f"cannot read {brief(data)}: write it as 'INSTRUMENT.READING > VALUE' (or >=, <, <=)")
            instrument, reading, op, value = match.groups()
            try:
                number = float(value)
            except ValueError:
                raise ValueError(f"cannot read {brief(data)}: {brief(value)} is not a number") from None
            return {"instrument": instrument.strip(), "reading": reading, "op": op, "value": number}
        return data

    @classmethod
    def __get_pydantic_json_schema__(cls, core_schema: CoreSchema, handler: GetJsonSchemaHandler) -> JsonSchemaValue:
        return or_one_line(handler(core_schema), _CONDITION, "hotplate.temperature > 200")

    def holds(self, value: float) -> bool:
        return {">": value > self.value, ">=": value >= self.value, "<": value < self.value, "<=": value <= self.value}[self.op]

    def __str__(self) -> str:
        return f"{self.instrument}.{self.reading} {self.op} {self.value:g}"


class Interlock(_Strict):
    """Pause dispatch while a reading is unsafe; resume when it is safe again.

    The instrument is polled with ``read()`` every ``poll`` seconds; its
    experiment results update the reading too. Experiments in flight finish.
    """

    pause_when: Condition
    resume_when: Condition | None = Field(default=None, description="default: when pause_when no longer holds")
    poll: Duration = Field(default=5.0, description="seconds between read() polls")

    @model_validator(mode="after")
    def _same_instrument(self) -> Interlock:
        if self.resume_when is not None and self.resume_when.instrument != self.pause_when.instrument:
            raise ValueError("resume_when must watch the same instrument as pause_when")
        return self


class LabConfig(_Strict):
    """A whole campaign."""

    name: str = Field(pattern=_NAME, max_length=100, description="campaign name; names the default ledger file")
    description: str = ""
    seed: int = Field(default=0, ge=0)
    parameters: list[Parameter] = Field(min_length=1)
    objectives: list[Objective] = Field(min_length=1)
    constraints: list[OutcomeConstraint] = Field(default_factory=list)
    instruments: list[InstrumentConfig] = Field(min_length=1)
    planner: PlannerConfig = Field(default_factory=PlannerConfig)
    stop: StopRules
    target_fidelity: FiniteFloat = Field(default=1.0, gt=0, le=1)
    clock: Literal["auto", "wall", "simulated"] = Field(
        default="auto", description="auto: simulated when every instrument declares duration()"
    )
    ledger: str | None = Field(default=None, description="SQLAlchemy URL; default sqlite:///runs/<name>.sqlite")
    interlocks: list[Interlock] = Field(default_factory=list)
    stale_policy: Literal["requeue", "drop"] = Field(
        default="requeue", description="experiments in flight at a crash whose outcome is unknown: run their params again, or not"
    )

    @property
    def ledger_url(self) -> str:
        return self.ledger or f"sqlite:///runs/{self.name}.sqlite"

    @property
    def space(self) -> SearchSpace:
        return SearchSpace(parameters=self.parameters)

    @property
    def outcome_names(self) -> list[str]:
        """Objectives, then constrained outcomes, each once, in config order."""
        names = [o.name for o in self.objectives]
        names += [c.outcome for c in self.constraints if c.outcome not in names]
        return names


class ConfigFault(BaseModel):
    """One problem with a config: where, and what to do."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    loc: str
    message: str

    def __str__(self) -> str:
        return f"{self.loc}: {self.message}" if self.loc else self.message


class ConfigError(Exception):
    """A config with one or more faults."""

    def __init__(self, faults: Sequence[ConfigFault], source: str = "") -> None:
        self.faults = list(faults)
        self.source = source
        super().__init__("\n".join(map(str, self.faults)))


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
        bad = [_fault(err, exc.model) for err in exc.errors]
        said = "; ".join(f"option {fault.loc or 'options'!r}: {fault.message}" for fault in dict.fromkeys(bad))
        message = f"{exc.kind} planner {said}; `selflab schema` lists each planner's options"
        raise ConfigError([ConfigFault(loc="planner.options", message=message)]) from None
    except ValueError as exc:
        message = f"{exc}; `selflab schema` lists each planner's options"
        raise ConfigError([ConfigFault(loc="planner.options", message=message)]) from None
    except TypeError as exc:  # a planner class without an options model: an unexpected keyword
        given = ", ".join(sorted(config.planner.options)) or "none"
        message = f"planner {brief(config.planner.kind)} does not take these options ({_clip(given)}): {_clip(str(exc))}"
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
    data = _read_yaml(path, _read_text(path))
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


def _read_text(path: Path) -> str:
    """The file's text, read no further than :data:`MAX_CONFIG_BYTES`."""
    try:
        with path.open("rb") as file:
            raw = file.read(MAX_CONFIG_BYTES + 1)
        if len(raw) > MAX_CONFIG_BYTES:
            raise ConfigError([ConfigFault(loc="", message=f"{path}: larger than {MAX_CONFIG_BYTES:,} bytes; a config names "
                                                           "parameters and instruments, keep bulk data in files a driver reads")])
        return raw.decode("utf-8")
    except FileNotFoundError:
        raise ConfigError([ConfigFault(loc="", message=f"{path}: no such file")]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([ConfigFault(loc="", message=f"{path}: cannot read ({_clip(str(exc))})")]) from None


def _read_yaml(path: Path, text: str) -> Any:
    """Parsed YAML, or :class:`ConfigError` with one fault saying where it went wrong."""
    try:
        return yaml.load(text, Loader=_BoundedLoader)  # noqa: S506 - a SafeLoader
    except _YamlTooLarge as exc:
        raise ConfigError([ConfigFault(loc="", message=f"{_where(path, exc)}: {exc.problem}")]) from None
    except yaml.YAMLError as exc:
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError([ConfigFault(loc="", message=f"{_where(path, exc)}: YAML syntax error: {_clip(problem)}")]) from None
    except RecursionError:
        raise ConfigError([ConfigFault(loc="", message=f"{path}: YAML nested too deeply; flatten it")]) from None
    except ValueError as exc:  # a value the YAML constructor cannot build, e.g. an integer of 5,000 digits
        raise ConfigError([ConfigFault(loc="", message=f"{path}: cannot read a value ({_clip(str(exc))})")]) from None


def _clip(text: str, width: int = 200) -> str:
    """``text`` cut to ``width`` characters, for a message quoting another message."""
    return text if len(text) <= width else text[: width - 3] + "..."


def _where(path: Path, exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None)
    return f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)


class _YamlTooLarge(yaml.MarkedYAMLError):
    """YAML nested too deeply, or whose aliases expand to too many values."""


class _BoundedLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing while it composes any document nested
    deeper than :data:`MAX_YAML_DEPTH` levels, holding more than
    :data:`MAX_YAML_NODES` values with its aliases expanded, or with an alias
    inside the collection it names (a cycle).

    Each composed node's expanded size (itself plus its children's sizes, an
    alias counting as the whole node it names) is kept by ``id``, so the
    check costs one pass over the nodes actually written."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0
        self._sizes: dict[int, int] = {}

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node:
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent):
            named = self.anchors.get(event.anchor)
            if named is not None and id(named) not in self._sizes:
                raise _YamlTooLarge(problem=f"alias *{_clip(event.anchor, 40)} is inside the collection it names; "
                                            "a config cannot contain itself", problem_mark=event.start_mark)
            return super().compose_node(parent, index)
        if self._depth >= MAX_YAML_DEPTH:
            raise _YamlTooLarge(problem=f"YAML nested more than {MAX_YAML_DEPTH} levels deep; flatten it", problem_mark=event.start_mark)
        self._depth += 1
        try:
            node = super().compose_node(parent, index)
        finally:
            self._depth -= 1
        if isinstance(node, yaml.MappingNode):
            children = [child for pair in node.value for child in pair]
        else:
            children = node.value if isinstance(node, yaml.SequenceNode) else []
        size = 1 + sum(self._sizes.get(id(child), 1) for child in children)
        if size > MAX_YAML_NODES:
            raise _YamlTooLarge(problem=f"YAML aliases expand to more than {MAX_YAML_NODES:,} values; "
                                        "write the values out or use fewer aliases", problem_mark=node.start_mark)
        self._sizes[id(node)] = size
        return node


def parse_config(data: Any) -> LabConfig:
    """Validate already-parsed data. Raises :class:`ConfigError` with every
    fault of :func:`check_config`."""
    found = check_config(data)
    if found.faults or found.config is None:
        raise ConfigError(found.faults)
    return found.config


_LISTS = ("parameters", "objectives", "constraints", "instruments", "interlocks")
"""The config's list sections: an item that fails is left out, the others are checked on."""
_STAND_INS: dict[str, Any] = {"name": "config", "stop": {"max_experiments": 1}}
"""Required fields that no other check reads: what stands in for one that failed."""


@dataclasses.dataclass
class Findings:
    """What checking a config found: its faults, and what can be checked further.

    When parts of the config fail validation, ``config`` is the rest of it:
    list items that failed are left out (``left_out`` holds their names),
    fields that failed take their defaults (or a stand-in), so that the
    cross-field checks, the fleet and the planner still see the sections that
    did validate. ``config`` is ``None`` when too little validated for that.
    """

    config: LabConfig | None
    faults: list[ConfigFault]
    left_out: frozenset[str] = frozenset()
    """Names of list items that failed and are not in ``config``."""
    positions: dict[str, list[int]] = dataclasses.field(default_factory=dict)
    """List section -> the position in the file of each item in ``config``."""

    def add(self, faults: Iterable[ConfigFault]) -> None:
        """Add faults found on ``config``, each once, at the item's position in
        the file; a fault that names a left-out item is dropped, as it may only
        echo that item's own fault (which is reported)."""
        for fault in faults:
            if any(re.search(rf"(?<![\w-])(?<!\w\.){re.escape(name)}(?![\w-]|\.\w)", str(fault)) for name in self.left_out):
                continue
            fault = ConfigFault(loc=self._in_file(fault.loc), message=fault.message)
            if fault not in self.faults:
                self.faults.append(fault)

    def _in_file(self, loc: str) -> str:
        match = re.match(r"^([a-z_]+)\[(\d+)\]", loc)
        if match is None or match.group(1) not in self.positions:
            return loc
        field, index = match.group(1), int(match.group(2))
        where = self.positions[field]
        return f"{field}[{where[index] if index < len(where) else index}]{loc[match.end():]}"


def check_config(data: Any) -> Findings:
    """Every fault of already-parsed config data that the models and
    :func:`semantic_faults` find, in one pass (see :class:`Findings`)."""
    if not isinstance(data, Mapping):
        got = "an empty file" if data is None else f"a {type(data).__name__}"
        return Findings(None, [ConfigFault(loc="", message=f"a config must be a mapping of fields, got {got}")])
    try:
        try:
            config = LabConfig.model_validate(dict(data))
        except ValidationError as exc:
            errors = exc.errors()
            found = Findings(None, list(dict.fromkeys(_fault(err) for err in errors)))  # once each: a limit's low and high can fail alike
            _salvage(dict(data), errors, found)
        else:
            found = Findings(config, [])
    except RecursionError:
        return Findings(None, [ConfigFault(loc="", message="the config is nested too deeply; flatten it")])
    if found.config is not None:
        found.add(semantic_faults(found.config))
    return found


def _salvage(data: dict[str, Any], errors: Sequence[Mapping[str, Any]], found: Findings) -> None:
    """Set ``found.config`` to the parts of ``data`` that validated, if enough did."""
    bad_fields: set[str] = set()
    bad_items: dict[str, set[int]] = {}
    for err in errors:
        loc = tuple(err["loc"])
        if not loc:
            return
        field = str(loc[0])
        if field in _LISTS and len(loc) > 1 and isinstance(loc[1], int) and isinstance(data.get(field), list):
            bad_items.setdefault(field, set()).add(loc[1])
        else:
            bad_fields.add(field)
    for field in bad_fields & set(bad_items):
        del bad_items[field]
    kept = {key: value for key, value in data.items() if key not in bad_fields}
    for field in bad_fields & set(LabConfig.model_fields):
        if LabConfig.model_fields[field].is_required():
            if field not in _STAND_INS:
                return
            kept[field] = _STAND_INS[field]
    left_out: set[str] = set()
    for field, indexes in bad_items.items():
        items = data[field]
        left_out |= {item["name"] for i, item in enumerate(items)
                     if i in indexes and isinstance(item, Mapping) and isinstance(item.get("name"), str) and item["name"]}
        found.positions[field] = [i for i in range(len(items)) if i not in indexes]
        kept[field] = [items[i] for i in found.positions[field]]
    try:
        config = LabConfig.model_validate(kept)
    except ValidationError:
        return
    found.config = config
    found.left_out = frozenset(left_out - {item.name for items in (config.parameters, config.objectives, config.instruments) for item in items})


def semantic_faults(config: LabConfig) -> list[ConfigFault]:
    """Faults that span fields: duplicates, unknown references, bad kinds."""
    faults: list[ConfigFault] = []
    for field in ("parameters", "objectives", "instruments"):
        seen: set[str] = set()
        for i, item in enumerate(getattr(config, field)):
            if item.name in seen:
                faults.append(ConfigFault(loc=f"{field}[{i}].name", message=f"duplicate name {brief(item.name)}"))
            seen.add(item.name)
    params = set(config.space.names)
    reserved = {"experiment_id", "status", "instrument", "fidelity", "cost", "proposed_at", "started_at", "finished_at", "error"}
    for field in ("parameters", "objectives"):
        for i, item in enumerate(getattr(config, field)):
            if item.name in reserved:
                faults.append(ConfigFault(loc=f"{field}[{i}].name", message=f"{brief(item.name)} is reserved for a ledger export column; rename it"))
    for i, objective in enumerate(config.objectives):
        if objective.name in params:
            faults.append(ConfigFault(loc=f"objectives[{i}].name", message=f"{brief(objective.name)} is also a parameter name"))
    for i, inst in enumerate(config.instruments):
        for name, (low, high) in inst.limits.items():
            if low > high:
                faults.append(ConfigFault(loc=f"instruments[{i}].limits.{name}", message=f"low {low:g} is above high {high:g}"))
    if config.planner.kind not in planner_kinds():
        faults.append(ConfigFault(loc="planner.kind", message=f"unknown planner {brief(config.planner.kind)}; choose one of {', '.join(planner_kinds())}"))
    target = config.stop.target
    if target is not None:
        names = [o.name for o in config.objectives]
        if target.objective is None and len(names) > 1:
            faults.append(ConfigFault(loc="stop.target.objective", message=f"required with several objectives; one of {', '.join(names)}"))
        elif target.objective is not None and target.objective not in names:
            faults.append(ConfigFault(loc="stop.target.objective", message=f"{brief(target.objective)} is not an objective; one of {', '.join(names)}"))
    names = {inst.name for inst in config.instruments}
    numeric = {p.name for p in config.parameters if p.type != "categorical"}
    for i, inst in enumerate(config.instruments):
        expression = inst.cost_expression()
        if expression is not None and not expression.names <= numeric:
            faults.append(ConfigFault(loc=f"instruments[{i}].cost", message=f"{brief(inst.cost)} uses {_clip(', '.join(sorted(expression.names - numeric)))}, which is not a numeric parameter"))
        if inst.remote and not config.ledger_url.startswith("postgresql"):
            faults.append(ConfigFault(loc=f"instruments[{i}].remote", message="remote instruments need a shared Postgres ledger (ledger: postgresql://...)"))
        if inst.remote and config.clock == "simulated":
            faults.append(ConfigFault(loc=f"instruments[{i}].remote", message="remote instruments run on the wall clock; set clock: wall or auto"))
    for i, lock in enumerate(config.interlocks):
        if lock.pause_when.instrument not in names:
            faults.append(ConfigFault(loc=f"interlocks[{i}].pause_when", message=f"no instrument named {brief(lock.pause_when.instrument)}; one of {', '.join(sorted(names))}"))
    if not re.match(r"^(sqlite|postgresql)(\+\w+)?://", config.ledger_url):
        faults.append(ConfigFault(loc="ledger", message=f"{brief(config.ledger_url)} is not a sqlite:// or postgresql:// URL"))
    fidelities = {inst.fidelity for inst in config.instruments if inst.fidelity is not None}
    if fidelities and config.target_fidelity not in fidelities and all(f < config.target_fidelity for f in fidelities):
        faults.append(ConfigFault(loc="target_fidelity", message=f"no instrument serves fidelity {config.target_fidelity:g} (served: {', '.join(f'{f:g}' for f in sorted(fidelities))})"))
    return faults


# --- turning pydantic errors into one line per field ---------------------------------


def _fault(err: Mapping[str, Any], root: type[BaseModel] = LabConfig) -> ConfigFault:
    """One pydantic error of validating ``root`` (a config, or a planner's
    options) as one line naming its field."""
    loc, model = _format_loc(tuple(err["loc"]), root)
    kind, ctx, msg = err["type"], err.get("ctx") or {}, str(err["msg"])
    if kind == "extra_forbidden":
        allowed = sorted(model.model_fields) if model is not None else []
        last = str(err["loc"][-1])[:100]
        close = difflib.get_close_matches(last, allowed, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        message = f"unknown field; {hint}allowed: {', '.join(allowed)}" if allowed else "unknown field"
    elif kind == "missing":
        message = "required field is missing"
    elif kind in ("greater_than_equal", "greater_than", "less_than_equal", "less_than"):
        op = {"greater_than_equal": ">=", "greater_than": ">", "less_than_equal": "<=", "less_than": "<"}[kind]
        bound = next(iter(ctx.values()))
        message = f"must be {op} {bound} (got {brief(err.get('input'))})"
    elif kind == "finite_number":
        message = _not_finite(err.get("input"))
    elif kind == "string_pattern_mismatch":
        message = f"{brief(err.get('input'))} is not a valid name: start with a letter or digit, then letters, digits, '_' (and '.', '-' for campaign and instrument names)"
    elif kind == "union_tag_invalid":
        loc += ".type"
        message = f"must be one of {ctx.get('expected_tags')} (got {brief(ctx.get('tag'))})"
    elif kind == "value_error":
        message = str(ctx.get("error", msg.removeprefix("Value error, ")))
    else:
        message = msg.replace("Input should be", "must be").replace("String should", "must")
        if "input" in err and not isinstance(err["input"], (dict, list)):
            message += f" (got {brief(err['input'])})"
    return ConfigFault(loc=loc, message=message)


def _format_loc(loc: tuple[Any, ...], root: type[BaseModel] = LabConfig) -> tuple[str, type[BaseModel] | None]:
    """``('instruments', 0, 'capacity')`` -> ``'instruments[0].capacity'``.

    Walks the model tree alongside, to drop discriminator tags from the path
    and to return the model that owns the last field.
    """
    out = ""
    owner: type[BaseModel] | None = root
    ann: Any = None
    for part in loc:
        pair = _fixed_tuple(ann)
        if isinstance(part, int) and pair:  # a (low, high) pair is one value to the user: name it whole
            ann = pair[part] if part < len(pair) else None
            continue
        if isinstance(part, int):
            out += f"[{part}]"
            ann = _item_type(ann)
            continue
        values = _dict_value_type(ann)
        if values is not None:  # a key of a dict field, e.g. limits.x1
            out += f".{part}" if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", str(part)) else f"[{brief(str(part))}]"
            ann = values
            continue
        tagged = _union_member(ann, part)
        if tagged is not None:
            ann = tagged
            continue
        model = _as_model(ann) if ann is not None else owner
        if model is not None and part in model.model_fields:
            owner = model
            ann = model.model_fields[part].annotation
        else:
            owner = model
            ann = None
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", str(part)):
            out += f"[{brief(str(part))}]"  # a key a user could not type as a field: show it (kept short)
        else:
            out += f".{part}" if out else str(part)
    return out, owner


def _unwrap(ann: Any) -> list[Any]:
    origin = typing.get_origin(ann)
    if origin is Annotated:
        return _unwrap(typing.get_args(ann)[0])
    if origin in (typing.Union, types.UnionType):
        return [a for arg in typing.get_args(ann) for a in _unwrap(arg)]
    return [ann]


def _fixed_tuple(ann: Any) -> tuple[Any, ...]:
    """The item types of a fixed-size tuple annotation such as ``tuple[float, float]``, else ``()``."""
    for a in _unwrap(ann):
        args = typing.get_args(a)
        if typing.get_origin(a) is tuple and args and Ellipsis not in args:
            return args
    return ()


def _dict_value_type(ann: Any) -> Any:
    """The value type of a ``dict[K, V]`` annotation, else ``None``."""
    for a in _unwrap(ann):
        if typing.get_origin(a) is dict and len(typing.get_args(a)) == 2:
            return typing.get_args(a)[1]
    return None


def _item_type(ann: Any) -> Any:
    for a in _unwrap(ann):
        if typing.get_origin(a) in (list, tuple) and typing.get_args(a):
            return typing.get_args(a)[0]
    return None


def _as_model(ann: Any) -> type[BaseModel] | None:
    models = [a for a in _unwrap(ann) if isinstance(a, type) and issubclass(a, BaseModel)]
    return models[0] if len(models) == 1 else None


def _union_member(ann: Any, tag: Any) -> Any:
    for a in _unwrap(ann):
        if isinstance(a, type) and issubclass(a, BaseModel) and "type" in a.model_fields:
            if a.model_fields["type"].default == tag:
                return a
    return None
