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
from collections.abc import Mapping
from importlib.metadata import entry_points
from typing import Any

ENTRY_POINT_GROUP = "selflab.instruments"

REQUIRED_METHODS = ("connect", "run", "close")


class DriverError(Exception):
    """A driver cannot be found, imported or built; the message says why."""


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
            raise DriverError(f"cannot import module {module_name!r} ({exc}); is its package installed?") from None
        obj: Any = module
        for part in attr.split("."):
            try:
                obj = getattr(obj, part)
            except AttributeError:
                raise DriverError(f"module {module_name!r} has no {attr!r}") from None
    else:
        matches = [ep for ep in entry_points(group=ENTRY_POINT_GROUP) if ep.name == spec]
        if not matches:
            known = ", ".join(sorted(installed_drivers())) or "none"
            raise DriverError(
                f"no driver named {spec!r} in entry-point group {ENTRY_POINT_GROUP!r} (installed: {known}); "
                "or give an import path 'package.module:Class'"
            )
        try:
            obj = matches[0].load()
        except Exception as exc:  # an entry point can fail to load in many ways
            raise DriverError(f"driver {spec!r} ({matches[0].value}) failed to load: {exc}") from None
    if not inspect.isclass(obj):
        raise DriverError(f"{spec!r} is not a class")
    missing = [m for m in REQUIRED_METHODS if not inspect.iscoroutinefunction(getattr(obj, m, None))]
    if missing:
        raise DriverError(f"{spec!r} is not an instrument: it needs async methods {', '.join(missing)}")
    return obj


def build_driver(spec: str, options: Mapping[str, Any]) -> Any:
    """An instance of the driver ``spec`` built with ``options`` as keyword arguments."""
    cls = resolve_driver(spec)
    try:
        return cls(**dict(options))
    except TypeError as exc:
        raise DriverError(f"bad options for {cls.__name__}: {exc}") from None
    except ValueError as exc:
        raise DriverError(f"bad options for {cls.__name__}: {exc}") from None
