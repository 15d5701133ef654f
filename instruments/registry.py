"""Find driver classes by import path or entry-point name.

A config names a driver either as ``"package.module:Class"`` or as the name
of an entry point in the group ``selflab.instruments``, which an installed
package declares in its ``pyproject.toml``::

    [project.entry-points."selflab.instruments"]
    my_pump = "my_lab.pump:SyringePump"

>>> resolve_driver("reactor").__name__
'PlugFlowReactor'
"""

from __future__ import annotations

import importlib
import inspect
import reprlib
import traceback
from collections.abc import Mapping
from importlib.metadata import entry_points
from typing import Any

from pydantic import BaseModel

ENTRY_POINT_GROUP = "selflab.instruments"

EMULATOR_GROUP = "selflab.emulators"
"""Device emulators for drivers run with ``emulate: true``: entry point name =
the device name (``pump``...), value = ``package:ConfigModel``, the pydantic
model of the emulator's options; ``python -m package '<config JSON>'`` serves
it (see :class:`~selflab.instruments.drivers.emulated.EmulatorProcess`)."""

REQUIRED_METHODS = ("connect", "run", "close")


class DriverError(Exception):
    """A driver cannot be found, imported or built; the message says why."""


def _clip(text: object, width: int = 300) -> str:
    """``str(text)`` cut to ``width`` characters: a message may quote a driver's
    exception, and that may echo a large option value."""
    out = str(text)
    return out if len(out) <= width else out[: width - 3] + "..."


_names = reprlib.Repr()
_names.maxstring = 120
_quote = _names.repr
"""A ``repr`` of a name from a config, cut short (a driver spec may be any string)."""


def _import_failure(exc: Exception) -> str:
    """What went wrong while a driver's module was imported, with its file and line."""
    if isinstance(exc, SyntaxError):  # (also IndentationError): where the parser stopped
        return _clip(f"{type(exc).__name__} at {exc.filename}:{exc.lineno}: {exc.msg}")
    frames = [frame for frame in traceback.extract_tb(exc.__traceback__) if not frame.filename.startswith("<frozen")]
    where = f" at {frames[-1].filename}:{frames[-1].lineno}" if frames else ""
    return _clip(f"{type(exc).__name__}{where}: {exc}")


def installed_drivers() -> dict[str, str]:
    """Entry-point name -> ``module:Class`` for every installed driver."""
    return {ep.name: ep.value for ep in entry_points(group=ENTRY_POINT_GROUP)}


def resolve_driver(spec: str) -> type:
    """The driver class named by ``spec``. Raises :class:`DriverError`."""
    if ":" in spec:
        module_name, _, attr = spec.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise DriverError(f"cannot import module {_quote(module_name)} ({_clip(exc)}); is its package installed?") from None
        except Exception as exc:  # a syntax error, or whatever the module's own code raises while it is imported
            raise DriverError(f"module {_quote(module_name)} failed to import: {_import_failure(exc)}") from None
        obj: Any = module
        for part in attr.split("."):
            try:
                obj = getattr(obj, part)
            except AttributeError:
                raise DriverError(f"module {_quote(module_name)} has no {_quote(attr)}") from None
    else:
        matches = [ep for ep in entry_points(group=ENTRY_POINT_GROUP) if ep.name == spec]
        if not matches:
            known = ", ".join(sorted(installed_drivers())) or "none"
            raise DriverError(
                f"no driver named {_quote(spec)} in entry-point group {ENTRY_POINT_GROUP!r} (installed: {known}); "
                "or give an import path 'package.module:Class'"
            )
        try:
            obj = matches[0].load()
        except Exception as exc:  # an entry point can fail to load in many ways
            raise DriverError(f"driver {_quote(spec)} ({matches[0].value}) failed to load: {_import_failure(exc)}") from None
    if not inspect.isclass(obj):
        raise DriverError(f"{_quote(spec)} is not a class")
    missing = [m for m in REQUIRED_METHODS if not inspect.iscoroutinefunction(getattr(obj, m, None))]
    if missing:
        raise DriverError(f"{_quote(spec)} is not an instrument: it needs async methods {', '.join(missing)}")
    return obj


def resolve_emulator(device: str) -> type[BaseModel]:
    """The config model of the emulator that serves ``device``. Raises :class:`DriverError`."""
    matches = [ep for ep in entry_points(group=EMULATOR_GROUP) if ep.name == device]
    if not matches:
        known = ", ".join(sorted(ep.name for ep in entry_points(group=EMULATOR_GROUP))) or "none"
        raise DriverError(f"no emulator for device {_quote(device)} in entry-point group {EMULATOR_GROUP!r} (installed: {known})")
    try:
        model = matches[0].load()
    except Exception as exc:  # an entry point can fail to load in many ways
        raise DriverError(f"emulator {_quote(device)} ({matches[0].value}) failed to load: {_clip(exc)}") from None
    if not (inspect.isclass(model) and issubclass(model, BaseModel)):
        raise DriverError(f"emulator {_quote(device)} ({matches[0].value}) is not a pydantic model of its options")
    return model


def build_driver(spec: str, options: Mapping[str, Any]) -> Any:
    """An instance of the driver ``spec`` built with ``options`` as keyword arguments."""
    cls = resolve_driver(spec)
    try:
        return cls(**dict(options))
    except TypeError as exc:
        raise DriverError(f"bad options for {cls.__name__}: {_clip(exc)}") from None
    except ValueError as exc:
        raise DriverError(f"bad options for {cls.__name__}: {_clip(exc)}") from None
