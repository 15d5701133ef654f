"""Checking a config: every fault the models and the cross-field rules find,
in one pass (:func:`check_config`), and the part of a config that validated
when some did not (:class:`Findings`), so later checks still see it.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from pydantic import ValidationError

from selflab.controller.config_faults import ConfigError, ConfigFault, clip, pydantic_fault
from selflab.controller.config_models import LabConfig
from selflab.controller.drift import drift_faults
from selflab.planners.registry import planner_kinds
from selflab.planners.space import brief


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
            found = Findings(None, list(dict.fromkeys(pydantic_fault(err) for err in errors)))  # once each: a limit's low and high can fail alike
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
            faults.append(ConfigFault(loc=f"instruments[{i}].cost", message=f"{brief(inst.cost)} uses {clip(', '.join(sorted(expression.names - numeric)))}, which is not a numeric parameter"))
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
    faults += drift_faults(config)
    faults += learn_faults(config)
    return faults


_LEARNS = ("bo", "sobol", "random")
"""Planners that honour ``objective: learn`` (bo maps the outputs; sobol and random ignore objectives)."""


def learn_faults(config: LabConfig) -> list[ConfigFault]:
    """``objective: learn`` on every objective or none, with a planner that honours it;
    ``warm_start`` with the bo planner (the one with a multi-task model)."""
    faults: list[ConfigFault] = []
    learnt = [o.learn for o in config.objectives]
    if any(learnt) and not all(learnt):
        i = learnt.index(True)
        faults.append(ConfigFault(loc=f"objectives[{i}].objective", message="learn cannot be mixed with optimized objectives; "
                                  "mark every objective learn, or none"))
    elif any(learnt) and config.planner.kind not in _LEARNS:
        faults.append(ConfigFault(loc="planner.kind", message=f"{brief(config.planner.kind)} cannot learn a map (objective: learn); "
                                  f"use one of {', '.join(_LEARNS)}"))
    target = config.stop.target
    if any(learnt) and target is not None:
        faults.append(ConfigFault(loc="stop.target", message="a target value needs an optimized objective; objective: learn has no "
                                  "optimum (stop on max_experiments, max_cost or time)"))
    if config.warm_start and config.planner.kind != "bo":
        faults.append(ConfigFault(loc="warm_start", message=f"warm starts need planner kind bo (got {brief(config.planner.kind)})"))
    return faults
