"""Instruments given as Python objects: how a runner may use each, and the
checks a config's instruments get.

A :class:`~selflab.controller.runner.Runner` built from objects takes the
instruments as a mapping ``name -> object`` and, optionally, an
:class:`InstrumentSettings` (or a dict of its fields) per name: the fields of
a config's instrument less ``name``, ``driver``, ``options`` and ``remote``.
:func:`objects_campaign` checks them exactly as ``selflab validate`` checks a
config (the same models and the same fleet checks: limits, declared inputs,
cost expressions, interlocks, outputs), and returns the campaign as a
:class:`~selflab.controller.config.LabConfig` with its stations. A fault
names the instrument: ``instruments['sim'].capacity: must be >= 1 (got 0)``.

Example::

    config, stations = objects_campaign(study, {"sim": BraninInstrument()},
                                        {"sim": InstrumentSettings(capacity=2, timeout=60)},
                                        stop={"max_experiments": 20})
"""

from __future__ import annotations

import copy
import inspect
import re
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict
from pydantic.fields import FieldInfo

from selflab.controller.clock import SimClock
from selflab.controller.config import ConfigError, ConfigFault, InstrumentConfig, Interlock, LabConfig, StopRules, check_config
from selflab.controller.config_models import OversightConfig
from selflab.controller.fleet import Station, build_fleet
from selflab.controller.study import Study, StudyError
from selflab.instruments.protocol import Instrument


def _same_as_config(name: str) -> Any:
    """The field ``name`` of a config's instrument: its default, bounds and description."""
    field: FieldInfo = copy.copy(InstrumentConfig.model_fields[name])
    return field


class InstrumentSettings(BaseModel):
    """How a runner may use one instrument object; every field is optional.

    ``capacity``, ``fidelity`` and ``cost`` override what the instrument
    declares; ``limits`` narrow its declared limits; ``timeout``, ``retries``,
    ``retry_backoff`` and ``max_consecutive_failures`` are its policy. They
    are the fields of a config's instrument, with the same defaults and bounds.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
    capacity: int | None = _same_as_config("capacity")
    fidelity: float | None = _same_as_config("fidelity")
    cost: float | str | None = _same_as_config("cost")
    limits: dict[str, tuple[float, float]] = _same_as_config("limits")
    timeout: float = _same_as_config("timeout")
    max_consecutive_failures: int = _same_as_config("max_consecutive_failures")
    retries: int = _same_as_config("retries")
    retry_backoff: float = _same_as_config("retry_backoff")


def objects_campaign(study: Study, instruments: Mapping[str, object],
                     settings: Mapping[str, InstrumentSettings | Mapping[str, Any]] | None = None, *,
                     stop: StopRules | Mapping[str, Any] | None = None, interlocks: Sequence[Interlock | Mapping[str, Any]] = (),
                     stale_policy: str = "requeue",
                     oversight: OversightConfig | Mapping[str, Any] | None = None) -> tuple[LabConfig, list[Station]]:
    """The campaign of ``study`` run on instrument objects: its config (the
    study's problem, the instruments' settings, ``stop``, ``interlocks``,
    ``stale_policy``, ``oversight``) and its stations. ``stop=None`` sets no stop rule: the
    run goes on until Ctrl-C or the planner has nothing more to propose.
    Raises :class:`~selflab.controller.config.ConfigError` with every fault,
    each naming the instrument or field, before anything touches the ledger
    (:class:`~selflab.controller.study.StudyError` for a closed study)."""
    if study.closed:
        raise StudyError(f"study {study.problem.name!r} is closed; open it again with resume=True to run it")
    settings = dict(settings or {})
    faults = [fault for name, obj in instruments.items() for fault in _object_faults(name, obj)]
    if not instruments:
        faults.append(ConfigFault(loc="instruments", message="give at least one instrument object, e.g. instruments={'sim': MyInstrument()}"))
    for name in settings:
        if name not in instruments:
            faults.append(ConfigFault(loc=f"settings[{name!r}]", message=f"no instrument is named {name!r}; "
                                      f"instruments: {', '.join(map(repr, instruments)) or 'none'}"))
    given = {name: _settings_dict(name, settings.get(name)) for name in instruments}
    faults += [fault for _, bad in given.values() for fault in bad]
    if faults:
        raise ConfigError(faults)
    names = list(instruments)
    data = {**study.problem.snapshot(),
            "instruments": [{"name": name, "driver": _class_path(obj), **given[name][0]} for name, obj in instruments.items()],
            "stop": _stop_dict(stop),
            "clock": "simulated" if isinstance(study.clock, SimClock) else "wall",
            "ledger": study.ledger.url,
            "interlocks": [lock.model_dump(mode="json") if isinstance(lock, Interlock) else dict(lock) for lock in interlocks],
            "stale_policy": stale_policy}
    if oversight is not None:
        data["oversight"] = oversight.model_dump(mode="json") if isinstance(oversight, OversightConfig) else dict(oversight)
    found = check_config(data)
    found_faults = [f for f in found.faults if not f.loc.startswith("planner")]  # (the planner is an object, not a kind)
    if found_faults or found.config is None:
        raise ConfigError([_named(f, names) for f in found_faults])
    config = found.config if stop is not None else found.config.model_copy(update={"stop": StopRules.model_construct()})
    try:
        stations = build_fleet(config, drivers=instruments)
    except ConfigError as exc:
        raise ConfigError([_named(f, names) for f in exc.faults]) from None
    return config, stations


def _object_faults(name: str, obj: object) -> list[ConfigFault]:
    """Why ``obj`` is no instrument object (empty when it is one)."""
    loc = f"instruments[{name!r}]"
    kind = type(obj).__name__
    if isinstance(obj, type):
        return [ConfigFault(loc=loc, message=f"is the class {obj.__qualname__}, not an instrument: pass an instance, "
                                             f"e.g. {obj.__qualname__}()")]
    if isinstance(obj, str):
        return [ConfigFault(loc=loc, message=f"is the string {obj!r}, not an instrument object; a Runner takes objects "
                                             "(an import string is a config's instruments[].driver)")]
    if not isinstance(obj, Instrument):
        missing = [m for m in ("connect", "run", "close") if not callable(getattr(obj, m, None))]
        return [ConfigFault(loc=loc, message=f"a {kind} is not an instrument: it has no {', '.join(m + '()' for m in missing)}; "
                                             "an instrument has async connect(), run(params) and close()")]
    blocking = [m for m in ("connect", "run", "close") if not inspect.iscoroutinefunction(getattr(obj, m))]
    if blocking:
        return [ConfigFault(loc=loc, message=f"{kind}.{', '.join(blocking)} must be async (async def), so that the runner "
                                             "can run other instruments meanwhile")]
    return []


def _class_path(obj: object) -> str:
    """``module:Class`` of an instrument object, as a config's ``driver`` names it."""
    return f"{type(obj).__module__}:{type(obj).__qualname__}"


def _settings_dict(name: str, settings: InstrumentSettings | Mapping[str, Any] | None) -> tuple[dict[str, Any], list[ConfigFault]]:
    """The settings of instrument ``name`` as a config's fields, and the keys that are no setting."""
    if settings is None:
        return {}, []
    if isinstance(settings, InstrumentSettings):
        return settings.model_dump(exclude_unset=True), []
    if not isinstance(settings, Mapping):
        return {}, [ConfigFault(loc=f"settings[{name!r}]", message=f"a {type(settings).__name__} is not settings; give an "
                                                                     "InstrumentSettings or a dict of its fields")]
    allowed = list(InstrumentSettings.model_fields)
    unknown = [str(key) for key in settings if key not in allowed]
    return ({key: value for key, value in settings.items() if key in allowed},
            [ConfigFault(loc=f"instruments[{name!r}].{key}", message=f"not a setting of an instrument object; settings: {', '.join(allowed)}")
             for key in unknown])


def _stop_dict(stop: StopRules | Mapping[str, Any] | None) -> dict[str, Any]:
    if stop is None:
        return {"max_experiments": 1}  # (a stand-in for the check; no stop rule is set)
    return stop.model_dump(exclude_none=True) if isinstance(stop, StopRules) else dict(stop)


def _named(fault: ConfigFault, names: list[str]) -> ConfigFault:
    """A config fault at ``instruments[i]...`` told at ``instruments['name']...``."""
    match = re.match(r"^instruments\[(\d+)\](.*)$", fault.loc)
    if match is None or int(match.group(1)) >= len(names):
        return fault
    rest = match.group(2).removeprefix(".driver")
    return ConfigFault(loc=f"instruments[{names[int(match.group(1))]!r}]{rest}", message=fault.message)


__all__ = ["InstrumentSettings", "objects_campaign"]
